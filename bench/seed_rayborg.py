"""Seed a rayborg database with the benchmark dataset (bench/dataset.py) through `rayborg.store`.

    python bench/seed_rayborg.py sqlite:////tmp/x/rayborg.db
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataset


def seed(url: str) -> None:
    from rayborg.store.engine import Store
    from rayborg.store.migrate import upgrade
    from rayborg.store.tables import AttachHandle, ControlPathID, Deployable, Device, DeviceProfile, ExtARQ

    upgrade(url)
    store = Store(url)
    with store.write() as s:
        profiles = []
        for p in dataset.profiles():
            row = DeviceProfile(uuid=p["uuid"], name=p["name"], description=p["description"],
                                groups=p["groups"])
            s.add(row)
            profiles.append(row)
        devices = []
        for d in dataset.devices():
            row = Device(uuid=d["uuid"], type=d["type"], vendor=d["vendor"], model=d["model"],
                         std_board_info=d["std_board_info"], vendor_board_info=d["vendor_board_info"],
                         hostname=d["hostname"], std_board_info_key=d["board_key"])
            s.add(row)
            devices.append(row)
        s.flush()
        for dp in dataset.deployables():
            device = devices[dp["device_index"]]
            dep = Deployable(uuid=dp["uuid"], name=dp["name"], num_accelerators=dp["num_accelerators"],
                             device_id=device.id, driver_name=dp["driver_name"], rp_uuid=dp["rp_uuid"],
                             placement_dirty=False)
            cpid = ControlPathID(uuid=dp["cpid_uuid"], device_id=device.id, cpid_type="PCI", cpid_info=dp["cpid_info"])
            s.add_all([dep, cpid])
            s.flush()
            s.add_all([AttachHandle(uuid=h["uuid"], deployable_id=dep.id, cpid_id=cpid.id, attach_type=h["attach_type"],
                                    attach_info=h["attach_info"]) for h in dp["handles"]])
        for a in dataset.arqs():
            s.add(ExtARQ(uuid=a["uuid"], device_profile_id=profiles[a["profile_index"]].id,
                         device_profile_group_id=a["group_id"], project_id=a["project_id"]))
    store.dispose()


if __name__ == "__main__":
    seed(sys.argv[1])
