"""`rayborg serve --auth-strategy keystone` as a subprocess, used by openstacksdk with real Keystone
passwords: the whole path from a client's token to policy, as deployed."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from servers import ADMIN, CYBORG, MEMBER, PASSWORD, ServeProcess

# The first test also installs and starts Keystone (session fixture): allow for a slow package index.
pytestmark = [pytest.mark.xdist_group("keystone"), pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def served(keystone, tmp_path_factory):
    env = {"RAYBORG_KEYSTONE__AUTH_URL": keystone.url, "RAYBORG_KEYSTONE__USERNAME": CYBORG.name,
           "RAYBORG_KEYSTONE__PASSWORD": PASSWORD, "RAYBORG_KEYSTONE__PROJECT_NAME": CYBORG.project}
    server = ServeProcess(tmp_path_factory.mktemp("serve-ks"), "--no-actors", "--auth-strategy", "keystone",
                          env=env).start()
    yield server
    assert server.stop() == 0, server.log.read_text()


def connect(keystone, served, user):
    import openstack

    return openstack.connect(auth_url=keystone.url, username=user.name, password=PASSWORD,
                             project_name=user.project, user_domain_id="default", project_domain_id="default",
                             accelerator_endpoint_override=f"{served.url}/v2")


def test_sdk_with_keystone_tokens(keystone, served):
    from openstack import exceptions

    member, admin = connect(keystone, served, MEMBER), connect(keystone, served, ADMIN)
    try:
        assert list(member.accelerator.device_profiles()) == []
        with pytest.raises(exceptions.ForbiddenException, match="cyborg:device_profile:create"):
            member.accelerator.create_device_profile(name="ks-dp", groups=[{"resources:FPGA": "1"}])
        with pytest.raises(exceptions.ForbiddenException, match="cyborg:device:get_all"):
            list(member.accelerator.devices())
        created = admin.accelerator.create_device_profile(name="ks-dp", groups=[{"resources:FPGA": "1"}])
        assert [p.id for p in member.accelerator.device_profiles()] == [created.id]
        arq = member.accelerator.create_accelerator_request(device_profile_name="ks-dp")
        assert arq.state == "Initial"
        assert [a.id for a in admin.accelerator.accelerator_requests()] == [arq.id]
    finally:
        member.close()
        admin.close()


def test_no_token_is_401_but_discovery_is_open(served):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{served.url}/v2/device_profiles", timeout=10)
    assert err.value.code == 401 and err.value.headers["WWW-Authenticate"].startswith("Keystone uri=")
    with urllib.request.urlopen(f"{served.url}/v2", timeout=10) as resp:
        assert resp.status == 200
