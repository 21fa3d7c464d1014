"""Who is calling: the identity a request carries after authentication."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PROJECT_ID = "00000000000000000000000000000000"  # noauth callers without identity headers


# Keystone's default role hierarchy: a token carries the implied roles too.
IMPLIED_ROLES = {"admin": {"manager", "member", "reader"}, "manager": {"member", "reader"},
                 "member": {"reader"}}


def with_implied(roles: frozenset[str]) -> frozenset[str]:
    out = set(roles)
    for role in roles:
        out |= IMPLIED_ROLES.get(role, set())
    return frozenset(out)


@dataclass(frozen=True)
class RequestContext:
    user_id: str | None
    project_id: str | None
    roles: frozenset[str] = field(default_factory=frozenset)
    # Roles carried by a service token (X-Service-Roles); Nova sends one with every bind.
    service_roles: frozenset[str] = field(default_factory=frozenset)
    is_service: bool = False
    auth_token: str | None = None
    # "all" for a system-scoped token (Keystone's only system scope); then project_id is None.
    system_scope: str | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def policy_creds(self) -> dict:
        return {"user_id": self.user_id, "project_id": self.project_id, "roles": sorted(self.roles),
                "is_admin": self.is_admin, "service_roles": sorted(self.service_roles),
                "system_scope": self.system_scope}

    def policy_target(self) -> dict:
        # Cyborg checks against the caller's own project; isolation happens in the queries.
        return {"project_id": self.project_id, "user_id": self.user_id}
