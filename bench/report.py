"""Reporting for bench/run.py: the rows (metric, rayborg, Cyborg 17, floor, ratio, target, met?) from
a results dict, the table on stdout, bench/results/results.{json,md} and the plot reads.png; the
environment each is stamped with (machine, load before and after, commit). Measures nothing.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from measure import ENDPOINTS

REPO = Path(__file__).resolve().parent.parent
READ_RATIO_TARGET = 10.0      # rayborg req/s >= 10x Cyborg's
P99_RATIO_TARGET = 0.1        # rayborg p99 <= 1/10 of Cyborg's
# rayborg req/s against the floor, one process each (issue 18 item 3): small answers near it, long lists
FLOOR_RATIO_TARGETS = {"device_profiles": 0.8, "arq_show": 0.8, "arqs": 0.6, "devices": 0.6}
IDLE_PSS_TARGET_MIB = 1024.0  # single box idle PSS <= 1 GiB
QUOTA_COST_MAX_PCT = 10.0     # issue 17: the quota check costs at most 10 % of the burst and of create->Bound
PG_BINDS_PER_S_TARGET = 1000.0  # issue 18 target 4: the bind burst on PostgreSQL


# ---------------------------------------------------------------- environment

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def commit() -> str:
    """The commit measured, `+ uncommitted changes` when the tree differs from it (outside bench/results)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              timeout=30).stdout  # not stripped: porcelain lines start with a status column

    try:
        head = git("rev-parse", "--short=12", "HEAD").strip()
        dirty = [ln for ln in git("status", "--porcelain", "--untracked-files=no").splitlines()
                 if not ln[3:].startswith("bench/results/")]
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if not head:
        return "unknown (not a git checkout)"
    return head + (" + uncommitted changes" if dirty else "")


def environment() -> dict:
    """The machine and the load at the start of a run (`loadavg_after` is added at its end)."""
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "cpu_model": _cpu_model(),
            "memory_gib": _mem_gib(), "kernel": platform.release(), "python": platform.python_version(),
            "commit": commit(), "loadavg_before": loadavg()}


def describe(env: dict) -> str:
    """One line: the machine, the load before and after, the commit."""
    machine = f"{env['cpus']} CPUs ({env['machine']}" + (f", {env['cpu_model']}" if env.get("cpu_model") else "")
    machine += (f", {env['memory_gib']} GiB" if env.get("memory_gib") else "") + ")"
    return (f"{machine}, Linux {env.get('kernel', '?')}, Python {env['python']}; load average (1, 5, 15 min) "
            f"{env['loadavg_before']} before, {env.get('loadavg_after', '-')} after; commit {env.get('commit', '-')}")


# ---------------------------------------------------------------- rows

def ratio(a, b) -> float | None:
    if a is None or b in (None, 0):
        return None
    return round(a / b, 2)


