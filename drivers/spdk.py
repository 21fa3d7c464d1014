"""SPDK driver (queens cyborg-spdk-driver-proposal): NVMf subsystems and vhost controllers.

Talks JSON-RPC 2.0 to the SPDK target's unix socket (option `socket`, default /var/tmp/spdk.sock;
`timeout` seconds). No socket -> SPDK is not running here -> nothing to report, no error.
The spec predates the device model and defines no RC, traits or handles; we report:
  NVMf subsystem -> device type NVME, RC CUSTOM_SPDK_NVMF, traits CUSTOM_SPDK + CUSTOM_SPDK_NVMF_<TRTYPE>,
                    one SPDK handle per namespace {nqn, nsid, bdev, trtype, traddr, trsvcid}
  vhost controller -> device type SSD, RC CUSTOM_SPDK_VHOST, traits CUSTOM_SPDK + CUSTOM_SPDK_VHOST_<KIND>,
                    one SPDK handle {controller, socket, kind}
Example target: drivers/fixture_trees/spdk/rpc.json (the answers), served by tests/spdk_standin.py.

A bind prepares its handle for the ARQ's instance (the spec's attach/detach of an instance), through the
same socket:
  NVMf namespace -> `nvmf_subsystem_add_host` of the instance's host NQN (`host_nqn`:
                    nqn.2014-08.org.nvmexpress:uuid:<instance>) on the handle's subsystem; the unbind's
                    `nvmf_subsystem_remove_host` takes it off again. The consumer connects with that host
                    NQN; a subsystem the operator left `allow_any_host` admits it anyway.
  vhost controller -> nothing to change: a vhost-user controller is already one VM's (its socket takes one
                    QEMU), so prepare only checks that the controller is still on the target.
SPDK answers a host added twice / removed when absent with a bare "Internal error" (as it does other
failures), so after a refused call the driver reads the subsystem back: what the call was to achieve
already holds -> done (idempotent); else the refusal is the bind's (or unbind's) error.
"""

from __future__ import annotations

import json
import socket
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

from rayborg.drivers.base import (BoundHandle, ControlPathId, Discovery, Driver, DriverAttachHandle,
                                  DriverDeployable, DriverDevice, DriverFailure, custom_name)

DEFAULT_SOCKET = "/var/tmp/spdk.sock"
METHOD_NOT_FOUND = -32601
HOST_NQN_PREFIX = "nqn.2014-08.org.nvmexpress:uuid:"  # the NVMe base spec's UUID-based NQN


def host_nqn(instance_uuid: str | None) -> str:
    """The host NQN an instance is allowed on an NVMe-oF subsystem under (and connects with)."""
    try:
        return HOST_NQN_PREFIX + str(uuidlib.UUID(str(instance_uuid)))
    except ValueError:
        raise DriverFailure(f"no host NQN for instance {instance_uuid!r}: not a UUID",
                            device=str(instance_uuid)) from None


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
    PREPARES = True

    def _client(self) -> SpdkClient:
        path = Path(self.options.get("socket", DEFAULT_SOCKET))
        return SpdkClient(path, float(self.options.get("timeout", 5.0)))

    def discover(self) -> Discovery:
        path = Path(self.options.get("socket", DEFAULT_SOCKET))
        result = Discovery()
        if not path.exists():
            return result
        client = self._client()
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

    # ---- attach / detach for the bound instance -------------------------------------------------

    def prepare(self, handle: BoundHandle) -> None:
        """NVMf: allow the instance's host NQN on the subsystem; vhost: the controller must exist."""
        info, client = handle.attach_info, self._client()
        if "nqn" in info:
            host = host_nqn(handle.instance_uuid)
            self._set_host(client, "nvmf_subsystem_add_host", info["nqn"], host, allowed=True)
        elif "controller" in info:
            controllers = client.call("vhost_get_controllers") or []
            if not any(isinstance(c, dict) and c.get("ctrlr") == info["controller"] for c in controllers):
                raise DriverFailure(f"vhost controller {info['controller']} is not on the SPDK target",
                                    device=client.path)
        else:
            raise DriverFailure(f"handle {handle.uuid} names neither an NVMf subsystem nor a vhost "
                                "controller", device=client.path)

    def unprepare(self, handle: BoundHandle) -> None:
        """NVMf: the instance's host NQN off the subsystem (already off, or the subsystem gone: done).
        vhost: nothing was changed by prepare."""
        info = handle.attach_info
        if "nqn" not in info or handle.instance_uuid is None:  # no instance: prepare granted nothing
            return
        self._set_host(self._client(), "nvmf_subsystem_remove_host", info["nqn"],
                       host_nqn(handle.instance_uuid), allowed=False)

    def _set_host(self, client: SpdkClient, method: str, nqn: str, host: str, *, allowed: bool) -> None:
        """`method` (add/remove host); refused, the subsystem read back decides: already as wanted
        (removal: or the subsystem gone) is success, else the refusal is raised."""
        try:
            client.call(method, {"nqn": nqn, "host": host})
            return
        except SpdkRpcError as exc:
            if not exc.reached:
                raise
            refused = exc
        try:
            now = self._host_allowed(client, nqn, host)
        except SpdkRpcError:
            raise refused from None
        if now is allowed or (not allowed and now is None):
            return
        if now is None:
            raise DriverFailure(f"{method}: no subsystem {nqn} on the SPDK target ({refused.message})",
                                device=client.path)
        raise refused

    @staticmethod
    def _host_allowed(client: SpdkClient, nqn: str, host: str) -> bool | None:
        """Whether the subsystem lists the host (None: no such subsystem)."""
        for sub in client.call("nvmf_get_subsystems") or []:
            if isinstance(sub, dict) and sub.get("nqn") == nqn:
                return any(isinstance(h, dict) and h.get("nqn") == host for h in sub.get("hosts") or [])
        return None
