"""A Glance stand-in (images API v2 over http.server) holding FPGA bitstream images: what the
bitstream sources fetch from in tests. Yields (url, request paths, X-Auth-Token of each request)."""

from __future__ import annotations

import json
import threading
from collections import ChainMap
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

IMG = "76babc1b-3222-4992-a046-52441e403577"
PROPS = {"bs-name": "aes-128", "bs-uuid": "b1", "vendor": "Intel", "board": "PAC_ARRIA10", "version": "1.0",
         "function_uuid": "d8424dc4a4a3c413f89e433683f9040b", "region_uuid": "ce48", "function_name": "aes"}


@contextmanager
def glance_standin(extra: dict | None = None):
    """`extra`: more images (id -> image), also those added to it while the stand-in runs."""
    images = {
        IMG: {"id": IMG, "name": "aes", "tags": ["FPGA"], **PROPS},
        "img-2": {"id": "img-2", "name": "gzip", "tags": ["FPGA"], **PROPS, "function_uuid": "ff", "function_name": "gzip"},
        "img-3": {"id": "img-3", "name": "gzip-b", "tags": ["FPGA"], **PROPS, "function_uuid": "ff", "function_name": "gzip"},
        "cirros": {"id": "cirros", "name": "cirros", "tags": []},
        "bad": {"id": "bad", "tags": ["FPGA"], "bs-name": "x"},
        "xbs": {"id": "xbs", "tags": ["FPGA"], **PROPS, "vendor": "Xilinx", "board": "U200", "region_uuid": None,
                "function_uuid": "5d4c", "function_name": "xaes"},
        "cut": {"id": "cut", "tags": ["FPGA"], **PROPS, "function_uuid": "cc"},  # its download stops halfway
    }
    if extra is not None:
        images = ChainMap(extra, images)
    requests: list[str] = []
    tokens: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, code, body, ctype="application/json"):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urlparse(self.path)
            requests.append(self.path)
            tokens.append(self.headers.get("X-Auth-Token"))
            parts = url.path.strip("/").split("/")
            if parts == ["v2", "images"]:
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                found = [i for i in images.values() if q.get("tag") in i.get("tags", [])
                         and all(i.get(k) == v for k, v in q.items() if k != "tag")]
                return self._send(200, {"images": found})
            if len(parts) >= 3 and parts[:2] == ["v2", "images"] and parts[2] in images:
                if parts[3:] == ["file"] and parts[2] == "cut":  # promises 1000 bytes, sends 10, hangs up
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b"0123456789")
                    self.close_connection = True
                    return None
                if parts[3:] == ["file"]:
                    return self._send(200, f"bitstream {parts[2]}".encode(), "application/octet-stream")
                return self._send(200, images[parts[2]])
            return self._send(404, {"message": "not found"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", requests, tokens
    finally:
        server.shutdown()
        server.server_close()
