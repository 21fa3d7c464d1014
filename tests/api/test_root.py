"""Version discovery, microversion negotiation, error envelope, request ids, links behind prefixes."""

import json

import pytest

V = "OpenStack-API-Version"


async def test_root_lists_v2_with_links_from_host(client):
    resp = await client.get("/", headers={"Host": "cloud.example:6666"})
    assert resp.status == 200
    body = await resp.json()
    assert body["name"] == "OpenStack Cyborg API"
    (entry,) = body["versions"]
    assert entry == body["default_version"]
    assert entry["id"] == "v2" and entry["min_version"] == "2.0" and entry["max_version"] == "2.3"
    assert entry["links"] == [{"href": "http://cloud.example:6666/v2", "rel": "self"}]
    assert resp.headers["x-openstack-request-id"].startswith("req-")


async def test_v2_document_and_headers(client):
    resp = await client.get("/v2")
    assert resp.status == 200
    body = await resp.json()
    assert body["id"] == "v2.0" and body["status"] == "CURRENT"
    assert body["links"][0]["href"].endswith("/v2/")
    assert resp.headers[V] == "accelerator 2.0"
    assert resp.headers["OpenStack-API-Minimum-Version"] == "2.0"
    assert resp.headers["OpenStack-API-Maximum-Version"] == "2.3"
    assert resp.headers["Vary"] == V


@pytest.mark.parametrize("asked,answered", [("accelerator 2.2", "2.2"), ("accelerator latest", "2.3"),
                                            ("2.1", "2.1"), ("compute 2.80", "2.0")])
async def test_microversion_negotiation(client, asked, answered):
    resp = await client.get("/v2", headers={V: asked})
    assert resp.status == 200
    assert resp.headers[V] == f"accelerator {answered}"


MINOR = "Version {} was requested but the minor version is not supported by this service."
MAJOR = "Mutually exclusive versions requested. Version {} requested but not supported by this service."


@pytest.mark.parametrize("url", ["/v2", "/v2/devices", "/v2/accelerator_requests/nope"])
@pytest.mark.parametrize("asked,message", [("accelerator 2.4", MINOR.format("2.4")),
                                           ("accelerator 2.99", MINOR.format("2.99")),
                                           ("accelerator 3.0", MAJOR.format("3.0")),
                                           ("accelerator 1.9", MAJOR.format("1.9"))])
async def test_microversion_out_of_range_is_406_with_cyborg_body_and_range(client, url, asked, message):
    """As Cyborg 17: the range headers come with the 406 (a client retries within them), the version
    header does not (nothing was negotiated), whatever the route."""
    resp = await client.get(url, headers={V: asked})
    assert resp.status == 406
    fault = json.loads((await resp.json())["error_message"])
    assert fault["faultcode"] == "Client" and fault["debuginfo"] is None
    assert fault["faultstring"] == f"{message} The supported version range is: [2.0, 2.3]."
    assert resp.headers["OpenStack-API-Minimum-Version"] == "2.0"
    assert resp.headers["OpenStack-API-Maximum-Version"] == "2.3"
    assert resp.headers["Vary"] == V and V not in resp.headers


async def test_malformed_microversion_is_406_without_range_headers(client):
    """Cyborg cannot parse it, so it answers before setting any version header."""
    resp = await client.get("/v2", headers={V: "accelerator two"})
    assert resp.status == 406
    fault = json.loads((await resp.json())["error_message"])
    assert fault["faultstring"] == ("Invalid API version format: two. Expected X.Y, the supported range is "
                                    "[2.0, 2.3].")
    assert not {V, "OpenStack-API-Minimum-Version", "OpenStack-API-Maximum-Version"} & set(resp.headers)


async def test_unknown_path_and_method_use_the_envelope(client):
    resp = await client.get("/v2/nothing_here")
    assert resp.status == 404
    assert json.loads((await resp.json())["error_message"])["faultcode"] == "Client"
    resp = await client.put("/v2/device_profiles")
    assert resp.status == 405
    assert "error_message" in await resp.json()


async def test_accelerator_prefix_and_forwarded_headers(client):
    resp = await client.get("/accelerator/v2")
    assert resp.status == 200
    assert (await resp.json())["links"][0]["href"].endswith("/accelerator/v2/")
    resp = await client.get("/v2", headers={"X-Forwarded-Host": "api.example", "X-Forwarded-Proto": "https",
                                            "X-Forwarded-Prefix": "/accelerator"})
    assert (await resp.json())["links"][0]["href"] == "https://api.example/accelerator/v2/"


async def test_configured_public_url_wins_for_every_link(aiohttp_client, store, database_url):
    """`public_url` (a deployment behind a proxy that rewrites nothing) beats the Host and
    X-Forwarded-* headers, in version documents and in every resource's self link."""
    from factories import add_device, add_profile

    from rayborg.api.app import create_app
    from rayborg.settings import Settings

    settings = Settings(database_url=database_url, public_url="https://cloud.example/accelerator/", _env_file=None)
    client = await aiohttp_client(create_app(settings, store))
    tree = add_device(store, "host1")
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    misleading = {"Host": "internal:6666", "X-Forwarded-Host": "other.example", "X-Forwarded-Proto": "http"}
    root = await (await client.get("/", headers=misleading)).json()
    assert root["versions"][0]["links"] == [{"href": "https://cloud.example/accelerator/v2", "rel": "self"}]
    devices = (await (await client.get("/v2/devices", headers=misleading)).json())["devices"]
    assert devices[0]["links"] == [{"href": f"https://cloud.example/accelerator/v2/devices/{tree.device_uuid}",
                                    "rel": "self"}]
    profile = (await (await client.get("/v2/device_profiles", headers=misleading)).json())["device_profiles"][0]
    assert profile["links"][0]["href"] == f"https://cloud.example/accelerator/v2/device_profiles/{profile['uuid']}"
    arq = (await (await client.post("/v2/accelerator_requests", json={"device_profile_name": "dp"},
                                    headers=misleading)).json())["arqs"][0]
    assert arq["links"][0]["href"] == f"https://cloud.example/accelerator/v2/accelerator_requests/{arq['uuid']}"
