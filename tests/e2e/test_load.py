"""The lean load caller and the load measurements, end to end over loopback; and ``serve --workers``."""

from __future__ import annotations

import asyncio
import binascii
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.caller.load import CallPattern, SessionProbe, analyse, run_calls
from gateway.emulator import Emulator
from gateway.emulator.session import RecordedFrame
from tests.e2e.served import free_port

from .conftest import DEFAULT_PLAN, GatewayFactory

pytestmark = pytest.mark.e2e

PATTERN = CallPattern(lead_silence_s=1.0, speak_s=0.6, silence_s=1.6, barge_every=2, barge_silence_s=0.9)


def _watch(emulator: Emulator) -> dict[int, SessionProbe]:
    """Feed the full emulator's frames to SessionProbe, as gateway/emulator/load.py does for bench/load.py."""
    probes: dict[int, SessionProbe] = {}
    original = emulator.notify

    def notify(frame: RecordedFrame) -> None:
        original(frame)
        payload = frame.payload or {}
        probe = probes.setdefault(frame.session, SessionProbe())
        if frame.direction == "in":
            audio = payload.get("realtimeInput", {}).get("audio")
            if audio is not None:
                probe.audio_in(binascii.a2b_base64(audio["data"]), frame.t)
            return
        content = payload.get("serverContent") or {}
        for part in (content.get("modelTurn") or {}).get("parts", ()):
            if "inlineData" in part:
                probe.model_audio(len(part["inlineData"]["data"]) * 3 // 4, frame.t)
        if content.get("interrupted"):
            probe.turn_end(True)
        elif content.get("turnComplete"):
            probe.turn_end(False)

    emulator.notify = notify  # type: ignore[method-assign]
    return probes


async def test_load_calls_measure_both_legs(emulator: Emulator, make_gateway: GatewayFactory) -> None:
    """Three concurrent lean calls: every probe is found, both legs are timed, nothing is lost."""
    probes = _watch(emulator)
    gateway = await make_gateway()
    start = time.monotonic() + 0.1
    calls, lag = await run_calls(
        gateway.url, [1, 2, 3], start_at=start, ramp_s=0.2, until=start + 7.0, pattern=PATTERN
    )
    assert [c["error"] for c in calls] == ["", "", ""]
    assert len(lag) > 1000  # the shared 2 ms schedule ran throughout
    a = analyse(calls, [p.result() for p in probes.values()])
    assert a.failed == []
    assert a.probes_found == a.probes_sent > 20
    assert len(a.uplink_s) == a.probes_found
    assert all(0 < v < 1.0 for v in a.uplink_s)
    assert len(a.downlink_s) >= 6  # greeting and echo replies, for each call
    assert all(0 < v < 1.0 for v in a.downlink_s)
    assert a.frames_lost_up == 0
    assert a.frames_lost_down == 0
    assert a.barge_ins >= 3  # each caller spoke over the greeting
    assert len(a.greeting_s) == 3
    # Marks were echoed back as the audio "played".
    assert all(c["marks_echoed"] > 0 for c in calls)


@pytest.fixture
async def workers_gateway(tmp_path: Path, emulator: Emulator) -> AsyncIterator[tuple[str, int]]:
    """``gateway serve --workers 2`` as a subprocess, against the emulator over wss://: (URL, workers)."""
    plans = tmp_path / "dialplans"
    plans.mkdir()
    (plans / "default.toml").write_text(DEFAULT_PLAN)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GATEWAY_", "TWILIO_"))}
    env |= {"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_LOG_LEVEL": "WARNING"}
    env |= {"GEMINI_BASE_URL": emulator.base_url, "GEMINI_API_KEY": "test-key-not-secret"}
    command = ["-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--dialplans", str(plans), "--workers", "2", "--loop", "asyncio"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *command, env=env, cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        async with asyncio.timeout(30), aiohttp.ClientSession() as http:
            while True:
                assert proc.returncode is None, "gateway exited during start-up"
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # the second worker
        pgrep = await asyncio.create_subprocess_exec(
            "pgrep", "-P", str(proc.pid), stdout=asyncio.subprocess.PIPE
        )
        children, _ = await pgrep.communicate()
        yield f"http://127.0.0.1:{port}", len(children.split())
    finally:
        proc.terminate()
        async with asyncio.timeout(20):
            assert await proc.wait() == 0


@pytest.mark.slow
async def test_serve_workers_share_port_secret_and_replay_guard(
    workers_gateway: tuple[str, int], emulator: Emulator
) -> None:
    """``gateway serve --workers 2``: calls whose webhook and stream hit different workers all connect."""
    url, workers = workers_gateway
    assert workers >= 2
    start = time.monotonic() + 0.1
    calls, _ = await run_calls(
        url, list(range(8)), start_at=start, ramp_s=0.5, until=start + 3.0, pattern=PATTERN
    )
    assert [c["error"] for c in calls] == [""] * 8
    assert all(len(c["arrivals"]) > 0 for c in calls)  # every call heard its greeting
    # One Gemini session per call (the start-up check's probe aside): a worker that answered a webhook
    # opens nothing the media stream, on another worker, would never claim.
    calls_sessions = [s for s in emulator.sessions if s.setup and "systemInstruction" in s.setup]
    assert len(calls_sessions) == 8, len(emulator.sessions)
    async with asyncio.timeout(5):
        for session in emulator.sessions:
            await session.closed.wait()
