"""Device responses (status and status_reason only from microversion 2.3) and the disable body."""

from __future__ import annotations

from pydantic import BaseModel, Field, StrictStr

from rayborg.api.schemas.common import Link, Strict


class Device(BaseModel):
    uuid: str
    type: str
    vendor: str
    model: str
    std_board_info: str = Field(description="a JSON document serialised into a string")
    vendor_board_info: str
    hostname: str
    status: str | None = Field(default=None, description="enabled | maintaining; microversion >= 2.3 only")
    status_reason: str | None = Field(default=None, description="why the device was disabled (null when enabled "
                                      "or none was given); microversion >= 2.3 only")
    created_at: str | None
    updated_at: str | None
    links: list[Link]
    stats: dict[str, int | float] | None = Field(
        default=None, description="rayborg's addition: the driver's counters from the host's last report "
        "(e.g. temperature_c, rx_packets, fw_requests), {} when it has none; GET /v2/devices/{uuid} only, "
        "microversion >= 2.3 only")


class DeviceList(BaseModel):
    devices: list[Device]


class DeviceQuery(BaseModel):
    type: str | None = None
    vendor: str | None = None
    hostname: str | None = None


class DeviceDisable(Strict):
    """The optional body of POST /v2/devices/{uuid}/disable (no body: no reason)."""

    reason: StrictStr | None = Field(default=None, min_length=1, max_length=255,
                               description="why the device is disabled, shown as its status_reason")
