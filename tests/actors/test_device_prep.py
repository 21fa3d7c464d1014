"""actors/device_prep.py: only drivers that prepare their handles (vGPU's mdevs) cost the binder a
round trip to the host's agent; an unknown or missing driver prepares nothing."""

from rayborg.actors.device_prep import prepares


def test_only_preparing_drivers_are_asked():
    assert prepares("nvidia_vgpu")
    assert not prepares("intel_fpga") and not prepares("fake")
    assert not prepares("no_such_driver") and not prepares(None)
