"""Cyborg's error envelope: `{"error_message": "<JSON string with faultcode/faultstring/debuginfo>"}`."""

from __future__ import annotations

import orjson
from aiohttp import web


class ApiError(Exception):
    """An error answered with Cyborg's body. Raise a subclass from handlers; never build responses."""

    status = 500

    def __init__(self, message: str, status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class MethodNotAllowed(ApiError):
    status = 405


class NotAcceptable(ApiError):
    status = 406


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class Locked(ApiError):
    status = 423


def error_body(status: int, message: str) -> bytes:
    # Messages may echo client input that is not valid UTF-8 (e.g. a raw header): keep it printable.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    fault = {"faultcode": "Client" if status < 500 else "Server", "faultstring": message, "debuginfo": None}
    return orjson.dumps({"error_message": orjson.dumps(fault).decode()})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=error_body(status, message),
                        content_type="application/json", headers=headers)
