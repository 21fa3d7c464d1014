"""Applying host reports: the programmed bitstream outlives a driver that cannot read it back (a
restarted HostAgent), the driver wins when it reads something else, and stub devices are skipped."""

from __future__ import annotations

import pytest
from sqlmodel import select

from rayborg.drivers.base import HostReport
from rayborg.drivers.bitstreams import Bitstream, BitstreamMeta
from rayborg.drivers.registry import HostDrivers
from rayborg.store.host_reports import apply_report
from rayborg.store.tables import Attribute, Deployable, Device

HOST = "h1"
DEP = f"{HOST}_fake_fpga_0"
FUNCTION = "CUSTOM_FPGA_FUNCTION_ID_FAKE_AA_BB"


def agent() -> HostDrivers:
    """A HostAgent's drivers; a new one is what a restarted agent (or daemon) has: nothing in memory."""
    return HostDrivers(HOST, drivers=["fake"], options={"fake": {"spec": "fpga:2"}})


def bitstream(image_id: str, function: str) -> Bitstream:
    meta = BitstreamMeta.model_validate({"bs-name": "x", "bs-uuid": "u", "vendor": "fake", "board": "b",
                                         "version": "1", "function_uuid": function})
    return Bitstream(image_id=image_id, meta=meta, path="/dev/null")


def loaded(store) -> tuple[str | None, list[str], bool]:
    """The deployable's stored bitstream, trait attributes, and whether Placement has to hear of it."""
    def read(s):
        dep = s.exec(select(Deployable).where(Deployable.name == DEP)).one()
        traits = [a.value for a in s.exec(select(Attribute).where(Attribute.deployable_id == dep.id)
                                          .order_by(Attribute.key)) if a.key.startswith("trait")]
        return dep.bitstream_id, traits, dep.placement_dirty
    return store.query(read)


def pushed(store) -> None:
    """As if PlacementSync had pushed everything."""
    store.transact(lambda s: [setattr(d, "placement_dirty", False) for d in s.exec(select(Deployable))])


def with_traits(report: HostReport, extra: list[str]) -> HostReport:
    body = report.model_dump()
    dep = next(d for dev in body["devices"] for d in dev["deployables"] if d["name"] == DEP)
    dep["traits"] += extra
    return HostReport.model_validate(body)


@pytest.fixture
def programmed(store):
    drivers = agent()
    drivers.program("fake", DEP, bitstream("img-1", "aa-bb"))
    store.transact(apply_report, drivers.discover())
    assert loaded(store)[:2] == ("img-1", ["CUSTOM_FAKE_DEVICE", "CUSTOM_FPGA_FAKE", FUNCTION])
    pushed(store)
    return store


def test_a_restarted_agent_that_cannot_read_the_bitstream_keeps_it(programmed):
    store = programmed
    report = agent().discover()  # restarted: the fake driver, like Inspur's, cannot read what is loaded
    assert next(d for d in report.deployables() if d.name == DEP).bitstream_id is None
    for _ in range(2):
        diff = store.transact(apply_report, report)
        assert diff.empty
        assert loaded(store) == ("img-1", ["CUSTOM_FAKE_DEVICE", "CUSTOM_FPGA_FAKE", FUNCTION], False)


def test_the_same_function_read_back_keeps_the_bitstream(programmed):
    store = programmed
    diff = store.transact(apply_report, with_traits(agent().discover(), [FUNCTION]))  # Intel: afu_id only
    assert diff.empty and loaded(store)[0] == "img-1"


def test_another_function_on_the_device_wins(programmed):
    store = programmed
    other = "CUSTOM_FPGA_FUNCTION_ID_FAKE_CC"
    diff = store.transact(apply_report, with_traits(agent().discover(), [other]))
    assert diff.changed == [DEP]
    assert loaded(store) == (None, ["CUSTOM_FAKE_DEVICE", "CUSTOM_FPGA_FAKE", other], True)


def test_another_bitstream_reported_wins(programmed):
    store = programmed
    drivers = agent()
    drivers.program("fake", DEP, "img-2")  # a bitstream without function metadata
    diff = store.transact(apply_report, drivers.discover())
    assert diff.changed == [DEP]
    assert loaded(store) == ("img-2", ["CUSTOM_FAKE_DEVICE", "CUSTOM_FPGA_FAKE"], True)


def stubbed(report: HostReport, key: str) -> HostReport:
    body = report.model_dump()
    for dev in body["devices"]:
        dev["stub"] = dev["stub"] or dev["key"] == key
    return HostReport.model_validate(body)


def test_stub_devices_are_neither_added_nor_changed_nor_removed(store):
    report = agent().discover()
    first, second = (d.key for d in report.devices)
    diff = store.transact(apply_report, stubbed(report, second))
    names = lambda: store.query(lambda s: sorted(d.name for d in s.exec(select(Deployable))))  # noqa: E731
    assert diff.added == [DEP] and names() == [DEP]
    assert store.query(lambda s: [d.std_board_info_key for d in s.exec(select(Device))]) == [first]
    # a stored device whose management stack went away is left as it was, not removed
    diff = store.transact(apply_report, stubbed(report, first))
    assert DEP not in diff.removed and names() == [DEP, f"{HOST}_fake_fpga_1"]
