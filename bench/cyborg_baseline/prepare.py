"""Prepare a Cyborg 17 deployment directory for the benchmark (run with the baseline venv's python):

    $VENV/bin/python bench/cyborg_baseline/prepare.py DIR [--rabbit-port N]

Writes DIR/cyborg.conf and DIR/api-paste.ini (the stock pipeline minus Keystone's auth_token filter),
creates the schema on SQLite from Cyborg's own models' metadata (its migrations fail on SQLite) and
seeds the benchmark dataset (bench/dataset.py) straight into its tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import dataset

PASTE = """[pipeline:main]
pipeline = cors http_proxy_to_wsgi request_id api_v2

[app:api_v2]
paste.app_factory = cyborg.api.app:app_factory

[filter:request_id]
paste.filter_factory = oslo_middleware:RequestId.factory

[filter:cors]
paste.filter_factory = oslo_middleware.cors:filter_factory
oslo_config_project = cyborg

[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware.http_proxy_to_wsgi:HTTPProxyToWSGI.factory
"""

CONF = """[DEFAULT]
debug = False
use_stderr = True
transport_url = rabbit://guest:guest@127.0.0.1:{rabbit_port}/
host = bench-cyborg

[api]
api_paste_config = {paste}
host_ip = 127.0.0.1

[database]
connection = sqlite:///{db}

[oslo_concurrency]
lock_path = {dir}/locks

[oslo_messaging_rabbit]
heartbeat_timeout_threshold = 0

[placement]
auth_type = admin_token
token = admin
endpoint_override = {placement_url}
region_name = RegionOne

[nova]
auth_type = admin_token
token = admin
endpoint_override = {nova_url}
region_name = RegionOne
"""


def seed(db: Path) -> None:
    from cyborg.db.sqlalchemy import models
    from sqlalchemy import create_engine, insert

    engine = create_engine(f"sqlite:///{db}")
    models.Base.metadata.create_all(engine)
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # Cyborg stores naive UTC
    t = models.Base.metadata.tables
    with engine.begin() as conn:
        profiles = dataset.profiles()
        conn.execute(insert(t["device_profiles"]), [
            {"id": i + 1, "uuid": p["uuid"], "name": p["name"], "description": p["description"],
             "profile_json": json.dumps({"groups": p["groups"]}), "created_at": now}
            for i, p in enumerate(profiles)])
        conn.execute(insert(t["devices"]), [
            {"id": i + 1, "uuid": d["uuid"], "type": d["type"], "vendor": d["vendor"], "model": d["model"],
             "std_board_info": d["std_board_info"], "vendor_board_info": d["vendor_board_info"],
             "hostname": d["hostname"], "status": "enabled", "created_at": now}
            for i, d in enumerate(dataset.devices())])
        deps = dataset.deployables()
        conn.execute(insert(t["deployables"]), [
            {"id": i + 1, "uuid": dp["uuid"], "name": dp["name"], "num_accelerators": dp["num_accelerators"],
             "device_id": dp["device_index"] + 1, "rp_uuid": dp["rp_uuid"], "driver_name": dp["driver_name"],
             "created_at": now} for i, dp in enumerate(deps)])
        conn.execute(insert(t["controlpath_ids"]), [
            {"id": i + 1, "uuid": dp["cpid_uuid"], "device_id": dp["device_index"] + 1, "cpid_type": "PCI",
             "cpid_info": dp["cpid_info"], "created_at": now} for i, dp in enumerate(deps)])
        conn.execute(insert(t["attach_handles"]), [
            {"uuid": h["uuid"], "deployable_id": i + 1, "cpid_id": i + 1, "in_use": False,
             "attach_type": h["attach_type"], "attach_info": h["attach_info"], "created_at": now}
            for i, dp in enumerate(deps) for h in dp["handles"]])
        conn.execute(insert(t["extended_accelerator_requests"]), [
            {"id": i + 1, "uuid": a["uuid"], "project_id": a["project_id"], "state": "Initial",
             "device_profile_id": a["profile_index"] + 1, "device_profile_group_id": a["group_id"],
             "substate": "Initial", "created_at": now}
            for i, a in enumerate(dataset.arqs())])
    engine.dispose()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--rabbit-port", type=int, default=5673)
    ap.add_argument("--placement-url", default="http://127.0.0.1:9/placement",
                    help="Placement endpoint (default: nothing listens; device-profile and ARQ writes "
                         "do not need it)")
    ap.add_argument("--nova-url", default="http://127.0.0.1:9/compute/v2.1",
                    help="Nova endpoint for bind events (default: nothing listens)")
    args = ap.parse_args()
    d = args.dir.resolve()
    (d / "locks").mkdir(parents=True, exist_ok=True)
    db = d / "cyborg.db"
    if db.exists():
        db.unlink()
    (d / "api-paste.ini").write_text(PASTE)
    (d / "cyborg.conf").write_text(CONF.format(rabbit_port=args.rabbit_port, paste=d / "api-paste.ini",
                                               db=db, dir=d, placement_url=args.placement_url,
                                               nova_url=args.nova_url))
    seed(db)
    print(d / "cyborg.conf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
