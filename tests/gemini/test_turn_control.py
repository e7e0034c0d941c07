"""LiveSession with manual activity detection and the per-model setup, against the emulator over wss://."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.emulator import Emulator, Scenario
from gateway.emulator.pki import TestPKI
from gateway.gemini.messages import (
    FunctionDeclaration,
    InputTranscription,
    ServerEvent,
    SessionConfig,
    TurnComplete,
    VadConfig,
)
from gateway.gemini.session import LiveEndpoint, LiveSession

FAST = Scenario(first_audio_delay_s=0.0, speed=0.0, playback_wait=False)


def _tone(ms: int, rate: int = 16000, amp: int = 8000) -> bytes:
    n = rate * ms // 1000
    return struct.pack(f"<{n}h", *(int(amp * math.sin(2 * math.pi * 440 * i / rate)) for i in range(n)))


@pytest.fixture
async def emu(trust_test_ca: TestPKI) -> AsyncIterator[Emulator]:
    async with Emulator(FAST, ssl_context=trust_test_ca.server_context()) as e:
        yield e


async def _until(session: LiveSession, pred: Callable[[ServerEvent], bool]) -> list[ServerEvent]:
    seen: list[ServerEvent] = []
    async with asyncio.timeout(5.0):
        async for event in session.events():
            seen.append(event)
            if pred(event):
                return seen
    raise AssertionError(f"stream ended first: {seen}")


def _realtime_in(emu: Emulator) -> list[dict[str, Any]]:
    return [
        f.payload["realtimeInput"]
        for f in emu.sessions[0].frames
        if f.direction == "in" and f.payload and "realtimeInput" in f.payload
    ]


async def test_activity_end_never_overtakes_audio_still_queued(emu: Emulator) -> None:
    """A burst of caller audio is queued behind the socket; activityEnd is sent after all of it, and
    the emulator (manual mode) answers the whole utterance."""
    config = SessionConfig(model="gemini-3.8-live", vad=VadConfig(disabled=True))
    session = await LiveSession.connect(LiveEndpoint(base_url=emu.base_url), config)
    try:
        session.send_activity_start()
        speech = _tone(600)
        for i in range(0, len(speech), 640):  # 30 chunks at once: all but the first wait in the queue
            session.send_audio(speech[i : i + 640])
        session.send_activity_end()
        events = await _until(session, lambda e: isinstance(e, TurnComplete))
    finally:
        await session.close()
    kinds = [next(iter(m)) for m in _realtime_in(emu)]
    assert kinds[0] == "activityStart"
    assert kinds[-1] == "activityEnd"
    assert set(kinds[1:-1]) == {"audio"}
    assert emu.sessions[0].audio_in_bytes == len(speech)
    assert InputTranscription(" [speech 0.6 s]") in events


async def test_the_emulator_accepts_what_the_client_sends_for_each_model(emu: Emulator) -> None:
    """Every model's setup (behaviors, thinking, transcription languages, turn control) is accepted by
    the strict emulator: the client never sends what a model would refuse."""
    tools = (
        FunctionDeclaration("end_call", "Hang up"),
        FunctionDeclaration("report", "Later", non_blocking=True),
    )
    for model in (
        "gemini-3.8-live",
        "gemini-3.8-live-extended-thinking",
        "gemini-3.1-flash-live-preview",
        "gemini-2.5-flash-native-audio-preview-12-2025",
    ):
        config = SessionConfig(
            model=model,
            voice="Kore",
            language="en-US",
            tools=tools,
            vad=VadConfig(start_sensitivity="HIGH", activity_handling="NO_INTERRUPTION"),
            transcription_languages=("en-US",),
            thinking_level="LOW",
            thinking_budget=256,
            google_search=True,
        )
        session = await LiveSession.connect(LiveEndpoint(base_url=emu.base_url), config)
        await session.close()
    assert [s.close_code for s in emu.sessions] == [1000] * 4
