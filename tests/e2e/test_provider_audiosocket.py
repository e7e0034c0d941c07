"""Asterisk AudioSocket end to end over loopback TCP: simulated Asterisk (UUID message, slin 8 or 16 kHz
frames, DTMF) → the gateway's AudioSocket listener → Gemini Live emulator over wss://."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.bridge.call import CallBridge
from gateway.caller import CallOptions, place_call
from gateway.caller.call import admin_transcript
from gateway.caller.side_audiosocket import AudioSocketSide, message
from gateway.emulator import Emulator
from gateway.emulator.scenario import Rule
from gateway.gemini.messages import ServerEvent
from gateway.server.audiosocket import AUDIOSOCKET, AudioSocketConnection
from gateway.server.state import OBSERVABILITY
from gateway.telephony.provider import Frame

from .conftest import Gateway, GatewayFactory, client_messages
from .served import free_port, serve

pytestmark = pytest.mark.e2e

END_PLAN = """
default = true
voice = "Puck"
language = "en-US"
system_instruction = "You are the Acme support line."
greeting = "Greet the caller."
tools = ["end_call"]
[vad]
silence_duration_ms = 300
"""
SALES_PLAN = """
name = "sales"
numbers = ["+15550100"]
voice = "Puck"
language = "en-US"
system_instruction = "You are the sales line."
greeting = "Greet the caller."
"""


async def _gateway(make_gateway: GatewayFactory, **overrides: Any) -> tuple[Gateway, str]:
    port = free_port()
    gw = await make_gateway(audiosocket_port=port, **overrides)
    return gw, f"tcp://127.0.0.1:{port}"


def _options(gw: Gateway, address: str, side: AudioSocketSide, **changes: Any) -> CallOptions:
    return CallOptions(
        to="", side=side, gateway=address, transcript_source=admin_transcript(gw.url), **changes
    )


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_call_converses_paced_in_real_time(
    make_gateway: GatewayFactory, emulator: Emulator, rate: int
) -> None:
    """The UUID, then slin frames: the bot greets and answers in 20 ms messages of the same kind, paced
    in real time (AudioSocket buffers nothing), and Asterisk hangs up by closing."""
    gw, address = await _gateway(make_gateway)
    side = AudioSocketSide(rate)
    report = await place_call(_options(gw, address, side, play="builtin:hello", hangup_when_done_s=0.5))
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    assert report.ended_by == "caller"
    assert report.pacing["messages"] > 100
    assert report.pacing["bad_sizes"] == 0
    assert report.pacing["max_ahead_ms"] <= 80
    assert report.marks_sent == report.clears == 0  # AudioSocket has neither
    assert [t["role"] for t in report.transcript][:3] == ["bot", "caller", "bot"]
    audio = [m["audio"] for m in client_messages(emulator, "realtimeInput") if "audio" in m]
    assert {a["mimeType"] for a in audio} == {"audio/pcm;rate=16000"}
    [record] = await gw.wait_calls_ended(1)
    assert record["ended_by"] == "caller"
    assert record["call_sid"] == side.call_uuid
    if rate == 8000:  # every frame went out as it was (at 16 kHz the side's resampler holds the first back)
        # The first audio message both starts the stream and carries the caller's first 20 ms: all heard.
        assert record["frames_in"] == report.frames_sent


async def test_a_replys_first_audio_leaves_from_the_live_sockets_read_callback(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As over WebSockets (test_call_flow.py): the first frames of each reply are written to the
    AudioSocket connection from the Live socket's read callback, no task wake-up between the sockets."""
    direct_writes: list[int] = []
    inside = False
    audio_now, write = CallBridge._audio_now, AudioSocketConnection.write

    def counted_audio_now(self: CallBridge, event: ServerEvent) -> bool:
        nonlocal inside
        inside = True
        try:
            return audio_now(self, event)
        finally:
            inside = False

    def counted_write(self: AudioSocketConnection, frames: Sequence[Frame]) -> None:
        if inside:
            direct_writes.append(len(frames))
        write(self, frames)

    monkeypatch.setattr(CallBridge, "_audio_now", counted_audio_now)
    monkeypatch.setattr(AudioSocketConnection, "write", counted_write)
    gw, address = await _gateway(make_gateway)
    side = AudioSocketSide(8000)
    report = await place_call(_options(gw, address, side, play="builtin:hello", hangup_when_done_s=0.5))
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    assert report.pacing["bad_sizes"] == 0
    assert report.pacing["max_ahead_ms"] <= 80  # what left early still kept the pacing
    assert len(direct_writes) >= 2  # the greeting's first frames and the reply's
    assert all(n >= 1 for n in direct_writes)


