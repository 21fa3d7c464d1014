"""External servers for tests: a real Keystone (tests/service_starters.py) with users and tokens, and
`rayborg serve` subprocesses (re-exported from serve_process)."""

from __future__ import annotations

from dataclasses import dataclass

from service_starters import PASSWORD, Keystone, ServiceUnavailable  # noqa: F401  (PASSWORD re-exported)
from serve_process import ServeProcess, free_port  # noqa: F401  (one place to import servers from)

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
    """A real Keystone on a free loopback port (tests/service_starters.py), stopped by `stop`."""

    def __init__(self) -> None:
        self._service = Keystone()
        self.url = self._service.auth_url

    def start(self) -> KeystoneServer:
        try:
            self._service.start()
        except ServiceUnavailable as exc:
            raise KeystoneUnavailable(str(exc)) from None
        self.ensure_member_user()
        return self

    def stop(self) -> None:
        self._service.stop()

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

    def ensure_persona(self, user: User, role: str, system: bool = False) -> User:
        """`user` with `role` on its project, or on the system scope when `system` (idempotent)."""
        admin = self.session()
        user_id = self._ensure(admin, "users", user.name, {"domain_id": user.domain, "password": PASSWORD})
        role_id = self._ensure(admin, "roles", role, {})
        if system:
            admin.put(f"{self.url}/system/users/{user_id}/roles/{role_id}")
        else:
            project_id = self._ensure(admin, "projects", user.project, {"domain_id": user.domain})
            admin.put(f"{self.url}/projects/{project_id}/users/{user_id}/roles/{role_id}")
        return user

    def _ensure(self, admin, collection: str, name: str, fields: dict) -> str:
        found = admin.get(f"{self.url}/{collection}", params={"name": name}).json()[collection]
        if found:
            return found[0]["id"]
        body = {collection[:-1]: {"name": name, **fields}}
        return admin.post(f"{self.url}/{collection}", json=body).json()[collection[:-1]]["id"]
