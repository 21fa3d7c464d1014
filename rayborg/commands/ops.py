"""Operator commands on a running rayborg: status, devices, arqs, program, enable, disable.

They talk to the daemon of their settings' database (`--database-url`, else the settings'), on the
Ray cluster its `rayborg serve` recorded there, through the Python API; `--address` names the
cluster instead, whose daemon must use that same database. Never whatever Ray cluster runs on this
machine: with no daemon of their own they say so. Every command prints a table, or JSON with
`--json`; errors are one line on stderr with exit code 1 (130 after Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

ADDRESS_HELP = ("Ray cluster (HOST:PORT) of the daemon; it must use the same database (default: the "
                "cluster the daemon of the database recorded at its start)")
DATABASE_HELP = ("database whose daemon to use (default: database_url of the settings, else rayborg.db "
                 "in the user's data directory)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("--database-url", help=DATABASE_HELP)
    p.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="cluster, hosts, devices, ARQs and Placement sync at a glance",
        description="Show the Ray cluster, every host (in the cluster or known to the "
        "store) with its agent, devices per family, ARQs per state and how far "
        "Placement lags behind the store.",
    )
    _common(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "devices",
        help="list devices (one row per deployable) with filters",
        description="List deployables with their device, host, resource class, state "
        "(free, bound, disabled with its reason, lost), loaded bitstream and the outcome of "
        "their latest programming through the API (one line per failed one under the table).",
    )
    _common(p)
    p.add_argument("--family", help="device type, e.g. FPGA, GPU")
    p.add_argument("--resource-class", help="Placement resource class, e.g. FPGA, PGPU")
    p.add_argument("--trait", action="append", help="required trait (repeatable)")
    p.add_argument("--host", help="only this host")
    p.add_argument(
        "--state", choices=["free", "bound", "disabled", "lost"], help="only devices in this state"
    )
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser(
        "arqs",
        help="list accelerator requests (ARQs)",
        description="List ARQs with their state, device profile, host and deployable; "
        "standalone claims show as such.",
    )
    _common(p)
    p.add_argument("--state", help="only ARQs in this state, e.g. Bound, BindFailed")
    p.add_argument("--host", help="only ARQs bound on this host")
    p.set_defaults(func=cmd_arqs)

    p = sub.add_parser(
        "program",
        help="program a bitstream onto many FPGAs in parallel",
        description="Program one bitstream onto every deployable the selector picks, "
        "through the hosts' agents, a few at a time per host, with a progress "
        "bar and one result per device. Devices bound to an ARQ are refused "
        "unless --force. Exit code 0 when every device succeeded, 1 otherwise, "
        "130 after Ctrl-C (devices not started yet are reported as cancelled).",
    )
    _common(p)
    p.add_argument("--bitstream", required=True, help="bitstream (Glance image) id to load")
    p.add_argument(
        "--where",
        required=True,
        help="selector KEY=VALUE[,KEY=VALUE...]; keys: host, family, rc, trait, state, name, "
        "device, driver; VALUE may list alternatives with |, e.g. 'host=a|b,family=FPGA'",
    )
    p.add_argument(
        "--parallelism-per-host",
        type=int,
        default=4,
        metavar="N",
        help="programmings at once on one host (default 4)",
    )
    p.add_argument(
        "--parallelism",
        type=int,
        default=64,
        metavar="N",
        help="programmings at once in the whole cluster (default 64)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600,
        metavar="SECONDS",
        help="give up on one device after this long (default 600)",
    )
    p.add_argument("--force", action="store_true", help="also program devices bound to an ARQ (admin)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_program)

    for name, enabled in (("enable", True), ("disable", False)):
        p = sub.add_parser(
            name,
            help=f"{name} a device" + ("" if enabled else " (maintenance: nothing binds)"),
            description=f"{name.capitalize()} a device given by its uuid or by the name or uuid "
            f"of one of its deployables. Placement's `reserved` follows "
            f"({'0' if enabled else 'the total'}).",
        )
        _common(p)
        p.add_argument("device", metavar="DEVICE", help="device uuid, or deployable name/uuid")
        if not enabled:
            p.add_argument("--reason", metavar="TEXT",
                           help="why (1-255 characters): shown with the device's state until it is enabled")
        p.set_defaults(func=cmd_enable if enabled else cmd_disable)


# -- helpers -------------------------------------------------------------------------------------
def _connect(args, admin: bool = False):
    import logging

    from rayborg.cli import CLIError
    from rayborg.python_api.client import RayborgError, connect

    from rayborg.settings import SettingsError, load_settings

    logging.getLogger("ray").setLevel(logging.WARNING)
    try:
        url = load_settings(database_url=args.database_url).database_url
        return connect(args.address, admin=admin, database_url=url)
    except (RayborgError, SettingsError) as exc:
        raise CLIError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - Ray's own connection errors
        where = f"at {args.address}" if args.address else "of the daemon"
        raise CLIError(f"cannot join the Ray cluster {where}: {str(exc).splitlines()[0]}") from None


def _call(fn, *args, **kwargs):
    from rayborg.cli import CLIError
    from rayborg.python_api.client import RayborgError

    try:
        return fn(*args, **kwargs)
    except RayborgError as exc:
        raise CLIError(str(exc)) from None


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def _table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


def _ago(at: float | None) -> str:
    import time

    return "-" if at is None else f"{time.time() - at:.0f}s ago"


# -- commands ------------------------------------------------------------------------------------
def cmd_status(args) -> int:
    rb = _connect(args)
    st = _call(rb.status)
    if args.json:
        _print_json(st)
        return 0
    c = st["cluster"]
    d = st.get("daemon")
    if d:
        print(f"rayborg daemon: pid {d['pid']} on {d['hostname']}, API {d['api_url']}, "
              f"dashboard {d['dashboard_url'] or 'off'}")
    print(
        f"Ray cluster {c['address']}: {c['nodes']} nodes, {c['cpus']:g} CPUs; database {c['database']}; "
        f"Placement {c['placement'] or 'off'}"
    )
    _table(
        "Hosts",
        ["host", "state", "in cluster", "devices", "agent", "last sweep", "sync error"],
        [
            [
                h["hostname"],
                h.get("state"),
                "yes" if h.get("in_cluster") else "no",
                h.get("devices"),
                (h.get("agent") or {}).get("name") or (h.get("agent") or {}).get("error") or "-",
                _ago((h.get("agent") or {}).get("last_sweep")),
                h.get("sync_error"),
            ]
            for h in st["hosts"]
        ],
    )
    _table(
        "Devices",
        ["family", "total", "enabled", "maintaining"],
        [
            [f, n.get("total", 0), n.get("enabled", 0), n.get("maintaining", 0)]
            for f, n in st["devices"].items()
        ],
    )
    _table("ARQs", ["state", "count"], [[s, n] for s, n in sorted(st["arqs"].items())])
    ps = st["placement_sync"]
    if not c["placement"]:
        print(f"Placement sync: off (no Placement configured); {ps['reports_applied']} reports applied")
        return 0
    print(
        f"Placement sync: {ps['dirty_deployables']} deployables waiting, lag {ps['lag_s']}s, "
        f"{ps['reports_applied']} reports applied"
        + (f", Placement down since {ps['placement_down_since']}" if ps["placement_down_since"] else "")
        + ("; errors: " + "; ".join(ps["errors"]) if ps["errors"] else "")
    )
    return 0


def cmd_devices(args) -> int:
    rb = _connect(args)
    rows = _call(
        rb.devices,
        family=args.family,
        resource_class=args.resource_class,
        trait=args.trait,
        host=args.host,
        state=args.state,
    )
    if args.json:
        _print_json(rows)
        return 0
    _table(
        f"{len(rows)} deployables",
        ["host", "deployable", "family", "rc", "state", "in use", "bitstream", "last program", "device"],
        [
            [
                r["host"],
                r["deployable"],
                r["family"],
                r["resource_class"],
                _state(r),
                f"{r['in_use']}/{r['handles']}",
                r["bitstream_id"],
                _program(r),
                r["device_uuid"],
            ]
            for r in rows
        ],
    )
    for r in rows:
        if r.get("program_error"):
            print(f"{r['host']} {r['deployable']}: programming {r['program_image_uuid']} failed: {r['program_error']}")
    return 0


def _state(row: dict[str, Any]) -> str:
    """The row's state, with the reason its device was disabled for."""
    if row["state"] == "disabled" and row.get("status_reason"):
        return f"disabled: {row['status_reason']}"
    return row["state"]


