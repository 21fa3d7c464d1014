"""/v2/device_profiles: create with the group syntax rules, list, show by uuid/name, delete forms."""

from __future__ import annotations

import json
import uuid

import pytest

from cyborg_errors import cyborg_fault
from factories import add_profile
from rayborg.store import arq_state

V = "OpenStack-API-Version"
MEMBER = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "member"}
GROUPS = [{"resources:FPGA": "1", "trait:CUSTOM_FPGA_INTEL": "required",
           "accel:bitstream_id": "d5ca2f11-3108-4426-a11c-a959987565df"},
          {"resources:PGPU": "2", "trait:CUSTOM_GPU_NVIDIA_T4": "forbidden"}]


async def create(client, status=201, headers=None, **profile):
    profile.setdefault("groups", GROUPS)
    resp = await client.post("/v2/device_profiles", json=[profile], headers=headers)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_create_returns_bare_profile_with_groups_in_order(client):
    body = await create(client, name="fpga-dp1", description="bitstream profile")
    assert set(body) == {"uuid", "name", "description", "groups", "created_at", "updated_at", "links"}
    assert body["name"] == "fpga-dp1" and body["description"] == "bitstream profile"
    assert body["groups"] == GROUPS
    assert [list(g) for g in body["groups"]] == [list(g) for g in GROUPS]  # key order kept too
    assert body["updated_at"] is None and body["created_at"].endswith("+00:00")
    href = str(client.make_url(f"/v2/device_profiles/{body['uuid']}"))
    assert body["links"] == [{"href": href, "rel": "self"}]
    shown = await client.get(f"/v2/device_profiles/{body['uuid']}")
    assert (await shown.json())["device_profile"] == body


async def test_create_strips_spaces_accepts_null_description_and_given_uuid(client):
    given = str(uuid.uuid4()).upper()
    body = await create(client, name="dp_2", description=None, uuid=given,
                        groups=[{"resources: CUSTOM_QAT ": "1", "trait:  CUSTOM_A": "required",
                                 "accel:x": "y"}])
    assert body["uuid"] == given.lower() and body["description"] is None
    assert body["groups"] == [{"resources:CUSTOM_QAT": "1", "trait:CUSTOM_A": "required", "accel:x": "y"}]


@pytest.mark.parametrize("profile,needle", [
    ({"groups": GROUPS}, "name"),
    ({"name": "bad name!", "groups": GROUPS}, "name"),
    ({"name": "x" * 256, "groups": GROUPS}, "name"),
    ({"name": "", "groups": GROUPS}, "name"),
    ({"name": "dp", "groups": GROUPS, "description": "d" * 256}, "description"),
    ({"name": "dp"}, "groups"),
    ({"name": "dp", "groups": {"resources:FPGA": "1"}}, "groups"),
    ({"name": "dp", "groups": []}, "groups"),
    ({"name": "dp", "groups": ["resources:FPGA"]}, "groups"),
    ({"name": "dp", "groups": [{}]}, "empty"),
    ({"name": "dp", "groups": [{"resources:FPGA": 1}]}, "groups"),
    ({"name": "dp", "groups": [{"resource:FPGA": "1"}]}, "resources:|trait:|accel:"),
    ({"name": "dp", "groups": [{"resources:": "1"}]}, "names nothing"),
    ({"name": "dp", "groups": [{"resources:TPU": "1"}]}, "TPU"),
    ({"name": "dp", "groups": [{"resources:CUSTOM_lower": "1"}]}, "CUSTOM_lower"),
    ({"name": "dp", "groups": [{"resources:FPGA": "one"}]}, "integer"),
    ({"name": "dp", "groups": [{"resources:FPGA": "0"}]}, "from 1 to 64"),
    ({"name": "dp", "groups": [{"resources:FPGA": "1.5"}]}, "integer"),
    ({"name": "dp", "groups": [{"trait:HW_NO_SUCH_TRAIT": "required"}]}, "trait name 'HW_NO_SUCH_TRAIT'"),
    ({"name": "dp", "groups": [{"trait:CUSTOM_a-b": "required"}]}, "group 0: key 'trait:CUSTOM_a-b'"),
    ({"name": "dp", "groups": [{"resources:MEMORY_GB": "1"}]}, "group 0: key 'resources:MEMORY_GB'"),
    ({"name": "dp", "groups": [GROUPS[1], {"resources:FPGA": "1", "accel:attach_target": "vm"}]},
     "group 1: key 'accel:attach_target': 'vm' is not an attach target: must be one of VM, host, none"),
    ({"name": "dp", "groups": [{"resources:FPGA": "1", "accel:function_name": " "}]},
     "group 0: key 'accel:function_name': must not be empty"),
    ({"name": "dp", "groups": [{"resources:FPGA": "1", "accel:bitstream_name": ""}]},
     "group 0: key 'accel:bitstream_name': must not be empty"),
    ({"name": "dp", "groups": [{"resources:FPGA": "1", "accel:function_id": ""}]},
     "group 0: key 'accel:function_id': must not be empty"),
    ({"name": "dp", "groups": [{"trait:CUSTOM_X": "preferred"}]}, "trait value"),
    ({"name": "dp", "groups": [{"resources:FPGA": "1", "resources: FPGA": "2"}]}, "twice"),
    ({"name": "dp", "groups": GROUPS, "uuid": "not-a-uuid"}, "UUID"),
    ({"name": "dp", "groups": GROUPS, "extra": 1}, "unknown field 'extra'"),
    ({"name": "dp", "groups": [GROUPS[1], {"resources:FPGA": "1", "accel:bitstream_id": "3AFB"}]},
     "Invalid accel:bitstream_id in group 1: '3AFB' is not a valid UUID"),
    ({"name": "dp", "groups": [{"resources:FPGA": "1", "accel: bitstream_id": ""}]}, "accel:bitstream_id"),
])
async def test_create_rejects_invalid_profiles(client, profile, needle):
    resp = await client.post("/v2/device_profiles", json=[profile])
    assert needle in await cyborg_fault(resp, 400)
    assert (await (await client.get("/v2/device_profiles")).json())["device_profiles"] == []