def build_rows(res: dict) -> list[dict]:
    rb, cy, fl = res["rayborg"], res.get("cyborg"), res["floor"]
    rows = []
    for key, label, _path in ENDPOINTS:
        r, f = rb["endpoints"][key], fl["endpoints"][key]
        c = cy["endpoints"][key] if cy else {}
        rq = ratio(r["req_s"], c.get("req_s"))
        rows.append({"metric": f"{label}: req/s", "rayborg": r["req_s"], "cyborg": c.get("req_s"),
                     "floor": f["req_s"], "ratio": rq, "target": f">= {READ_RATIO_TARGET:g}x Cyborg",
                     "met": None if rq is None else rq >= READ_RATIO_TARGET})
        rp = ratio(r["p99_ms"], c.get("p99_ms"))
        rows.append({"metric": f"{label}: p99 ms", "rayborg": r["p99_ms"], "cyborg": c.get("p99_ms"),
                     "floor": f["p99_ms"], "ratio": rp, "target": f"<= {P99_RATIO_TARGET:g}x Cyborg",
                     "met": None if rp is None else rp <= P99_RATIO_TARGET})
        rows.append({"metric": f"{label}: p50 ms", "rayborg": r["p50_ms"], "cyborg": c.get("p50_ms"),
                     "floor": f["p50_ms"], "ratio": ratio(r["p50_ms"], c.get("p50_ms")), "target": "", "met": None})
        rows.append({"metric": f"{label}: errors", "rayborg": r["errors"], "cyborg": c.get("errors"),
                     "floor": f["errors"], "ratio": None, "target": "0", "met": r["errors"] == 0})
        rf = ratio(r["req_s"], f["req_s"])
        rows.append({"metric": f"{label}: req/s rayborg/floor", "rayborg": r["req_s"], "cyborg": None,
                     "floor": f["req_s"], "ratio": rf, "target": f">= {FLOOR_RATIO_TARGETS[key]:g}x floor",
                     "met": None if rf is None else rf >= FLOOR_RATIO_TARGETS[key]})
    rows.append({"metric": "memory idle: PSS MiB, API server only (rayborg's front door; Cyborg gunicorn)", "rayborg": rb["pss_idle_mib"],
                 "cyborg": cy["pss_idle_mib"] if cy else None, "floor": fl["pss_idle_mib"],
                 "ratio": ratio(rb["pss_idle_mib"], cy["pss_idle_mib"] if cy else None),
                 "target": f"<= {IDLE_PSS_TARGET_MIB:g} MiB", "met": rb["pss_idle_mib"] <= IDLE_PSS_TARGET_MIB})
    rows.append({"metric": "memory under read load: peak PSS MiB, API server only", "rayborg": rb["pss_load_mib"],
                 "cyborg": cy["pss_load_mib"] if cy else None, "floor": fl["pss_load_mib"],
                 "ratio": ratio(rb["pss_load_mib"], cy["pss_load_mib"] if cy else None), "target": "", "met": None})
    rows += write_rows(res) + sync_rows(res.get("placement_sync"))
    st = res["rayborg_startup_s"]
    rows.append({"metric": "startup: `rayborg serve` to first 200 on /v2, s (median)",
                 "rayborg": round(statistics.median(st), 2), "cyborg": res.get("cyborg_startup_s"), "floor": None,
                 "ratio": ratio(statistics.median(st), res.get("cyborg_startup_s")), "target": "", "met": None})
    return rows


SYNC_ONE_CHANGE_MAX_CALLS = 10  # "O(1)": one changed device costs a handful of calls, whatever the cluster
SYNC_OWN_TIME_RATIO = 2.0       # the first sync's wall <= 2x the time Placement itself spent answering it
SYNC_LOST_EXTRA_CALLS = 4       # a lost host: a read and a write per device, and a few more


def sync_rows(sync: dict | None) -> list[dict]:
    """rayborg's Placement sync cost (bench/runtime_bench.placement_sync_cost); Cyborg has no column:
    its agents report through the conductor, which this run does not simulate for 200 hosts. The
    floor of the wall-time row is Placement's own answering time for the same calls (its access log)."""
    if not sync:
        return []
    size = f"{sync['hosts']} hosts x {sync['devices_per_host']} devices"
    first, same, one = sync["first_sync"], sync["unchanged_rereport"], sync["one_device_changed"]

    def row(metric, value, target="", met=None, floor=None):
        return {"metric": f"Placement sync: {metric}", "rayborg": value, "cyborg": None, "floor": floor,
                "ratio": ratio(value, floor), "target": target, "met": met}

    own = first.get("placement_own_seconds")
    bound = ratio(first["seconds"], own)
    rows = [row(f"first report of {size}: Placement calls", first["calls"]),
            row(f"first report of {size}: wall s (floor: Placement's own answering s)", first["seconds"],
                f"<= {SYNC_OWN_TIME_RATIO:g}x Placement's own", None if bound is None else bound <= SYNC_OWN_TIME_RATIO,
                own),
            row("unchanged re-report of every host: Placement writes", same["writes"], "0", same["writes"] == 0),
            row("unchanged re-report of every host: Placement calls", same["calls"], "0", same["calls"] == 0),
            row("one device added on one host: Placement calls", one["calls"],
                f"O(1): <= {SYNC_ONE_CHANGE_MAX_CALLS}", one["calls"] <= SYNC_ONE_CHANGE_MAX_CALLS)]
    lost = sync.get("host_lost")
    if lost:
        most = 2 * lost["devices"] + SYNC_LOST_EXTRA_CALLS
        rows += [row(f"one host lost ({lost['devices']} devices): Placement calls", lost["calls"],
                     f"O(devices): <= {most}", lost["calls"] <= most),
                 row("one host lost: its device providers reserved in Placement",
                     f"{lost['providers_reserved']} of {lost['providers']}", "all",
                     lost["providers"] > 0 and lost["providers_reserved"] == lost["providers"])]
    return rows


CREATE_TO_BOUND_TARGET_MS = 20.0
BINDS_PER_S_TARGET = 500.0
CYBORG_BURST = 20  # instances in Cyborg's bind burst: it binds about one ARQ per second


