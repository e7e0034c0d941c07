"""Overload protection through real sockets: a late event loop refuses new calls, never the running one.

The loop is made late the way overload makes it late, by work that holds it (here a task that blocks
it 150 ms at a time: the sampler then runs up to 150 ms late, far past the 40 ms limit). The capacity
figures (calls accepted and refused at twice the held load, and the accepted calls' p99) come from
``bench/load.py --overload``, not from a timed test.
"""

from __future__ import annotations

import asyncio
import time

from gateway.caller import CallOptions, place_call
from gateway.server.state import CALLS, LIMITS, OBSERVABILITY
from tests.e2e.conftest import GatewayFactory

TO = "+15551230000"


async def _hog(stop: asyncio.Event) -> None:
    while not stop.is_set():
        time.sleep(0.15)  # noqa: ASYNC251 - holds the loop on purpose, as a saturated core would
        await asyncio.sleep(0.005)


def _refused(app: object, cause: str) -> float:
    metrics = app[OBSERVABILITY].metrics  # type: ignore[index]
    return float(metrics.calls_refused.labels(cause)._value.get())


async def test_a_late_event_loop_refuses_new_calls_and_keeps_the_running_one(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(max_loop_lag_ms=40, max_cpu_percent=85)
    running = asyncio.create_task(
        place_call(CallOptions(to=TO, gateway=gw.url, play="builtin:hello", turns=2, hangup_when_done_s=0.5))
    )
    async with asyncio.timeout(10):
        while not gw.app[CALLS].active:  # noqa: ASYNC110 - the registry has no change notification
            await asyncio.sleep(0.02)

    stop = asyncio.Event()
    hog = asyncio.create_task(_hog(stop))
    try:
        async with asyncio.timeout(5):  # the monitor samples four times a second
            while gw.app[LIMITS].load.refusal(1) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        refused = await place_call(CallOptions(to=TO, gateway=gw.url, play="builtin:hello"))
    finally:
        stop.set()
        await hog
    assert not refused.answered
    assert refused.after_stream == ["Say", "Hangup"]  # the dialplan's fallback line, then hang-up
    assert _refused(gw.app, "overload") == 1

    report = await running  # the call that was running went on to its end
    assert report.ended_by == "caller"
    assert len(report.reply_ms) == 2

    async with asyncio.timeout(5):  # two good seconds later, calls are let in again
        while gw.app[LIMITS].load.refusal(0) is not None:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    again = await place_call(CallOptions(to=TO, gateway=gw.url, hangup_after_s=1.0))
    assert again.answered
    assert again.greeting_ms is not None
    assert _refused(gw.app, "overload") == 1
