"""Attribute bodies: the POST request (bare, or wrapped as openstacksdk sends it) and responses."""

from __future__ import annotations

from pydantic import BaseModel, Field, StrictInt

from rayborg.api.schemas.common import MAX_DB_INT, Link, Strict


class AttributeCreate(Strict):
    deployable_id: StrictInt = Field(ge=1, le=MAX_DB_INT)
    key: str = Field(min_length=1, max_length=255)
    value: str = Field(max_length=255)


class AttributeCreateWrapped(Strict):
    attribute: AttributeCreate


class Attribute(BaseModel):
    uuid: str
    deployable_id: int
    key: str
    value: str
    created_at: str | None
    updated_at: str | None
    links: list[Link]


class AttributeList(BaseModel):
    attributes: list[Attribute]


class AttributeQuery(BaseModel):
    deployable_id: int | None = Field(default=None, ge=1, le=MAX_DB_INT)
    key: str | None = None
