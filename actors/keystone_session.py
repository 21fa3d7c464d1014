"""keystoneauth1 sessions for the service user that talks to Placement, Nova and Glance."""

from __future__ import annotations

from typing import Any

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3


def service_session(options: dict[str, Any], timeout: float = 10.0) -> ks_session.Session:
    auth = v3.Password(auth_url=options["auth_url"], username=options["username"],
                       password=options["password"], project_name=options.get("project_name"),
                       user_domain_id=options.get("user_domain_id", "default"),
                       project_domain_id=options.get("project_domain_id", "default"))
    return ks_session.Session(auth=auth, timeout=timeout)
