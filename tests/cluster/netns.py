"""Ray hosts with their own addresses on one machine: a head and workers, each in a Linux network
namespace of its own with its own IP on a bridge this harness makes, started with the start commands
of `ray_cluster.yaml`, each with its own sysfs tree and hostname.

What a host is made of, and how it stands in for a real machine:

- a network namespace `rbn<tag>-<i>` with a veth `rbv<tag>h<i>` on the bridge `rbb<tag>` (a random tag
  and subnet 10.A.B.0/24, both checked unused; the root namespace has 10.A.B.1 on the bridge, host i has
  10.A.B.(10+i)). Nothing is routed beyond the bridge: traffic stays between these namespaces and
  the bridge address, where the test's own Placement listens.
- a UTS namespace (`unshare --uts`) whose hostname is the host's name, so that the YAML's
  `--labels="rayborg-host=$(hostname -s)"` names it as on a real host.
- a HOME of its own, laid out as `ray up` leaves a node: `~/rayborg` (the file_mounts' copy of this
  checkout, less the YAML's rsync_exclude and what .gitignore leaves out), `~/.ray/auth_token` (the
  file_mounts' Ray token: token auth stays on, as the YAML runs it), on the head
  `~/.config/rayborg/rayborg.toml` (the daemon's config file the YAML ships), and `~/rayborg-venv`
  made by the YAML's own setup_commands (`yaml_setup_lines`), run in the host. The hosts have no
  route to PyPI, so those lines run with these changes only: `python3` is this test's interpreter (the
  Python the dependencies below were built for); after the line that makes the venv, the harness
  gives it this test's installed packages (a .pth naming this test's site-packages, and a `ray`
  console script of the venv's own, as pip would write it); `pip install` gets `--no-deps --no-index
  --find-links=<wheelhouse>` (setuptools and wheel to build rayborg with, downloaded once into
  ~/.cache/rayborg/wheelhouse). rayborg itself is built from `~/rayborg` and installed into the venv as
  a regular (not editable) package: the hosts run that copy, as real hosts do.
- a sysfs fixture tree bind-mounted, inside the host's own mount namespace (`ip netns exec` makes
  one per command), on one common path `<work>/sys` that the daemon's `sysfs_root` names: every
  HostAgent reads the same path and sees its own host's devices, as every real host reads /sys.

The YAML's command lines run under bash in that host with these changes only (`yaml_start_lines`):
`ray stop` is dropped (it would end every Ray on this machine; `stop_host` ends the host's own
processes by pid instead), `--autoscaling-config` is dropped (the local provider's autoscaler would
ssh to the YAML's worker_ips), `ray start` gets `--node-ip-address` (no default route in a namespace
to guess it from), a `--temp-dir` of the host's own, a small object store and no dashboard, and
`serve --address auto` names the head's address (`auto` could find another Ray on this machine).
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "ray_cluster.yaml"
GCS_PORT = 6379
SERVE_PORT = 6666  # serve's default: the YAML's serve line names no port
OBJECT_STORE_BYTES = 80 * 1024**2
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class NetnsError(RuntimeError):
    pass


def _run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NetnsError(f"{shlex.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def unavailable() -> str | None:
    """Why hosts in network namespaces cannot be made here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root (ip netns, a bridge, unshare --uts, mount --bind)"
    for tool in ("ip", "unshare", "mount", "bash"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"rbprobe{secrets.token_hex(3)}"
    try:
        _run("ip", "netns", "add", probe)
        _run("ip", "netns", "exec", probe, "unshare", "--uts", "--", "hostname", "probe")
    except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot make a network namespace with its own hostname here: {exc}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


def _subnet() -> ipaddress.IPv4Network:
    """A random /24 of 10.40.0.0-10.239.255.0 that no interface or route here uses yet."""
    used = _run("ip", "-4", "route", "show", "table", "all").stdout + _run("ip", "-4", "addr").stdout
    for _ in range(256):
        n = secrets.randbelow(200 * 256)
        prefix = f"10.{40 + n // 256}.{n % 256}."
        if prefix not in used:
            return ipaddress.IPv4Network(f"{prefix}0/24")
    raise NetnsError("no free 10.x.y.0/24 subnet")


def _tag() -> str:
    """A name part of this run's own: random (pids repeat across containers sharing the kernel's
    network namespace), and not in use by any link, namespace or /tmp directory here."""
    links = _run("ip", "-o", "link").stdout
    spaces = _run("ip", "netns", "list").stdout
    for _ in range(100):
        tag = secrets.token_hex(3)
        if tag not in links and tag not in spaces and not Path(f"/tmp/rbn{tag}").exists():
            return tag
    raise NetnsError("no free name for the bridge and namespaces")


WHEELHOUSE = Path.home() / ".cache" / "rayborg" / "wheelhouse"
BUILD_REQUIREMENTS = ("setuptools>=68", "wheel")


def yaml_setup_lines(*, python: str, wheelhouse: str) -> list[str]:
    """`ray_cluster.yaml`'s setup_commands as this harness runs them (see the module docstring):
    `python3` is `python`, and `pip install` installs offline from `wheelhouse`. Raises when the YAML
    no longer makes the venv or installs the checkout, so that a changed YAML is noticed here."""
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    lines = []
    for line in config["setup_commands"]:
        line = re.sub(r"(?<![\w/.~-])python3(?=\s)", python, " ".join(line.split()))
        line, n = re.subn(r"(/pip install)\b", rf"\1 --no-deps --no-index --find-links={wheelhouse}", line)
        lines.append(line)
    if not any(re.search(r"\s-m venv\s+~/rayborg-venv\b", line) for line in lines):
        raise NetnsError(f"{CLUSTER_YAML}'s setup_commands make no ~/rayborg-venv")
    if not any(re.search(r"~/rayborg-venv/bin/pip install .*~/rayborg\b", line) for line in lines):
        raise NetnsError(f"{CLUSTER_YAML}'s setup_commands do not install ~/rayborg into ~/rayborg-venv")
    return lines


def wheelhouse() -> Path:
    """setuptools and wheel for building rayborg offline in the hosts, downloaded once (cached)."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    if not any(WHEELHOUSE.glob("setuptools-*.whl")) or not any(WHEELHOUSE.glob("wheel-*.whl")):
        _run(sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest",
             str(WHEELHOUSE), *BUILD_REQUIREMENTS, timeout=300)
    return WHEELHOUSE


def copy_checkout(dest: Path) -> int:
    """The YAML's file_mounts `~/rayborg: .`: this checkout less rsync_exclude and what .gitignore
    (rsync_filter) leaves out. Returns the number of files copied."""
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    excludes = [p.rstrip("/") for p in config.get("rsync_exclude", [])]
    listed = _run("git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    copied = 0
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if not src.is_file() or _excluded(rel, excludes):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
        copied += 1
    return copied


def _excluded(rel: str, patterns: list[str]) -> bool:
    """rsync's exclude rules for these patterns: `a/b` anchored at the top, `**/x` and `x` anywhere."""
    from fnmatch import fnmatch

    parts = rel.split("/")
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        if "/" in bare:  # anchored: a leading path of rel
            if any(fnmatch("/".join(parts[:i]), bare) for i in range(1, len(parts) + 1)):
                return True
        elif any(fnmatch(part, bare) for part in parts):
            return True
    return False


def yaml_start_lines(kind: str, *, node_ip: str, temp_dir: str, head_address: str) -> list[str]:
    """`ray_cluster.yaml`'s `<kind>_start_ray_commands` as this harness runs them (see the module
    docstring for each change). Raises when the YAML no longer has what the changes expect, so that
    a changed YAML is noticed here rather than silently run differently."""
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    lines = []
    for line in config[f"{kind}_start_ray_commands"]:
        line = " ".join(line.split())
        if re.fullmatch(r"\S*/ray stop", line):
            continue
        if re.search(r"/ray start\b", line):
            line, n = re.subn(r"\s--autoscaling-config=\S+", "", line)
            if kind == "head" and n != 1:
                raise NetnsError(f"the head's ray start names no --autoscaling-config: {line!r}")
            extra = f"--node-ip-address={node_ip} --temp-dir={temp_dir} --object-store-memory={OBJECT_STORE_BYTES}"
            if kind == "head":
                extra += " --include-dashboard=false"
            line = re.sub(r"(/ray start)\b", rf"\1 {extra}", line, count=1)
        elif re.search(r"/rayborg\b.*\sserve\s", line):
            line, n = re.subn(r"(\sserve\s.*--address[ =])auto\b", rf"\g<1>{head_address}", line)
            if n != 1:
                raise NetnsError(f"the head's serve line has no `--address auto`: {line!r}")
        lines.append(line)
    return lines


@dataclass
class Host:
    name: str
    index: int
    ns: str
    veth: str
    ip: str
    home: Path
    temp_dir: Path
    tree: Path | None
    head: bool = False
    started: list[float] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "head" if self.head else "worker"


class NetnsCluster:
    """A Ray head and workers, each a host in a network namespace of its own (see the module docstring).

    `trees` maps host names to sysfs trees (or None: no devices), the first one being the head's.
    Everything it makes is removed by `close()`, also at interpreter exit if nobody called it."""

    def __init__(self, work: Path, trees: dict[str, Path | None], config: dict[str, object]):
        self.work = Path(work)
        self.tag = _tag()
        self.net = _subnet()
        self.bridge = f"rbb{self.tag}"[:15]
        self.bridge_ip = str(self.net[1])
        self.sysfs = self.work / "sys"  # the common sysfs_root; each host mounts its tree here
        self.token = secrets.token_hex(32)
        self.config = config
        # Unix socket paths under Ray's temp dir must stay short: not under pytest's tmp_path.
        self.short = Path(f"/tmp/rbn{self.tag}")
        self.hosts: dict[str, Host] = {}
        for i, (name, tree) in enumerate(trees.items()):
            self.hosts[name] = Host(name=name, index=i, ns=f"rbn{self.tag}-{i}", veth=f"rbv{self.tag}h{i}"[:15],
                                    ip=str(self.net[10 + i]), home=self.work / "home" / name,
                                    temp_dir=self.short / str(i), tree=tree, head=(i == 0))
        self.head = next(iter(self.hosts.values()))
        self.head_address = f"{self.head.ip}:{GCS_PORT}"
        self.serve_url = f"http://{self.head.ip}:{SERVE_PORT}"
        self._made: list[tuple[str, ...]] = []  # undo commands, run in reverse
        self._closed = False
        atexit.register(self.close)

    # -- network ---------------------------------------------------------------------------------
    def create(self) -> NetnsCluster:
        self.sysfs.mkdir(parents=True, exist_ok=True)
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self._made.append(("ip", "link", "del", self.bridge))
        _run("ip", "addr", "add", f"{self.bridge_ip}/{self.net.prefixlen}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for host in self.hosts.values():
            _run("ip", "netns", "add", host.ns)
            self._made.append(("ip", "netns", "del", host.ns))
            _run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.ns)
            _run("ip", "link", "set", host.veth, "master", self.bridge, "up")
            _run("ip", "-n", host.ns, "addr", "add", f"{host.ip}/{self.net.prefixlen}", "dev", "eth0")
            _run("ip", "-n", host.ns, "link", "set", "eth0", "up")
            _run("ip", "-n", host.ns, "link", "set", "lo", "up")
            self._make_home(host)
        self.write_config()
        self.setup_hosts()
        return self

    def setup_hosts(self, timeout: float = 300) -> None:
        """The YAML's setup_commands in every host at once (`yaml_setup_lines`); the venv each makes
        gets this test's installed packages right after it is made (see the module docstring)."""
        from concurrent.futures import ThreadPoolExecutor

        lines = yaml_setup_lines(python=sys._base_executable, wheelhouse=str(wheelhouse()))
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            for done in [pool.submit(self._setup_host, host, lines, timeout) for host in self.hosts.values()]:
                done.result()

    def _setup_host(self, host: Host, lines: list[str], timeout: float) -> None:
        log = self.work / f"{host.name}-setup.log"
        for line in lines:
            self.run(host.name, line, timeout=timeout, log=log)
            if re.search(r"\s-m venv\s", line):
                _give_dependencies(host.home / "rayborg-venv")

    def _make_home(self, host: Host) -> None:
        """What `ray up` leaves on a node: the venv, the Ray token, on the head the daemon's config."""
        host.home.mkdir(parents=True, exist_ok=True)
        copy_checkout(host.home / "rayborg")
        (host.home / ".ray").mkdir(exist_ok=True)
        (host.home / ".ray" / "auth_token").write_text(self.token)
        (host.home / ".ray" / "auth_token").chmod(0o600)
        host.temp_dir.mkdir(parents=True, exist_ok=True)

    def write_config(self, **changes: object) -> Path:
        """The daemon's config file the YAML ships to the head (`self.config` with `changes`)."""
        self.config.update(changes)
        conf = self.head.home / ".config" / "rayborg" / "rayborg.toml"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(_toml_document(self.config))
        return conf

    # -- running things in a host ----------------------------------------------------------------
    def env(self, host: Host) -> dict[str, str]:
        """A clean environment, as a login on that host would have (nothing of this test's RAY_*)."""
        return {"PATH": PATH, "HOME": str(host.home), "LANG": "C.UTF-8", "RAY_HEAD_IP": self.head.ip,
                "TMPDIR": str(host.temp_dir)}

    def host_argv(self, host: Host, script: str) -> list[str]:
        """argv running bash `script` in `host`: its network and UTS namespaces and a mount namespace
        of its own with the host's sysfs tree on the common sysfs path."""
        prologue = f"cd ~ && hostname {shlex.quote(host.name)}"  # in HOME, as a login (not this checkout)
        if host.tree is not None:
            prologue += f" && mount --bind {shlex.quote(str(host.tree))} {shlex.quote(str(self.sysfs))}"
        return ["ip", "netns", "exec", host.ns, "unshare", "--uts", "--", "bash", "-c",
                f"set -e; {prologue}; {script}"]

    def run(self, name: str, script: str, timeout: float = 120, log: Path | None = None) -> str:
        host = self.hosts[name]
        out = open(log, "ab") if log else subprocess.PIPE
        try:
            proc = subprocess.run(self.host_argv(host, script), env=self.env(host), stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout)
        finally:
            if log:
                out.close()
        text = proc.stdout.decode(errors="replace") if proc.stdout else (log.read_text(errors="replace")[-4000:]
                                                                          if log else "")
        if proc.returncode != 0:
            raise NetnsError(f"{name}: `{script[:200]}` exited {proc.returncode}:\n{text[-4000:]}")
        return text

    def start_lines(self, name: str) -> list[str]:
        host = self.hosts[name]
        return yaml_start_lines(host.kind, node_ip=host.ip, temp_dir=str(host.temp_dir),
                                head_address=self.head_address)

    def start_host(self, name: str, timeout: float = 120) -> float:
        """Run the YAML's start commands of the host (the head: `ray start --head` only; `start_serve`
        runs its serve line). Returns the seconds it took."""
        host = self.hosts[name]
        lines = [line for line in self.start_lines(name) if "/ray start" in line]
        assert lines, f"no ray start line for {host.kind} in {CLUSTER_YAML}"
        started = time.monotonic()
        self.run(name, " && ".join(lines), timeout=timeout, log=self.work / f"{name}-start.log")
        if host.head:
            wait_for(lambda: _port_open(host.ip, GCS_PORT), timeout, what=f"the head's GCS on {self.head_address}")
        host.started.append(time.monotonic())
        return time.monotonic() - started

    def serve_line(self) -> str:
        (line,) = [line for line in self.start_lines(self.head.name) if "/rayborg" in line and " serve" in line]
        return line

    def start_serve(self, timeout: float = 120) -> float:
        """The YAML's `nohup rayborg ... serve ... &` line on the head; waits until the API answers."""
        import urllib.request

        started = time.monotonic()
        self.run(self.head.name, self.serve_line(), timeout=30)

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"{self.serve_url}/v2", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                if not self.serve_pids():
                    raise NetnsError(f"rayborg serve exited:\n{self.serve_log()[-4000:]}") from None
                return False

        wait_for(answers, timeout, what=f"rayborg serve on {self.serve_url}", detail=lambda: self.serve_log()[-3000:])
        return time.monotonic() - started

    def serve_log(self) -> str:
        path = self.head.home / "rayborg-serve.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def serve_pids(self) -> list[int]:
        return [pid for pid in self.pids(self.head.name)
                if (argv := _cmdline(pid)) and any(Path(a).name == "rayborg" for a in argv[:2]) and "serve" in argv]

    def stop_serve(self, timeout: float = 60) -> None:
        """SIGTERM to serve, as systemd or an operator would stop it; SIGKILL if it hangs."""
        pids = self.serve_pids()
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        try:
            wait_for(lambda: not self.serve_pids(), timeout, what="rayborg serve to exit")
        finally:
            for pid in self.serve_pids():
                _signal(pid, signal.SIGKILL)

    # -- processes ---------------------------------------------------------------------------------
    def pids(self, name: str) -> list[int]:
        out = _run("ip", "netns", "pids", self.hosts[name].ns, check=False).stdout
        return [int(p) for p in out.split()]

    def raylet_pid(self, name: str) -> int | None:
        for pid in self.pids(name):
            argv = _cmdline(pid)
            if argv and Path(argv[0]).name == "raylet":
                return pid
        return None

    def kill_raylet(self, name: str) -> float:
        """SIGKILL the host's raylet (the host's Ray is gone; its other processes notice in time).
        Returns the monotonic time of the kill."""
        pid = self.raylet_pid(name)
        if pid is None:
            raise NetnsError(f"{name}: no raylet running")
        os.kill(pid, signal.SIGKILL)
        return time.monotonic()

    def partition(self, name: str) -> float:
        """Take the host's link to the bridge down: it stops answering, as a host that lost power or
        its network does (nothing is told to close). Returns the monotonic time of the cut."""
        _run("ip", "link", "set", self.hosts[name].veth, "down")
        return time.monotonic()

    def heal(self, name: str) -> None:
        _run("ip", "link", "set", self.hosts[name].veth, "up")

    def stop_host(self, name: str, timeout: float = 20) -> None:
        """What `ray stop` does on a real host, for this host's processes only (by pid)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids(name):
                _signal(pid, sig)
            try:
                wait_for(lambda: not self.pids(name), timeout / 2, what=f"{name}'s processes to exit")
                return
            except AssertionError:
                if sig == signal.SIGKILL:
                    raise

    def ray_script(self, code: str, timeout: float = 90) -> str:
        """Run Python `code` as a Ray driver in the head (ray.init to the head's address, with the
        YAML's auth environment); returns its stdout."""
        head = self.head
        script = (f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=~/.ray/auth_token RAY_USAGE_STATS_ENABLED=0 "
                  f"~/rayborg-venv/bin/python -c {shlex.quote(code)}")
        return self.run(head.name, script, timeout=timeout)

    def ray_nodes(self) -> list[dict]:
        """Ray's view of the cluster from the head: each node's address, labels and liveness."""
        import json

        out = self.ray_script(
            "import json, ray\n"
            f"ray.init(address={self.head_address!r}, log_to_driver=False, logging_level='ERROR')\n"
            "print('NODES', json.dumps([{k: n[k] for k in ('NodeID', 'NodeManagerAddress', "
            "'NodeManagerHostname', 'Labels', 'Alive')} for n in ray.nodes()]))\n")
        (line,) = [line for line in out.splitlines() if line.startswith("NODES ")]
        return json.loads(line[6:])

    # -- the end -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every process of every host (by pid), remove the namespaces, veths and bridge."""
        if self._closed:
            return
        self._closed = True
        for name in self.hosts:
            try:
                self.stop_host(name)
            except Exception:  # noqa: BLE001 - remove the rest anyway
                pass
        for undo in reversed(self._made):
            _run(*undo, check=False)
        shutil.rmtree(self.short, ignore_errors=True)
        atexit.unregister(self.close)


def _give_dependencies(venv: Path) -> None:
    """This test's installed packages for a venv the YAML made: a .pth naming this test's
    site-packages (after the venv's own, so the rayborg installed into the venv is the one imported:
    the .pth files of the named directory, such as this checkout's editable install, are not read),
    and the `ray` console script, written for the venv's interpreter as pip would write it."""
    import sysconfig
    from importlib.metadata import entry_points

    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (venv / "lib" / version / "site-packages" / "rayborg_test_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    (ray,) = [ep for ep in entry_points(group="console_scripts", name="ray")]
    module, func = ray.value.split(":")
    script = venv / "bin" / "ray"
    script.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {module} import {func}\n"
                      f"sys.exit({func}())\n")
    script.chmod(0o755)


def _toml_document(config: dict[str, object], prefix: str = "") -> str:
    """Keys first, then each table (`[driver_options.intel_fpga]`), as the config file has them."""
    text = "".join(f"{k} = {_toml(v)}\n" for k, v in config.items() if not isinstance(v, dict))
    for key, table in config.items():
        if isinstance(table, dict):
            name = f"{prefix}{key}"
            if any(not isinstance(v, dict) for v in table.values()):
                text += f"[{name}]\n"
            text += _toml_document(table, f"{name}.")
    return text


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


