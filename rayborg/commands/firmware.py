"""`rayborg firmware update DEVICE IMAGE`: flash a device's firmware through its host's agent.

The host's agent runs the driver's `update` (the generic-driver spec's `update(control_path,
image_path)`): the vendor tool of the device's driver (Intel X710: nvmupdate64e) with IMAGE, a file on
the device's host. Drivers without a firmware tool answer "cannot update firmware". After an update
the agent sweeps its host, so what the device reports next is in the store. Like the operator
commands (`rayborg devices`, ...) it talks to the daemon of its settings' database.
"""

from __future__ import annotations

import argparse
from rayborg.commands.ops import _call, _common, _connect, _print_json, _table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "firmware",
        help="update a device's firmware with its driver's vendor tool",
        description="Update a device's firmware through its host's rayborg agent, which runs the device "
        "driver's vendor tool (Intel X710: nvmupdate64e; option firmware_tool of the driver). Exit code 0 "
        "when the tool succeeded, 1 otherwise (the tool's error on stderr).",
    )
    fw = p.add_subparsers(dest="firmware_command", metavar="ACTION", required=True)
    u = fw.add_parser("update", help="flash IMAGE onto DEVICE",
                      description="Flash IMAGE (a file on the device's host: for an X710, the NVM package's "
                      "nvmupdate.cfg) onto DEVICE through the host's agent.")
    _common(u)
    u.add_argument("device", metavar="DEVICE", help="device uuid, or one of its deployables' name or uuid")
    u.add_argument("image", metavar="IMAGE", help="firmware image: a path on the device's host")
    u.add_argument("--timeout", type=float, default=None,
                   help="seconds the vendor tool may run (default: the driver's firmware_timeout option)")
    u.set_defaults(func=cmd_update)


def cmd_update(args) -> int:
    from rayborg.cli import CLIError

    rb = _connect(args, admin=True)
    result = _call(rb.update_firmware, args.device, args.image, args.timeout)
    if args.json:
        _print_json(result)
    else:
        _table(None, ["device", "host", "driver", "result", "seconds"],
               [[result["device_uuid"], result["host"], result["driver"], "updated" if result["ok"] else "failed",
                 f"{result['duration']:.1f}"]])
    if not result["ok"]:
        raise CLIError(f"firmware update of {result['device_uuid']} on {result['host']} failed: {result['error']}")
    return 0
