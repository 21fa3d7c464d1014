"""Device responses (status only from microversion 2.3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from rayborg.api.errors import BadRequest
from rayborg.api.schemas.common import Link

# Client input that reaches a query or a column must fit it, or PostgreSQL/SQLite raise (a 500).
MAX_DB_INT = 2**31 - 1  # INTEGER columns on PostgreSQL


def _no_nul(value: str) -> str:
    if "\x00" in value:  # PostgreSQL text cannot hold NUL (SQLite can: refuse on both alike)
        raise ValueError("must not contain NUL characters")
    return value


DbText = Annotated[str, AfterValidator(_no_nul)]


def check_query_text(params: Mapping[str, str]) -> None:
    """400 for a query value the database cannot compare with (NUL)."""
    for key, value in params.items():
        try:
            _no_nul(value)
        except ValueError as exc:
            raise BadRequest(f"{key} {exc}") from None


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
