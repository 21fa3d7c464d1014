"""The binder's `check_bitstream` (no Ray): asks each distinct Glance once, names why an image is
no bitstream, and leaves to the agents what it cannot tell (local directories, Glance unreachable)."""

import socket

from glance_stub import GlanceStub

from rayborg.actors.runtime_config import RuntimeConfig
from rayborg.actors.bitstream_check import check_bitstream


def binder(per_host: dict[str, dict]) -> RuntimeConfig:
    overrides = {h: {"driver_options": {"bitstreams": cfg}} for h, cfg in per_host.items()}
    return RuntimeConfig(database_url="sqlite://", host_overrides=overrides)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_bitstream_per_host(tmp_path):
    glance = GlanceStub()
    try:
        glance.add("good")
        glance.add("plain-image", tags=())
        b = binder({
            "a": {"glance_url": glance.url},
            "b": {"glance_url": glance.url},
            "c": {"dir": str(tmp_path)},  # on host c's own disk: only its agent can look
            "d": {"glance_url": f"http://127.0.0.1:{free_port()}"},  # unreachable from here
        })
        hosts = ["a", "b", "c", "d", "e"]
        assert check_bitstream(b, "good", hosts) == {}
        assert glance.asked == ["good"]  # hosts a and b share one Glance: asked once
        missing = "bitstream image gone does not exist in Glance"
        assert check_bitstream(b, "gone", hosts) == {"a": missing, "b": missing}
        assert check_bitstream(b, "plain-image", ["a"]) == {"a": "image plain-image is not tagged FPGA"}
    finally:
        glance.close()
