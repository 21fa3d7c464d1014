"""Bitstreams fetched from Glance with the [keystone] service user's real Keystone token."""

from __future__ import annotations

import json
import urllib.request

from glance_standin import IMG, glance_standin
from servers import CYBORG, PASSWORD

from rayborg.drivers.bitstreams import GlanceBitstreams, bitstream_source
from rayborg.actor_runtime import runtime_config
from rayborg.settings import KeystoneOptions, Settings


def token_owner(auth_url: str, token: str) -> str:
    """Who Keystone says `token` belongs to (validated with the token itself)."""
    req = urllib.request.Request(f"{auth_url}/auth/tokens", headers={"X-Auth-Token": token,
                                                                     "X-Subject-Token": token})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)["token"]["user"]["name"]


def test_glance_source_without_credentials_uses_the_service_user(keystone, tmp_path):
    auth_url = keystone.url
    service_user = KeystoneOptions(auth_url=auth_url, username=CYBORG.name, password=PASSWORD,
                                   project_name=CYBORG.project)
    with glance_standin() as (url, requests, tokens):
        settings = Settings(keystone=service_user, _env_file=None,
                            driver_options={"bitstreams": {"glance_url": url, "download_dir": str(tmp_path)}})
        source = bitstream_source(runtime_config(settings).for_host("h1")["options"]["bitstreams"])
        assert isinstance(source, GlanceBitstreams)
        fetched = source.fetch(IMG)
    assert fetched.path.read_bytes() == f"bitstream {IMG}".encode()
    assert requests and all(tokens) and len(set(tokens)) == 1  # one token, on every call
    assert token_owner(auth_url, tokens[0]) == CYBORG.name
