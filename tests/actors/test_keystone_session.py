"""actors/keystone_session.py: the service user's session authenticates with a v3 password as the
settings name it (domains default to `default`), with the timeout asked for; nothing is sent yet."""

from keystoneauth1.identity import v3

from rayborg.actors.keystone_session import service_session


def test_the_session_carries_the_service_users_password_auth():
    s = service_session({"auth_url": "http://keystone:5000/v3", "username": "rayborg", "password": "pw",
                         "project_name": "service", "project_domain_id": "pd"}, timeout=3)
    assert isinstance(s.auth, v3.Password) and s.timeout == 3
    assert s.auth.auth_url == "http://keystone:5000/v3" and s.auth.project_name == "service"
    assert s.auth.project_domain_id == "pd"
    [method] = s.auth.auth_methods
    assert (method.username, method.password, method.user_domain_id) == ("rayborg", "pw", "default")
