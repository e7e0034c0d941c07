"""Exotel end to end over loopback: the simulated Voicebot applet → gateway → Gemini Live emulator.

Both forms of the applet's URL: the dynamic one (``GET /exotel/voicebot`` answering ``{"url": …}`` with
a per-call token) and the static stream URL carrying ``EXOTEL_STREAM_SECRET``. Every message the gateway
sends is checked as Exotel reads it; media sizes are also asserted here, message by message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.caller import CallOptions, CallReport, place_call
from gateway.caller.call import admin_transcript
from gateway.caller.registry import SIDES
from gateway.caller.side_exotel import ExotelSide
from gateway.emulator import Emulator
from gateway.emulator.scenario import Rule
from gateway.errors import AuthError

from .conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.e2e

SECRET = "exotel-stream-secret-0123456789"
EXOPHONE, CALLER = "+918047491899", "+919876543210"
#: The ExoPhone's own plan: chosen only if the gateway reads Exotel's national-form numbers as E.164.
INDIA_PLAN = f"""
name = "bengaluru"
numbers = ["{EXOPHONE}"]
voice = "Puck"
language = "en-US"
system_instruction = "You are the Bengaluru line."
greeting = "Greet the caller."
tools = ["end_call", "transfer_call"]
[transfer]
agent = "+918047491800"
[vad]
silence_duration_ms = 300
"""


class _Wire:
    """Every text frame the gateway sent, as the simulated applet received it."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.times: list[float] = []  # when each arrived (monotonic)

    def media_sizes(self) -> list[int]:
        return [len(base64.b64decode(f["media"]["payload"])) for f in self.frames if f["event"] == "media"]


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch, dialplan_dir: Path) -> _Wire:
    """The Exotel side, recording what it receives; and the ExoPhone's dialplan."""
    (dialplan_dir / "bengaluru.toml").write_text(INDIA_PLAN)
    seen = _Wire()

    class RecordingSide(ExotelSide):
        def receive(self, report: CallReport, text: str) -> Any:
            seen.frames.append(json.loads(text))
            seen.times.append(time.monotonic())
            return super().receive(report, text)

    monkeypatch.setitem(SIDES, "exotel", RecordingSide)
    return seen


def _options(gw: Gateway, **overrides: Any) -> CallOptions:
    return CallOptions(
        **{"provider": "exotel", "to": EXOPHONE, "from_": CALLER, "gateway": gw.url} | overrides
    )


def _assert_exotel_chunks(wire: _Wire, frame_bytes: int) -> None:
    """Exotel plays 3,200-100,000 bytes in multiples of 320; the gateway sends whole 10-frame messages."""
    sizes = wire.media_sizes()
    assert sizes
    assert all(s % 320 == 0 and 3200 <= s <= 100_000 for s in sizes), sizes
    assert all(s % (10 * frame_bytes) == 0 for s in sizes), sizes


