"""bench/run.py and the modules it is split into (procs, measure, report): flags, rows, the stamp
of the machine, load and commit, re-rendering; nothing here starts a deployment."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import measure  # noqa: E402
import postgres  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402


def test_the_entry_point_keeps_its_flags():
    args = run.parse_args(["--sync-only", "--reads-only", "--skip-cyborg", "--hosts", "7", "--rounds", "1",
                           "--duration", "3", "--burst", "50", "--quota-rounds", "2", "--skip-postgres",
                           "--writes-only", "--render-only", "--keep", "--rayborg-workers", "2"])
    assert (args.sync_only, args.reads_only, args.skip_cyborg, args.sync_hosts, args.burst) == (True, True, True, 7, 50)
    assert (args.quota_rounds, args.skip_postgres, args.writes_only, args.render_only) == (2, True, True, True)
    defaults = run.parse_args([])
    assert (defaults.burst, defaults.quota_rounds, defaults.sync_hosts, defaults.out) == (600, 5, 200, run.RESULTS)


def test_the_cost_of_the_quota_check_is_the_time_it_adds():
    assert measure.cost_pct(11.0, 10.0) == 10.0    # create->Bound p50: on 11 ms, off 10 ms
    assert measure.cost_pct(2000.0, 2500.0) == -20.0
    assert measure.cost_pct(None, 10.0) is None and measure.cost_pct(10.0, 0) is None


def _results(**extra) -> dict:
    env = {"cpus": 2, "machine": "x86_64", "cpu_model": "Test CPU", "memory_gib": 8.0, "kernel": "6.1",
           "python": "3.11.7", "commit": "0123456789ab + uncommitted changes",
           "loadavg_before": "0.10 0.20 0.30", "loadavg_after": "1.10 1.20 1.30"}
    return {"environment": env, "writes": {}, **extra}


def _rows(res: dict) -> dict[str, dict]:
    return {r["metric"]: r for r in report.write_rows(res)}


def test_quota_rows_show_off_on_and_the_cost_against_10_percent():
    quota = {"rounds": 3, "burst_instances": 600, "limits_seen": {"off": {}, "on": {"FPGA": 1000000}},
             "off": {"create_to_bound_p50_ms": 6.0, "binds_per_s": 2400.0},
             "on": {"create_to_bound_p50_ms": 6.3, "binds_per_s": 2000.0},
             "create_to_bound_cost_pct": 5.0, "burst_cost_pct": 20.0}
    rows = _rows(_results(quota=quota))
    limits = next(r for m, r in rows.items() if "limits the front door reports" in m)
    assert (limits["rayborg"], limits["floor"], limits["met"]) == ("FPGA=1000000", "none", True)
    c2b = next(r for m, r in rows.items() if m.startswith("quota check: cost in % of create->Bound"))
    assert (c2b["rayborg"], c2b["target"], c2b["met"]) == (5.0, "<= 10 %", True)
    burst = next(r for m, r in rows.items() if m.startswith("quota check: cost in % of the bind burst (1,200 ARQs"))
    assert (burst["rayborg"], burst["met"]) == (20.0, False)
    rate = next(r for m, r in rows.items() if m.startswith("quota check: the bind burst"))
    assert (rate["rayborg"], rate["floor"]) == (2000.0, 2400.0)


def test_the_postgres_row_says_why_it_did_not_run():
    rows = report.write_rows(_results(postgres={"unavailable": "PostgreSQL binaries (initdb, pg_ctl) not found"}))
    assert len(rows) == 1
    assert rows[0]["rayborg"] == "not run: PostgreSQL binaries (initdb, pg_ctl) not found"
    assert rows[0]["met"] is None and rows[0]["target"] == ">= 1000/s"
    ran = report.write_rows(_results(postgres={"binds_per_s": 1200.0, "states": {"Bound": 1200},
                                               "create_to_bound_p50_ms": 9.0}))
    assert (ran[0]["rayborg"], ran[0]["met"], ran[1]["rayborg"]) == (1200.0, True, "none")


def test_the_table_says_the_machine_the_load_before_and_after_and_the_commit():
    line = report.describe(_results()["environment"])
    for part in ("2 CPUs", "Test CPU", "0.10 0.20 0.30 before", "1.10 1.20 1.30 after",
                 "commit 0123456789ab + uncommitted changes"):
        assert part in line
    env = report.environment()
    assert env["commit"] and env["loadavg_before"] and env["cpus"]


def test_the_commit_is_clean_when_only_bench_results_changed(monkeypatch):
    """Changed results files (the run's own output) never make the commit 'uncommitted'; the first
    porcelain line keeps its status column (it was stripped once, and that line always counted)."""
    import subprocess

    outputs = {"rev-parse": "0123456789ab\n",
               "status": " M bench/results/results.md\n M bench/results/reads.png\n"}

    def fake_run(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 0, stdout=outputs[argv[3]], stderr="")

    monkeypatch.setattr(report.subprocess, "run", fake_run)
    assert report.commit() == "0123456789ab"
    outputs["status"] = " M bench/results/results.md\n M store/quotas.py\n"
    assert report.commit() == "0123456789ab + uncommitted changes"


def test_render_only_reproduces_the_committed_table(tmp_path):
    committed = BENCH / "results" / "results.json"
    if not committed.exists():
        pytest.skip("no committed bench/results/results.json")
    shutil.copy(committed, tmp_path / "results.json")
    assert run.main(["--render-only", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    md = (tmp_path / "results.md").read_text()
    for row in report.table(res["rows"])[1:]:
        assert "| " + " | ".join(row) + " |" in md
    assert "before" in md and "after" in md and "commit" in md


@pytest.mark.postgres
def test_the_bench_postgres_starts_and_is_removed():
    if postgres.unavailable():
        pytest.skip(postgres.unavailable())
    pg = postgres.Postgres().start()
    try:
        url = pg.create_database()
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pg.stop()
    assert not pg.dir.exists()
