"""Slow and too many clients (issue 14 item 9), against the real server (`api/server.run`) in a
subprocess: header and body timeouts, the connection cap, and one log line per interval when the
process runs out of file descriptors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

SERVER = r"""
import json, logging, resource, socket, sys
opts = json.loads(sys.argv[1])
if "nofile" in opts:
    resource.setrlimit(resource.RLIMIT_NOFILE, (opts["nofile"], opts.pop("nofile")))
from rayborg.api import server
from rayborg.api.app import create_app
from rayborg.settings import Settings
from rayborg.store.engine import Store
from rayborg.store.migrate import upgrade
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
store = Store(opts["database_url"])
upgrade(store.engine)
settings = Settings(_env_file=None, **opts)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(1024)
sock.setblocking(False)
print(sock.getsockname()[1], flush=True)
server.run(create_app(settings, store), sock, settings)
"""

PARTIAL_HEADERS = b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Slow: "
PARTIAL_BODY = (b"POST /v2/device_profiles HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n[")


@pytest.fixture
def start_server(tmp_path):
    procs = []

    def start(**opts) -> tuple[int, subprocess.Popen]:
        (tmp_path / "none.toml").touch()
        opts.setdefault("database_url", f"sqlite:///{tmp_path / 'slow.db'}")
        proc = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps(opts)], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=open(tmp_path / "server.log", "wb"),
                                env={"PATH": "/usr/bin:/bin", "RAYBORG_CONFIG": str(tmp_path / "none.toml")})
        procs.append(proc)
        line = proc.stdout.readline()
        assert line, (tmp_path / "server.log").read_text()
        return int(line), proc

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


async def get(port: int, path: str = "/v2", timeout: float = 5.0) -> tuple[int, bytes]:
    """One request on a new connection: (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def slow(port: int, payload: bytes):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    return reader, writer


async def until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (a reset, when it closed with our
    bytes unread, is a close too)."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""


async def test_slow_headers_and_bodies_are_cut_after_their_timeouts(start_server):
    port, _ = start_server(header_timeout=0.5, body_timeout=0.5)
    started = time.monotonic()
    headers = [await slow(port, PARTIAL_HEADERS) for _ in range(3)]
    bodies = [await slow(port, PARTIAL_BODY) for _ in range(3)]
    for reader, writer in headers:
        assert await until_closed(reader, 5) == b""  # closed without an answer
        writer.close()
    assert time.monotonic() - started >= 0.45
    for reader, writer in bodies:
        raw = await until_closed(reader, 5)
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), raw
        fault = json.loads(json.loads(body)["error_message"])
        assert fault["faultcode"] == "Client" and "0.5 seconds" in fault["faultstring"]


async def test_a_kept_alive_connection_may_idle_longer_than_the_header_timeout(start_server):
    port, _ = start_server(header_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(2):
        writer.write(b"GET /v2 HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        assert head.startswith(b"HTTP/1.1 200")
        await asyncio.sleep(0.6)  # idle between requests: aiohttp's keep-alive timeout applies, not ours
    writer.close()


async def test_a_normal_client_is_answered_while_many_slow_clients_hold_connections(start_server):
    """200 slow clients against a cap of 20 and timeouts far longer than the test: every normal
    request is still answered (within a second), because a new connection takes the place of the
    one that has waited longest on its client, once that one has had its grace."""
    port, _ = start_server(header_timeout=60, body_timeout=60, max_connections=20)
    slow_ones = [await slow(port, PARTIAL_HEADERS if i % 2 else PARTIAL_BODY) for i in range(200)]
    for _ in range(20):
        status, _ = await get(port, timeout=5)
        assert status == 200
        slow_ones.append(await slow(port, PARTIAL_BODY))  # and more slow ones meanwhile
    # the slow ones made room: those cut while sending their body were told 408
    answers = [await until_closed(reader, 5) for reader, _ in slow_ones[:150]]
    assert all(a == b"" or a.startswith(b"HTTP/1.1 408") for a in answers)
    assert any(a.startswith(b"HTTP/1.1 408") for a in answers)
    for _, writer in slow_ones:
        writer.close()


async def test_running_out_of_file_descriptors_logs_one_line_per_interval(start_server, tmp_path):
    """With 64 descriptors and a cap above it, accepts fail with EMFILE for seconds: the log gets a
    bounded number of lines, not one (traceback) per failed accept, and the server answers again
    once the slow clients are gone."""
    port, _ = start_server(nofile=64, header_timeout=60, max_connections=1000)
    held = [await slow(port, PARTIAL_HEADERS) for _ in range(120)]
    log = tmp_path / "server.log"
    deadline = time.monotonic() + 10
    while "Too many open files" not in log.read_text() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(3)  # three accept retries (asyncio retries every second)
    text = log.read_text()
    assert text.count("Too many open files") == 1, text
    assert "Traceback" not in text
    served = [line for line in text.splitlines() if not line.startswith("INFO alembic")]  # after migrations
    assert len(served) <= 3, text  # the fd-limit warning at start, the one EMFILE line
    for _, writer in held:
        writer.close()
    status, _ = await get(port, timeout=10)
    assert status == 200


async def test_clients_that_hang_up_mid_body_leave_no_tracebacks(start_server, tmp_path):
    """A client gone while its body is read is no server error: nothing logged above debug."""
    port, _ = start_server()
    for _ in range(20):
        reader, writer = await slow(port, PARTIAL_BODY)
        writer.transport.abort()  # a reset, as a client killed mid-upload leaves it
    status, _ = await get(port)  # the server still answers, and by then has seen every reset
    assert status == 200
    await asyncio.sleep(0.3)
    text = (tmp_path / "server.log").read_text()
    assert "Traceback" not in text and "ERROR" not in text, text
