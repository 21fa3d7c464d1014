"""Version documents."""

from __future__ import annotations

from pydantic import BaseModel

from rayborg.api.schemas.common import Link


class VersionDocument(BaseModel):
    id: str
    status: str
    min_version: str
    max_version: str
    links: list[Link]


class RootDocument(BaseModel):
    name: str
    description: str
    versions: list[VersionDocument]
    default_version: VersionDocument
