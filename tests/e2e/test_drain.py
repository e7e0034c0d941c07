"""Graceful drain, on a real `gateway serve` process sent a real SIGTERM mid-call.

The road a rolling update takes: the process gets SIGTERM while calls run. /readyz must turn 503 at
once, a new call must be refused politely (the dialplan's line, then hang-up: no stream), the call in
progress must go on to its natural end inside the drain deadline, and its record must be closed as
the caller ended it. Past the deadline, a remaining call hears a goodbye and is hung up by the
gateway, with a record that says so.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.caller import CallOptions, place_call
from gateway.emulator import Emulator
from gateway.emulator.pki import TestPKI
from gateway.server.drain import GOODBYE
from tests.e2e.served import serve, stop


@pytest.fixture
async def emulator(trust_test_ca: TestPKI) -> AsyncIterator[Emulator]:
    async with Emulator(ssl_context=trust_test_ca.server_context()) as emu:
        yield emu


async def test_sigterm_lets_the_call_in_progress_finish_and_refuses_new_ones(
    emulator: Emulator, tmp_path: Path
) -> None:
    served = await serve(emulator, tmp_path, GATEWAY_DRAIN_S="30")
    try:
        # Two turns, then the caller hangs up by itself a moment after the last reply.
        opts = CallOptions(
            to="+15551230000", gateway=served.url, play="builtin:hello", turns=2, hangup_when_done_s=0.5
        )
        call = asyncio.create_task(place_call(opts))
        await served.wait_active(1)
        served.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        async with asyncio.timeout(1.0):  # not ready from the moment the drain starts
            while (await served.get("/readyz"))[0] != 503:  # noqa: ASYNC110 - polling what a balancer polls
                await asyncio.sleep(0.02)
        refused = await place_call(CallOptions(to="+15551230000", gateway=served.url, play="builtin:hello"))
        assert not refused.answered
        assert refused.after_stream == ["Say", "Hangup"]  # the dialplan's line, then hang-up

        report = await call
        assert report.ended_by == "caller"  # not cut: the caller hung up when it was done
        assert time.monotonic() - signalled > 1.0  # the conversation went on well after SIGTERM
        assert report.greeting_ms is not None
        assert len(report.reply_ms) == 2
        assert not report.protocol_errors
        assert await served.exit_code(within_s=15) == 0
    finally:
        await stop(served)
    (record,) = served.records()
    assert record["call_id"] == report.call_sid
    assert record["ended_by"] == "caller"
    assert record["ended_at"] is not None
    log = "".join(served.output)
    assert '"event": "drained"' in log
    assert '"cut": 0' in log
    assert '"finished": 1' in log
    assert '"cause": "draining"' in log


async def test_past_the_deadline_a_call_hears_goodbye_then_the_gateway_hangs_up(
    emulator: Emulator, tmp_path: Path
) -> None:
    served = await serve(emulator, tmp_path, GATEWAY_DRAIN_S="1")
    try:
        opts = CallOptions(to="+15551230000", gateway=served.url, play="builtin:hello", max_duration_s=60)
        call = asyncio.create_task(place_call(opts))
        await served.wait_active(1)
        served.proc.send_signal(signal.SIGTERM)
        report = await asyncio.wait_for(call, timeout=30)
        assert report.ended_by == "gateway"
        assert report.duration_s < 30
        assert await served.exit_code(within_s=15) == 0
    finally:
        await stop(served)
    (record,) = served.records()
    assert record["ended_by"] == "gateway"
    assert record["end_reason"] == "gateway shutting down"
    log = "".join(served.output)
    assert "ending the call with a goodbye" in log
    assert '"said_goodbye": 1' in log
    assert '"cut": 0' in log
    # The caller heard the goodbye: the bot's last turn (the emulator says what it is asked to say).
    turns = served.turns(record["call_id"])
    assert ("bot", GOODBYE) in turns
    # Said after the greeting, not over it: the greeting was heard whole.
    assert turns[0][0] == "bot"
    assert turns[0][1].endswith("play it back to you.")
