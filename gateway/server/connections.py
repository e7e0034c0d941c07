"""Connections that cost a file and do nothing: timed out, capped, and the first to go.

Three defences, so idle or slow clients can neither hold sockets forever nor starve real calls:

* **Timeouts.** A connection must send a complete request head within ``GATEWAY_HTTP_IDLE_TIMEOUT_S``
  of opening or of its previous response: aiohttp's ``keepalive_timeout`` (its ``RequestHandler``
  arms it in ``connection_made`` and after each response, and closes the connection when it fires
  while no request head has arrived, so it bounds idle keep-alive and slowloris headers alike). A
  request body must arrive within ``GATEWAY_HTTP_BODY_TIMEOUT_S`` (:func:`connection_state` reads it
  before the handler runs, 408 otherwise), and an unread body is drained for at most a second
  (``lingering_time``) instead of aiohttp's ten.
* **A connection cap** (:class:`~gateway.server.limits.ConnectionCap`, sized by
  :class:`~gateway.server.limits.FileBudget`): :class:`GuardedServer` counts every connection as it
  is accepted; idle ones past their share are closed oldest first, so a new webhook, health check or
  media stream always finds room while anything idle is left to close.
* **The open-file limit** is raised to the hard limit at start (:func:`raise_file_limit`), and what
  it allows is logged.

aiohttp offers no public hook at accept time, so :class:`GatewayRunner` builds a :class:`GuardedServer`
from the server aiohttp made (its handler, request factory and handler arguments), pinned to
aiohttp 3.14 like gateway/server/media_in.py; ``tests/server/test_connections.py`` checks it.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Hashable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler

from gateway.server.limits import MAX_FILES, ConnectionCap
from gateway.server.state import LIMITS, SETTINGS
from gateway.settings import Settings

log = logging.getLogger("gateway.connections")

#: Sent to a connection turned away because every connection is busy with real work.
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\nbusy\n"
)
#: Seconds between two warnings about evicted or refused connections (an attack must not flood the log).
WARN_EVERY_S = 10.0


def handler_args(settings: Settings) -> dict[str, Any]:
    """aiohttp ``RequestHandler`` arguments (``web.Application(handler_args=…)``; they reach every runner)."""
    return {"keepalive_timeout": settings.http_idle_timeout_s, "lingering_time": 1.0}


def _closing(response: web.Response) -> web.Response:
    response.force_close()
    return response


@web.middleware
async def connection_state(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read the body in time, then mark the connection busy (never evicted) while the handler runs."""
    connections = request.app[LIMITS].connections
    protocol = request.protocol
    if request.body_exists:
        try:
            async with asyncio.timeout(request.app[SETTINGS].http_body_timeout_s):
                await request.read()  # cached: request.post()/json() use it
        except TimeoutError:
            return _closing(web.Response(status=408, text="request body too slow"))
        except ConnectionError:  # closed as the oldest idle connection, or by the client: nobody listens
            return _closing(web.Response(status=400, text="connection lost"))
    connections.busy(protocol)
    try:
        return await handler(request)
    finally:
        connections.idle(protocol)


class GuardedServer(web.Server):
    """aiohttp's low-level server, counting each connection against a :class:`ConnectionCap`."""

    def __init__(self, cap: ConnectionCap[Hashable], plain: web.Server) -> None:
        super().__init__(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )
        self.cap = cap
        self._warned_at = 0.0
        self._reported = (0, 0)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        victims, keep = self.cap.opened(handler)
        for victim in victims:
            if isinstance(victim, RequestHandler):
                victim.force_close()
        if not keep:
            transport.write(BUSY_RESPONSE)
            handler.force_close()
        if victims or not keep:
            self._warn()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self.cap.closed(handler)
        super().connection_lost(handler, exc)

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._warned_at < WARN_EVERY_S:
            return
        self._warned_at = now
        evicted, refused = self.cap.evicted - self._reported[0], self.cap.refused - self._reported[1]
        self._reported = (self.cap.evicted, self.cap.refused)
        log.warning(
            "connections at their limit: closed the oldest idle ones to make room",
            extra={
                "evicted": evicted,
                "refused_busy": refused,
                "limit": self.cap.limit,
                "idle_limit": self.cap.idle_limit,
            },
        )


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose server is a :class:`GuardedServer` using the app's connection cap."""

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return GuardedServer(self.app[LIMITS].connections, plain)


def open_file_limit() -> int:
    """The soft RLIMIT_NOFILE now (0: unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 0 if soft == resource.RLIM_INFINITY else soft


def raise_file_limit() -> tuple[int, int, int]:
    """Raise the soft open-file limit as far as the hard limit allows: (before, now, hard).

    Sockets are files: at the common soft default of 1024 about 1000 sockets stop everything (accept
    fails with EMFILE, the dialplan watcher cannot open a file). The hard limit is the operator's
    ceiling; raising the soft one up to it needs no privilege. An unlimited hard limit is capped at
    2**20 (macOS refuses more than its kern.maxfilesperproc, hence the smaller fallbacks).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 0, 0, 0
    ceiling = MAX_FILES if hard == resource.RLIM_INFINITY else hard
    for target in (ceiling, 65536, 10240):
        if soft < target <= ceiling:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (ValueError, OSError):
                continue
            return soft, target, 0 if hard == resource.RLIM_INFINITY else hard
    return soft, soft, 0 if hard == resource.RLIM_INFINITY else hard
