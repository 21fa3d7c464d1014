"""Attribute bodies: the flat /v2/attributes POST (bare, or wrapped as openstacksdk sends it) and
responses, and the per-deployable form of the 2023.1 attribute API."""

from __future__ import annotations

from pydantic import BaseModel, Field, RootModel, StrictInt

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


# -- the per-deployable form (2023.1 attribute API): /v2/deployable/{uuid}/attribute -------------

class AttributeItem(Strict):
    key: str = Field(min_length=1, max_length=255)
    value: str = Field(max_length=255)


class DeployableAttributesCreate(RootModel[list[AttributeItem]]):
    """POST body: a non-empty list of {key, value}."""

    root: list[AttributeItem] = Field(min_length=1, max_length=1000)


class AttributeUpdate(Strict):
    value: str = Field(max_length=255)


class DeployableAttributeBrief(BaseModel):
    key: str
    value: str
    uuid: str


class DeployableAttributeList(BaseModel):
    attributes: list[DeployableAttributeBrief]


class DeployableAttributeDetail(DeployableAttributeBrief):
    created_at: str | None
    updated_at: str | None


class DeployableAttributeShown(BaseModel):
    attribute: DeployableAttributeDetail
