"""SPDK driver (queens cyborg-spdk-driver-proposal): NVMf subsystems and vhost controllers.

Talks JSON-RPC 2.0 to the SPDK target's unix socket (option `socket`, default /var/tmp/spdk.sock;
`timeout` seconds). No socket -> SPDK is not running here -> nothing to report, no error.
The spec predates the device model and defines no RC, traits or handles; we report:
  NVMf subsystem -> device type NVME, RC CUSTOM_SPDK_NVMF, traits CUSTOM_SPDK + CUSTOM_SPDK_NVMF_<TRTYPE>,
                    one SPDK handle per namespace {nqn, nsid, bdev, trtype, traddr, trsvcid}
  vhost controller -> device type SSD, RC CUSTOM_SPDK_VHOST, traits CUSTOM_SPDK + CUSTOM_SPDK_VHOST_<KIND>,
                    one SPDK handle {controller, socket}
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from rayborg.drivers.base import (ControlPathId, Discovery, Driver, DriverAttachHandle, DriverDeployable,
                                  DriverDevice, DriverFailure, custom_name)

DEFAULT_SOCKET = "/var/tmp/spdk.sock"
METHOD_NOT_FOUND = -32601


class SpdkRpcError(DriverFailure):
    pass


class SpdkClient:
    """Minimal JSON-RPC 2.0 client over SPDK's unix socket (responses are not newline framed)."""

    def __init__(self, path: str | Path, timeout: float = 5.0):
        self.path, self.timeout, self._id = str(path), timeout, 0

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        self._id += 1
        request = {"jsonrpc": "2.0", "id": self._id, "method": method} | ({"params": params} if params else {})
        decoder, buf = json.JSONDecoder(), ""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.path)
                s.sendall(json.dumps(request).encode())
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise SpdkRpcError(f"{method}: connection closed mid-response", device=self.path)
                    buf += chunk.decode()
                    try:
                        response, _ = decoder.raw_decode(buf.lstrip())
                        break
                    except json.JSONDecodeError:
                        continue
        except OSError as exc:
            raise SpdkRpcError(f"{method}: {exc.__class__.__name__}: {exc}", device=self.path) from None
        if "error" in response:
            err = response["error"]
            exc = SpdkRpcError(f"{method}: {err.get('message')} (code {err.get('code')})", device=self.path)
            exc.code = err.get("code")
            raise exc
        return response.get("result")


class SpdkDriver(Driver):
    NAME = "spdk"
    TYPE = "NVME"
    VENDOR = "spdk"

    def discover(self) -> Discovery:
        path = Path(self.options.get("socket", DEFAULT_SOCKET))
        result = Discovery()
        if not path.exists():
            return result
        client = SpdkClient(path, float(self.options.get("timeout", 5.0)))
        for method, build in (("nvmf_get_subsystems", self._subsystem), ("vhost_get_controllers", self._vhost)):
            try:
                items = client.call(method) or []
            except SpdkRpcError as exc:
                if getattr(exc, "code", None) != METHOD_NOT_FOUND:  # target built without nvmf/vhost
                    result.errors.append(self.error(exc))
                continue
            for item in items:
                try:
                    device = build(item, str(path))
                    if device is not None:
                        result.devices.append(device)
                except (KeyError, TypeError, ValueError) as exc:
                    result.errors.append(self.error(DriverFailure(
                        f"{method}: malformed entry: {exc.__class__.__name__}: {exc}", device=str(item)[:80])))
        return result

    def _subsystem(self, sub: dict[str, Any], sock: str) -> DriverDevice | None:
        if sub.get("subtype") == "Discovery":
            return None
        nqn = sub["nqn"]
        listen = (sub.get("listen_addresses") or [{}])[0]
        where = {k: str(listen.get(k, "")) for k in ("trtype", "traddr", "trsvcid")}
        handles = [DriverAttachHandle(attach_type="SPDK", attach_info={
            "nqn": nqn, "nsid": str(ns["nsid"]), "bdev": str(ns.get("bdev_name", ns.get("name", "")))} | where)
            for ns in sub.get("namespaces", [])]
        traits = ["CUSTOM_SPDK"] + ([custom_name("SPDK_NVMF", where["trtype"])] if where["trtype"] else [])
        dep = DriverDeployable(name=self.ctx.dep_name(nqn), num_accelerators=len(handles), driver_name=self.NAME,
                               resource_class="CUSTOM_SPDK_NVMF", traits=traits, attach_handles=handles)
        return DriverDevice(type="NVME", vendor=self.VENDOR, model=sub.get("model_number") or "SPDK NVMf subsystem",
                            vendor_board_info=sub.get("serial_number", ""), key=f"{self.NAME}:{nqn}",
                            std_board_info={"nqn": nqn, "socket": sock, "max_namespaces": str(sub.get("max_namespaces", ""))},
                            controlpath_id=ControlPathId(cpid_type="SPDK", cpid_info={"nqn": nqn, "socket": sock}),
                            deployables=[dep])

    def _vhost(self, ctrl: dict[str, Any], sock: str) -> DriverDevice:
        name = ctrl["ctrlr"]
        backend = ctrl.get("backend_specific") or {}
        kind = next(iter(backend), "vhost")  # "block" / "scsi" / "nvme"
        handle = DriverAttachHandle(attach_type="SPDK", attach_info={
            "controller": name, "socket": str(ctrl.get("socket", "")), "kind": kind})
        dep = DriverDeployable(name=self.ctx.dep_name(f"vhost_{name}"), num_accelerators=1, driver_name=self.NAME,
                               resource_class="CUSTOM_SPDK_VHOST",
                               traits=["CUSTOM_SPDK", custom_name("SPDK_VHOST", kind)], attach_handles=[handle])
        return DriverDevice(type="SSD", vendor=self.VENDOR, model=f"SPDK vhost-{kind}", key=f"{self.NAME}:vhost:{name}",
                            std_board_info={"controller": name, "cpumask": str(ctrl.get("cpumask", "")), "socket": sock},
                            controlpath_id=ControlPathId(cpid_type="SPDK", cpid_info={"controller": name, "socket": sock}),
                            deployables=[dep])