def _program(row: dict[str, Any]) -> str | None:
    """`<status> <image>` of the deployable's latest programming through the API, if any."""
    if not row.get("program_status"):
        return None
    return f"{row['program_status']} {row['program_image_uuid']}"


def cmd_arqs(args) -> int:
    rb = _connect(args)
    rows = _call(rb.arqs, state=args.state, host=args.host)
    if args.json:
        _print_json(rows)
        return 0
    _table(
        f"{len(rows)} ARQs",
        ["uuid", "state", "profile", "host", "deployable", "instance/consumer", "error"],
        [
            [
                r["uuid"],
                r["state"],
                r["device_profile"],
                r["host"],
                r["deployable"],
                (r["instance_uuid"] or "") + (" (claim)" if r["claim"] else ""),
                r["bind_error"],
            ]
            for r in rows
        ],
    )
    return 0


def cmd_program(args) -> int:
    from rayborg.cli import CLIError

    rb = _connect(args, admin=args.force)
    show = not args.no_progress and not args.json and sys.stderr.isatty()
    results = _call(
        rb.program,
        args.bitstream,
        args.where,
        parallelism_per_host=args.parallelism_per_host,
        parallelism=args.parallelism,
        force=args.force,
        timeout=args.timeout,
        progress=show,
    )
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    if args.json:
        _print_json(
            {
                "results": [r.as_dict() for r in results],
                "counts": counts,
                "wall_seconds": round(results.wall_seconds, 3),
                "interrupted": results.interrupted,
            }
        )
    else:
        bad = [r for r in results if not r.ok]
        if bad:
            _table(
                "Not programmed",
                ["host", "deployable", "status", "reason"],
                [[r.host, r.deployable, r.status, r.error] for r in bad],
            )
        print(
            f"{len(results)} devices in {results.wall_seconds:.1f}s: "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        )
    if results.interrupted:
        raise KeyboardInterrupt
    if not results:
        raise CLIError("nothing programmed")
    return 0 if all(r.ok for r in results) else 1


def _set(args, enabled: bool) -> int:
    rb = _connect(args)
    out = _call(rb.enable, args.device) if enabled else _call(rb.disable, args.device, args.reason)
    if args.json:
        _print_json(out)
    else:
        print(
            f"device {out['device_uuid']} ({out['type']} on {out['host']}): {out['status']}"
            + (f" ({out['status_reason']})" if out.get("status_reason") else "")
            + ("" if out["changed"] else " (unchanged)")
        )
    return 0


def cmd_enable(args) -> int:
    return _set(args, True)


def cmd_disable(args) -> int:
    return _set(args, False)
