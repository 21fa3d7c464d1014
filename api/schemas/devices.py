"""Device responses (status only from microversion 2.3)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from rayborg.api.schemas.common import Link


class Device(BaseModel):
    uuid: str
    type: str
    vendor: str
    model: str
    std_board_info: str = Field(description="a JSON document serialised into a string")
    vendor_board_info: str
    hostname: str
    status: str | None = Field(default=None, description="enabled | maintaining; microversion >= 2.3 only")
    created_at: str | None
    updated_at: str | None
    links: list[Link]


class DeviceList(BaseModel):
    devices: list[Device]


class DeviceQuery(BaseModel):
    type: str | None = None
    vendor: str | None = None
    hostname: str | None = None
