"""Shapes shared by every resource."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from rayborg.api.errors import BadRequest

M = TypeVar("M", bound=BaseModel)


# Integers that reach an INTEGER column must fit it, or the database raises (a 500).
MAX_DB_INT = 2**31 - 1


class Link(BaseModel):
    href: str
    rel: str


class Strict(BaseModel):
    """Request bodies: unknown fields are a 400, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


def validated(model: type[M], data: Any, context: dict[str, Any] | None = None) -> M:
    """`data` parsed as `model` (its validators see `context`), or 400 listing what is wrong, field
    by field."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise BadRequest("Invalid request body: " + "; ".join(_describe(e) for e in exc.errors())) from None


def _describe(error: dict) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown field {loc!r}"
    msg = error["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg
