"""Fault injection over loopback: simulated caller → gateway → emulator, faults injected at the emulator.

Each test asserts what the caller heard (the CallReport) and what the emulator received (its frames).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.bridge.timers import DEFAULT_GOODBYES
from gateway.caller import CallOptions, CallReport, place_call
from gateway.caller.samples import hello_utterance
from gateway.emulator import Emulator, Scenario
from gateway.emulator.pki import TestPKI
from gateway.emulator.scenario import Rule
from gateway.emulator.session import RecordedFrame
from gateway.server.state import CALLS

from .conftest import DEFAULT_PLAN, Gateway, GatewayFactory

TO = "+15551230000"
#: 20 ms of caller audio as the gateway sends it to Gemini (PCM16 at 16 kHz).
CHUNK = 640


#: Short, so a test does not wait for the emulator's long default greeting to play.
GREETING = "Hello! How can I help?"


#: The emulators of these tests serve wss:// with the session's test CA, as Google serves TLS.
_TLS: list[ssl.SSLContext] = []


@pytest.fixture(autouse=True)
def _tls(trust_test_ca: TestPKI) -> None:
    _TLS[:] = [trust_test_ca.server_context()]


def _emulator(scenario: Scenario | None = None, **options: Any) -> Emulator:
    return Emulator(scenario or Scenario(greeting=GREETING), ssl_context=_TLS[0], **options)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with _emulator() as emulator:
        yield emulator


@pytest.fixture
async def gw(make_gateway: GatewayFactory, emu: Emulator) -> Gateway:
    return await make_gateway(gemini_url=emu.base_url)


def _call(gw: Gateway, **options: Any) -> asyncio.Task[CallReport]:
    return asyncio.create_task(place_call(CallOptions(to=TO, gateway=gw.url, **options)))


def _out(key: str) -> Callable[[RecordedFrame], bool]:
    return lambda f: f.direction == "out" and f.payload is not None and key in _flat(f.payload)


def _flat(payload: dict[str, Any]) -> dict[str, Any]:
    content = payload.get("serverContent")
    return {**payload, **content} if isinstance(content, dict) else payload


def _sent(emu: Emulator, index: int, key: str) -> list[dict[str, Any]]:
    """Client messages of kind ``key`` the emulator's session ``index`` received."""
    return [
        f.payload[key]
        for f in emu.sessions[index].frames
        if f.direction == "in" and f.payload is not None and key in f.payload
    ]


def _frames_lost(report: CallReport, emu: Emulator) -> int:
    """Caller frames that never reached any Gemini connection (20 ms each)."""
    received = sum(s.audio_in_bytes for s in emu.sessions)
    return round((report.frames_sent * CHUNK - received) / CHUNK)


def _texts(content: list[dict[str, Any]]) -> str:
    return " ".join(
        p.get("text", "") for c in content for t in c.get("turns", []) for p in t.get("parts", [])
    )


async def _greeted(emu: Emulator) -> None:
    """The greeting turn is over and a resumable handle was issued."""
    await emu.wait_for(lambda f: f.direction == "out" and "sessionResumptionUpdate" in (f.payload or {}), 10)


async def _record(gw: Gateway) -> dict[str, Any]:
    """The gateway's record of its (only) finished call; the caller's report can come first."""
    async with asyncio.timeout(5):
        while not (recent := gw.app[CALLS].list()["recent"]):  # noqa: ASYNC110 - nothing signals it; poll briefly
            await asyncio.sleep(0.02)
    return dict(recent[0])


def _utterance_wav(tmp_path: Path, seconds: float) -> Path:
    """One unbroken utterance of ``seconds`` as an 8 kHz WAV file for the caller to play."""
    speech = (hello_utterance(8000, duration_s=seconds) * 32767).astype("<i2")
    wav = tmp_path / "long.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(speech.tobytes())
    return wav


def _assert_clean(report: CallReport) -> None:
    assert report.protocol_errors == []
    assert report.ended_by == "caller"
    assert report.greeting_ms is not None


async def test_go_away_when_idle_resumes_without_losing_caller_audio(gw: Gateway, emu: Emulator) -> None:
    """goAway between turns: the call moves to a resumed connection; no caller frame is lost."""
    task = _call(gw, hangup_after_s=4.0)
    await _greeted(emu)
    emu.send_go_away(20.0)
    await emu.wait_for(lambda f: f.direction == "in" and len(emu.sessions) > 1, 5)
    report = await task
    _assert_clean(report)
    assert len(emu.sessions) == 2
    assert emu.sessions[1].resumed_from is not None
    assert emu.sessions[0].close_code == 1000  # the gateway closed the old one itself
    assert abs(_frames_lost(report, emu)) <= 2
    assert emu.sessions[1].audio_in_bytes > 0


async def test_go_away_mid_utterance_switches_after_the_reply(gw: Gateway, emu: Emulator) -> None:
    """goAway while the bot speaks: the whole reply is relayed, then the switch, with no repeat."""
    task = _call(gw, hangup_after_s=6.0)
    first_audio = await emu.wait_for(_out("modelTurn"), 10)
    emu.send_go_away(20.0)
    await emu.wait_for(lambda f: len(emu.sessions) > 1 and f.direction == "in", 10)
    report = await task
    _assert_clean(report)
    old = emu.sessions[0].frames
    go_away = next(f for f in old if f.payload and "goAway" in f.payload)
    completes = [f for f in old if f.t > go_away.t and _out("turnComplete")(f)]
    assert completes, "the reply in progress finished on the old connection"
    assert emu.sessions[1].resumed_from is not None
    setup = next(f for f in emu.sessions[1].frames if f.payload and "setup" in f.payload)
    assert setup.t > completes[0].t > first_audio.t
    # Only one connection produced the greeting's audio: nothing was replayed.
    assert not any(_out("modelTurn")(f) for f in emu.sessions[1].frames)
    assert abs(_frames_lost(report, emu)) <= 2


async def test_go_away_mid_tool_call_answers_on_the_old_connection_first(
    make_gateway: GatewayFactory, dialplan_dir: Path
) -> None:
    """goAway right after a toolCall: the answer goes to the old connection, the switch follows the turn."""
    rules = [Rule(dtmf="5", tool="lookup_order", args={"order": "42"}, reply="All done.")]
    async with _emulator(Scenario(greeting=GREETING, rules=rules)) as emu:
        gw = await make_gateway(gemini_url=emu.base_url)
        task = _call(gw, dtmf="5", hangup_after_s=8.0)
        call = await emu.wait_for(_out("toolCall"), 10)
        emu.send_go_away(20.0, session=0)
        await emu.wait_for(lambda f: len(emu.sessions) > 1 and f.direction == "in", 10)
        report = await task
        call_id = call.payload["toolCall"]["functionCalls"][0]["id"]  # type: ignore[index]
        assert [r["functionResponses"][0]["id"] for r in _sent(emu, 0, "toolResponse")] == [call_id]
        assert _sent(emu, 1, "toolResponse") == []
        assert emu.sessions[1].resumed_from is not None
        assert report.protocol_errors == []
        assert report.ended_by == "caller"


async def _survives(gw: Gateway, emu: Emulator, code: int, reason: str = "") -> CallReport:
    task = _call(gw, hangup_after_s=4.0)
    await _greeted(emu)
    emu.inject_close(code, reason)
    await emu.wait_for(lambda f: len(emu.sessions) > 1 and f.direction == "in", 10)
    return await task


async def test_abrupt_drop_reconnects_with_the_handle(gw: Gateway, emu: Emulator) -> None:
    """A TCP drop (1006) mid-call: the gateway resumes and the caller stays on the line."""
    report = await _survives(gw, emu, 1006)
    _assert_clean(report)
    assert emu.sessions[1].resumed_from is not None
    assert emu.sessions[1].audio_in_bytes > 0
    assert _frames_lost(report, emu) <= 10  # at most what was in flight on the dead socket
    record = await _record(gw)
    assert record["reconnects"][0]["cause"] == "closed"
    assert record["reconnects"][0]["outcome"] == "resumed"


async def test_internal_error_1011_reconnects(gw: Gateway, emu: Emulator) -> None:
    """1011 from Gemini mid-call: resumed on a new connection, nothing lost, call goes on."""
    report = await _survives(gw, emu, 1011, "Internal error encountered.")
    _assert_clean(report)
    assert emu.sessions[1].resumed_from is not None
    assert abs(_frames_lost(report, emu)) <= 2


async def test_session_not_found_starts_fresh_with_the_transcript(make_gateway: GatewayFactory) -> None:
    """Handle unknown (1008 session not found): a fresh session is seeded with the conversation so far."""
    async with _emulator(handle_ttl_s=0.0) as emu:
        gw = await make_gateway(gemini_url=emu.base_url)
        report = await _survives(gw, emu, 1011, "Internal error encountered.")
        _assert_clean(report)
        assert emu.sessions[1].close_code == 1008  # the resume attempt was refused
        fresh = emu.sessions[2]
        assert fresh.resumed_from is None
        seeded = _texts(_sent(emu, 2, "clientContent"))
        assert "re-established" in seeded
        assert GREETING in seeded


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_gemini_down_at_start_plays_the_fallback_then_hangs_up(make_gateway: GatewayFactory) -> None:
    """Nothing listening: the caller hears the fallback line (never dead air), then the gateway hangs up."""
    gw = await make_gateway(gemini_url=f"wss://127.0.0.1:{_closed_port()}", live_give_up_s=1.0)
    report = await _call(gw, hangup_after_s=20.0)
    assert report.ended_by == "gateway"
    assert report.heard_ms > 4000  # the shipped line is ~5 s long
    record = await _record(gw)
    assert record["fallback_ms"] is not None
    assert record["reconnects"][-1]["outcome"] == "failed"


async def test_slow_setup_still_connects(make_gateway: GatewayFactory) -> None:
    """A Gemini that takes a second to set up: the call proceeds, the greeting arrives."""
    async with _emulator(Scenario(greeting=GREETING, setup_delay_s=1.0)) as emu:
        gw = await make_gateway(gemini_url=emu.base_url)
        report = await _call(gw, hangup_after_s=3.5)
        _assert_clean(report)
        assert len(emu.sessions) == 1


async def test_a_hung_first_setup_is_retried_within_the_budget_and_no_speech_is_lost(
    make_gateway: GatewayFactory,
) -> None:
    """The preconnected session's setup hangs: it is given up after GATEWAY_LIVE_SETUP_TIMEOUT_S (not the
    whole budget), a second attempt connects, and what the caller said meanwhile reaches Gemini."""
    async with _emulator(Scenario(greeting=GREETING, setup_delay_s=4.0)) as emu:
        gw = await make_gateway(gemini_url=emu.base_url, live_setup_timeout_s=1.0, live_give_up_s=5.0)
        call = _call(gw, play="builtin:hello", speak_at_s=0.2, hangup_after_s=6.0)
        await emu.wait_for(lambda f: f.direction == "in" and f.payload is not None and "setup" in f.payload)
        emu.scenario.setup_delay_s = 0.0  # the next attempt sets up at once
        report = await call
        assert report.ended_by == "caller"
        assert report.greeting_ms is not None, "the greeting played: no fallback"
        assert len(emu.sessions) == 2
        # The hung attempt's socket was abandoned by the gateway, not left open.
        transport = emu.sessions[0]._transport
        assert transport is None or transport.is_closing()
        record = await _record(gw)
        assert record["fallback_ms"] is None
        # Everything the caller said during the ~1.2 s without Gemini was held and delivered.
        assert abs(_frames_lost(report, emu)) <= 2


async def test_setup_slower_than_the_budget_falls_back(make_gateway: GatewayFactory) -> None:
    """A Gemini that never finishes setup: the caller gets the fallback within the budget."""
    async with _emulator(Scenario(greeting=GREETING, setup_delay_s=30.0)) as emu:
        gw = await make_gateway(gemini_url=emu.base_url, live_give_up_s=1.0, live_setup_timeout_s=0.5)
        report = await _call(gw, hangup_after_s=20.0)
        assert report.ended_by == "gateway"
        assert report.heard_ms > 4000
        assert emu.sessions, "the gateway did try"


async def test_config_error_at_start_is_not_retried(make_gateway: GatewayFactory) -> None:
    """1007 bad API key at setup: one attempt per connection, then the fallback (no retry loop)."""
    async with _emulator(api_key="the-right-key") as emu:
        gw = await make_gateway(gemini_url=emu.base_url, preconnect=False)
        report = await _call(gw, hangup_after_s=20.0)
        assert report.ended_by == "gateway"
        assert len(emu.sessions) == 1
        assert emu.sessions[0].close_code == 1007


async def test_silence_prompts_once_then_ends_politely(
    make_gateway: GatewayFactory, dialplan_dir: Path
) -> None:
    """A silent caller is asked once whether they are there, then told goodbye and hung up on."""
    (dialplan_dir / "default.toml").write_text(
        DEFAULT_PLAN + '[limits]\nsilence_timeout_s = 1.0\nsilence_prompt = "Are you still there?"\n'
    )
    async with _emulator() as emu:
        gw = await make_gateway(gemini_url=emu.base_url)
        report = await _call(gw, hangup_after_s=30.0)
        assert report.ended_by == "gateway"
        said = _texts(_sent(emu, 0, "clientContent"))
        assert said.count("Are you still there?") == 1
        assert "Goodbye" in said
        assert (await _record(gw))["reason"] == "silence timeout"


async def test_caller_speech_in_the_audio_keeps_the_silence_timer_quiet(
    make_gateway: GatewayFactory, dialplan_dir: Path, tmp_path: Path
) -> None:
    """With input transcription off, the caller's voice itself (not a transcript) counts as activity."""
    (dialplan_dir / "default.toml").write_text(
        DEFAULT_PLAN.replace("[vad]", "[transcription]\ninput = false\n[vad]")
        + '[limits]\nsilence_timeout_s = 2.0\nsilence_prompt = "Are you still there?"\n'
    )
    # One 4.5 s utterance, longer than the timeout: the timer must not fire while the caller talks.
    wav = _utterance_wav(tmp_path, 4.5)
    async with _emulator() as emu:
        gw = await make_gateway(gemini_url=emu.base_url)
        report = await _call(gw, play=wav, speak_at_s=0.3, hangup_after_s=5.5)
        assert report.ended_by == "caller"
        assert "inputAudioTranscription" not in (emu.sessions[0].setup or {})
        assert "Are you still there?" not in _texts(_sent(emu, 0, "clientContent"))


async def test_max_duration_warns_then_ends(make_gateway: GatewayFactory, dialplan_dir: Path) -> None:
    """The maximum duration warns once, then ends the call after the goodbye."""
    (dialplan_dir / "default.toml").write_text(
        DEFAULT_PLAN + '[limits]\nmax_duration_s = 3.0\nmax_duration_warning = "Time is almost up."\n'
    )
    async with _emulator() as emu:
        gw = await make_gateway(gemini_url=emu.base_url)
        report = await _call(gw, hangup_after_s=30.0)
        assert report.ended_by == "gateway"
        said = _texts(_sent(emu, 0, "clientContent"))
        assert "Time is almost up." in said
        assert "time limit" in said
        assert (await _record(gw))["reason"] == "maximum call duration"


async def test_a_limit_reached_while_the_caller_talks_still_gets_its_goodbye_said_whole(
    make_gateway: GatewayFactory, dialplan_dir: Path, tmp_path: Path
) -> None:
    """The time limit strikes mid-sentence: the caller is muted towards Gemini (their speech cannot cut
    the last line), the goodbye is a whole turn of its own, and only then does the gateway hang up."""
    (dialplan_dir / "default.toml").write_text(DEFAULT_PLAN + "[limits]\nmax_duration_s = 2.5\n")
    wav = _utterance_wav(tmp_path, 5.0)
    async with _emulator() as emu:
        gw = await make_gateway(gemini_url=emu.base_url)
        # The caller starts talking after the short greeting and is still talking at 2.5 s.
        report = await _call(gw, play=wav, speak_at_s=1.5, hangup_after_s=30.0)
        assert report.ended_by == "gateway"
        assert (await _record(gw))["reason"] == "maximum call duration"
        conversation = emu.sessions[0].conversation
        assert conversation is not None
        said = [h["text"] for h in conversation.history if h["role"] == "model"]
        assert said[-1] == DEFAULT_GOODBYES["max_duration"]  # whole, and the last thing said
        # Heard too: the call lasted until the goodbye had played (about 5 s of speech).
        assert report.duration_s > 2.5 + 3.0
