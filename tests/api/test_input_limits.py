"""Input limits and encodings (issue 14, items 5-8): a clear 4xx in Cyborg's error body, nothing
stored. Resource amounts within the operator's limits, identity headers that are not text, bodies
whose Content-Encoding does not decode, and an empty device profile name."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from types import SimpleNamespace

import pytest
from cyborg_errors import cyborg_fault
from factories import add_profile

from rayborg.api.app import create_app
from rayborg.api.app_keys import AUTH
from rayborg.api.keystone_auth import KeystoneAuth
from rayborg.settings import KeystoneOptions

PROFILES = "/v2/device_profiles"
ARQS = "/v2/accelerator_requests"
MEMBER = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "member"}


async def profiles(client) -> list[dict]:
    return (await (await client.get(PROFILES)).json())["device_profiles"]


async def arqs(client) -> list[dict]:
    return (await (await client.get(ARQS)).json())["arqs"]  # no identity headers: every project


@pytest.fixture
async def limited(aiohttp_client, settings, store):
    """The API with small limits: 4 per amount, 6 ARQs per profile."""
    small = settings.model_copy(update={"max_group_amount": 4, "max_profile_amount": 6})
    return await aiohttp_client(create_app(small, store))


# -- 5. resource amounts --------------------------------------------------------------------------

@pytest.mark.parametrize("amount", ["１", "1_0", " 2 ", "99999999999999999999", "0", "-1", "+1", "1.0", "٣",
                                    "", "65", pytest.param("9" * 5000, id="5000-digits")])
async def test_amount_must_be_ascii_decimal_within_the_limit(client, amount):
    body = [{"name": "dp", "groups": [{"resources:FPGA": "1"}, {"trait:CUSTOM_X": "required",
                                                                  "resources:GPU": amount}]}]
    fault = await cyborg_fault(await client.post(PROFILES, json=body), 400)
    assert "group 1" in fault and "resources:GPU" in fault and "from 1 to 64" in fault, fault
    assert await profiles(client) == []


async def test_amount_limits_are_the_operators(limited):
    ok = [{"name": "ok", "groups": [{"resources:FPGA": "4"}, {"resources:GPU": "2"}]}]
    assert (await limited.post(PROFILES, json=ok)).status == 201
    for groups, needles in [
        ([{"resources:FPGA": "5"}], ["group 0", "resources:FPGA", "from 1 to 4"]),
        ([{"resources:FPGA": "4"}, {"resources:GPU": "1", "resources:CUSTOM_QAT": "2"}],
         ["group 1", "resources:CUSTOM_QAT", "7", "more than the 6"]),
        # Xilinx FPGAs yield two ARQs each: 4 of them are 8 ARQs.
        ([{"resources:FPGA": "4", "trait:CUSTOM_FPGA_XILINX": "required"}],
         ["group 0", "resources:FPGA", "8"]),
    ]:
        resp = await limited.post(PROFILES, json=[{"name": "bad", "groups": groups}])
        fault = await cyborg_fault(resp, 400)
        assert all(n in fault for n in needles), fault
    assert [p["name"] for p in await profiles(limited)] == ["ok"]
    resp = await limited.post(ARQS, json={"device_profile_name": "ok"})
    assert resp.status == 201 and len((await resp.json())["arqs"]) == 6


@pytest.mark.parametrize("amount,needle", [("200000", "'200000'"), ("１", "'１'"), ("1_0", "'1_0'")])
async def test_arqs_of_a_profile_stored_before_the_limits_are_refused(client, store, amount, needle):
    """A profile stored before the limits existed (written straight to the store) creates nothing."""
    add_profile(store, "old", [{"resources:FPGA": "1"}, {"resources:FPGA": amount}])
    resp = await client.post(ARQS, json={"device_profile_name": "old"}, headers=MEMBER)
    fault = await cyborg_fault(resp, 400)
    assert "old" in fault and "group 1" in fault and "resources:FPGA" in fault and needle in fault, fault
    assert await arqs(client) == []


async def test_arqs_of_a_stored_profile_over_the_profile_limit_are_refused(limited, store):
    add_profile(store, "wide", [{"resources:FPGA": "4"}, {"resources:FPGA": "3"}])
    fault = await cyborg_fault(await limited.post(ARQS, json={"device_profile_name": "wide"}), 400)
    assert "group 1" in fault and "resources:FPGA" in fault and "more than the 6" in fault, fault
    assert await arqs(limited) == []


# -- 6. identity headers that are not text ---------------------------------------------------------

async def raw_request(client, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    """Send bytes no HTTP client library would (a header that is not UTF-8); (status, JSON body)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    header, _, payload = answer.partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(payload)


def fault_of(body: dict) -> str:
    inner = json.loads(body["error_message"])
    assert inner["faultcode"] == "Client"
    return inner["faultstring"]