async def test_create_accepts_standard_names_and_known_accel_values(client):
    """Placement's standard resource classes and traits (os-resource-classes, os-traits) as well as
    CUSTOM_ ones; Cyborg's GPU; each attach target; unknown accel: keys pass as upstream."""
    groups = [{"resources:PCI_DEVICE": "1", "trait:HW_CPU_X86_AVX": "forbidden", "accel:attach_target": target,
               "accel:function_name": "gzip", "accel:other": ""} for target in ("VM", "host", "none")]
    groups.append({"resources:GPU": "1", "trait:CUSTOM_GPU_NVIDIA_T4": "required"})
    assert (await create(client, name="standard", groups=groups))["groups"] == groups


@pytest.mark.parametrize("body,needle", [
    ({"name": "dp", "groups": GROUPS}, "list"),
    ([], "list"),
    ([{"name": "a", "groups": GROUPS}, {"name": "b", "groups": GROUPS}], "Only one device profile"),
    (["dp"], "Invalid request body"),
])
async def test_create_rejects_wrong_body_shapes(client, body, needle):
    resp = await client.post("/v2/device_profiles", json=body)
    assert needle in await cyborg_fault(resp, 400)


async def test_create_rejects_malformed_json_content_type_and_oversized_body(client):
    resp = await client.post("/v2/device_profiles", data=b'[{"name": ',
                             headers={"Content-Type": "application/json"})
    assert "JSON" in await cyborg_fault(resp, 400)
    resp = await client.post("/v2/device_profiles", data=b"name=dp",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 415
    big = json.dumps([{"name": "dp", "groups": GROUPS, "description": "x" * (2 * 1024 * 1024)}])
    resp = await client.post("/v2/device_profiles", data=big, headers={"Content-Type": "application/json"})
    await cyborg_fault(resp, 413)


async def test_create_duplicate_name_or_uuid_is_409(client):
    first = await create(client, name="dp")
    resp = await client.post("/v2/device_profiles", json=[{"name": "dp", "groups": GROUPS}])
    assert "already exists" in await cyborg_fault(resp, 409)
    resp = await client.post("/v2/device_profiles", json=[{"name": "other", "uuid": first["uuid"], "groups": GROUPS}])
    assert "already exists" in await cyborg_fault(resp, 409)
    resp = await client.get("/v2/device_profiles")
    assert [p["name"] for p in (await resp.json())["device_profiles"]] == ["dp"]  # nothing half-written


async def test_create_and_delete_need_admin(client):
    resp = await client.post("/v2/device_profiles", json=[{"name": "dp", "groups": GROUPS}], headers=MEMBER)
    message = await cyborg_fault(resp, 403)
    assert message == "Access was denied to the following resource: cyborg:device_profile:create"
    await create(client, name="dp")
    resp = await client.delete("/v2/device_profiles/dp", headers=MEMBER)
    assert "cyborg:device_profile:delete" in await cyborg_fault(resp, 403)
    resp = await client.get("/v2/device_profiles?name=dp", headers=MEMBER)  # reads are open to members
    assert len((await resp.json())["device_profiles"]) == 1


async def test_list_filters_by_comma_names_and_pages(client):
    uuids = [(await create(client, name=n))["uuid"] for n in ("a", "b", "c")]
    async def names(query: str) -> list[str]:
        resp = await client.get(f"/v2/device_profiles{query}")
        assert resp.status == 200
        return [p["name"] for p in (await resp.json())["device_profiles"]]
    assert await names("") == ["a", "b", "c"]
    assert await names("?name=a,c") == ["a", "c"]
    assert await names("?name=c") == ["c"]
    assert await names("?name=nope") == []
    assert await names(f"?limit=1&marker={uuids[0]}") == ["b"]
    resp = await client.get("/v2/device_profiles?hostname=x")
    assert await cyborg_fault(resp, 400) == 'Unknown argument: "hostname"'


async def test_show_by_uuid_at_every_version_and_by_name_from_2_2(client):
    body = await create(client, name="dp")
    for v in ("2.0", "2.3"):
        resp = await client.get(f"/v2/device_profiles/{body['uuid']}", headers={V: f"accelerator {v}"})
        assert resp.status == 200 and (await resp.json())["device_profile"]["name"] == "dp"
    resp = await client.get("/v2/device_profiles/dp", headers={V: "accelerator 2.2"})
    assert resp.status == 200 and (await resp.json())["device_profile"]["uuid"] == body["uuid"]
    for headers in ({}, {V: "accelerator 2.1"}):
        resp = await client.get("/v2/device_profiles/dp", headers=headers)
        message = await cyborg_fault(resp, 406)
        assert message == "Request not acceptable. The minimal required API version should be 2.2"
    resp = await client.get("/v2/device_profiles/dp", headers={V: "accelerator 2.9"})
    assert resp.status == 406
    resp = await client.get(f"/v2/device_profiles/{uuid.uuid4()}")
    assert resp.status == 404
    resp = await client.get("/v2/device_profiles/nope", headers={V: "accelerator 2.2"})
    assert "nope" in await cyborg_fault(resp, 404)


@pytest.mark.parametrize("form", ["uuid", "path-names", "value", "name"])
async def test_delete_forms(client, form):
    a = await create(client, name="a")
    await create(client, name="b")
    await create(client, name="keep")
    url = {"uuid": f"/v2/device_profiles/{a['uuid']}", "path-names": "/v2/device_profiles/a,b",
           "value": "/v2/device_profiles?value=a,b", "name": "/v2/device_profiles?name=a,%20b"}[form]
    resp = await client.delete(url)
    assert resp.status == 204 and await resp.read() == b""
    left = {p["name"] for p in (await (await client.get("/v2/device_profiles")).json())["device_profiles"]}
    assert left == ({"b", "keep"} if form == "uuid" else {"keep"})


async def test_delete_unknown_is_404_and_deletes_nothing(client):
    await create(client, name="a")
    for url in ("/v2/device_profiles/a,ghost", "/v2/device_profiles?value=ghost,a",
                f"/v2/device_profiles/{uuid.uuid4()}"):
        resp = await client.delete(url)
        assert resp.status == 404, url
    assert len((await (await client.get("/v2/device_profiles")).json())["device_profiles"]) == 1


@pytest.mark.parametrize("url", ["/v2/device_profiles", "/v2/device_profiles?value=a&name=a",
                                 "/v2/device_profiles?value=", "/v2/device_profiles?other=a",
                                 "/v2/device_profiles/,,"])
async def test_delete_needs_exactly_one_selector(client, url):
    await create(client, name="a")
    resp = await client.delete(url)
    await cyborg_fault(resp, 400)


async def test_delete_profile_in_use_is_409(client, store):
    add_profile(store, "used")
    store.transact(arq_state.create_arqs, "used", "p1")
    resp = await client.delete("/v2/device_profiles/used")
    assert "in use" in await cyborg_fault(resp, 409)
    resp = await client.get("/v2/device_profiles?name=used")
    assert len((await resp.json())["device_profiles"]) == 1
