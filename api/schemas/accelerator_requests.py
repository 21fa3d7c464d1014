"""Accelerator request bodies: the POST request, the bind/unbind PATCH (uuid -> JSON-Patch) and the
responses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import jsonpointer
from pydantic import BaseModel, Field

from rayborg.api.errors import BadRequest
from rayborg.api.http import is_uuid, parse_uuid
from rayborg.api.schemas.common import Link, Strict

BIND_FIELDS = ("hostname", "device_rp_uuid", "instance_uuid")
OPTIONAL_FIELDS = ("project_id",)


class ARQCreate(Strict):
    # Required; an empty or blank name is looked up like any other and not found (404), as in
    # Cyborg 17 (cyborg-tempest-plugin's test_create_accelerator_request_device_profile_name_is_null).
    device_profile_name: str = Field(max_length=255)
    # Sent by clients (python-cyborgclient sends null); Cyborg ignores both and so do we.
    device_profile_group_id: int | None = None
    image_uuid: str | None = None


class AcceleratorRequest(BaseModel):
    uuid: str
    state: str
    device_profile_name: str
    device_profile_group_id: int
    hostname: str | None
    device_rp_uuid: str | None
    instance_uuid: str | None
    project_id: str | None
    attach_handle_type: str
    attach_handle_uuid: str | None
    attach_handle_info: dict[str, str]
    created_at: str | None
    updated_at: str | None
    links: list[Link]


class ARQList(BaseModel):
    arqs: list[AcceleratorRequest]


class PatchOperation(BaseModel):
    op: str = Field(description="add (bind) or remove (unbind)")
    path: str = Field(description=(
        "/hostname, /device_rp_uuid, /instance_uuid, /project_id (>= 2.1). A bind needs /instance_uuid; "
        "/hostname and /device_rp_uuid are optional (rayborg extension, standalone allocation without "
        "Nova): with /hostname but no /device_rp_uuid rayborg chooses a free deployable matching the "
        "ARQ's device-profile group on that host, with neither it chooses on any host (409 when none "
        "is free). /device_rp_uuid without /hostname is an error."))
    value: Any = None


class ListQuery(BaseModel):
    instance: str | None = Field(default=None, description="Instance uuid")
    bind_state: str | None = Field(default=None, description="Only `resolved` is allowed")


class DeleteQuery(BaseModel):
    arqs: str | None = Field(default=None, description="Comma-separated ARQ uuids")
    instance: str | None = Field(default=None, description="Instance uuid")


BindBody = dict[str, list[PatchOperation]]


@dataclass
class ParsedPatch:
    """A validated bind or unbind PATCH: what to set on each ARQ (empty dicts for an unbind). A
    bind's fields always hold instance_uuid; hostname and device_rp_uuid may be missing (standalone
    bind: rayborg chooses the device)."""

    bind: bool
    fields: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def sets_project(self) -> bool:
        return any("project_id" in f for f in self.fields.values())


def _field_value(name: str, value: Any) -> str:
    if name in ("device_rp_uuid", "instance_uuid"):
        return parse_uuid(value, name) if isinstance(value, str) else _bad_value(name, value)
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        _bad_value(name, value)
    return value


def _bad_value(name: str, value: Any):
    raise BadRequest(f"Invalid value for /{name} in patch: {value!r}")


def _parse_ops(arq_uuid: str, ops: Any) -> tuple[bool, dict[str, str]]:
    """(is_bind, fields) for one ARQ's operation list."""
    if not isinstance(ops, list) or not ops or not all(isinstance(op, dict) for op in ops):
        raise BadRequest(f"The patch for {arq_uuid} must be a non-empty list of JSON-Patch operations")
    try:
        jsonpatch.JsonPatch(ops)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, AttributeError) as exc:
        raise BadRequest(f"Invalid JSON-Patch for {arq_uuid}: {exc}") from None
    kinds = {op["op"] for op in ops}
    if not kinds <= {"add", "remove"} or len(kinds) != 1:
        raise BadRequest("Every op must be add or remove")
    bind = kinds == {"add"}
    fields: dict[str, str] = {}
    for op in ops:
        name = op["path"][1:]
        if name not in BIND_FIELDS + OPTIONAL_FIELDS:
            raise BadRequest(f"Invalid path in patch {op['path']}")
        if name in fields:
            raise BadRequest(f"Path {op['path']} appears twice in the patch for {arq_uuid}")
        if bind and "value" not in op:
            raise BadRequest(f"The add operation on {op['path']} has no value")
        fields[name] = _field_value(name, op["value"]) if bind else ""
    absent = [name for name in BIND_FIELDS if name not in fields]
    # A standalone bind (no Nova) may leave out /device_rp_uuid, or /hostname and /device_rp_uuid:
    # rayborg then chooses the device. An RP without its host, or no instance, stays an error.
    if bind and absent and ("instance_uuid" in absent or absent == ["hostname"]):
        raise BadRequest(f"Fields absent in patch {', '.join(absent)}")
    return bind, (fields if bind else {})


def parse_patch(body: Any) -> ParsedPatch:
    """Validate a whole bind/unbind body, every ARQ of it, before anything changes."""
    if not isinstance(body, dict) or not body:
        raise BadRequest("The request body must be an object mapping accelerator request uuids to "
                         "JSON-Patch operation lists")
    parsed: ParsedPatch | None = None
    for key, ops in body.items():
        if not is_uuid(key):
            raise BadRequest(f"Invalid accelerator request uuid: {key!r}")
        arq_uuid = parse_uuid(key)
        bind, fields = _parse_ops(arq_uuid, ops)
        if parsed is None:
            parsed = ParsedPatch(bind=bind)
        elif parsed.bind != bind:
            raise BadRequest("A request must either bind or unbind all its accelerator requests, not both")
        if arq_uuid in parsed.fields:
            raise BadRequest(f"Accelerator request {arq_uuid} appears twice")
        parsed.fields[arq_uuid] = fields
    assert parsed is not None
    return parsed
