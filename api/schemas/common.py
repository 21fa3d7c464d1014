"""Shapes shared by every resource."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Link(BaseModel):
    href: str
    rel: str


class Strict(BaseModel):
    """Request bodies: unknown fields are a 400, not silently dropped."""

    model_config = ConfigDict(extra="forbid")
