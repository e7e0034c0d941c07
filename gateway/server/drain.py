"""Graceful drain: stop taking calls, let the calls in progress finish, then end the rest politely.

A rolling update or a scale-down sends SIGTERM. Cutting live phone calls then is the one thing a
telephony operator will not forgive, so :func:`drain`:

1. marks the instance draining: ``/readyz`` answers 503 at once, so load balancers stop sending it
   calls, and admission refuses new ones (a voice webhook gets the provider's polite "busy" answer:
   the dialplan's fallback line, then hang-up); a call whose webhook was already answered still
   gets its media stream served;
2. waits, up to the drain deadline (``GATEWAY_DRAIN_S``), for every call to end on its own;
3. at the deadline, has the model say a short goodbye on each remaining call and hangs up once the
   caller heard it (bounded), so no call ends in mid-sentence.

A second SIGTERM (or Ctrl-C) skips the wait: the operator has decided. Whatever is still open after
the goodbye is closed by the server's shutdown (1001), as before draining existed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiohttp import web

from gateway.bridge.guard import SAY_TIMEOUT_S
from gateway.server.state import CALLS, LIMITS, OBSERVABILITY

__all__ = ["DRAINING", "GOODBYE", "DrainReport", "drain"]

_LOG = logging.getLogger("gateway.drain")

#: Why new calls are refused while draining (logs and the admission refusal).
DRAINING = "draining: the gateway is shutting down"
#: What the model says on a call still running at the drain deadline.
GOODBYE = "I'm sorry, I have to end our call now. Please call back in a minute. Goodbye."
#: How long the goodbyes may take: the bot's reply in progress and the goodbye share one SAY_TIMEOUT_S
#: (CallGuard._say_and_wait), then the hang-up; the rest is margin.
GOODBYE_S = 1.5 * SAY_TIMEOUT_S + 3.0
#: A call whose webhook was answered before the drain began has this long for its media stream to arrive
#: (providers open it within a second or two); a reservation whose stream never comes (a provider that
#: gave up, a replayed webhook) must not hold a shutdown for the token's whole lifetime.
STREAM_GRACE_S = 5.0
#: How often the drain looks whether calls are left (nothing per call, a dictionary length).
POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class DrainReport:
    """How a drain went: calls that finished by themselves, that got the goodbye, that were cut."""

    finished: int
    said_goodbye: int
    cut: int
    seconds: float


async def drain(
    app: web.Application, deadline_s: float, *, interrupted: asyncio.Event | None = None
) -> DrainReport:
    """Drain ``app`` (module docstring); returns once no call is left or the goodbyes are done."""
    started = time.monotonic()
    calls, admission = app[CALLS], app[LIMITS].admission
    app[OBSERVABILITY].draining = True
    at_start = admission.total
    if at_start:
        _LOG.info(
            "draining: new calls are refused; waiting for the calls in progress",
            extra={"calls": at_start, "streaming": len(calls.active), "deadline_s": deadline_s},
        )
    deadline = started + deadline_s
    expected_by = started + STREAM_GRACE_S

    def waiting() -> bool:
        """Calls are streaming here, or a webhook answered here still expects its stream."""
        return bool(calls.active) or (admission.in_use() > 0 and time.monotonic() < expected_by)

    # Polling: the registry has no change notification, and this runs once, at shutdown.
    while waiting() and time.monotonic() < deadline:
        if interrupted is not None and interrupted.is_set():
            _LOG.warning("drain interrupted: ending the remaining calls now")
            break
        await asyncio.sleep(POLL_S)
    remaining = list(calls.active.values())
    goodbyes = sum(1 for bridge in remaining if bridge.wind_down(GOODBYE, "gateway shutting down"))
    if goodbyes:
        _LOG.info("drain deadline: saying goodbye on the remaining calls", extra={"calls": goodbyes})
        limit = time.monotonic() + GOODBYE_S
        while calls.active and time.monotonic() < limit:  # noqa: ASYNC110
            await asyncio.sleep(POLL_S)
    cut = len(calls.active)
    report = DrainReport(
        finished=max(at_start - len(remaining), 0),
        said_goodbye=goodbyes - cut,
        cut=cut,
        seconds=round(time.monotonic() - started, 2),
    )
    if at_start:
        log = _LOG.warning if cut else _LOG.info
        log(
            "drained",
            extra={
                "finished": report.finished,
                "said_goodbye": report.said_goodbye,
                "cut": report.cut,
                "seconds": report.seconds,
            },
        )
    return report
