"""`rayborg quota` (read from the database with the settings' [quota] limits) and the Python API's
`Rayborg.quota` (the binder's read of the same report)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from factories import add_device, add_profile

from rayborg.actors.runtime_config import RuntimeConfig
from rayborg.cli import main as cli
from rayborg.store import arq_state
from rayborg.store.engine import Store
from rayborg.store.migrate import upgrade


@pytest.fixture
def held(tmp_path, monkeypatch):
    """A database where project pa holds one FPGA (Bound) and one in flight, pb a QAT in flight."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    monkeypatch.setenv("RAYBORG_CONFIG", str(tmp_path / "rayborg.toml"))
    toml = f'database_url = "{url}"\n[quota]\ndefault = -1\nFPGA = 4\nPGPU = 2\n'
    (tmp_path / "rayborg.toml").write_text(toml)
    store = Store(url)
    upgrade(store.engine)
    tree = add_device(store, handles_per_deployable=4)
    add_profile(store, "fpga", [{"resources:FPGA": "1"}])
    add_profile(store, "qat", [{"resources:CUSTOM_QAT": "1"}])

    def bind(profile: str, project: str) -> list[str]:
        arqs = [a.uuid for a in store.transact(arq_state.create_arqs, profile, project)]
        target = arq_state.BindTarget("host1", tree.rp_uuids[0], str(uuid.uuid4()), project)
        store.transact(arq_state.start_bind, dict.fromkeys(arqs, target))
        return arqs

    store.transact(arq_state.finish_binds, bind("fpga", "pa"))
    bind("fpga", "pa")
    bind("qat", "pb")
    yield store
    store.dispose()


PA_FPGA = {"project_id": "pa", "resource": "FPGA", "used": 1, "reserved": 1, "limit": 4}
PB_QAT = {"project_id": "pb", "resource": "CUSTOM_QAT", "used": 0, "reserved": 1, "limit": -1}


def test_quota_command_json_and_table(held, capsys):
    assert cli(["quota", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [PA_FPGA, PB_QAT]
    assert cli(["quota", "--project", "pb", "--json"]) == 0  # and the classes with a limit it holds none of
    assert json.loads(capsys.readouterr().out) == [
        PB_QAT, {"project_id": "pb", "resource": "FPGA", "used": 0, "reserved": 0, "limit": 4},
        {"project_id": "pb", "resource": "PGPU", "used": 0, "reserved": 0, "limit": 2}]
    assert cli(["quota", "--project", "pb"]) == 0
    table = capsys.readouterr().out
    assert "CUSTOM_QAT" in table and "unlimited" in table and "PGPU" in table


def test_quota_command_on_a_database_without_the_schema(tmp_path, capsys):
    assert cli(["quota", "--database-url", f"sqlite:///{tmp_path / 'empty.db'}"]) == 1
    assert "quota_usages" in capsys.readouterr().err


def test_python_api_quota_reads_the_binders_report(held, monkeypatch):
    """Rayborg.quota asks binder 0, which reads the report with the daemon's own [quota] limits."""
    from rayborg.actors.binder import Binder
    from rayborg.python_api.client import Rayborg

    binder = object.__new__(Binder.__ray_metadata__.modified_class)
    binder.store, binder.config = held, RuntimeConfig(database_url=held.url, quota={"FPGA": 4})
    calls = []

    def call(self, name, *args, **kwargs):
        calls.append(name)
        return asyncio.run(getattr(binder, name)(*args, **kwargs))

    monkeypatch.setattr(Rayborg, "_call", call)
    rb = object.__new__(Rayborg)
    assert rb.quota("pa") == [PA_FPGA]
    assert [u["project_id"] for u in rb.quota()] == ["pa", "pb"] and calls == ["quota_usage", "quota_usage"]



def test_binders_check_claims_against_keystones_limits_when_they_apply(held, monkeypatch):
    """With RuntimeConfig.unified_limits (keystone mode, [unified_limits] enabled) a binder's claims
    and its quota report use Keystone's limits (one reader, cached, per binder)."""
    from rayborg.actors.binder import Binder
    from rayborg.actors.unified_limits import UnifiedLimits

    monkeypatch.setattr(UnifiedLimits, "_read", lambda self, project: {"FPGA": 1})
    binder = object.__new__(Binder.__ray_metadata__.modified_class)
    binder.store = held
    binder.config = RuntimeConfig(database_url=held.url, quota={"FPGA": 4}, unified_limits={"enabled": True})
    limits = binder._quota_limits()
    assert limits.of("pa", "FPGA") == 1 and binder._quota_limits().per_project is limits.per_project
    assert asyncio.run(binder.quota_usage("pa")) == [{**PA_FPGA, "limit": 1}]


def test_quota_command_shows_keystones_limits_in_keystone_mode(held, monkeypatch, capsys):
    """With [unified_limits] enabled in keystone mode the limits shown are Keystone's (read once per
    project through oslo.limit: here a stand-in for the read), not the [quota] table's."""
    from rayborg.actors.unified_limits import UnifiedLimits

    asked = []

    def read(self, project):
        asked.append(project)
        return {"FPGA": 1} if project == "pa" else {}

    monkeypatch.setattr(UnifiedLimits, "_read", read)
    monkeypatch.setenv("RAYBORG_AUTH_STRATEGY", "keystone")
    monkeypatch.setenv("RAYBORG_KEYSTONE__AUTH_URL", "http://127.0.0.1:1/v3")
    monkeypatch.setenv("RAYBORG_UNIFIED_LIMITS__ENABLED", "true")
    assert cli(["quota", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{**PA_FPGA, "limit": 1}, PB_QAT]
    assert sorted(asked) == ["pa", "pb"]
