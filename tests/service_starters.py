"""The real OpenStack services the tests and benchmarks run against, started from this repository alone.

Placement (`openstack-placement`) and Keystone (`keystone`) come from PyPI into virtualenvs of their own,
cached between runs (`$RAYBORG_SERVICE_CACHE`, default `~/.cache/rayborg/services`): the first run installs
them (a minute or two), later runs start in seconds. Each server runs under gunicorn on a loopback port
with its own SQLite database in a fresh working directory, in a session of its own so that `stop` ends
it and every worker it forked, by pid, and nothing else.

    python tests/service_starters.py placement [PORT]    # run one in the foreground (Ctrl-C stops it)
    python tests/service_starters.py keystone [PORT]
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

PLACEMENT_REQUIREMENTS = ["openstack-placement==16.0.0", "gunicorn"]
KEYSTONE_REQUIREMENTS = ["keystone==30.0.0", "gunicorn"]
INSTALL_TIMEOUT_S = 900
START_TIMEOUT_S = 60
PASSWORD = "secret"            # every Keystone user the starter makes
SERVICE_USERS = ("cyborg", "nova")
DEFAULT_PLACEMENT_URL = "http://127.0.0.1:18778"  # the catalog's Placement when none is named


class ServiceUnavailable(RuntimeError):
    """A service could not be installed or did not come up; the message says why and where its log is."""


def cache_dir() -> Path:
    return Path(os.environ.get("RAYBORG_SERVICE_CACHE") or Path.home() / ".cache" / "rayborg" / "services")


def service_venv(name: str, requirements: list[str]) -> Path:
    """A virtualenv holding `requirements`, made once per requirement set and reused (a file lock lets
    concurrent test workers wait for one install instead of racing)."""
    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]
    venv = cache_dir() / f"{name}-{digest}"
    done = venv / ".installed"
    if done.is_file():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{name}-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():
            return venv
        shutil.rmtree(venv, ignore_errors=True)  # a half-made one from an interrupted install
        log = venv.parent / f"{name}-{digest}.install.log"
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True,
                           timeout=120)
            with open(log, "w") as out:
                subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                                *requirements], check=True, stdout=out, stderr=subprocess.STDOUT,
                               timeout=INSTALL_TIMEOUT_S)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            tail = log.read_text()[-2000:] if log.is_file() else ""
            raise ServiceUnavailable(f"installing {' '.join(requirements)} failed ({exc}); {log}:\n{tail}") \
                from None
        done.write_text("\n".join(requirements) + "\n")
    return venv


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except (OSError, urllib.error.URLError):
        return None


class GunicornService:
    """One gunicorn master (one sync worker: SQLite serves one writer at a time, and a single worker
    answers Placement's real 409s instead of 'database is locked' 500s) in a session of its own."""

    name = "service"

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        # `host`: the address to listen on; another than loopback for clients in network namespaces
        # (tests/cluster/netns.py: the root namespace's bridge address).
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.work = Path(tempfile.mkdtemp(prefix=f"rayborg-{self.name}-"))
        self.proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.work / f"{self.name}.log"

    def _spawn(self, venv: Path, app: str, env: dict[str, str]) -> None:
        if _get(self.url + "/") is not None:
            raise ServiceUnavailable(f"port {self.port} already answers (not ours): pick another port")
        cmd = [str(venv / "bin" / "gunicorn"), "--bind", f"{self.host}:{self.port}", "--workers", "1",
               "--worker-class", "sync", "--timeout", "120", "--chdir", str(self.work), app]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, **env}, start_new_session=True)

    def _wait(self, path: str, marker: bytes) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServiceUnavailable(f"{self.name} exited during start; {self.log_path}:\n{self._log_tail()}")
            body = _get(self.url + path)
            if body is not None and marker in body:
                return
            time.sleep(0.25)
        self.stop()
        raise ServiceUnavailable(f"{self.name} did not answer on {self.url} within {START_TIMEOUT_S} s; "
                                 f"{self.log_path}:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.is_file() else ""

    def stop(self) -> None:
        """End the gunicorn master and its workers (its whole session), nothing else."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # workers left behind by a master that died first
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Placement(GunicornService):
    """OpenStack Placement with noauth2: the token `admin` is an admin, any other a plain user."""

    name = "placement"

    def start(self, keep_db: bool = False) -> Placement:
        venv = service_venv("placement", PLACEMENT_REQUIREMENTS)
        self.stop()
        db = self.work / "placement.db"
        if not keep_db:
            db.unlink(missing_ok=True)
        (self.work / "placement.conf").write_text(
            "[DEFAULT]\ndebug = false\n[api]\nauth_strategy = noauth2\n"
            f"[placement_database]\nconnection = sqlite:///{db}\n")
        subprocess.run([str(venv / "bin" / "placement-manage"), "--config-dir", str(self.work), "db", "sync"],
                       check=True, capture_output=True, timeout=120)
        # placement.wsgi reads its configuration directory at import
        self._spawn(venv, "placement.wsgi.api:application", {"OS_PLACEMENT_CONFIG_DIR": str(self.work)})
        self._wait("/", b'"max_version"')
        return self


class Keystone(GunicornService):
    """Keystone (SQLite, fernet tokens) bootstrapped with admin/secret in project `admin`, the service
    users `cyborg` and `nova` (roles service and admin in project `service`; cyborg also reader on the
    system scope, as oslo.limit needs) and a catalog entry for Placement."""

    name = "keystone"

    def __init__(self, port: int | None = None, placement_url: str = DEFAULT_PLACEMENT_URL,
                 host: str = "127.0.0.1") -> None:
        super().__init__(port, host)
        self.placement_url = placement_url
        self.auth_url = f"{self.url}/v3"

    def start(self) -> Keystone:
        venv = service_venv("keystone", KEYSTONE_REQUIREMENTS)
        self.stop()
        etc = self.work / "etc"
        for sub in ("etc", "fernet", "credential"):
            (self.work / sub).mkdir(exist_ok=True)
        conf = etc / "keystone.conf"
        conf.write_text(f"[database]\nconnection = sqlite:///{self.work / 'keystone.db'}\n"
                        f"[token]\nprovider = fernet\n[fernet_tokens]\nkey_repository = {self.work / 'fernet'}\n"
                        f"[credential]\nkey_repository = {self.work / 'credential'}\n")
        manage = [str(venv / "bin" / "keystone-manage"), "--config-file", str(conf)]
        owner = ["--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid())]
        for step in (["db_sync"], ["fernet_setup", *owner], ["credential_setup", *owner],
                     ["bootstrap", "--bootstrap-password", PASSWORD, "--bootstrap-public-url", self.auth_url,
                      "--bootstrap-region-id", "RegionOne"]):
            out = subprocess.run(manage + step, capture_output=True, text=True, timeout=300)
            if out.returncode != 0:
                raise ServiceUnavailable(f"keystone-manage {step[0]} failed:\n{out.stderr[-2000:]}")
        # keystone's WSGI entry point parses sys.argv at import: give it a clean one
        (self.work / "ks_wsgi.py").write_text(
            "import sys\nsys.argv = ['keystone']\nfrom keystone.wsgi.api import application  # noqa: F401\n")
        self._spawn(venv, "ks_wsgi:application", {"OS_KEYSTONE_CONFIG_DIR": str(etc)})
        self._wait("/v3", b'"version"')
        self._provision()
        return self

    def _provision(self) -> None:
        """The projects, users, role assignments and catalog the tests expect, through Keystone's API."""
        api = _KeystoneAdmin(self.auth_url)
        service_project = api.ensure("projects", "service", {"domain_id": "default"})
        roles = {name: api.ensure("roles", name, {}) for name in ("service", "admin", "reader")}
        for user in SERVICE_USERS:
            user_id = api.ensure("users", user, {"domain_id": "default", "password": PASSWORD})
            for role in ("service", "admin"):
                api.put(f"/projects/{service_project}/users/{user_id}/roles/{roles[role]}")
            if user == "cyborg":  # oslo.limit reads unified limits with a system-scoped token
                api.put(f"/system/users/{user_id}/roles/{roles['reader']}")
        placement = api.ensure("services", "placement", {"type": "placement"})
        api.post("/endpoints", {"endpoint": {"service_id": placement, "interface": "public",
                                             "region_id": "RegionOne", "url": self.placement_url}})


class _KeystoneAdmin:
    """Just enough of Keystone's v3 API, as admin, to provision a test deployment."""

    def __init__(self, auth_url: str) -> None:
        self.auth_url = auth_url
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": PASSWORD}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
        with self._open("POST", "/auth/tokens", body, token=None) as resp:
            self.token = resp.headers["X-Subject-Token"]

    def _open(self, method: str, path: str, body: dict | None = None, token: str | None = ""):
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["X-Auth-Token"] = token or self.token
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.auth_url + path, data=data, method=method, headers=headers)
        return urllib.request.urlopen(request, timeout=30)

    def get(self, path: str) -> dict:
        with self._open("GET", path) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: dict) -> dict:
        with self._open("POST", path, body) as resp:
            return json.loads(resp.read())

    def put(self, path: str) -> None:
        self._open("PUT", path).close()

    def ensure(self, collection: str, name: str, fields: dict) -> str:
        """The id of the `collection` member called `name`, made when missing."""
        found = self.get(f"/{collection}?name={name}")[collection]
        if found:
            return found[0]["id"]
        return self.post(f"/{collection}", {collection[:-1]: {"name": name, **fields}})[collection[:-1]]["id"]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("placement", "keystone"):
        print(__doc__, file=sys.stderr)
        return 2
    port = int(argv[1]) if len(argv) > 1 else None
    service = Placement(port) if argv[0] == "placement" else Keystone(port)
    service.start()
    print(getattr(service, "auth_url", service.url), flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main(sys.argv[1:]))
