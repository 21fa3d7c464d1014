"""External servers for tests: a real Keystone (shared/tools/run-keystone) with users and tokens, and
`rayborg serve` subprocesses (re-exported from serve_process)."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from serve_process import ServeProcess, free_port  # noqa: F401  (one place to import servers from)

REPO = Path(__file__).resolve().parent.parent
KEYSTONE_URL = "http://127.0.0.1:15000/v3"  # run-keystone's fixed address
PASSWORD = "secret"


def shared_tools() -> Path:
    env = os.environ.get("RAYBORG_SHARED")
    return Path(env) / "tools" if env else REPO.parent / "shared" / "tools"


class KeystoneUnavailable(RuntimeError):
    """Keystone could not be installed or started (e.g. no package index reachable)."""


@dataclass(frozen=True)
class User:
    name: str
    project: str
    domain: str = "default"


ADMIN = User("admin", "admin")
NOVA = User("nova", "service")      # roles service + admin in project `service`
CYBORG = User("cyborg", "service")  # the service user rayborg validates tokens with
MEMBER = User("rayborg-member", "rayborg-member-project")


class KeystoneServer:
    """Keystone 30 on 127.0.0.1:15000. Stops it at the end only if this object started it."""

    def __init__(self) -> None:
        self.work = Path(os.environ.get("KEYSTONE_WORK") or Path(os.environ.get("TMPDIR", "/tmp"))
                         / "rayborg-keystone")
        self.url = KEYSTONE_URL
        self._started_here = False

    def start(self, timeout: float = 900) -> KeystoneServer:
        self._started_here = not self._answers()
        try:
            subprocess.run(["bash", str(shared_tools() / "run-keystone")], check=True, capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log = self.work / "install.log"
            detail = log.read_text()[-2000:] if log.is_file() else ""
            raise KeystoneUnavailable(f"run-keystone failed: {exc}\n{getattr(exc, 'stderr', '')}\n{detail}") \
                from None
        if not self._answers():
            raise KeystoneUnavailable(f"Keystone does not answer at {self.url}")
        self.ensure_member_user()
        return self

    def stop(self) -> None:
        pid_file = self.work / "pid"
        if self._started_here and pid_file.is_file():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass

    def _answers(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(self.url, timeout=3) as resp:
                return resp.status == 200
        except OSError:
            return False

    def session(self, user: User = ADMIN, system_scope: bool = False):
        """A keystoneauth1 session authenticated as `user` (project-scoped unless `system_scope`)."""
        from keystoneauth1 import session as ks_session
        from keystoneauth1.identity import v3

        scope = ({"system_scope": "all"} if system_scope
                 else {"project_name": user.project, "project_domain_id": user.domain})
        auth = v3.Password(auth_url=self.url, username=user.name, password=PASSWORD,
                           user_domain_id=user.domain, **scope)
        return ks_session.Session(auth=auth, timeout=30)

    def token(self, user: User = ADMIN, system_scope: bool = False) -> str:
        return self.session(user, system_scope).get_token()

    def revoke(self, token: str) -> None:
        self.session().delete(f"{self.url}/auth/tokens", headers={"X-Subject-Token": token})

    def ensure_member_user(self) -> None:
        """MEMBER: a plain `member` of a project of its own (idempotent)."""
        admin = self.session()
        project_id = self._ensure(admin, "projects", MEMBER.project, {"domain_id": MEMBER.domain})
        user_id = self._ensure(admin, "users", MEMBER.name, {"domain_id": MEMBER.domain, "password": PASSWORD})
        roles = admin.get(f"{self.url}/roles", params={"name": "member"}).json()["roles"]
        admin.put(f"{self.url}/projects/{project_id}/users/{user_id}/roles/{roles[0]['id']}")

    def _ensure(self, admin, collection: str, name: str, fields: dict) -> str:
        found = admin.get(f"{self.url}/{collection}", params={"name": name}).json()[collection]
        if found:
            return found[0]["id"]
        body = {collection[:-1]: {"name": name, **fields}}
        return admin.post(f"{self.url}/{collection}", json=body).json()[collection[:-1]]["id"]