async def test_dtmf_reaches_the_model(make_gateway: GatewayFactory, emulator: Emulator) -> None:
    """Kind 0x03 messages (one ASCII digit each) arrive at Gemini as key presses, in order."""
    gw, address = await _gateway(make_gateway)
    report = await place_call(
        _options(gw, address, AudioSocketSide(), dtmf="5#", greeting_timeout_s=0.5, hangup_after_s=10.0)
    )
    assert report.protocol_errors == []
    texts = [m["text"] for m in client_messages(emulator, "realtimeInput") if "text" in m]
    assert [t for t in texts if "key" in t] == [
        "[The caller pressed the phone key 5]",
        "[The caller pressed the phone key #]",
    ]


async def test_barge_in_drops_only_the_paced_lead(make_gateway: GatewayFactory, emulator: Emulator) -> None:
    """No clear exists: speaking over the greeting stops the audio at once, little having been ahead."""
    gw, address = await _gateway(make_gateway)
    report = await place_call(
        _options(gw, address, AudioSocketSide(), play="builtin:hello", speak_at_s=1.5, hangup_after_s=9.0)
    )
    assert report.protocol_errors == []
    cut = [t for t in report.transcript if t["role"] == "bot" and "heard" in t]
    assert cut, report.transcript
    assert report.pacing["max_ahead_ms"] <= 80


async def test_end_call_sends_the_hangup_message(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path
) -> None:
    """end_call: once the goodbye has played (by the clock), kind 0x00, then the connection closes."""
    (dialplan_dir / "default.toml").write_text(END_PLAN)
    emulator.scenario.rules = [
        Rule(text_contains="Greet the caller", say="Thanks for calling. Goodbye!", tool="end_call", reply="")
    ]
    gw, address = await _gateway(make_gateway)
    side = AudioSocketSide()
    report = await place_call(_options(gw, address, side, max_duration_s=20.0))
    assert report.ended_by == "gateway"
    assert report.protocol_errors == []
    assert side.hangup_received
    [record] = await gw.wait_calls_ended(1)
    assert record["ended_by"] == "bot"


async def test_uuid_prefix_routes_pick_the_dialplan(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path
) -> None:
    """GATEWAY_AUDIOSOCKET_ROUTES: a UUID starting 10000000 counts as dialled to +15550100 (sales)."""
    (dialplan_dir / "sales.toml").write_text(SALES_PLAN)
    gw, address = await _gateway(make_gateway, audiosocket_routes=(("10000000", "+15550100"),))
    await place_call(_options(gw, address, AudioSocketSide(uuid_prefix="10000000"), hangup_after_s=2.0))
    await place_call(_options(gw, address, AudioSocketSide(uuid_prefix="20000000"), hangup_after_s=2.0))
    first, second = await gw.wait_calls_ended(2)
    assert (first["dialplan"], second["dialplan"]) == ("sales", "default")


async def test_peer_outside_the_allowlist_is_closed_unread(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """A source outside GATEWAY_AUDIOSOCKET_ALLOW is closed before anything is read, and counted."""
    gw, address = await _gateway(make_gateway, audiosocket_allow=("10.0.0.0/8",))
    port = int(address.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(message(0x01, uuid.uuid4().bytes) + message(0x10, bytes(320)))
    assert await asyncio.wait_for(reader.read(), 2.0) == b""  # closed, nothing said
    writer.close()
    assert gw.app[AUDIOSOCKET].refused == 1
    metric = gw.app[OBSERVABILITY].metrics.rejected_streams.labels("NotAllowed")
    assert metric._value.get() >= 1
    assert emulator.sessions == []


async def test_hostile_input_ends_only_that_connection(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """Audio before the UUID, an unknown kind, or nothing at all: closed, no Gemini session opened."""
    _, address = await _gateway(make_gateway)
    port = int(address.rsplit(":", 1)[1])
    for data in (message(0x10, bytes(320)), message(0x01, uuid.uuid4().bytes) + message(0x42, b"x"), b""):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
        writer.close()
    assert emulator.sessions == []


async def test_a_real_gateway_process_serves_audiosocket(emulator: Emulator, tmp_path: Path) -> None:
    """`gateway serve` as deployed: its own event loop (uvloop when installed, whose transports are not
    asyncio.Transport subclasses: a check on that once dropped every AudioSocket connection)."""
    port = free_port()
    served = await serve(
        emulator, tmp_path, GATEWAY_AUDIOSOCKET_PORT=str(port), GATEWAY_AUDIOSOCKET_TO="+15551230000"
    )
    try:
        side = AudioSocketSide(16000)
        options = CallOptions(to="", side=side, gateway=f"tcp://127.0.0.1:{port}", play="builtin:hello")
        report = await place_call(replace(options, hangup_when_done_s=0.5))
    finally:
        served.proc.terminate()
        await served.exit_code(within_s=30)
    # After the process ended, so a failure shows what the gateway said about the call.
    said = "".join(served.output)
    assert report.protocol_errors == []
    assert report.greeting_ms is not None, (report, said[-4000:])
    assert len(report.reply_ms) == 1, (report, said[-4000:])
    assert "Traceback" not in said
    (record,) = served.records()
    assert record["call_id"] == side.call_uuid
    assert record["ended_by"] == "caller"
