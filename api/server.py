"""Runs the front door on a listening socket, guarded against slow and too many clients.

`run(app, sock, settings)` replaces `web.run_app`. aiohttp has no header-read timeout and no cap
on connections, so each connection's protocol gets a watchdog (`_GuardedHandler`):

- headers: a connection has `header_timeout` seconds from its first byte (from its accept, for
  the first request) to finish a request's headers, else it is closed;
- body: once the headers are in, the body has `body_timeout` seconds; then whoever reads it gets
  `RequestTimeout`, a 408 in Cyborg's error body, and the connection closes after that answer;
- `max_connections`: beyond it, a new connection takes the place of the one that has waited
  longest on its client (slow headers, slow body, idle keep-alive; after a short grace, so that a
  flood cannot evict a normal client before its request is read); when there is none, the new one
  is held unread until a slot frees (at most as many as served: beyond, the one held longest is
  closed).

Running out of file descriptors makes asyncio report every failed accept through the loop's
exception handler: `_ResourceLog` turns those into one line per `RESOURCE_LOG_INTERVAL_S`.
With several front doors (`api_workers`), metrics go to prometheus_client's shared files so that
one scrape covers them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import glob
import logging
import multiprocessing
import os
import resource
import shutil
import socket
import tempfile
import time
from collections import deque

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_runner import GracefulExit

from rayborg.actors import metrics
from rayborg.api.errors import ApiError

log = logging.getLogger("rayborg.server")

SHUTDOWN_TIMEOUT_S = 5.0
RESOURCE_LOG_INTERVAL_S = 10.0
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
EVICT_GRACE_S = 0.5  # at most (half the header timeout when shorter)
FD_MARGIN = 256  # descriptors kept for the store, Ray and logs beyond max_connections


class RequestTimeout(ApiError, TimeoutError):
    """The body did not arrive in time. A TimeoutError too, so that aiohttp's lingering read of an
    unread body stops on it quietly."""

    status = 408


class _Guard:
    """This process's connections: how many are admitted, those waiting on their client (oldest
    wait first, with when it began), and those accepted but held unread until a slot frees."""

    def __init__(self, header_timeout: float, body_timeout: float, max_connections: int) -> None:
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        # A connection is not evicted in its first moments: it must have had the time to send a
        # request (else a flood of new connections would evict every normal client before it is read).
        self.grace = min(EVICT_GRACE_S, header_timeout / 2)
        self.open = 0
        self.waiting: dict[_GuardedHandler, float] = {}
        self.held: deque[_GuardedHandler] = deque()
        self.evicted = self.refused = 0
        self._tick: asyncio.TimerHandle | None = None

    def admit(self) -> bool:
        """True: serve the new connection now; False: hold it unread until a slot frees. As many
        are held as served at most: beyond, the one held longest is closed (a flood's oldest)."""
        if self.open < self.max_connections or self._evict():
            self.open += 1
            return True
        if len(self.held) >= self.max_connections:
            self.refused += 1
            self.held.popleft().force_close()
        return False

    def hold(self, conn: _GuardedHandler) -> None:
        self.held.append(conn)
        self._schedule()

    def left(self, conn: _GuardedHandler, admitted: bool) -> None:
        self.waiting.pop(conn, None)
        if admitted:
            self.open -= 1
            self._admit_held()
        else:
            with contextlib.suppress(ValueError):
                self.held.remove(conn)

    def waits(self, conn: _GuardedHandler) -> None:
        self.waiting.pop(conn, None)
        self.waiting[conn] = time.monotonic()
        if self.held:
            self._schedule()

    def busy(self, conn: _GuardedHandler) -> None:
        self.waiting.pop(conn, None)

    def _evict(self) -> bool:
        """Make room by giving up on the connection that has waited longest on its client."""
        if not self.waiting:
            return False
        oldest, since = next(iter(self.waiting.items()))
        if time.monotonic() - since < self.grace:
            return False
        self.evicted += 1
        oldest.give_up()
        return True

    def _admit_held(self) -> None:
        while self.held and (self.open < self.max_connections or self._evict()):
            self.open += 1
            self.held.popleft().admitted()

    def _schedule(self) -> None:
        """Look again when the oldest wait passes its grace (nothing to do while all are busy:
        the next connection to close or to wait calls back)."""
        if self._tick is not None or not self.waiting or not self.held:
            return
        since = next(iter(self.waiting.values()))
        delay = max(since + self.grace - time.monotonic(), 0.0)
        self._tick = asyncio.get_running_loop().call_later(delay, self._on_tick)

    def _on_tick(self) -> None:
        self._tick = None
        self._admit_held()
        self._schedule()


class _GuardedHandler(RequestHandler):
    """aiohttp's protocol with a deadline on each wait for the client (see the module's doc)."""

    __slots__ = ("_guard", "_phase", "_deadline", "_body", "_requests_seen", "_admitted")

    def __init__(self, manager, *, guard: _Guard, admitted: bool, **kwargs) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._admitted = admitted
        self._phase = "held"  # held | headers | body | busy | idle (kept alive between requests)
        self._deadline: asyncio.TimerHandle | None = None
        self._body = None
        self._requests_seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._admitted:
            self._wait_headers()
        else:  # accepted but not read until a slot frees (the client just waits)
            transport.pause_reading()  # type: ignore[attr-defined]
            self._guard.hold(self)

    def admitted(self) -> None:
        self._admitted = True
        if self.transport is not None:
            self.transport.resume_reading()  # type: ignore[attr-defined]
            self._wait_headers()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._guard.left(self, self._admitted)
        self._body = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._requests_seen != self._request_count:  # a request's headers are complete
            self._requests_seen = self._request_count
            self._headers_in(self._messages[-1][1] if self._messages else None)
        elif self._phase == "body" and self._body is not None and self._body.is_eof():
            self._now_busy()
        elif self._phase == "idle":  # the next request on a kept-alive connection has begun
            self._wait_headers()

    async def _handle_request(self, request, start_time, request_handler):
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            if self._phase == "busy" and self.transport is not None:
                if self._messages:  # pipelined: the next request's headers are already here
                    self._headers_in(self._messages[-1][1])
                else:
                    self._phase = "idle"  # aiohttp's keep-alive timeout closes it if it stays idle
                    self._guard.waits(self)

    def give_up(self) -> None:
        """Make room for a new connection (this one waited longest on its client)."""
        self._guard.busy(self)
        if self._phase == "body":
            self._body_late()
        else:
            self._disarm()
            self.force_close()

    # -- phases ----------------------------------------------------------------------------------
    def _wait_headers(self) -> None:
        self._phase = "headers"
        self._arm(self._guard.header_timeout, self._headers_late)
        self._guard.waits(self)

    def _headers_in(self, payload) -> None:
        if payload is not None and not payload.is_eof():
            self._phase, self._body = "body", payload
            self._arm(self._guard.body_timeout, self._body_late)
            self._guard.waits(self)
        else:
            self._now_busy()

    def _now_busy(self) -> None:
        self._phase, self._body = "busy", None
        self._disarm()
        self._guard.busy(self)

    def _headers_late(self) -> None:
        self._deadline = None
        log.debug("closing a connection whose request headers took over %.1f s", self._guard.header_timeout)
        self._guard.busy(self)
        self.force_close()

    def _body_late(self) -> None:
        """The reader of the body (a handler's `request.read()`) gets a 408; the connection closes
        once that answer is written."""
        self._deadline = None
        body, self._phase, self._body = self._body, "busy", None
        self._guard.busy(self)
        if body is not None and not body.is_eof():
            body.set_exception(RequestTimeout(
                f"The request body did not arrive within {self._guard.body_timeout:g} seconds"))
            self.close()

    def _arm(self, seconds: float, callback) -> None:
        self._disarm()
        self._deadline = self._loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


class _GuardedSite(web.SockSite):
    """SockSite whose connections get `_GuardedHandler`s, admitted by the guard."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket, guard: _Guard, **kwargs) -> None:
        super().__init__(runner, sock, **kwargs)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server, guard = self._runner.server, self._guard
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            return _GuardedHandler(server, loop=loop, guard=guard, admitted=guard.admit(), **server._kwargs)

        self._server = await loop.create_server(protocol, sock=self._sock, backlog=self._backlog)


class _ResourceLog:
    """The loop's exception handler: running out of descriptors (or buffers) is logged once per
    interval with a count, not once per failed accept with a traceback; the rest as asyncio would."""

    def __init__(self, interval: float = RESOURCE_LOG_INTERVAL_S) -> None:
        self.interval = interval
        self.last = -interval
        self.suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if not (isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return
        more = f"; {self.suppressed} more in the last {now - self.last:.0f} s" if self.suppressed else ""
        log.error("%s: %s (new connections wait until descriptors are free; lower max_connections "
                  "or raise the open-files limit)%s", context.get("message", "out of resources"),
                  os.strerror(exc.errno), more)
        self.last, self.suppressed = now, 0


def _raise_fd_limit(max_connections: int) -> None:
    """Raise the soft open-files limit towards the hard one so that the cap, not EMFILE, bounds
    connections; warn when even the hard limit is below it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + FD_MARGIN
    if soft < wanted and (hard == resource.RLIM_INFINITY or soft < hard):
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft < wanted:
        log.warning("open-files limit %d is below max_connections %d + %d: accepts may fail with EMFILE",
                    soft, max_connections, FD_MARGIN)


def _metrics_dir(settings) -> str | None:
    """Several front doors: one shared metrics directory, named after the first one's pid."""
    if settings.api_workers <= 1:
        return None
    parent = multiprocessing.parent_process()
    owner = parent.pid if parent is not None else os.getpid()
    if parent is None:  # the directories of daemons killed before they could remove theirs
        for stale in glob.glob(os.path.join(tempfile.gettempdir(), "rayborg-metrics-*")):
            pid = stale.rsplit("-", 1)[1]
            if pid.isdigit() and int(pid) != owner and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(stale, ignore_errors=True)
    return os.path.join(tempfile.gettempdir(), f"rayborg-metrics-{owner}")


async def _serve(app: web.Application, sock: socket.socket, guard: _Guard, shutdown_timeout: float) -> None:
    runner = web.AppRunner(app, handle_signals=True, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await _GuardedSite(runner, sock, guard).start()
        await asyncio.Event().wait()  # until SIGINT/SIGTERM raise GracefulExit
    finally:
        await runner.cleanup()


def run(app: web.Application, sock: socket.socket, settings,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
    """Serve `app` on the listening `sock` until SIGINT or SIGTERM, then shut down gracefully."""
    shared = _metrics_dir(settings)
    if shared is not None:
        metrics.use_multiprocess(shared)
    _raise_fd_limit(settings.max_connections)
    guard = _Guard(settings.header_timeout, settings.body_timeout, settings.max_connections)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.set_exception_handler(_ResourceLog())
    main = loop.create_task(_serve(app, sock, guard, shutdown_timeout))
    try:
        loop.run_until_complete(main)
    except (GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()  # runs the runner's cleanup (app shutdown and cleanup hooks)
        loop.run_until_complete(asyncio.gather(main, return_exceptions=True))
        rest = asyncio.all_tasks(loop)
        for task in rest:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        asyncio.set_event_loop(None)
        loop.close()
        if shared is not None and multiprocessing.parent_process() is None:
            shutil.rmtree(shared, ignore_errors=True)
