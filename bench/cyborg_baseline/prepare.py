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
    args = ap.parse_args()
    d = args.dir.resolve()
    (d / "locks").mkdir(parents=True, exist_ok=True)
    db = d / "cyborg.db"
    if db.exists():
        db.unlink()
    (d / "api-paste.ini").write_text(PASTE)
    (d / "cyborg.conf").write_text(CONF.format(rabbit_port=args.rabbit_port, paste=d / "api-paste.ini",
                                               db=db, dir=d))
    seed(db)
    print(d / "cyborg.conf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
