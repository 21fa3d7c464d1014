"""Deployable responses and the program PATCH body."""

from __future__ import annotations

from pydantic import BaseModel, Field

from rayborg.api.schemas.common import Link, Strict


class Deployable(BaseModel):
    uuid: str
    parent_id: int | None
    root_id: int | None
    name: str
    num_accelerators: int
    device_id: int
    attributes_list: str = Field(description="JSON list of one-key objects, serialised into a string")
    rp_uuid: str | None
    driver_name: str | None
    bitstream_id: str | None
    created_at: str | None
    updated_at: str | None
    links: list[Link]
    # rayborg: how the last PATCH .../program of this deployable went (Cyborg has no such fields).
    program_status: str | None = Field(
        default=None, description="the last programming request through the API: requested (waiting for "
        "the host's agent), programming, done or failed; null when there was none")
    program_image_uuid: str | None = Field(default=None, description="the image that request loads")
    program_error: str | None = Field(default=None, description="why it failed")


class DeployableList(BaseModel):
    deployables: list[Deployable]


class ProgramImage(Strict):
    image_uuid: str


class ProgramOperation(Strict):
    op: str = Field(description="replace")
    path: str = Field(description="/program")
    value: list[ProgramImage] = Field(min_length=1, max_length=1)