def write_rows(res: dict) -> list[dict]:
    return _write_rows(res) + quota_rows(res.get("quota")) + postgres_rows(res.get("postgres"))


def _write_rows(res: dict) -> list[dict]:
    w = res.get("writes") or {}
    r, c = w.get("rayborg"), w.get("cyborg")
    if not r and not c:
        return []

    def get(d, *path):
        for k in path:
            if d is None:
                return None
            d = d.get(k)
        return d

    def row(metric, path, target="", met=None):
        a, b = get(r, *path), get(c, *path)
        return {"metric": metric, "rayborg": a, "cyborg": b, "floor": None, "ratio": ratio(a, b), "target": target,
                "met": None if met is None or a is None else met(a)}

    return [
        row("write: device profile create+delete, p50 ms", ("profile_create_delete", "p50_ms")),
        row("write: create 2 ARQs (2-accelerator profile), p50 ms", ("bind_sequential", "arq_create_p50_ms")),
        row("write: create->Bound p50 ms (1 client, REST, polled)", ("bind_sequential", "create_to_bound_p50_ms"),
            f"<= {CREATE_TO_BOUND_TARGET_MS:g} ms", lambda v: v <= CREATE_TO_BOUND_TARGET_MS),
        row("write: create->Bound p99 ms (1 client)", ("bind_sequential", "create_to_bound_p99_ms")),
        {"metric": "write: bind PATCH answers (1 client)", "rayborg": fmt_codes(get(r, "bind_sequential", "bind_status")),
         "cyborg": fmt_codes(get(c, "bind_sequential", "bind_status")), "floor": None, "ratio": None,
         "target": "", "met": None},
        row("write: binds/s: ARQs bound per s, bind burst (one PATCH per instance, 50 clients, until Nova has "
            "every event)", ("bind_burst", "binds_per_s"),
            f">= {BINDS_PER_S_TARGET:g}/s", lambda v: v >= BINDS_PER_S_TARGET),
        row("write: bind burst: ARQs (instances x 2)", ("bind_burst", "arqs")),
        {"metric": "write: bind burst: ARQs not Bound at the end (state x count)",
         "rayborg": unbound(get(r, "bind_burst", "states")), "cyborg": unbound(get(c, "bind_burst", "states")),
         "floor": None, "ratio": None, "target": "none", "met": None if r is None else unbound(
             get(r, "bind_burst", "states")) == "none"},
        {"metric": "write: 5xx answers during the write runs", "rayborg": server_errors(r),
         "cyborg": server_errors(c), "floor": None, "ratio": None, "target": "0",
         "met": None if r is None else server_errors(r) == 0},
        row("write: bind burst: PATCH p50 ms", ("bind_burst", "patch_p50_ms")),
        row("write: bind burst: PATCH -> Nova event p50 ms", ("bind_burst", "bind_to_event_p50_ms")),
        row("write: bind burst: PATCH -> Nova event p99 ms", ("bind_burst", "bind_to_event_p99_ms")),
        row("write: ARQs bound/s in full REST cycles (create, bind, poll, unbind, delete), concurrent clients",
            ("bind_concurrent", "binds_per_s")),
        row("write: create->Bound p50 ms under concurrency", ("bind_concurrent", "create_to_bound_p50_ms")),
        row("memory idle: PSS MiB, whole deployment (rayborg: Ray+actors+API; Cyborg: API+conductor+RabbitMQ)",
            ("pss_idle_mib",), f"<= {IDLE_PSS_TARGET_MIB:g} MiB", lambda v: v <= IDLE_PSS_TARGET_MIB),
        row("memory under write load: peak PSS MiB, whole deployment", ("pss_load_mib",)),
        row("processes in the whole deployment", ("processes",)),
        row("startup s, whole deployment (rayborg serve with Ray; Cyborg API)", ("startup_s",)),
    ]