IDENTITY = [b"X-Project-Id", b"X-User-Id", b"X-Roles", b"X-Service-Roles", b"X-Auth-Token"]


@pytest.mark.parametrize("name", IDENTITY)
@pytest.mark.parametrize("value", [b"\xff\xfe", b"p\xc3"], ids=["not-utf8", "truncated-utf8"])
async def test_identity_header_that_is_not_text_is_a_400(client, name, value):
    base = b"X-Project-Id: p1\r\nX-Roles: member\r\nX-User-Id: u1\r\n"
    base = b"".join(line + b"\r\n" for line in base.split(b"\r\n")[:-1] if not line.startswith(name + b":"))
    status, body = await raw_request(client, b"POST /v2/accelerator_requests HTTP/1.1\r\nHost: x\r\n" + base
                                     + name + b": " + value + b"\r\nContent-Type: application/json\r\n",
                                     b'{"device_profile_name": "dp"}')
    assert status == 400 and name.decode() in fault_of(body)
    assert await arqs(client) == []


async def test_identity_ids_longer_than_the_database_holds_are_a_400(client, store):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    for name in ("X-Project-Id", "X-User-Id"):
        resp = await client.post(ARQS, json={"device_profile_name": "dp"},
                                 headers={**MEMBER, name: "p" * 256})
        assert name in await cyborg_fault(resp, 400)
    assert await arqs(client) == []
    resp = await client.post(ARQS, json={"device_profile_name": "dp"},
                             headers={**MEMBER, "X-Project-Id": "é" * 255})
    assert resp.status == 201, await resp.text()  # printable UTF-8 up to the column's size is fine


class FakeKeystone:
    """keystoneauth's session as KeystoneAuth uses it: `GET /v3/auth/tokens` knows one token."""

    def __init__(self):
        self.asked: list[str] = []
        self.session = SimpleNamespace(close=lambda: None)

    def get(self, url, headers, **kwargs):
        self.asked.append(headers["X-Subject-Token"])
        token = {"user": {"id": "u1"}, "project": {"id": "p1"}, "roles": [{"name": "member"}]}
        return SimpleNamespace(status_code=200, json=lambda: {"token": token})


async def test_keystone_token_that_is_not_text_is_a_400(aiohttp_client, settings, store):
    """Refused before Keystone is asked (it would be asked with bytes no token holds: a 500)."""
    app = create_app(settings, store)
    keystone = FakeKeystone()
    ks = settings.model_copy(update={"auth_strategy": "keystone",
                                     "keystone": KeystoneOptions(auth_url="http://127.0.0.1:9")})
    app[AUTH] = KeystoneAuth(ks, session=keystone)
    client = await aiohttp_client(app)
    get = b"GET /v2/accelerator_requests HTTP/1.1\r\nHost: x\r\n"
    status, body = await raw_request(client, get + b"X-Auth-Token: \xff\xfe\r\n")
    assert status == 400 and "X-Auth-Token" in fault_of(body)
    status, body = await raw_request(client, get + b"X-Auth-Token: good\r\nX-Service-Token: s\xff\r\n")
    assert status == 400 and "X-Service-Token" in fault_of(body)
    assert keystone.asked == ["good"]
    resp = await client.get(ARQS, headers={"X-Auth-Token": "good"})  # the fake itself works
    assert resp.status == 200, await resp.text()


# -- 7. bodies whose Content-Encoding does not decode ----------------------------------------------

PROFILE = json.dumps([{"name": "dp", "groups": [{"resources:FPGA": "1"}]}]).encode()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
async def test_body_that_does_not_decode_is_a_400(client, encoding):
    resp = await client.post(PROFILES, data=PROFILE, headers={"Content-Type": "application/json",
                                                              "Content-Encoding": encoding})
    assert resp.status == 400, await resp.text()
    if encoding in ("gzip", "deflate"):  # br/zstd (no decoder installed) are refused by aiohttp itself
        assert "could not be read" in await cyborg_fault(resp, 400)
    assert await profiles(client) == []


@pytest.mark.parametrize("encoding,compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
async def test_body_that_decodes_is_read(client, encoding, compress):
    resp = await client.post(PROFILES, data=compress(PROFILE), headers={"Content-Type": "application/json",
                                                                        "Content-Encoding": encoding})
    assert resp.status == 201, await resp.text()
    assert [p["name"] for p in await profiles(client)] == ["dp"]


# -- 8. an empty device profile name is looked up, and not found ----------------------------------

@pytest.mark.parametrize("name", ["", "  "])
async def test_empty_profile_name_is_not_found(client, store, name):
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    resp = await client.post(ARQS, json={"device_profile_name": name}, headers=MEMBER)
    assert "Device profile not found" in await cyborg_fault(resp, 404)
    fault = await cyborg_fault(await client.post(ARQS, json={}, headers=MEMBER), 400)
    assert "device_profile_name" in fault
    assert await arqs(client) == []
