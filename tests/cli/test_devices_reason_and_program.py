"""`rayborg devices` and the Python API's `devices()` show why a device is disabled and the outcome
of each deployable's latest programming through the API (program_status/image/error), against a
running runtime on the 3-host test cluster."""

import json
import random

import pytest
from cli_helpers import cli_runtime, run
from runtime_helpers import fresh_store
from sqlmodel import select

import rayborg
from rayborg.actors.runtime_config import RuntimeConfig
from rayborg.store.queries import operator, program_requests
from rayborg.store.tables import Deployable, ProgramRequest

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
GOOD, BAD = "0e6f4c8a-5b2d-4f3e-9a1c-7d8e9f0a1b2c", "5a1d7e8f-0b2c-4d3e-8f9a-1b2c3d4e5f60"


@pytest.fixture(scope="module")
def runtime(ray_cluster, tmp_path_factory):
    store = fresh_store(tmp_path_factory.mktemp("cli-reason"))
    config = RuntimeConfig(
        database_url=store.url, report_interval=30, retry_interval=0.2,
        host_overrides={"host-a": {"fake_devices": "fpga:3",
                                   "driver_options": {"fake": {"seed": random.randrange(1, 3000)}}},
                        "host-b": {"drivers": []}, "host-c": {"drivers": []}})
    with cli_runtime(store, config, deployables=3):
        # deployable 0: disabled with a reason; 1: programmed (done), then again (failed); 2: being programmed
        names = store.query(lambda s: list(s.exec(select(Deployable.name).order_by(Deployable.name))))
        store.transact(operator.set_device_status, names[0], False, "fan failure")

        def request(session, name: str, image: str) -> str:
            dep = session.exec(select(Deployable).where(Deployable.name == name)).one()
            row = ProgramRequest(deployable_id=dep.id, image_uuid=image)
            session.add(row)
            session.flush()
            return row.uuid

        for name, image, error in ((names[1], GOOD, None), (names[1], BAD, "bitstream does not fit"),
                                   (names[2], GOOD, ...)):
            uuid = store.transact(request, name, image)
            if error is not ...:
                store.transact(program_requests.start, uuid)
                store.transact(program_requests.finish, uuid, error)
        yield {"store": store, "address": ray_cluster["cluster"].address, "names": names}


def test_devices_table_shows_reason_and_last_program(runtime, capsys):
    names = runtime["names"]
    code, out, _ = run(capsys, "devices", "--host", "host-a")
    assert code == 0, out
    lines = {n: next(line for line in out.splitlines() if n in line and "│" in line) for n in names}
    assert "disabled: fan failure" in lines[names[0]]
    assert f"failed {BAD}" in lines[names[1]]
    assert f"requested {GOOD}" in lines[names[2]]
    assert f"host-a {names[1]}: programming {BAD} failed: bitstream does not fit" in out
    assert f"{names[2]}: programming" not in out  # a request still running is no failure


def test_devices_json_carries_reason_and_program(runtime, capsys):
    names = runtime["names"]
    code, out, _ = run(capsys, "devices", "--host", "host-a", "--json")
    rows = {r["deployable"]: r for r in json.loads(out)}
    assert code == 0
    assert (rows[names[0]]["state"], rows[names[0]]["status_reason"], rows[names[0]]["program_status"]) == (
        "disabled", "fan failure", None)
    failed = rows[names[1]]
    assert (failed["program_status"], failed["program_image_uuid"], failed["program_error"]) == (
        "failed", BAD, "bitstream does not fit")
    assert failed["program_updated_at"].endswith("+00:00") and failed["status_reason"] is None
    assert (rows[names[2]]["program_status"], rows[names[2]]["program_error"]) == ("requested", None)


def test_python_api_devices_carry_reason_and_program(runtime):
    names = runtime["names"]
    rb = rayborg.connect(runtime["address"], database_url=runtime["store"].url)
    rows = {r["deployable"]: r for r in rb.devices(host="host-a")}
    assert rows[names[0]]["status_reason"] == "fan failure"
    assert (rows[names[1]]["program_status"], rows[names[1]]["program_error"]) == ("failed", "bitstream does not fit")
    assert [r["deployable"] for r in rb.devices(state="disabled")] == [names[0]]


def test_disable_prints_the_reason_and_enable_clears_it(runtime, capsys):
    names = runtime["names"]
    code, out, _ = run(capsys, "disable", names[0])
    assert code == 0 and "maintaining (fan failure) (unchanged)" in out
    code, out, _ = run(capsys, "enable", names[0], "--json")
    assert code == 0 and json.loads(out)["status_reason"] is None
    code, out, _ = run(capsys, "devices", "--host", "host-a", "--json")
    assert {r["deployable"]: r["status_reason"] for r in json.loads(out)}[names[0]] is None


def test_disable_with_a_reason_from_the_cli_and_the_python_api(runtime, capsys):
    names = runtime["names"]
    code, out, _ = run(capsys, "disable", names[2], "--reason", "firmware update")
    assert code == 0 and "maintaining (firmware update)" in out
    code, out, _ = run(capsys, "devices", "--host", "host-a", "--json")
    assert {r["deployable"]: r["status_reason"] for r in json.loads(out)}[names[2]] == "firmware update"
    rb = rayborg.connect(runtime["address"], database_url=runtime["store"].url)
    assert rb.disable(names[2], reason="second look")["status_reason"] == "second look"
    with pytest.raises(rayborg.RayborgError):
        rb.disable(names[2], reason="x" * 256)
    assert rb.enable(names[2])["status_reason"] is None
    code, out, _ = run(capsys, "disable", names[2], "--reason", "")
    assert code != 0
    assert all(r["deployable"] != names[2] for r in rb.devices(host="host-a", state="disabled"))
