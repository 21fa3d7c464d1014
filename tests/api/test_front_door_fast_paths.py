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