def _assert_padding_only_ends_a_reply(wire: _Wire) -> None:
    """A reply of N frames takes ceil(N/10) messages: silence pads its last message only, never the middle
    of the speech. (The gateway names each mark after its reply and the frames queued before it.)"""
    turn, in_turn, since_mark = "", 0, 0
    for frame in wire.frames:
        if frame["event"] == "media":
            since_mark += 1
        elif frame["event"] == "mark":
            match = re.fullmatch(r"t(\d+)f(\d+)", frame["mark"]["name"])
            assert match, frame
            if match[1] != turn:
                turn, in_turn = match[1], 0
            in_turn, since_mark = in_turn + since_mark, 0
            assert in_turn == -(-int(match[2]) // 10), (frame, in_turn)


def _realtime(emulator: Emulator, key: str) -> list[Any]:
    return [
        f.payload["realtimeInput"][key]
        for s in emulator.sessions
        for f in s.frames
        if f.direction == "in" and f.payload and key in f.payload.get("realtimeInput", {})
    ]


def _tool_responses(emulator: Emulator) -> list[dict[str, Any]]:
    return [
        item
        for s in emulator.sessions
        for f in s.frames
        if f.direction == "in" and f.payload and "toolResponse" in f.payload
        for item in f.payload["toolResponse"]["functionResponses"]
    ]


async def test_dynamic_url_call_greets_replies_and_speaks_exotels_wire(
    make_gateway: GatewayFactory, emulator: Emulator, wire: _Wire
) -> None:
    """With the secret on the dynamic URL: the greeting, a reply to the caller's 100 ms L16 messages,
    every mark echoed, the ExoPhone's plan chosen from national-form numbers, all chunks Exotel-sized."""
    gw = await make_gateway(exotel_stream_secret=SECRET)
    report = await place_call(
        _options(
            gw,
            play="builtin:hello",
            hangup_when_done_s=1.0,
            max_duration_s=40.0,
            auth_token=SECRET,
            transcript_source=admin_transcript(gw.url),
        )
    )
    assert report.protocol_errors == []
    assert report.custom_parameters == {"token": "***"}
    assert report.greeting_ms is not None
    assert report.greeting_ms < 2500
    assert len(report.reply_ms) == 1
    assert report.marks_acked == report.marks_sent > 0
    assert report.ended_by == "caller"
    assert [t["role"] for t in report.transcript][:3] == ["bot", "caller", "bot"]
    _assert_exotel_chunks(wire, 320)
    _assert_padding_only_ends_a_reply(wire)
    assert {"stream_sid", "streamSid"} <= set(wire.frames[0])
    audio = _realtime(emulator, "audio")
    assert {a["mimeType"] for a in audio} == {"audio/pcm;rate=16000"}
    assert emulator.sessions[0].audio_in_bytes >= 12 * 32000
    (record,) = await gw.wait_calls_ended(1)
    assert (record["call_sid"], record["dialplan"], record["ended_by"]) == (
        report.call_sid,
        "bengaluru",
        "caller",
    )


async def test_wideband_16k_stream(make_gateway: GatewayFactory, emulator: Emulator, wire: _Wire) -> None:
    """GATEWAY_EXOTEL_SAMPLE_RATE=16000: the answer asks for 16 kHz; messages are 10 frames of 640 bytes and
    the caller's audio reaches Gemini at 16 kHz unresampled."""
    gw = await make_gateway(exotel_sample_rate=16000)
    report = await place_call(_options(gw, play="builtin:hello", hangup_after_s=14.0))
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    _assert_exotel_chunks(wire, 640)
    _assert_padding_only_ends_a_reply(wire)
    assert {a["mimeType"] for a in _realtime(emulator, "audio")} == {"audio/pcm;rate=16000"}
    assert emulator.sessions[0].audio_in_bytes >= 12 * 32000


async def test_barge_in_clears_and_later_messages_stay_whole(
    make_gateway: GatewayFactory, emulator: Emulator, wire: _Wire
) -> None:
    """Speaking over the greeting sends clear, and nothing of the cut reply follows it: not even frames the
    gateway held back to fill a whole 10-frame message (the next audio is the answer, after the caller's
    utterance ends)."""
    gw = await make_gateway()
    report = await place_call(_options(gw, play="builtin:hello", speak_at_s=1.5, hangup_after_s=8.0))
    assert report.protocol_errors == []
    assert report.clears == 1
    # A clear drops what Exotel holds: the playout lead, plus up to a 200 ms message sent whole.
    assert report.dropped_ms <= 400
    assert report.heard_ms < 7000
    _assert_exotel_chunks(wire, 320)
    events = [f["event"] for f in wire.frames]
    cleared = events.index("clear")
    after = [i for i in range(cleared + 1, len(events)) if events[i] == "media"]
    assert after, "the caller's utterance was answered"
    # The utterance (1.6 s) was still going at the clear: its answer comes well after it.
    assert wire.times[after[0]] - wire.times[cleared] > 0.5
    assert len(report.reply_ms) == 1


async def test_dtmf_reaches_the_model(make_gateway: GatewayFactory, emulator: Emulator, wire: _Wire) -> None:
    """Keys pressed on the applet arrive at Gemini as text."""
    gw = await make_gateway()
    report = await place_call(_options(gw, dtmf="7*", greeting_timeout_s=0.5, hangup_after_s=10.0))
    assert report.dtmf_sent == "7*"
    texts = [t for t in _realtime(emulator, "text") if "key" in t]
    assert texts == ["[The caller pressed the phone key 7]", "[The caller pressed the phone key *]"]


async def test_end_call_closes_the_stream_after_the_goodbye(
    make_gateway: GatewayFactory, emulator: Emulator, wire: _Wire
) -> None:
    """end_call: Exotel has no hang-up command, so once the goodbye has played (marks echoed) the gateway
    closes the socket normally, which ends the applet."""
    emulator.scenario.rules = [Rule(text_contains="Greet the caller", say="Thanks for calling. Goodbye!",
                                    tool="end_call", args={"reason": "caller done"}, reply="")]  # fmt: skip
    gw = await make_gateway()
    report = await place_call(_options(gw, max_duration_s=20.0))
    assert report.ended_by == "gateway"
    assert report.protocol_errors == []
    assert report.marks_acked == report.marks_sent > 0
    assert report.bytes_received / 8 >= 1000  # ≥ 1 s of 8 kHz μ-law heard
    assert report.heard_ms >= report.bytes_received / 8 - 20
    _assert_exotel_chunks(wire, 320)
    (record,) = await gw.wait_calls_ended(1)
    assert (record["ended_by"], record["reason"]) == ("bot", "caller done")


async def test_transfer_is_not_available_and_the_model_hears_so(
    make_gateway: GatewayFactory, emulator: Emulator, wire: _Wire
) -> None:
    """The applet cannot transfer: transfer_call answers the model with that, and the call goes on."""
    emulator.scenario.rules = [
        Rule(text_contains="Greet the caller", tool="transfer_call", args={"target": "agent"},
             reply="Sorry: {result}")
    ]  # fmt: skip
    gw = await make_gateway()
    hangup = asyncio.Event()
    caller = asyncio.create_task(place_call(_options(gw, hangup_event=hangup, max_duration_s=15.0)))
    await emulator.wait_for(lambda f: f.direction == "in" and "toolResponse" in (f.payload or {}), timeout=10)
    hangup.set()
    report = await caller
    [response] = _tool_responses(emulator)
    assert response["response"]["error"].startswith("this phone line cannot transfer calls")
    assert report.ended_by == "caller"


async def test_static_url_with_the_secret_takes_the_call_from_start(
    make_gateway: GatewayFactory, emulator: Emulator, wire: _Wire
) -> None:
    """The static form: Basic auth with the secret opens the stream, start's numbers pick the plan; the
    same call cannot stream twice."""
    gw = await make_gateway(exotel_stream_secret=SECRET)
    report = await place_call(
        _options(
            gw, voice_path="/exotel/media", auth_token=SECRET, hangup_after_s=4.0, greeting_timeout_s=1.0
        )
    )
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert report.custom_parameters == {}
    _assert_exotel_chunks(wire, 320)
    (record,) = await gw.wait_calls_ended(1)
    assert (record["call_sid"], record["dialplan"]) == (report.call_sid, "bengaluru")
    basic = "Basic " + base64.b64encode(f"exotel:{SECRET}".encode()).decode()
    close = await _stream(gw, "/exotel/media", report.call_sid, headers={"Authorization": basic})
    assert close == 1008
    assert len(emulator.sessions) == 1


async def _stream(gw: Gateway, path: str, call_sid: str, headers: dict[str, str] | None = None) -> int | None:
    """Open a media socket as Exotel would and send connected + start; the close code the gateway sends."""
    start = {
        "event": "start",
        "sequence_number": "1",
        "stream_sid": "f" * 32,
        "start": {
            "stream_sid": "f" * 32,
            "call_sid": call_sid,
            "account_sid": "acme1",
            "from": CALLER,
            "to": EXOPHONE,
            "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"},
        },
    }
    async with aiohttp.ClientSession() as http, http.ws_connect(gw.url + path, headers=headers) as ws:
        await ws.send_str(json.dumps({"event": "connected"}))
        await ws.send_str(json.dumps(start))
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE, msg
        return ws.close_code


