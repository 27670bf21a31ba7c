"""Bounding connections: how many are open, how long a client may take, descriptors kept free.

aiohttp accepts every connection and leaves limits to the application (its maintainers'
answer in aio-libs/aiohttp#675), so this part is hand-written. It stays small and uses
only aiohttp's public surface: the runner's ``server`` property (the protocol factory that
every site hands to ``loop.create_server``), ``Server.connections`` and the handlers'
``force_close()``. The header timeout is aiohttp's own ``keepalive_timeout``, which in
3.10+ runs from the moment a connection opens and is not extended by partial data, so
it also ends clients that send nothing or drip their headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

from aiohttp import web

from flux2cli.server.logs import OncePer

log = logging.getLogger("flux2cli.server")

BACKLOG = 128  # aiohttp's TCPSite default; asyncio accepts up to this many per wake-up
# Descriptors never handed to clients: 64 for saving an image (two temp files), logging and
# the model's files, and the connections the cap cannot see yet. asyncio accepts a
# backlog's worth per loop turn and asks the guard only on the next turn; a refused or
# evicted socket is written to a turn later and closed a turn after that. So up to four
# backlogs are open beyond the cap during a flood (three let CI hit EMFILE).
FD_RESERVE = 64 + 4 * BACKLOG
MIN_IDLE_TO_EVICT = 2.0  # seconds a keep-alive connection must have been quiet to be closed for a new one

def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as Go's runtime and systemd do);
    returns the soft limit now in force. asyncio uses epoll, so no select() ceiling applies."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return 1 << 16
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard if hard != resource.RLIM_INFINITY else 1 << 20, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64


def connection_cap(requested: int) -> int:
    """``requested``, or fewer when the descriptor limit (after raising it) leaves less room."""
    room = raise_open_file_limit() - _open_descriptors() - FD_RESERVE
    return max(8, min(requested, room))


_REFUSAL_BODY = json.dumps({"success": False, "error": "the server has too many open connections; "
                            "try again shortly"}).encode()
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
           b"Content-Length: %d\r\nRetry-After: 5\r\nConnection: close\r\nCache-Control: no-store\r\n"
           b"X-Content-Type-Options: nosniff\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY))


class _Refusal(asyncio.Protocol):
    """A connection over the cap while none can be closed: a 503 and the door."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(REFUSAL)  # type: ignore[attr-defined]
        transport.close()


class ConnectionGuard:
    """The protocol factory in front of aiohttp's: at most ``limit`` connections.

    At the cap, a new connection first takes the place of the longest-quiet one that has
    no request in progress (idle keep-alives, clients that never sent a request or are
    still dripping their headers); when every connection is busy, it gets a 503.
    """

    def __init__(self, limit: int, *, min_idle: float = MIN_IDLE_TO_EVICT, report_every: float = 60.0):
        self.limit = limit
        self.min_idle = min_idle
        self.evicted = 0
        self.refused = 0
        self._server: Any = None
        self._pending = 0  # handlers made whose connection_made has not run yet
        # aiohttp's handlers have __slots__ and no weak references: plain dicts, pruned
        # of closed connections as they grow (_prune).
        self._busy: dict[Any, int] = {}
        self._last_active: dict[Any, float] = {}
        self._closing: set[Any] = set()
        self._report = OncePer(report_every)
        self._since_report = [0, 0]  # evicted, refused

    def bind(self, server: Any) -> ConnectionGuard:
        self._server = server
        return self

    def open_connections(self) -> int:
        return sum(1 for handler in self._server.connections if handler not in self._closing) + self._pending

    def __call__(self) -> asyncio.BaseProtocol:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.open_connections() >= self.limit and not self._evict_one(now):
            self.refused += 1
            self._note(refused=1)
            return _Refusal()
        handler = self._server()
        if len(self._last_active) > 2 * self.limit:
            self._prune(now)
        self._last_active[handler] = now
        self._pending += 1
        # Runs before this connection's connection_made (scheduled after it by the transport)
        # and before any other accept is handled, so the count stays exact.
        loop.call_soon(self._made)
        return handler

    def _made(self) -> None:
        self._pending -= 1

    def _prune(self, now: float) -> None:
        live = set(self._server.connections)
        self._busy = {handler: count for handler, count in self._busy.items() if handler in live}
        # Handlers made this instant are not in Server.connections yet: keep them too.
        self._last_active = {handler: time for handler, time in self._last_active.items()
                             if handler in live or time >= now - 1.0}
        self._closing &= live

    def _evict_one(self, now: float) -> bool:
        quiet = [handler for handler in self._server.connections
                 if handler not in self._closing and not self._busy.get(handler)]
        oldest = min(quiet, key=lambda handler: self._last_active.get(handler, 0.0), default=None)
        if oldest is None or now - self._last_active.get(oldest, 0.0) < self.min_idle:
            return False
        self._closing.add(oldest)
        oldest.force_close()
        self.evicted += 1
        self._note(evicted=1)
        return True

    def _note(self, evicted: int = 0, refused: int = 0) -> None:
        self._since_report[0] += evicted
        self._since_report[1] += refused
        if self._report.due():
            closed, turned_away = self._since_report
            self._since_report = [0, 0]
            log.warning("connection limit (%d) reached: closed %d quiet connection(s) and refused %d "
                        "new one(s) with 503 since the last report", self.limit, closed, turned_away)

    # Called by the activity middleware around each request.
    def started(self, protocol: Any) -> None:
        if protocol is not None:
            self._busy[protocol] = self._busy.get(protocol, 0) + 1
            self._last_active[protocol] = asyncio.get_running_loop().time()

    def finished(self, protocol: Any) -> None:
        if protocol is not None:
            self._busy[protocol] = max(0, self._busy.get(protocol, 1) - 1)
            self._last_active[protocol] = asyncio.get_running_loop().time()


GUARD = web.AppKey("connection_guard", ConnectionGuard)


@web.middleware
async def activity_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Outermost: marks the connection busy while its request runs (never evicted then)."""
    guard = request.app.get(GUARD)
    if guard is None:
        return await handler(request)
    guard.started(request.protocol)
    try:
        return await handler(request)
    finally:
        guard.finished(request.protocol)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose sites accept connections through the app's ``ConnectionGuard``."""

    @property
    def server(self) -> Any:
        server = super().server
        guard = self.app.get(GUARD)
        return server if server is None or guard is None else guard.bind(server)
