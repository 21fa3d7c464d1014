"""Whether a bitstream exists before a batch programs it: asked once per distinct Glance the hosts
look their bitstreams up in (from a binder, which has every host's settings)."""

from __future__ import annotations

import logging

from rayborg.actors.runtime_config import RuntimeConfig

log = logging.getLogger("rayborg.claims")


def check_bitstream(config: RuntimeConfig, bitstream: str, hosts: list[str]) -> dict[str, str]:
    """host -> why its bitstream source has no usable `bitstream`, for the hosts whose source can be
    asked from here (Glance; each distinct one once). A local directory lives on its own host: only
    that host's agent can tell, when it programs."""
    from rayborg.drivers.bitstreams import GlanceBitstreams, bitstream_source

    out: dict[str, str] = {}
    answers: dict[str, str | None] = {}
    for host in hosts:
        cfg = config.for_host(host)["options"].get("bitstreams") or {}
        key = repr(sorted(cfg.items()))
        if key not in answers:
            source = bitstream_source(dict(cfg))
            answers[key] = _glance_says(source, bitstream) if isinstance(source, GlanceBitstreams) else None
        if answers[key]:
            out[host] = answers[key]
    return out


def _glance_says(source, image_id: str) -> str | None:
    """Why Glance's image `image_id` is not a usable bitstream; None when it is or Glance cannot
    be asked from here (the agents will find out themselves)."""
    from keystoneauth1 import exceptions as ks_exc

    from rayborg.drivers.base import BitstreamError
    from rayborg.drivers.bitstreams import FPGA_TAG, parse_meta

    try:
        image = source.adapter.get(f"/v2/images/{image_id}").json()
    except ks_exc.NotFound:
        return f"bitstream image {image_id} does not exist in Glance"
    except (ks_exc.ClientException, ValueError) as exc:
        log.info("cannot check bitstream %s in Glance: %s", image_id, exc)
        return None
    if FPGA_TAG not in (image.get("tags") or []):
        return f"image {image_id} is not tagged {FPGA_TAG}"
    try:
        parse_meta(image, image_id=image_id)
    except BitstreamError as exc:
        return str(exc)
    return None