async def test_static_url_without_the_secret_is_refused_at_the_upgrade(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """No secret, a wrong one in either form: 403 before any WebSocket, so no Gemini session."""
    gw = await make_gateway(exotel_stream_secret=SECRET)
    wrong = "Basic " + base64.b64encode(b"exotel:not-the-secret-at-all").decode()
    for path, headers in [
        ("/exotel/media", None),
        ("/exotel/media", {"Authorization": wrong}),
        ("/exotel/media?secret=not-the-secret-at-all", None),
    ]:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await _stream(gw, path, "a" * 32, headers)
        assert refused.value.status == 403
    assert emulator.sessions == []


async def test_forged_or_empty_stream_token_is_refused_before_gemini(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """The dynamic form's stream decides by its token at start: a forged or empty one closes 1008."""
    gw = await make_gateway(exotel_stream_secret=SECRET)
    for query in ("?token=v1.e30.AAAA", "?token="):
        assert await _stream(gw, "/exotel/media" + query, "b" * 32) == 1008
    assert emulator.sessions == []


async def test_voicebot_url_without_the_secret_is_refused(
    make_gateway: GatewayFactory, emulator: Emulator, wire: _Wire
) -> None:
    """With EXOTEL_STREAM_SECRET set, the dynamic URL's request must carry it: absent or forged, 403."""
    gw = await make_gateway(exotel_stream_secret=SECRET)
    for secret in ("", "forged-secret-0123456789"):
        with pytest.raises(AuthError):
            await place_call(_options(gw, auth_token=secret, hangup_after_s=1.0))
    assert emulator.sessions == []
    assert gw.app_calls_list() == []