def quota_rows(q: dict | None) -> list[dict]:
    """Issue 17: the same burst and create->Bound against quota enforcement off and on, in the same
    run; the rayborg column is "on", the floor column "off", the ratio on/off of the times."""
    if not q:
        return []
    off, on = q.get("off") or {}, q.get("on") or {}
    limit = f"<= {QUOTA_COST_MAX_PCT:g} %"

    def row(metric, value_key, cost_key, unit):
        cost = q.get(cost_key)
        return [{"metric": f"quota check: {metric}, {unit} (rayborg: quota on; floor column: off)",
                 "rayborg": on.get(value_key), "cyborg": None, "floor": off.get(value_key),
                 "ratio": ratio(on.get(value_key), off.get(value_key)), "target": "", "met": None},
                {"metric": f"quota check: cost in % of {metric} (median of {q.get('rounds')} paired rounds)",
                 "rayborg": cost, "cyborg": None, "floor": None, "ratio": None, "target": limit,
                 "met": None if cost is None else cost <= QUOTA_COST_MAX_PCT}]

    seen = q.get("limits_seen") or {}

    def limits(v) -> str | None:
        return None if v is None else (v if isinstance(v, str) else
                                       ", ".join(f"{k}={n}" for k, n in sorted(v.items())) or "none")

    checked = [{"metric": "quota check: limits the front door reports (GET /v2/quotas/usage; floor column: off)",
                "rayborg": limits(seen.get("on")), "cyborg": None, "floor": limits(seen.get("off")), "ratio": None,
                "target": "on: set; off: none",
                "met": None if not seen else (isinstance(seen.get("on"), dict) and bool(seen["on"])
                                              and seen.get("off") == {})}]
    burst = f"the bind burst ({2 * q.get('burst_instances', 0):,} ARQs, 50 clients, until Nova has every event)"
    return (checked + row("create->Bound p50 (1 client)", "create_to_bound_p50_ms", "create_to_bound_cost_pct", "ms")
            + row(burst, "binds_per_s", "burst_cost_pct", "binds/s"))


def postgres_rows(pg: dict | None) -> list[dict]:
    """Issue 18 target 4: the bind burst against `rayborg serve` on PostgreSQL; says why when it did not run."""
    if not pg:
        return []
    metric = "write: binds/s, bind burst on PostgreSQL (same burst, `rayborg serve` on a local PostgreSQL)"
    if pg.get("unavailable"):
        return [{"metric": metric, "rayborg": f"not run: {pg['unavailable']}", "cyborg": None, "floor": None,
                 "ratio": None, "target": f">= {PG_BINDS_PER_S_TARGET:g}/s", "met": None}]
    v = pg.get("binds_per_s")
    return [{"metric": metric, "rayborg": v, "cyborg": None, "floor": None, "ratio": None,
             "target": f">= {PG_BINDS_PER_S_TARGET:g}/s", "met": None if v is None else v >= PG_BINDS_PER_S_TARGET},
            {"metric": "write: bind burst on PostgreSQL: ARQs not Bound at the end (state x count)",
             "rayborg": unbound(pg.get("states")), "cyborg": None, "floor": None, "ratio": None,
             "target": "none", "met": None if pg.get("states") is None else unbound(pg.get("states")) == "none"},
            {"metric": "write: create->Bound p50 ms on PostgreSQL (1 client)", "rayborg": pg.get("create_to_bound_p50_ms"),
             "cyborg": None, "floor": None, "ratio": None, "target": "", "met": None}]


def unbound(states: dict | None) -> str | None:
    """The burst's ARQs in any state but Bound, e.g. "BindFailed x5, Initial x2"; "none" when none."""
    if states is None:
        return None
    return ", ".join(f"{k} x{v}" for k, v in sorted(states.items()) if k != "Bound") or "none"


def server_errors(w: dict | None) -> int | None:
    if not w or "status_codes" not in w:
        return None
    return sum(n for op, n in w["status_codes"].items() if op.rsplit(" ", 1)[-1].startswith("5"))


def fmt_codes(codes: dict | None) -> str | None:
    if not codes:
        return None
    return ", ".join(f"{k}x{v}" for k, v in sorted(codes.items()))


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def table(rows: list[dict]) -> list[list[str]]:
    head = ["metric", "rayborg", "Cyborg 17", "floor", "ratio", "target", "met?"]
    body = [[r["metric"], fmt(r["rayborg"]), fmt(r["cyborg"]), fmt(r["floor"]), fmt(r["ratio"]), r["target"],
             fmt(r["met"])] for r in rows]
    return [head] + body


