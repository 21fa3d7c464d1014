"""A stand-in SPDK target: answers SPDK's JSON-RPC 2.0 on a unix socket from a JSON file of answers
(method -> result; `{"code": .., "message": ..}` -> a JSON-RPC error), as `spdk_tgt -r <socket>`
would. Responses are not newline framed and are sent in two pieces, like SPDK's. Usable in-process
(`SpdkStandin(answers).start()`) or as a process: `python tests/spdk_standin.py SOCKET ANSWERS.json`.

A few methods keep state, as the target does: `nvmf_subsystem_add_host` / `nvmf_subsystem_remove_host`
change the `hosts` of the subsystem in the `nvmf_get_subsystems` answer, with SPDK's answers (true; an
unknown subsystem -32602 "Invalid parameters"; a host added twice or removed when absent -32603
"Internal error", as SPDK 24's). An entry of `answers` under such a method's name overrides it (e.g. an
error to inject)."""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ANSWERS = Path(__file__).resolve().parent.parent / "drivers" / "fixture_trees" / "spdk" / "rpc.json"


def example_answers() -> dict[str, Any]:
    """The example SPDK target of drivers/fixture_trees/spdk/rpc.json (without its comment)."""
    return {k: v for k, v in json.loads(ANSWERS.read_text()).items() if not k.startswith("_")}


class SpdkStandin:
    def __init__(self, answers: dict[str, Any] | None = None, path: str | Path | None = None):
        self.answers = example_answers() if answers is None else answers
        # a short path: a unix socket's name must fit in 108 bytes, pytest's tmp paths may not
        self.path = Path(path) if path else Path(tempfile.mkdtemp(prefix="spdk", dir="/tmp")) / "spdk.sock"
        self.calls: list[str] = []
        self.params: list[tuple[str, Any]] = []  # (method, params) of each call
        self._stateful = {"nvmf_subsystem_add_host": self._add_host,
                          "nvmf_subsystem_remove_host": self._remove_host}
        self._srv: socket.socket | None = None

    def start(self) -> SpdkStandin:
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._srv.bind(str(self.path))
        self._srv.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.close()
        self.path.unlink(missing_ok=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            with conn:
                try:
                    self._answer(conn)
                except (OSError, ValueError):
                    continue

    def _answer(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return
            buf += chunk
            try:
                req = json.loads(buf)
                break
            except json.JSONDecodeError:
                continue
        self.calls.append(req["method"])
        self.params.append((req["method"], req.get("params")))
        if req["method"] not in self.answers and req["method"] in self._stateful:
            body = self._stateful[req["method"]](req.get("params") or {})
        elif req["method"] not in self.answers:
            body = {"error": {"code": -32601, "message": "Method not found"}}
        elif isinstance(answer := self.answers[req["method"]], dict) and "code" in answer:
            body = {"error": answer}
        else:
            body = {"result": answer}
        data = json.dumps({"jsonrpc": "2.0", "id": req.get("id")} | body).encode()
        conn.sendall(data[: len(data) // 2])
        conn.sendall(data[len(data) // 2:])

    # ---- stateful methods ---------------------------------------------------------------------

    def hosts(self, nqn: str) -> list[str]:
        """The host NQNs the subsystem allows ([] for an unknown subsystem)."""
        sub = self._subsystem(nqn)
        return [h["nqn"] for h in sub.get("hosts", [])] if sub else []

    def _subsystem(self, nqn: Any) -> dict[str, Any] | None:
        subs = self.answers.get("nvmf_get_subsystems")
        return next((s for s in subs if isinstance(s, dict) and s.get("nqn") == nqn), None) \
            if isinstance(subs, list) else None

    def _add_host(self, params: dict[str, Any]) -> dict[str, Any]:
        sub = self._subsystem(params.get("nqn"))
        if sub is None or not params.get("host"):
            return {"error": {"code": -32602, "message": "Invalid parameters"}}
        hosts = sub.setdefault("hosts", [])
        if any(h.get("nqn") == params["host"] for h in hosts):
            return {"error": {"code": -32603, "message": "Internal error"}}
        hosts.insert(0, {"nqn": params["host"]})  # SPDK lists the newest first
        return {"result": True}

    def _remove_host(self, params: dict[str, Any]) -> dict[str, Any]:
        sub = self._subsystem(params.get("nqn"))
        if sub is None or not params.get("host"):
            return {"error": {"code": -32602, "message": "Invalid parameters"}}
        kept = [h for h in sub.get("hosts", []) if h.get("nqn") != params["host"]]
        if len(kept) == len(sub.get("hosts", [])):
            return {"error": {"code": -32603, "message": "Internal error"}}
        sub["hosts"] = kept
        return {"result": True}


if __name__ == "__main__":
    standin = SpdkStandin(json.loads(Path(sys.argv[2]).read_text()), sys.argv[1]).start()
    print(f"serving SPDK JSON-RPC on {standin.path}", flush=True)
    threading.Event().wait()
