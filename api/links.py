"""URLs in bodies, built from where the client reached us (or a configured public URL)."""

from __future__ import annotations

from aiohttp import web
from rayborg.api.app_keys import SETTINGS


def base_url(request: web.Request) -> str:
    """Service root without a trailing slash, e.g. `http://cloud:6666` or `https://x/accelerator`.

    A configured `public_url` wins; otherwise X-Forwarded-Proto/-Host/-Prefix (set by a reverse
    proxy that mounts us under a prefix) and the Host header the client sent. Worked out once per
    request: a list response needs it for every item.
    """
    cached = request.get("base_url")
    if cached is None:
        cached = request["base_url"] = _base_url(request)
    return cached


def _base_url(request: web.Request) -> str:
    configured = request.app[SETTINGS].public_url
    if configured:
        return configured.rstrip("/")
    h = request.headers
    proto = (h.get("X-Forwarded-Proto") or request.scheme).split(",")[0].strip()
    host = (h.get("X-Forwarded-Host") or h.get("Host") or request.host).split(",")[0].strip()
    prefix = (h.get("X-Forwarded-Prefix") or h.get("X-Script-Name") or "").strip().rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    # Reached through our own mount prefix (e.g. /accelerator) rather than through a proxy.
    prefix += request.get("prefix", "")
    return f"{proto}://{host}{prefix}"


def self_link(request: web.Request, collection: str, uuid: str) -> list[dict[str, str]]:
    return [{"href": f"{base_url(request)}/v2/{collection}/{uuid}", "rel": "self"}]


def bookmark_links(request: web.Request, collection: str, uuid: str) -> list[dict[str, str]]:
    base = base_url(request)
    return [{"href": f"{base}/v2/{collection}/{uuid}", "rel": "self"},
            {"href": f"{base}/{collection}/{uuid}", "rel": "bookmark"}]
