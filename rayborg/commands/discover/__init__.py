"""`rayborg discover`: run the drivers once on this host (or a fixture tree) and print the report."""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from rayborg.commands.discover import gpu_check
from rayborg.drivers.registry import DRIVERS, REAL_DRIVERS, check_names, check_option_sections, discover_host

EPILOG = f"""\
drivers: {', '.join(DRIVERS)} (default: all but fake)

examples:
  rayborg discover                                  this host's accelerators, as a table
  rayborg discover --json                           the same HostReport as JSON
  rayborg discover --sysfs-root drivers/fixture_trees/intel_fpga
                                                    a fixture tree (a tree.json description is expanded)
  rayborg discover --drivers intel_fpga,intel_qat   only these drivers
  rayborg discover --fake fpga:4,gpu:2              simulated devices (adds the fake driver)
  rayborg discover --driver-option nvidia_vgpu.enabled_vgpu_types=nvidia-223 \\
      --driver-option 'nvidia_vgpu.device_addresses={{"nvidia-223": ["0000:af:00.0"]}}'
                                                    driver options (on top of settings' driver_options)
  rayborg --config /etc/rayborg/rayborg.toml discover
                                                    roots, drivers and driver options of that config
  rayborg discover --drivers nvidia_gpu --compare-nvidia-smi --out /tmp/gpu-check
                                                    on a GPU host: check against nvidia-smi, capture a fixture
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "discover", help="discover this host's accelerators and print the host report",
        description="Run the accelerator drivers once and print what they found: devices, deployables "
                    "(resource class, traits), attach handles, and per-device errors. Reads only; "
                    "touches no database and no Placement.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sysfs-root", default=None, metavar="PATH",
                   help="sysfs tree to read (default: settings' sysfs_root, /sys)")
    p.add_argument("--dev-root", default=None, metavar="PATH",
                   help="device node tree (default: settings' dev_root, /dev)")
    p.add_argument("--drivers", metavar="A,B",
                   help="comma-separated driver names (default: settings' enabled_drivers, else all real drivers)")
    p.add_argument("--hostname", default=None, metavar="H",
                   help="host name for the report and deployable names (default: this machine's)")
    p.add_argument("--fake", metavar="SPEC",
                   help="add the fake driver with SPEC, e.g. 'fpga:4,gpu:2' or 'fpga:2x8' (N devices x M handles)")
    p.add_argument("--driver-option", action="append", default=[], metavar="DRIVER.KEY=VALUE",
                   help="set one driver option (repeatable; VALUE is JSON when it parses as JSON, else a "
                        "string); overrides the same key of settings' driver_options")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    g = p.add_argument_group("checking the GPU drivers on a GPU host")
    g.add_argument("--compare-nvidia-smi", action="store_true",
                   help="compare the NVIDIA GPUs found with `nvidia-smi -q -x` (address, vendor/device ids, "
                        "model): exit 0 when they agree, 1 when they differ, 2 when nvidia-smi is missing or "
                        "fails; drivers default to nvidia_gpu,nvidia_vgpu and the host name to 'gpu-host'")
    g.add_argument("--nvidia-smi", metavar="PATH", help="the nvidia-smi to run (default: nvidia-smi on PATH)")
    g.add_argument("--out", metavar="DIR",
                   help="with --compare-nvidia-smi: write DIR/report.json, DIR/nvidia-smi.xml (serials and "
                        "UUIDs replaced), DIR/comparison.json, and the sysfs files the drivers read as DIR/sysfs "
                        "and DIR/tree.json (a fixture; both are re-discovered to prove it)")
    p.set_defaults(func=run)


def _settings():
    """rayborg settings (TOML < RAYBORG_* env) for defaults; a broken config must not block discovery."""
    try:
        from rayborg.settings import load_settings

        return load_settings()
    except Exception as exc:  # noqa: BLE001
        print(f"rayborg discover: ignoring settings: {exc}", file=sys.stderr)
        return None


def parse_driver_option(text: str) -> tuple[str, str, Any]:
    """`DRIVER.KEY=VALUE` -> (driver, key, value); VALUE decoded as JSON when it is JSON."""
    target, sep, raw = text.partition("=")
    driver, dot, key = target.strip().partition(".")
    if not sep or not dot or not driver or not key.strip():
        raise ValueError(f"--driver-option {text!r}: want DRIVER.KEY=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a plain string: a path, a type name, "physnet1:eth2|eth3"
    return driver, key.strip(), value


def run(args: argparse.Namespace) -> int:
    compare = args.compare_nvidia_smi
    if not compare and (args.out or args.nvidia_smi):
        print("rayborg discover: --out and --nvidia-smi need --compare-nvidia-smi", file=sys.stderr)
        return 2
    settings = _settings()
    sysfs_root = args.sysfs_root or (settings.sysfs_root if settings else "/sys")
    dev_root = args.dev_root or (settings.dev_root if settings else "/dev")
    options = settings.resolved_driver_options() if settings else {}
    try:
        if args.drivers:
            names = check_names(args.drivers.split(","))
        elif compare:  # the drivers that own NVIDIA GPUs, whatever the settings enable
            names = list(gpu_check.NVIDIA_DRIVERS)
        else:
            names = check_names(settings.enabled_drivers or REAL_DRIVERS) if settings else list(REAL_DRIVERS)
        for text in args.driver_option:
            driver, key, value = parse_driver_option(text)
            options.setdefault(driver, {})[key] = value
        check_option_sections(options)
    except ValueError as exc:  # UnknownDriver too
        print(f"rayborg discover: {exc}", file=sys.stderr)
        return 2
    root = Path(sysfs_root)
    # a typo must not pass for a host without accelerators (a tree description is a .json file)
    problem = ("does not exist" if not root.exists() else
               "is neither a directory nor a .json tree description" if not root.is_dir() and root.suffix != ".json"
               else "")
    if problem:
        print(f"rayborg discover: sysfs root {sysfs_root} {problem}", file=sys.stderr)
        return 2
    if args.fake is not None:
        from rayborg.drivers.fake import parse_spec

        try:
            parse_spec(args.fake)
        except ValueError as exc:
            print(f"rayborg discover: --fake: {exc}", file=sys.stderr)
            return 2
        names = [*dict.fromkeys([*names, "fake"])]
        options.setdefault("fake", {})["spec"] = args.fake
    # a capture is meant to be committed: a placeholder host name, unless one is asked for
    hostname = args.hostname or (gpu_check.HOST_PLACEHOLDER if compare else socket.gethostname())

    def discover_at(sysfs: Path):
        return discover_host(hostname, sysfs_root=sysfs, drivers=names, dev_root=dev_root, options=options)

    with _expanded(root) as root:
        report = discover_at(root)
        if compare:
            return _compare_nvidia_smi(args, report, root, discover_at)
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        print_table(report)
    return 0


def _compare_nvidia_smi(args: argparse.Namespace, report, root: Path, rediscover) -> int:
    try:
        return gpu_check.check(report, root, tool=args.nvidia_smi or "nvidia-smi", out=args.out, as_json=args.json,
                     rediscover=rediscover)
    except gpu_check.CheckError as exc:
        print(f"rayborg discover: {exc}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def _expanded(root: Path):
    """A JSON tree description (file, or a directory holding tree.json) becomes a temporary sysfs tree."""
    desc = root if root.suffix == ".json" else root / "tree.json"
    if not desc.is_file() or (root / "bus").is_dir():
        yield root
        return
    from rayborg.drivers.sysfs_tree import build_tree

    with tempfile.TemporaryDirectory(prefix="rayborg-sysfs-") as tmp:
        yield build_tree(tmp, desc)


def print_table(report) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped or captured: don't fold ids at 80 columns
        console = Console(width=200)
    table = Table(title=f"{report.hostname}: {len(report.devices)} device(s), drivers {', '.join(report.drivers)}")
    for col in ("device", "type", "vendor", "model", "deployable", "rc", "accel", "handles", "traits"):
        table.add_column(col, overflow="fold")
    for dev in report.devices:
        for dep in dev.deployables or [None]:
            if dep is None:
                table.add_row(dev.key, dev.type, dev.vendor, dev.model, "", "", "", "", "")
                continue
            kinds = sorted({h.attach_type for h in dep.attach_handles})
            table.add_row(dev.key, dev.type, dev.vendor, dev.model, dep.name, dep.resource_class,
                          str(dep.num_accelerators), f"{len(dep.attach_handles)} {'/'.join(kinds)}",
                          " ".join(dep.traits))
    console.print(table)
    if report.errors:
        errors = Table(title=f"{len(report.errors)} error(s)", style="red")
        for col in ("driver", "device", "file", "message"):
            errors.add_column(col, overflow="fold")
        for e in report.errors:
            errors.add_row(e.driver, e.device, e.file, e.message)
        console.print(errors)
    console.print(f"content hash {report.content_hash}")
