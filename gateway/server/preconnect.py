"""Open a call's Gemini session at the voice webhook, before the media socket arrives.

Twilio asks for TwiML, then opens the media WebSocket a few hundred milliseconds later. Connecting
to Gemini and completing ``setup`` takes about as long, so starting it at the webhook hides it
from the caller: the greeting can start the moment the stream does.

Only verified webhooks preconnect (see :mod:`gateway.server.twilio`): an unauthenticated request
must never open a session. A session nobody claims within ``ttl_s`` is closed by its own timer (a
caller who hangs up before the stream opens must not hold a Gemini session until the next webhook),
and at most ``limit`` may wait at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.dialplan.model import Dialplan
from gateway.errors import GatewayError, LiveSessionError
from gateway.gemini.session import LiveSession

_LOG = logging.getLogger("gateway.preconnect")


@dataclass(slots=True)
class _Pending:
    task: asyncio.Task[LiveSession]
    dialplan: Dialplan
    expires_at: float
    timer: asyncio.TimerHandle | None = None


class Preconnector:
    def __init__(self, *, ttl_s: float = 15.0, limit: int = 200) -> None:
        self._pending: dict[str, _Pending] = {}
        self.ttl_s = ttl_s
        self.limit = limit
        self.started = 0
        self.claimed = 0
        self.expired = 0
        #: Closed because the call's stream went to another replica (gateway/server/cluster.py).
        self.released = 0

    def start(self, call_sid: str, dialplan: Dialplan, connect: Callable[[], Awaitable[LiveSession]]) -> bool:
        """Begin connecting for ``call_sid``. False when over the limit (the media handler connects then)."""
        self._expire(time.monotonic())
        if call_sid in self._pending or len(self._pending) >= self.limit:
            return False

        async def run() -> LiveSession:
            return await connect()

        task = asyncio.get_running_loop().create_task(run(), name=f"preconnect:{call_sid}")
        # The result is consumed by claim(); a failure is re-raised there. Mark it retrieved meanwhile.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        pending = _Pending(task, dialplan, time.monotonic() + self.ttl_s)
        pending.timer = asyncio.get_running_loop().call_later(self.ttl_s, self._expire_one, call_sid, pending)
        self._pending[call_sid] = pending
        self.started += 1
        return True

    def _expire_one(self, call_sid: str, pending: _Pending) -> None:
        if self._pending.get(call_sid) is pending:
            del self._pending[call_sid]
            self.expired += 1
            _discard(pending.task)

    @property
    def waiting(self) -> int:
        """Preconnected sessions (or connects) nobody has claimed yet."""
        return len(self._pending)

    def claim(self, call_sid: str) -> tuple[asyncio.Task[LiveSession], Dialplan] | None:
        """The media stream for ``call_sid`` is authenticated: hand over its session task, if any."""
        pending = self._pending.pop(call_sid, None)
        if pending is None:
            return None
        if pending.timer is not None:
            pending.timer.cancel()
        self.claimed += 1
        return pending.task, pending.dialplan

    def release(self, call_sid: str) -> bool:
        """``call_sid``'s stream started on another replica: close its session now, not at the TTL."""
        pending = self._pending.pop(call_sid, None)
        if pending is None:
            return False
        if pending.timer is not None:
            pending.timer.cancel()
        self.released += 1
        _discard(pending.task)
        return True

    def _expire(self, now: float) -> None:
        for sid in [s for s, p in self._pending.items() if p.expires_at < now]:
            self._expire_one(sid, self._pending[sid])

    async def close(self) -> None:
        tasks = [p.task for p in self._pending.values()]
        for pending in self._pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        self._pending.clear()
        for task in tasks:
            _discard(task)
        await asyncio.gather(*tasks, return_exceptions=True)


def _discard(task: asyncio.Task[LiveSession]) -> None:
    """Cancel a pending connect, or close the session it already opened.

    A connect that failed and was never claimed is reported here, once: a claimed one is reported by
    the call that claimed it.
    """
    if not task.done():
        task.cancel()
        return
    if task.cancelled():
        return
    if (exc := task.exception()) is not None:
        if isinstance(exc, GatewayError):
            _LOG.warning(
                "unclaimed preconnect had failed", extra={"task": task.get_name(), "error": str(exc)}
            )
        else:
            _LOG.error(
                "unclaimed preconnect failed unexpectedly", exc_info=exc, extra={"task": task.get_name()}
            )
        return
    closing = asyncio.get_running_loop().create_task(task.result().close())
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)


#: Close tasks in flight, referenced so they are not garbage-collected mid-way.
_closing: set[asyncio.Task[None]] = set()


async def await_session(task: asyncio.Task[LiveSession]) -> LiveSession:
    """Wait for a preconnect task; translate its cancellation into a session error."""
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.cancelled():
            raise LiveSessionError("preconnect was cancelled") from None
        raise
