"""Per-handler OpenAPI metadata, attached by a decorator and read by `api/openapi.py`.

The OpenAPI document is generated from these pydantic models, so it cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel


def operation(*, summary: str, responses: dict[int, type[BaseModel] | None],
              body: Any = None, query: type[BaseModel] | None = None,
              tags: list[str] | None = None, body_required: bool = True) -> Callable:
    """Describe a handler: its summary, request body model (or type), query model and responses
    by status (None for an empty body); `body_required=False` for a body a client may leave out."""

    def mark(handler: Callable) -> Callable:
        handler.__openapi__ = {"summary": summary, "responses": responses, "body": body,
                               "query": query, "tags": tags or [], "body_required": body_required}
        return handler

    return mark
