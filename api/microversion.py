"""Microversions: `OpenStack-API-Version: accelerator X.Y`, 2.0 by default, 2.0-2.3 supported."""

from __future__ import annotations

import functools
import logging

import microversion_parse

from rayborg.api.errors import NotAcceptable

SERVICE_TYPE = "accelerator"
HEADER = "OpenStack-API-Version"
MIN_VERSION = (2, 0)
MAX_VERSION = (2, 3)

# Feature gates, each written once.
PROJECT_ID_IN_BIND = (2, 1)
PROFILE_BY_NAME = (2, 2)
DEVICE_STATUS = (2, 3)

log = logging.getLogger(__name__)


def fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def _range_headers() -> dict[str, str]:
    return {"OpenStack-API-Minimum-Version": fmt(MIN_VERSION),
            "OpenStack-API-Maximum-Version": fmt(MAX_VERSION), "Vary": HEADER}


def _out_of_range(version: tuple[int, int]) -> NotAcceptable:
    """As Cyborg: the range headers (but no OpenStack-API-Version: nothing was negotiated), so that a
    client can retry within the range; a wrong major version is named as such."""
    supported = f"The supported version range is: [{fmt(MIN_VERSION)}, {fmt(MAX_VERSION)}]."
    if version[0] != MIN_VERSION[0]:
        message = (f"Mutually exclusive versions requested. Version {fmt(version)} requested but not "
                   f"supported by this service. {supported}")
    else:
        message = (f"Version {fmt(version)} was requested but the minor version is not supported by this "
                   f"service. {supported}")
    return NotAcceptable(message, headers=_range_headers())


_NEGOTIATED: dict[str, tuple[int, int]] = {}  # header value -> version, for the values seen most
_NEGOTIATED_MAX = 256


def negotiate(headers) -> tuple[int, int]:
    """The version a request asks for; 406 when it is malformed or outside the supported range.
    Clients send the same few header values over and over: a value negotiated cleanly once is
    remembered (at most _NEGOTIATED_MAX of them), and no header at all is 2.0 at once."""
    values = headers.getall(HEADER, ())
    if not values:
        return MIN_VERSION
    value = values[0]
    found = _NEGOTIATED.get(value) if len(values) == 1 else None
    if found is not None:
        return found
    version = _negotiate(headers)
    # Not several headers (the last one wins) nor the bare form (which logs a warning each time).
    if len(values) == 1 and len(_NEGOTIATED) < _NEGOTIATED_MAX and " " in value.strip():
        _NEGOTIATED[value] = version
    return version


def _negotiate(headers) -> tuple[int, int]:
    raw = microversion_parse.get_version(headers, service_type=SERVICE_TYPE)
    if raw is None:
        bare = headers.get(HEADER)
        if bare is None or " " in bare.strip():
            return MIN_VERSION  # absent, or meant for another service
        log.warning("%s header without service type: %r", HEADER, bare)
        raw = bare.strip()
    if raw.strip().lower() == "latest":
        return MAX_VERSION
    try:
        major_s, minor_s = raw.strip().split(".")
        version = (int(major_s), int(minor_s))
    except ValueError:
        raise NotAcceptable(f"Invalid API version format: {raw}. Expected X.Y, the supported range is "
                            f"[{fmt(MIN_VERSION)}, {fmt(MAX_VERSION)}].") from None
    if not (MIN_VERSION <= version <= MAX_VERSION):
        raise _out_of_range(version)
    return version


@functools.lru_cache(maxsize=None)
def response_headers(version: tuple[int, int]) -> dict[str, str]:
    """The headers every answer at `version` carries (one dict per version, made once: do not change it)."""
    return {HEADER: f"{SERVICE_TYPE} {fmt(version)}", **_range_headers()}


def require(version: tuple[int, int], needed: tuple[int, int], what: str | None = None) -> None:
    if version < needed:
        raise NotAcceptable(what or f"Request not acceptable. The minimal required API version should be "
                                    f"{fmt(needed)}")
