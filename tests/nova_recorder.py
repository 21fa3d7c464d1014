"""A small real HTTP server that plays Nova's `os-server-external-events` for tests: it records
every call and can be told to fail (HTTP status) for the next N calls, or to answer some instances'
events with another code (207 Multi-Status, as Nova does)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class NovaRecorder:
    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.fail_next = 0
        self.fail_status = 503
        self.fail_body: dict | None = None  # JSON body of the failing answers (None: empty)
        self.event_codes: dict[str, int] = {}  # server_uuid -> code of its events (others: 200)
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                return None

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with recorder._lock:
                    failing = recorder.fail_next > 0
                    if failing:
                        recorder.fail_next -= 1
                    codes = [recorder.event_codes.get(e.get("server_uuid"), 200) for e in body.get("events", [])]
                    recorder.calls.append({"path": self.path, "body": body, "failed": failing, "codes": codes,
                                           "headers": dict(self.headers)})
                if failing:
                    self.send_response(recorder.fail_status)
                    if recorder.fail_body is not None:
                        fail = json.dumps(recorder.fail_body).encode()
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(fail)))
                        self.end_headers()
                        self.wfile.write(fail)
                        return
                    self.end_headers()
                    return
                events = [dict(e, code=code) for e, code in zip(body.get("events", []), codes)]
                out = json.dumps({"events": events}).encode()
                self.send_response(207 if any(e["code"] != 200 for e in events) else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "NovaRecorder":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def delivered_events(self) -> list[dict]:
        """The events Nova took (200 or, in a 207, a code of 200)."""
        with self._lock:
            return [e for c in self.calls if not c["failed"]
                    for e, code in zip(c["body"]["events"], c["codes"]) if code == 200]
