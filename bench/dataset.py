"""The rows every deployment in the benchmark is seeded with: plain Python, no imports beyond the
standard library, so the Cyborg baseline's own interpreter (a separate virtualenv) can load it too.

20 device profiles, 200 devices (on 25 hosts), 1,000 ARQs (Initial, one project), deterministic UUIDs.
"""

from __future__ import annotations

import json
import uuid

PROJECT_ID = "5c3d5e0a1b2c4d5e8f9a0b1c2d3e4f50"  # UUID-like hex, as Keystone would give
USER_ID = "b1d2c3e4f5a60718293a4b5c6d7e8f90"
NAMESPACE = uuid.UUID("6a1f3a1e-0b3c-4c55-9f1e-5e4d3c2b1a00")

N_PROFILES = 20
N_DEVICES = 200
N_ARQS = 1000
N_HOSTS = 25


def _uuid(kind: str, i: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{kind}-{i}"))


def profiles() -> list[dict]:
    return [{"uuid": _uuid("dp", i), "name": f"bench-dp-{i:02d}",
             "description": f"benchmark profile {i}",
             "groups": [{"resources:FPGA": "1", "trait:CUSTOM_FPGA_INTEL": "required"}] * (1 + i % 2)}
            for i in range(N_PROFILES)]


def devices() -> list[dict]:
    out = []
    for i in range(N_DEVICES):
        host, slot = divmod(i, N_DEVICES // N_HOSTS)
        addr = f"0000:{0x5e + slot:02x}:00.0"
        out.append({"uuid": _uuid("dev", i), "type": "FPGA", "vendor": "0x8086", "model": "PAC Arria10",
                    "std_board_info": json.dumps({"product_id": "0x09c4", "controller": "Intel FPGA"}),
                    "vendor_board_info": "", "hostname": f"bench-host-{host:02d}",
                    "board_key": f"fake:{addr}"})
    return out


HANDLES_PER_DEPLOYABLE = 8


def deployables() -> list[dict]:
    """One deployable (one Placement RP) per device, with 8 PCI attach handles (VFs) each."""
    out = []
    for i, d in enumerate(devices()):
        bus = d["board_key"].split(":")[2]
        out.append({"uuid": _uuid("dpl", i), "device_index": i, "name": f"{d['hostname']}_{bus}",
                    "rp_uuid": _uuid("rp", i), "hostname": d["hostname"], "driver_name": "fake",
                    "num_accelerators": HANDLES_PER_DEPLOYABLE, "cpid_uuid": _uuid("cpid", i),
                    "cpid_info": json.dumps({"domain": "0000", "bus": bus, "device": "00", "function": "0"}),
                    "handles": [{"uuid": _uuid("ah", i * HANDLES_PER_DEPLOYABLE + j), "attach_type": "PCI",
                                 "attach_info": json.dumps({"domain": "0000", "bus": bus, "device": "00",
                                                            "function": str(j + 1)})}
                                for j in range(HANDLES_PER_DEPLOYABLE)]})
    return out


def arqs() -> list[dict]:
    ps = profiles()
    return [{"uuid": _uuid("arq", i), "profile_index": i % N_PROFILES, "profile_name": ps[i % N_PROFILES]["name"],
             "group_id": 0, "project_id": PROJECT_ID} for i in range(N_ARQS)]


def show_arq_uuid() -> str:
    return _uuid("arq", N_ARQS // 2)


# Writes: a profile asking for two accelerators (two request groups -> two ARQs per POST).
WRITE_PROFILE = "bench-dp-01"
SERVICE_HEADERS_EXTRA = {"X-Service-Roles": "service"}  # what Nova's service token adds: binds need it

# The headers a Keystone token would produce: the same on every request to every deployment.
HEADERS = {"X-Roles": "admin,member", "X-Project-Id": PROJECT_ID, "X-User-Id": USER_ID,
           "Accept": "application/json"}
