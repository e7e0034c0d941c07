"""bench/floor.py, the I/O floor ``bench/load.py --compare-floor`` measures the gateway against, as a real
process: a simulated Twilio call through it to the emulator over verified wss:// is greeted and answered,
so the floor carries the same conversation the gateway does (else its figures would flatter it), bare and
with every step of its ladder (``--with``: the gateway's codec, audio, pacing and Live parsing) put back."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.caller import CallOptions, place_call
from gateway.emulator import Emulator, Scenario
from gateway.emulator.pki import TestPKI
from tests.e2e.served import free_port

FLOOR = Path(__file__).resolve().parents[2] / "bench" / "floor.py"


@pytest.fixture
async def emulator(trust_test_ca: TestPKI) -> AsyncIterator[Emulator]:
    async with Emulator(
        Scenario(greeting="Hello! How can I help?"),
        ssl_context=trust_test_ca.server_context(),
        api_key="floor-key",
    ) as emu:
        yield emu


@pytest.mark.parametrize("steps", ["", "codec,audio,pacing,live"], ids=["bare", "every-step"])
async def test_a_call_through_the_floor_is_greeted_and_answered(emulator: Emulator, steps: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,  # SSL_CERT_FILE: the test CA, as bench/load.py gives it
        "GEMINI_BASE_URL": emulator.base_url,
        "GEMINI_API_KEY": "floor-key",
        "GATEWAY_PUBLIC_URL": url,
    }
    command = [sys.executable, str(FLOOR), "--port", str(port)] + (["--with", steps] if steps else [])
    proc = await asyncio.create_subprocess_exec(*command, env=env)
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break
        opts = CallOptions(
            to="+15551230000",
            gateway=url,
            play="builtin:hello",
            turns=1,
            hangup_when_done_s=0.5,
            max_duration_s=20,
        )
        report = await place_call(opts)
    finally:
        proc.terminate()
        await proc.wait()
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    assert not report.protocol_errors
    if steps:  # paced by the gateway's playout: marks along the reply, every one echoed
        assert report.marks_sent >= 2
        assert report.marks_acked == report.marks_sent
    (session,) = emulator.sessions
    assert session.setup is not None
    assert session.setup["model"].endswith("gemini-3.8-live")
    assert session.audio_in_bytes > 16000  # the caller's speech reached it as 16 kHz PCM
