"""A real HTTP stand-in for Glance's image metadata (bitstreams by image id), for the Python API tests.

A module of its own, not in conftest: `from conftest import ...` finds whichever conftest was
imported first when several test folders run together."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GLANCE_PROPS = {"bs-name": "demo", "bs-uuid": "b1", "vendor": "fake", "board": "fake", "version": "1",
                "function_uuid": "f1"}


class GlanceStub:
    """Glance's GET /v2/images/{id} for a few bitstream images; `asked` lists the ids asked for."""

    def __init__(self):
        self.images: dict[str, dict] = {}
        self.asked: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = self.path.strip("/").split("/")
                image = stub.images.get(parts[2]) if parts[:2] == ["v2", "images"] and len(parts) == 3 else None
                if len(parts) == 3:
                    stub.asked.append(parts[2])
                body = json.dumps(image or {"message": "not found"}).encode()
                self.send_response(200 if image else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def add(self, image_id: str, tags=("FPGA",)) -> None:
        self.images[image_id] = {"id": image_id, "tags": list(tags), **GLANCE_PROPS}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
