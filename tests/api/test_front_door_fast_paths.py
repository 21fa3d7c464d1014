"""The front door's fast paths answer exactly as the slow ones did: request ids, remembered
microversions, dates printed from the store's text (issue 18 item 3)."""

import re
import uuid

from multidict import CIMultiDict

from rayborg.api import app as app_module
from rayborg.api import microversion

V = "OpenStack-API-Version"


def test_request_ids_are_random_v4_uuids():
    ids = {app_module._request_id() for _ in range(200)}
    assert len(ids) == 200
    for rid in ids:
        assert re.fullmatch(r"req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", rid)
        assert uuid.UUID(rid[4:]).version == 4


def test_remembered_negotiation_matches_the_first():
    for value, expected in (("accelerator 2.2", (2, 2)), ("accelerator latest", (2, 3)), ("compute 2.80", (2, 0))):
        headers = CIMultiDict({V: value})
        assert microversion.negotiate(headers) == expected
        assert microversion.negotiate(headers) == expected  # the remembered answer
    assert microversion.negotiate(CIMultiDict()) == (2, 0)


def test_several_version_headers_are_never_remembered_as_the_first():
    headers = CIMultiDict([(V, "accelerator 2.1"), (V, "accelerator 2.3")])
    first = microversion.negotiate(headers)
    assert microversion.negotiate(CIMultiDict({V: "accelerator 2.1"})) == (2, 1)
    assert microversion.negotiate(headers) == first


async def test_headers_on_answers_and_errors(client):
    ok = await client.get("/v2/device_profiles", headers={V: "accelerator 2.2"})
    assert ok.status == 200 and ok.headers[V] == "accelerator 2.2"
    assert ok.headers.getall(V) == ["accelerator 2.2"] and ok.headers.getall("Vary") == [V]
    missing = await client.get(f"/v2/device_profiles/{uuid.uuid4()}", headers={V: "accelerator 2.2"})
    assert missing.status == 404 and missing.headers[V] == "accelerator 2.2"
    assert missing.headers["x-openstack-request-id"].startswith("req-")
    bad = await client.get("/v2/device_profiles", headers={V: "accelerator 9.9"})
    assert bad.status == 406 and V not in bad.headers
    assert bad.headers["OpenStack-API-Maximum-Version"] == "2.3"
    nowhere = await client.get("/accelerator/v2/nothing-here")
    assert nowhere.status == 404 and nowhere.headers["x-openstack-request-id"].startswith("req-")


async def test_listed_dates_print_as_before(client):
    body = [{"name": "dates", "groups": [{"resources:FPGA": "1"}]}]
    created = await (await client.post("/v2/device_profiles", json=body)).json()
    listed = (await (await client.get("/v2/device_profiles")).json())["device_profiles"]
    shown = (await (await client.get(f"/v2/device_profiles/{created['uuid']}")).json())["device_profile"]
    (item,) = [p for p in listed if p["uuid"] == created["uuid"]]
    assert item["created_at"] == shown["created_at"] == created["created_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", item["created_at"])
    assert item["updated_at"] is None


def test_canonical_uuids_pass_as_they_are_others_are_normalised_or_refused():
    import pytest

    from rayborg.api.errors import BadRequest
    from rayborg.api.http import parse_uuid

    u = "0f8c36b8-8e9c-4b8e-9a3e-0123456789ab"
    assert parse_uuid(u) == u
    assert parse_uuid(u.upper()) == u  # not canonical: through uuid.UUID, as before
    for bad in ("0f8c36b8-8e9c-4b8e-9a3e-0123456789a", "0f8c36b8-8e9c-4b8e-9a3e-0123456789ag", "x" * 36,
                "0f8c36b8-8e9c-4b8e-9a3e-0123456789ab\n"):
        with pytest.raises(BadRequest):
            parse_uuid(bad)


async def test_noauth_contexts_are_remembered_but_refusals_are_not(settings):
    from aiohttp.test_utils import make_mocked_request
    import pytest

    from rayborg.api.auth import NoAuth
    from rayborg.api.errors import BadRequest

    auth = NoAuth(settings.service_token_roles)
    h = {"X-User-Id": "u", "X-Project-Id": "p", "X-Roles": "Member"}
    first = await auth.identify(make_mocked_request("GET", "/v2", headers=h))
    again = await auth.identify(make_mocked_request("GET", "/v2", headers=h))
    assert again is first and first.project_id == "p" and "reader" in first.roles
    other = await auth.identify(make_mocked_request("GET", "/v2", headers={**h, "X-Service-Roles": "service"}))
    assert other.is_service and not first.is_service
    blank = await auth.identify(make_mocked_request("GET", "/v2", headers={"X-Roles": ""}))
    assert blank.project_id is None and not blank.is_admin  # a header present, even blank: not the default admin
    assert (await auth.identify(make_mocked_request("GET", "/v2"))).is_admin
    for _ in range(2):
        with pytest.raises(BadRequest):
            await auth.identify(make_mocked_request("GET", "/v2", headers={**h, "X-User-Id": "a\x01b"}))
