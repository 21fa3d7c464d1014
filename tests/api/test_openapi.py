"""The OpenAPI document: valid OpenAPI 3.0.3, covers the whole route table, served without auth, and
what real requests get back on the happy path conforms to the schemas it declares."""

from __future__ import annotations

import uuid

import pytest
from factories import add_device, add_profile
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from rayborg.api.app import ROUTES
from rayborg.api.app_keys import BINDER
from rayborg.api.openapi import build_document

V = "OpenStack-API-Version"
NOVA = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "admin", "X-Service-Roles": "service"}


@pytest.fixture(scope="module")
def document() -> dict:
    return build_document(ROUTES)


def response_schema(document: dict, method: str, path: str, status: int) -> dict:
    return document["paths"][path][method.lower()]["responses"][str(status)]["content"]["application/json"][
        "schema"]


def closed(node):
    """The schema with every object that lists its properties closed to others: a response field
    the document does not declare is drift, too (the published document stays open for clients)."""
    if isinstance(node, list):
        return [closed(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: closed(v) for k, v in node.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def assert_conforms(document: dict, body, method: str, path: str, status: int) -> None:
    # Refs are `#/components/...`: resolve them against a root that carries the components.
    schema = closed({**response_schema(document, method, path, status), "components": document["components"]})
    errors = sorted(OAS30Validator(schema).iter_errors(body), key=str)
    assert not errors, f"{method} {path} -> {status}: " + "; ".join(e.message for e in errors[:5])


def test_document_is_valid_openapi_303(document):
    assert document["openapi"] == "3.0.3"
    validate(document)


def test_every_route_is_documented_with_its_metadata(document):
    assert len(ROUTES) == sum(len(ops) for ops in document["paths"].values())
    op_ids = set()
    for method, path, handler in ROUTES:
        op = document["paths"][path][method.lower()]
        meta = getattr(handler, "__openapi__", None)
        if meta is not None:
            assert op["summary"] == meta["summary"]
            assert {str(s) for s in meta["responses"]} <= set(op["responses"])
            assert ("requestBody" in op) == (meta["body"] is not None)
        assert op["operationId"] not in op_ids
        op_ids.add(op["operationId"])
        path_params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert path_params == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}


def test_schemas_are_openapi_30_dialect(document):
    """No JSON Schema 2020-12 leftovers that OpenAPI 3.0 tools reject or misread."""
    def walk(node):
        if isinstance(node, dict):
            assert node.get("type") != "null" and not isinstance(node.get("type"), list), node
            assert "const" not in node and "$defs" not in node, node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(document["paths"])
    walk(document["components"])
    refs = set()

    def collect(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].rsplit("/", 1)[-1])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)
    collect(document)
    assert refs <= set(document["components"]["schemas"])


def test_errors_statuses_and_version_header(document):
    op = document["paths"]["/v2/device_profiles"]["post"]
    for status in ("400", "401", "403", "406", "409", "415"):
        assert op["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"}
    assert any(p["name"] == V and p["in"] == "header" for p in op["parameters"])
    assert op["security"] == [{"keystone": []}]
    assert "security" not in document["paths"]["/v2"]["get"]
    list_params = {p["name"] for p in document["paths"]["/v2/device_profiles"]["get"]["parameters"]}
    assert {"name", "limit", "marker", V} <= list_params
    assert "423" in document["paths"]["/v2/accelerator_requests"]["get"]["responses"]


async def test_served_without_identity_and_under_prefix(client, document):
    for url in ("/v2/openapi.json", "/accelerator/v2/openapi.json"):
        resp = await client.get(url)
        assert resp.status == 200
        assert await resp.json() == document


async def test_served_without_token_in_keystone_mode(aiohttp_client, store, settings):
    from rayborg.api.app import create_app
    from rayborg.settings import KeystoneOptions

    # No Keystone is reached: the document needs no token and a request without one is refused first.
    keystone = KeystoneOptions(auth_url="http://127.0.0.1:9/v3", token="unused")
    app = create_app(settings.model_copy(update={"auth_strategy": "keystone", "keystone": keystone}), store)
    client = await aiohttp_client(app)
    resp = await client.get("/v2/openapi.json")
    assert resp.status == 200
    assert (await resp.json())["openapi"] == "3.0.3"
    assert (await client.get("/v2/devices")).status == 401


async def _seed_bound_arq(client, store, app) -> str:
    tree = add_device(store)
    add_profile(store, "dp", [{"resources:FPGA": "1"}])
    resp = await client.post("/v2/accelerator_requests", json={"device_profile_name": "dp"}, headers=NOVA)
    assert resp.status == 201
    arq = (await resp.json())["arqs"][0]["uuid"]
    ops = [{"op": "add", "path": "/hostname", "value": "host1"},
           {"op": "add", "path": "/device_rp_uuid", "value": tree.rp_uuids[0]},
           {"op": "add", "path": "/instance_uuid", "value": str(uuid.uuid4())}]
    resp = await client.patch("/v2/accelerator_requests", json={arq: ops}, headers=NOVA)
    assert resp.status == 202
    await app[BINDER].drain()
    return arq


@pytest.mark.parametrize("version", ["2.0", "2.3"])
async def test_happy_path_responses_conform(client, store, app, document, version):
    arq = await _seed_bound_arq(client, store, app)
    headers = {**NOVA, V: f"accelerator {version}"}
    show_paths = {"device_profiles": "/v2/device_profiles/{name_or_uuid}",
                  "devices": "/v2/devices/{uuid}", "deployables": "/v2/deployables/{uuid}",
                  "attributes": "/v2/attributes/{uuid}"}
    for path in ("/", "/v2", "/v2/device_profiles", "/v2/accelerator_requests", "/v2/devices",
                 "/v2/deployables", "/v2/attributes"):
        resp = await client.get(path, headers=headers)
        assert resp.status == 200, path
        body = await resp.json()
        assert_conforms(document, body, "GET", path, 200)
        collection = path.rsplit("/", 1)[-1]
        if collection in show_paths:
            (key,) = body
            assert body[key], f"{path} is empty: the seed did not reach it"
            item = body[key][0]["uuid"]
            resp = await client.get(f"{path}/{item}", headers=headers)
            assert resp.status == 200
            assert_conforms(document, await resp.json(), "GET", show_paths[collection], 200)
    resp = await client.get(f"/v2/accelerator_requests/{arq}", headers=headers)
    body = await resp.json()
    assert body["state"] == "Bound"
    assert_conforms(document, body, "GET", "/v2/accelerator_requests/{uuid}", 200)


async def test_error_responses_conform(client, document):
    cases = [("GET", "/v2/devices?bogus=1", 400), ("GET", f"/v2/devices/{uuid.uuid4()}", 404),
             ("GET", "/v2/device_profiles", 403)]
    for method, url, status in cases:
        headers = {"X-Project-Id": "p", "X-Roles": "admin"} if status != 403 else {"X-Project-Id": "p"}
        if status == 403:
            url = "/v2/devices"
        resp = await client.request(method, url, headers=headers)
        assert resp.status == status, url
        path = url.split("?")[0]
        path = "/v2/devices/{uuid}" if path.count("/") == 3 else path
        assert_conforms(document, await resp.json(), method, path, status)


def test_conformance_check_catches_a_wrong_body(document):
    """The helper above would notice a drift between the handlers and the document."""
    with pytest.raises(AssertionError):
        assert_conforms(document, {"devices": [{"uuid": 1}]}, "GET", "/v2/devices", 200)
