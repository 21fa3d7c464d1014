"""SPDK driver (queens cyborg-spdk-driver-proposal): NVMf subsystems and vhost controllers.

Talks JSON-RPC 2.0 to the SPDK target's unix socket (option `socket`, default /var/tmp/spdk.sock;
`timeout` seconds). No socket -> SPDK is not running here -> nothing to report, no error.
The spec predates the device model and defines no RC, traits or handles; we report:
  NVMf subsystem -> device type NVME, RC CUSTOM_SPDK_NVMF, traits CUSTOM_SPDK + CUSTOM_SPDK_NVMF_<TRTYPE>,
                    one SPDK handle per namespace {nqn, nsid, bdev, trtype, traddr, trsvcid}
  vhost controller -> device type SSD, RC CUSTOM_SPDK_VHOST, traits CUSTOM_SPDK + CUSTOM_SPDK_VHOST_<KIND>,
                    one SPDK handle {controller, socket, kind}
Example target: drivers/fixture_trees/spdk/rpc.json (the answers), served by tests/spdk_standin.py.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from rayborg.drivers.base import (ControlPathId, Discovery, Driver, DriverAttachHandle, DriverDeployable,
                                  DriverDevice, DriverFailure, custom_name)

DEFAULT_SOCKET = "/var/tmp/spdk.sock"
METHOD_NOT_FOUND = -32601


class SpdkRpcError(DriverFailure):
    code: int | None = None  # the JSON-RPC error code, when the target sent one
    reached: bool = True  # False: connect/send/recv failed or timed out, the target may be hung


class SpdkClient:
    """Minimal JSON-RPC 2.0 client over SPDK's unix socket (responses are not newline framed)."""

    def __init__(self, path: str | Path, timeout: float = 5.0):
        self.path, self.timeout, self._id = str(path), timeout, 0

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        self._id += 1
        request = {"jsonrpc": "2.0", "id": self._id, "method": method} | ({"params": params} if params else {})
        # one deadline for the whole answer: a target trickling bytes must not stretch it past `timeout`
        deadline, buf = time.monotonic() + self.timeout, b""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.path)
                s.sendall(json.dumps(request).encode())
                while (response := self._decode(buf, method)) is None:
                    if (left := deadline - time.monotonic()) <= 0:
                        raise TimeoutError
                    s.settimeout(left)
                    chunk = s.recv(65536)
                    if not chunk:
                        raise SpdkRpcError(f"{method}: connection closed mid-response", device=self.path)
                    buf += chunk
        except OSError as exc:
            why = (f"timed out after {self.timeout:g}s" if isinstance(exc, TimeoutError)
                   else f"{exc.__class__.__name__}: {exc}")
            failure = SpdkRpcError(f"{method}: {why}", device=self.path)
            failure.reached = False
            raise failure from None
        if "error" in response:
            err = response["error"] if isinstance(response["error"], dict) else {"message": response["error"]}
            exc = SpdkRpcError(f"{method}: {err.get('message')} (code {err.get('code')})", device=self.path)
            exc.code = err.get("code")
            raise exc
        return response.get("result")

    def _decode(self, buf: bytes, method: str) -> dict[str, Any] | None:
        """The response once `buf` holds all of it, None while more is to come."""
        try:
            text = buf.decode()
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data":  # a character split across reads: wait for the rest
                return None
            raise SpdkRpcError(f"{method}: response is not UTF-8 (byte {exc.start})", device=self.path) from None
        try:
            response, _ = json.JSONDecoder().raw_decode(text.lstrip())
        except json.JSONDecodeError:
            return None
        if not isinstance(response, dict):
            raise SpdkRpcError(f"{method}: not a JSON-RPC response: {text[:80]!r}", device=self.path)
        return response


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
                if exc.code != METHOD_NOT_FOUND:  # target built without nvmf/vhost
                    result.errors.append(self.error(exc))
                if not exc.reached:  # down or hung: the next call would only wait as long again
                    break
                continue
            if not isinstance(items, list):
                result.errors.append(self.error(DriverFailure(
                    f"{method}: result is a {type(items).__name__}, not a list", device=str(path))))
                continue
            for item in items:
                try:
                    device = build(item, str(path))
                    if device is not None:
                        result.devices.append(device)
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
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
