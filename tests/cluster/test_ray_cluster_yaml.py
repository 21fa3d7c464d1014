"""ray_cluster.yaml is valid for `ray up`: Ray's own schema check and provider bootstrap (no SSH);
every `rayborg` and `ray start` command line in it parses with the real CLI; every node and the
daemon agree about Ray's token auth, and the token reaches the workers."""

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMMAND_LISTS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                 "head_start_ray_commands", "worker_start_ray_commands")
START_LISTS = ("head_start_ray_commands", "worker_start_ray_commands")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
REDIRECTION = re.compile(r"(?<=\s)\d*(?:>>|>&|>|<)(?:&?\d+\b|\s*[^\s;&|]+)")
WRAPPERS = {"nohup", "exec", "env", "sudo"}


def _config() -> dict:
    return yaml.safe_load((REPO / "ray_cluster.yaml").read_text())


def simple_commands(line: str) -> list[tuple[dict[str, str], list[str]]]:
    """A shell line as (environment assignments, argv) per simple command: split at ; & && | ||,
    redirections dropped, `nohup`/`env`/`exec` wrappers looked through."""
    lexer = shlex.shlex(REDIRECTION.sub(" ", " " + line), posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands, words = [], []
    for token in [*lexer, ";"]:
        if token and set(token) <= set(";&|"):
            if words:
                env = {}
                while words and (ASSIGNMENT.match(words[0]) or words[0] in WRAPPERS):
                    word = words.pop(0)
                    if word not in WRAPPERS:
                        key, _, value = word.partition("=")
                        env[key] = value
                commands.append((env, words))
            words = []
        else:
            words.append(token)
    return commands


def commands_of(config: dict, lists=COMMAND_LISTS):
    for key in lists:
        for line in config.get(key) or []:
            for env, argv in simple_commands(line):
                yield key, env, argv


def _is_ray_start(argv: list[str]) -> bool:
    return len(argv) >= 2 and Path(argv[0]).name == "ray" and argv[1] == "start"


def _is_rayborg(argv: list[str]) -> bool:
    return bool(argv) and (Path(argv[0]).name == "rayborg" or argv[1:3] == ["-m", "rayborg"])


def rayborg_problems(config: dict) -> list[str]:
    """Every `rayborg ...` command line, parsed by rayborg's own argument parser."""
    from rayborg.cli import build_parser

    problems = []
    for key, _, argv in commands_of(config):
        if not _is_rayborg(argv):
            continue
        args = argv[3:] if argv[1:3] == ["-m", "rayborg"] else argv[1:]
        try:
            build_parser().parse_args(args)
        except SystemExit as exc:
            problems.append(f"{key}: {shlex.join(argv)!r} exits {exc.code}")
    return problems


def _ray_start_context(argv: list[str]):
    from ray.scripts.scripts import start

    return start.make_context("ray start", argv[2:])


def _norm(path: str) -> str:
    return str(Path(path).expanduser()) if path.startswith("~") else path


def auth_problems(config: dict) -> list[str]:
    """The nodes (`ray start`) and the daemon (`rayborg serve`) all set RAY_AUTH_MODE, to one value;
    with token auth each one names the token file, that file is shipped by file_mounts (the head's
    autoscaler hands its file_mounts on to each worker it starts), and no token sits in the file."""
    problems, modes, paths = [], set(), set()
    joining = [(key, env, argv) for key, env, argv in commands_of(config, START_LISTS)
               if _is_ray_start(argv) or (_is_rayborg(argv) and "serve" in argv)]
    kinds = {(key, Path(argv[0]).name) for key, _, argv in joining}
    for needed in (("head_start_ray_commands", "ray"), ("worker_start_ray_commands", "ray"),
                   ("head_start_ray_commands", "rayborg")):
        if needed not in kinds:
            problems.append(f"no {needed[1]} command in {needed[0]}")
    for key, env, argv in joining:
        what = f"{key}: {Path(argv[0]).name} {argv[1]}"
        mode = env.get("RAY_AUTH_MODE")
        if mode is None:
            problems.append(f"{what} leaves RAY_AUTH_MODE unset (Ray then guesses per process)")
        modes.add(mode)
        if "RAY_AUTH_TOKEN" in env:
            problems.append(f"{what}: a literal RAY_AUTH_TOKEN in the cluster file")
        if mode == "token":
            if "RAY_AUTH_TOKEN_PATH" not in env:
                problems.append(f"{what}: token auth without RAY_AUTH_TOKEN_PATH")
            else:
                paths.add(_norm(env["RAY_AUTH_TOKEN_PATH"]))
    if len(modes) > 1:
        problems.append(f"RAY_AUTH_MODE differs between commands: {sorted(map(str, modes))}")
    if len(paths) > 1:
        problems.append(f"RAY_AUTH_TOKEN_PATH differs between commands: {sorted(paths)}")
    mounted = {_norm(remote) for remote in (config.get("file_mounts") or {})}
    for path in paths - mounted:
        problems.append(f"token file {path} is not in file_mounts: the workers never get it")
    return problems


def test_cluster_yaml_passes_rays_schema_and_bootstrap():
    from ray.autoscaler._private.commands import _bootstrap_config
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(_config())
    validate_config(prepared)
    bootstrapped = _bootstrap_config(prepared, no_config_cache=True)
    assert bootstrapped["provider"]["head_ip"] == "10.0.0.10"
    head_start = " ".join(bootstrapped["head_start_ray_commands"])
    assert "rayborg --config" in head_start and " serve --address auto" in head_start and "rayborg-host=" in head_start
    assert "rayborg-host=" in " ".join(bootstrapped["worker_start_ray_commands"])


def test_every_rayborg_command_line_parses_with_the_real_cli():
    from rayborg.cli import build_parser

    config = _config()
    assert rayborg_problems(config) == []
    serves = [(key, argv) for key, _, argv in commands_of(config) if _is_rayborg(argv) and "serve" in argv]
    assert [key for key, _ in serves] == ["head_start_ray_commands"]  # only the head serves
    args = build_parser().parse_args(serves[0][1][1:])
    assert args.command == "serve" and args.ray_address == "auto" and args.host == "0.0.0.0"
    assert args.config and args.config.endswith("rayborg.toml")


def test_every_ray_start_command_line_parses_with_rays_cli():
    starts = [(key, argv) for key, _, argv in commands_of(_config(), START_LISTS) if _is_ray_start(argv)]
    assert {key for key, _ in starts} == set(START_LISTS)
    for key, argv in starts:
        params = _ray_start_context(argv).params
        assert params["labels"].startswith("rayborg-host="), key
        assert bool(params["head"]) == (key == "head_start_ray_commands")


def test_nodes_and_daemon_agree_about_token_auth():
    config = _config()
    assert auth_problems(config) == []
    modes = {env["RAY_AUTH_MODE"] for _, env, argv in commands_of(config, START_LISTS)
             if _is_ray_start(argv)}
    assert modes == {"token"}


def test_the_checks_catch_the_mistakes_they_are_for():
    config = _config()
    # A misspelt option of `serve`.
    broken = copy.deepcopy(config)
    broken["head_start_ray_commands"][-1] = ("nohup ~/rayborg-venv/bin/rayborg serve --adress auto --host 0.0.0.0 "
                                             "> ~/rayborg-serve.log 2>&1 &")
    assert len(rayborg_problems(broken)) == 1 and "exits 2" in rayborg_problems(broken)[0]
    # The token is never shipped: workers could not join a token-auth head.
    broken = copy.deepcopy(config)
    del broken["file_mounts"]["~/.ray/auth_token"]
    assert any("not in file_mounts" in p for p in auth_problems(broken))
    # A worker started without the auth settings.
    broken = copy.deepcopy(config)
    broken["worker_start_ray_commands"][-1] = "ray start --address=$RAY_HEAD_IP:6379 --labels=rayborg-host=x"
    assert any("worker_start_ray_commands: ray start leaves RAY_AUTH_MODE unset" in p for p in auth_problems(broken))
    # The daemon in another mode than the nodes.
    broken = copy.deepcopy(config)
    broken["head_start_ray_commands"][-1] = "RAY_AUTH_MODE=disabled rayborg serve --address auto"
    assert any("differs" in p for p in auth_problems(broken))
    with pytest.raises(Exception, match="(?i)no such option"):
        _ray_start_context(["ray", "start", "--adress=x:6379"])


VENV = "~/rayborg-venv"


def install_problems(config: dict) -> list[str]:
    """rayborg is installed into a virtualenv (PEP 668 systems refuse `pip install --user`), every
    `ray`/`rayborg`/`pip` the file runs is that venv's, and the copy of the checkout leaves out local
    virtualenvs and caches."""
    problems = []
    setup = [argv for _, _, argv in commands_of(config, ("setup_commands",))]
    if not any(argv[1:4] == ["-m", "venv", VENV] for argv in setup):
        problems.append(f"no `python3 -m venv {VENV}` in setup_commands")
    for key, _, argv in commands_of(config):
        name = Path(argv[0]).name
        if name in ("ray", "rayborg", "pip", "pip3") and not argv[0].startswith(VENV + "/bin/"):
            problems.append(f"{key}: {shlex.join(argv)!r} does not run the venv's {name}")
        if "--user" in argv and "install" in argv:
            problems.append(f"{key}: {shlex.join(argv)!r} installs with --user")
    if not any(name == "pip" and "install" in argv and "~/rayborg" in argv
               for argv in setup for name in [Path(argv[0]).name]):
        problems.append("setup_commands never installs the shipped checkout ~/rayborg")
    excluded = set(config.get("rsync_exclude") or [])
    for needed in (".venv", "**/__pycache__"):
        if needed not in excluded:
            problems.append(f"rsync_exclude misses {needed}: the copy would carry it to every node")
    return problems


def test_rayborg_is_installed_into_a_venv_and_the_copy_leaves_out_venvs_and_caches():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _config()
    assert install_problems(config) == []
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)  # rsync_exclude / rsync_filter are keys of Ray's schema
    assert ".gitignore" in prepared["rsync_filter"]
    broken = copy.deepcopy(config)
    broken["setup_commands"] = ["python3.11 -m pip install --user --upgrade ~/rayborg"]
    found = install_problems(broken)
    assert any("installs with --user" in p for p in found) and any("no `python3 -m venv" in p for p in found)
    broken = copy.deepcopy(config)
    broken["worker_start_ray_commands"][0] = "ray stop"
    assert any("does not run the venv's ray" in p for p in install_problems(broken))
    broken = copy.deepcopy(config)
    broken["rsync_exclude"].remove(".venv")
    assert install_problems(broken) == ["rsync_exclude misses .venv: the copy would carry it to every node"]


def test_the_daemons_config_file_is_shipped_and_named_by_serve():
    config = _config()
    serve = next(argv for _, _, argv in commands_of(config, START_LISTS) if _is_rayborg(argv) and "serve" in argv)
    named = serve[serve.index("--config") + 1]
    assert _norm(named) in {_norm(remote) for remote in config["file_mounts"]}


def test_shell_lines_split_into_simple_commands():
    line = "A=1 B='x y' nohup rayborg --config ~/c.toml serve --port 1 > ~/log 2>&1 & ray stop; echo $(hostname -s)"
    assert simple_commands(line) == [
        ({"A": "1", "B": "x y"}, ["rayborg", "--config", "~/c.toml", "serve", "--port", "1"]),
        ({}, ["ray", "stop"]), ({}, ["echo", "$(hostname", "-s)"])]


def test_schema_check_rejects_a_broken_file():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _config()
    config["worker_start_commands"] = config.pop("worker_start_ray_commands")
    with pytest.raises(Exception, match="Additional properties"):
        validate_config(prepare_config(config))