def print_table(t: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in t) for i in range(len(t[0]))]
    for n, row in enumerate(t):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def markdown(res: dict, t: list[list[str]]) -> str:
    env = res["environment"]
    lines = ["# rayborg vs OpenStack Cyborg 17", "",
             f"Run {res['started']} on {describe(env)}.", "",
             (f"{res['clients']} concurrent clients, {res['duration_s']} s per endpoint, one deployment at a time"
              + (f" (rayborg and the floor: {res['rounds']} rounds taking turns, the median round by req/s "
                 "shown; Cyborg: one)" if res.get("rounds", 1) > 1 else "") + "; "
              "the load generator (one aiohttp process) shares the same cores as the servers."), "",
             f"- rayborg: `rayborg serve --workers {res['rayborg_workers']}` on SQLite, its Ray actors running "
             "beside the front door.",
             (f"- Cyborg {res.get('cyborg_version', '-')}: API under gunicorn, 2 workers x 4 threads, SQLite "
              "(schema from its models), paste pipeline without auth_token, Keystone-like headers sent."),
             f"- floor: bare aiohttp + sqlite3 handlers, {res['rayborg_workers']} processes, same rows.",
             ("- Writes (`bench/writes.py`): rayborg is `rayborg serve` with its Ray runtime (binds through the "
              "binder actors); Cyborg adds RabbitMQ (Debian) and its conductor; both send bind events to a Nova "
              "stand-in (`bench/nova_standin.py`), Cyborg's conductor gets a real Placement. create->Bound is "
              "measured over REST as Nova would see it: POST the ARQs, PATCH the bind, poll until Bound. "
              "A bind cycle is create 2 ARQs, bind, poll, unbind, delete; 'ARQs bound/s' counts ARQs "
              "that reached Bound per second of such cycles from concurrent clients."),
             ("- A request counts as an error on a non-200 answer or after 30 s without one (client timeout); "
              "requests still open when the window closes are awaited and counted."),
             "- Memory is the PSS of each deployment's process tree (`/proc/<pid>/smaps_rollup`).",
             ("- Placement sync (`bench/runtime_bench.py`'s `placement_sync_cost`, rayborg only): simulated "
              "hosts on 3 Ray nodes (stand-in HostAgents, `bench/many_hosts.py`) report through Ray to a real "
              "PlacementSync, which pushes to a real Placement of its own (one gunicorn worker); Placement's "
              "access log counts the calls and its own answering time (the wall-time row's floor). First "
              "report, then every host again unchanged, then one host with one more device, then one host "
              "marked lost as the supervisor does when its node leaves, and a push."),
             ("- Quota check (issue 17): two `rayborg serve` with their Ray runtime side by side on copies of "
              "the same database, one without `[quota]` (enforcement off), one with `[quota] default = 1000000` "
              "(every bind checked, none refused); create->Bound (1 client) and the bind burst against each, "
              "taking turns; the cost is the time the check adds, from each round's back-to-back pair: on/off - 1 "
              "of create->Bound p50 and of the burst's time per ARQ (off binds/s / on binds/s - 1), the median "
              "over the rounds (the off/on value rows show each side's median). Negative: within the noise."),
             ("- PostgreSQL burst (issue 18): the same burst against `rayborg serve` on a throwaway local "
              "PostgreSQL (`bench/postgres.py`: initdb from the system's binaries, a default install's durability: "
              "fsync and synchronous_commit on, max_connections 200), seeded with the same rows."), "",
             "| " + " | ".join(t[0]) + " |", "|" + "|".join(["---"] + ["---:"] * (len(t[0]) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in t[1:]]
    if res.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install matplotlib): no plot", file=sys.stderr)
        return False
    names = [n for n in ("rayborg", "cyborg", "floor") if res.get(n)]
    labels = {"rayborg": "rayborg", "cyborg": f"Cyborg {res.get('cyborg_version', '')}", "floor": "floor"}
    keys = [k for k, _l, _p in ENDPOINTS]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(names)
    for ax, metric, title in ((axes[0], "req_s", "req/s (higher is better)"),
                              (axes[1], "p99_ms", "p99 latency, ms (lower is better)")):
        for i, n in enumerate(names):
            vals = [res[n]["endpoints"][k][metric] or 0 for k in keys]
            ax.bar([x + i * width for x in range(len(keys))], vals, width, label=labels[n])
        ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(keys))])
        ax.set_xticklabels([lbl for _k, lbl, _p in ENDPOINTS], rotation=15, fontsize=8)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"Reads, {res['clients']} clients x {res['duration_s']} s, {res['environment']['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_outputs(res: dict, out: Path) -> None:
    res["rows"] = build_rows(res)
    t = table(res["rows"])
    print(f"\nRun {res.get('started')} on {describe(res['environment'])}")
    print_table(t)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "results.md").write_text(markdown(res, t))
    if plot(res, out / "reads.png"):
        print(f"\nwrote {out / 'results.json'}, results.md, reads.png ({res.get('total_s')} s)")

