"""`rayborg serve`: run the daemon."""

from __future__ import annotations

import argparse
import logging


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="run the daemon: REST API, store, Ray actors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run rayborg: migrate the database, start (or join) Ray with the HostAgent, PlacementSync "
                    "and binder actors, and serve the Cyborg v2 REST API.\n\nEvery option can also be set in "
                    "the config file (--config, $RAYBORG_CONFIG) or as RAYBORG_<OPTION> in the environment "
                    "(e.g. RAYBORG_PORT=6666); flags win over the environment, which wins over the file.",
        epilog="examples:\n  rayborg serve                                  # 127.0.0.1:6666, SQLite, noauth\n"
               "  rayborg serve --fake-devices fpga:4,gpu:2       # a demo with simulated devices\n"
               "  rayborg serve --address auto --host 0.0.0.0 --auth-strategy keystone\n"
               "                                                 # head of an existing Ray cluster\n"
               "  rayborg serve --join --address HEAD:6379 --host 0.0.0.0 --auth-strategy keystone\n"
               "                                                 # another front door, on another host\n\n"
               "noauth (the default) trusts the identity headers a caller sends and makes one without them\n"
               "an admin: on an address other than loopback, serve refuses to start with noauth unless it\n"
               "was asked for explicitly (--auth-strategy noauth, RAYBORG_AUTH_STRATEGY or the config file).")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 6666, Cyborg's)")
    p.add_argument("--database-url", help="SQLAlchemy URL: sqlite:///PATH or postgresql://USER@HOST/DB "
                                          "(default: rayborg.db in the user's data directory)")
    p.add_argument("--public-url", help="base URL that links carry, e.g. https://cloud/accelerator "
                                        "(default: from the request's Host / X-Forwarded-* headers)")
    p.add_argument("--auth-strategy", choices=["noauth", "keystone"],
                   help="noauth (default; beyond loopback only when given explicitly) or keystone tokens")
    p.add_argument("--policy-file", help="YAML/JSON policy file overriding the cyborg:* rules")
    p.add_argument("--workers", type=int, dest="api_workers",
                   help="front-door processes sharing the port with SO_REUSEPORT (default 1)")
    p.add_argument("--address", dest="ray_address",
                   help="Ray cluster to join ('auto', host:port); default: start a local Ray")
    p.add_argument("--join", action="store_const", const=True,
                   help="one more front door beside the daemon holding the database's lease (needs --address: "
                        "its Ray cluster): serves with that daemon's actors and takes over when it is gone")
    p.add_argument("--no-actors", dest="actors", action="store_const", const=False,
                   help="serve the API and store only, without Ray (binds then finish in-process)")
    p.add_argument("--fake-devices", metavar="SPEC",
                   help="simulate devices on every host, e.g. 'fpga:4,gpu:2' or 'fpga:2x8'")
    p.add_argument("--placement-url", help="Placement endpoint (noauth2 token 'admin' unless Keystone is set)")
    p.add_argument("--nova-url", help="Nova endpoint for accelerator-request-bound events")
    p.add_argument("--report-interval", type=float, help="seconds between full discovery sweeps (default 60)")
    p.add_argument("--binders", type=int, dest="binder_count",
                   help="binder actors (default 1: one keeps the database busy; more pay off only with PostgreSQL "
                   "on a host with cores to spare)")
    p.add_argument("--sysfs-root", help="where drivers read sysfs (default /sys)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rayborg.cli import CLIError
    from rayborg.commands.db import database_errors
    from rayborg.daemon import serve
    from rayborg.settings import SettingsError, load_settings

    keys = ("host", "port", "database_url", "public_url", "auth_strategy", "policy_file", "api_workers",
            "ray_address", "actors", "join", "fake_devices", "placement_url", "nova_url", "report_interval",
            "binder_count", "sysfs_root")
    try:
        settings = load_settings(**{k: getattr(args, k) for k in keys})
        warning = settings.check_noauth_exposure()  # before anything starts
    except SettingsError as exc:
        raise CLIError(str(exc)) from None
    if warning:
        logging.getLogger("rayborg.serve").warning(warning)
    with database_errors(settings.database_url):
        return serve(settings)
