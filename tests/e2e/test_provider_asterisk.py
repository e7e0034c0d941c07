"""Asterisk chan_websocket end to end over loopback: simulated Asterisk (subprotocol ``media``,
MEDIA_START in the plain-text or JSON control format, binary codec frames) → gateway → Gemini Live
emulator over wss://."""

from __future__ import annotations

import asyncio
import base64
import json
import math
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from gateway.caller import CallOptions, place_call, wire_asterisk as wire
from gateway.caller.call import admin_transcript
from gateway.caller.side_asterisk import AsteriskJsonSide, AsteriskSide
from gateway.emulator import Emulator
from gateway.emulator.scenario import Rule

from .conftest import Gateway, GatewayFactory, client_messages

pytestmark = pytest.mark.e2e

SECRET = "pbx-secret-for-tests-0123456789"
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


def _options(gw: Gateway, side: AsteriskSide, **changes: Any) -> CallOptions:
    options: dict[str, Any] = {"to": "+15551230000", "auth_token": gw.settings.pbx_secret} | changes
    return CallOptions(side=side, gateway=gw.url, transcript_source=admin_transcript(gw.url), **options)


@pytest.mark.parametrize(
    ("side", "mime"),
    [
        (AsteriskSide("slin16"), "audio/pcm;rate=16000"),
        (AsteriskJsonSide("ulaw"), "audio/pcm;rate=16000"),
        (AsteriskSide("alaw"), "audio/pcm;rate=16000"),
    ],
    ids=["plain-slin16", "json-ulaw", "plain-alaw"],
)
async def test_call_converses_in_both_control_formats(
    make_gateway: GatewayFactory, emulator: Emulator, side: AsteriskSide, mime: str
) -> None:
    """Basic auth with the PBX secret: ANSWER once admitted, a greeting and a reply in whole optimal
    frames, every MARK_MEDIA comes back as MEDIA_MARK_PROCESSED; Asterisk hangs up by closing."""
    gw = await make_gateway(pbx_secret=SECRET)
    # Hang up a moment after the reply has played (a fixed time could cut it on a busy machine, leaving
    # its last mark unplayed).
    report = await place_call(_options(gw, side, play="builtin:hello", hangup_when_done_s=0.5))
    assert report.answered
    assert report.protocol_errors == []
    assert side.commands[0] == "ANSWER"
    assert "HANGUP" not in side.commands  # the caller hung up: nothing to tell Asterisk
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    assert report.marks_sent > 0
    assert report.marks_acked == report.marks_sent
    assert report.ended_by == "caller"
    assert [t["role"] for t in report.transcript][:3] == ["bot", "caller", "bot"]
    audio = [m["audio"] for m in client_messages(emulator, "realtimeInput") if "audio" in m]
    assert {a["mimeType"] for a in audio} == {mime}
    [record] = await gw.wait_calls_ended(1)
    assert record["ended_by"] == "caller"
    assert record["call_sid"] == report.call_sid  # MEDIA_START's channel_id


async def test_barge_in_sends_flush_media(gateway: Gateway, emulator: Emulator) -> None:
    """Speaking over the greeting: FLUSH_MEDIA at once (in the channel's format), the call goes on."""
    side = AsteriskJsonSide("slin16")
    report = await place_call(
        _options(gateway, side, play="builtin:hello", speak_at_s=1.5, hangup_after_s=9.0)
    )
    assert report.protocol_errors == []
    assert "FLUSH_MEDIA" in side.commands
    assert report.clears >= 1
    cut = [t for t in report.transcript if t["role"] == "bot" and "heard" in t]
    assert cut, report.transcript
    [record] = await gateway.wait_calls_ended(1)
    assert record["clears"] >= 1


async def test_dtmf_end_reaches_the_model(gateway: Gateway, emulator: Emulator) -> None:
    """DTMF_END events (plain text: ``DTMF_END digit:1 channel_id:…``) arrive at Gemini in order."""
    side = AsteriskSide("ulaw")
    report = await place_call(_options(gateway, side, dtmf="1#", greeting_timeout_s=0.5, hangup_after_s=10.0))
    assert report.protocol_errors == []
    texts = [m["text"] for m in client_messages(emulator, "realtimeInput") if "text" in m]
    assert [t for t in texts if "key" in t] == [
        "[The caller pressed the phone key 1]",
        "[The caller pressed the phone key #]",
    ]


async def test_end_call_sends_hangup_then_closes(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path
) -> None:
    """end_call: the goodbye plays out (its marks echoed), then HANGUP, then the gateway closes."""
    (dialplan_dir / "default.toml").write_text(END_PLAN)
    emulator.scenario.rules = [
        Rule(text_contains="Greet the caller", say="Thanks for calling. Goodbye!", tool="end_call", reply="")
    ]
    gw = await make_gateway()
    side = AsteriskSide("slin16")
    report = await place_call(_options(gw, side, max_duration_s=20.0))
    assert report.ended_by == "gateway"
    assert report.protocol_errors == []
    assert report.marks_acked == report.marks_sent > 0
    assert side.commands[0] == "ANSWER"
    assert side.commands[-1] == "HANGUP"
    [record] = await gw.wait_calls_ended(1)
    assert record["ended_by"] == "bot"


def _start(fmt: wire.ControlFormat, channel_id: str, codec: str = "ulaw") -> str:
    return wire.media_start(
        fmt,
        connection_id="gemini",
        channel="WebSocket/gemini/0x1",
        channel_id=channel_id,
        codec=codec,
        optimal=wire.optimal_frame_size(codec),
    )


async def test_upgrade_auth_rules(make_gateway: GatewayFactory, emulator: Emulator) -> None:
    """With GATEWAY_PBX_SECRET: ?token= or the basic-auth password opens the socket (subprotocol media);
    a wrong or missing one is refused before any WebSocket (403), and nothing reaches Gemini."""
    gw = await make_gateway(pbx_secret=SECRET)
    base = gw.url.replace("http", "ws") + "/asterisk/media?to=%2B15551230000"
    wrong = base64.b64encode(b"asterisk:nope").decode()
    async with aiohttp.ClientSession() as http:
        for headers, url in (
            ({}, base),
            ({"Authorization": f"Basic {wrong}"}, base),
            ({}, base + "&token=x"),
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url, headers=headers, protocols=("media",))
            assert refused.value.status == 403
        assert emulator.sessions == []
        async with http.ws_connect(base + "&token=" + SECRET, protocols=("media",)) as ws:
            assert ws.protocol == "media"
            await ws.send_str(_start("plain-text", "1718000000.1"))
            msg = await ws.receive()
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "ANSWER")


async def test_without_a_secret_only_direct_loopback_peers(make_gateway: GatewayFactory) -> None:
    """No GATEWAY_PBX_SECRET: a direct loopback peer is served; one relayed by a proxy is refused."""
    gw = await make_gateway()
    url = gw.url.replace("http", "ws") + "/asterisk/media?to=%2B15551230000"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, headers={"X-Forwarded-For": "203.0.113.9"}, protocols=("media",))
        assert refused.value.status == 403
        async with http.ws_connect(url, protocols=("media",)) as ws:
            await ws.send_str(_start("plain-text", "1718000000.2"))
            assert (await ws.receive()).data == "ANSWER"


async def test_bad_media_start_is_closed_with_its_code(gateway: Gateway, emulator: Emulator) -> None:
    """A format the gateway cannot stream closes 1003; no dialled number in the URI closes 1008."""
    ws_base = gateway.url.replace("http", "ws") + "/asterisk/media"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_base + "?to=100", protocols=("media",)) as ws:
            await ws.send_str(_start("plain-text", "1718000000.3").replace("format:ulaw", "format:opus"))
            assert (await ws.receive()).type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1003
        async with http.ws_connect(ws_base, protocols=("media",)) as ws:
            await ws.send_str(_start("json", "1718000000.4"))
            assert (await ws.receive()).type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1008
    assert emulator.sessions == []


async def test_xoff_holds_the_playout_without_losing_audio(gateway: Gateway, emulator: Emulator) -> None:
    """MEDIA_XOFF: no audio is sent until MEDIA_XON; then the rest of the greeting follows, none lost
    (the greeting heard in total is as long as one heard without flow control)."""
    url = gateway.url.replace("http", "ws") + "/asterisk/media?to=%2B15551230000"
    silence = b"\xff" * 160

    async def greeting_bytes(xoff_after_s: float | None, channel_id: str) -> tuple[int, float]:
        got, longest_gap, last = 0, 0.0, None
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=("media",)) as ws:
            await ws.send_str(_start("json", channel_id))

            async def feed() -> None:
                while True:  # the caller's silence, 20 ms at a time, as Asterisk sends it
                    await ws.send_bytes(silence)
                    await asyncio.sleep(0.02)

            feeder = asyncio.create_task(feed())
            first: float | None = None
            try:
                deadline = loop.time() + 15.0
                while loop.time() < deadline:
                    try:
                        msg = await ws.receive(timeout=1.5)
                    except TimeoutError:
                        if got:
                            break  # the greeting is over
                        continue
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        command = json.loads(msg.data)
                        if command["command"] == "MARK_MEDIA":
                            await ws.send_str(
                                wire.mark_processed("json", command["correlation_id"], channel_id)
                            )
                        continue
                    if msg.type is not aiohttp.WSMsgType.BINARY:
                        break
                    now = loop.time()
                    first = first or now
                    if last is not None:
                        longest_gap = max(longest_gap, now - last)
                    last = now
                    got += len(msg.data)
                    if xoff_after_s is not None and now - first >= xoff_after_s:
                        xoff_after_s = None
                        await ws.send_str(wire.event("json", "MEDIA_XOFF", channel_id))
                        await asyncio.sleep(1.0)
                        await ws.send_str(wire.event("json", "MEDIA_XON", channel_id))
            finally:
                feeder.cancel()
        return got, longest_gap

    plain, plain_gap = await greeting_bytes(None, "1718000000.5")
    held, held_gap = await greeting_bytes(0.3, "1718000000.6")
    assert plain > 8000  # at least a second of μ-law
    assert plain_gap < 0.5
    assert held_gap >= 0.9  # nothing came while Asterisk said its queue was full
    # The same greeting, none of it dropped (a second of it was held: 8000 bytes would be missing).
    assert abs(held - plain) <= 10 * 160, (held, plain)


def _tone_energy(pcm: bytes, rate: int, hz: float) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    total = spectrum.sum()
    return float(spectrum[(freqs >= hz - 200) & (freqs <= hz + 200)].sum() / total) if total else 0.0


async def test_slin16_carries_a_6khz_tone_to_gemini(gateway: Gateway, emulator: Emulator) -> None:
    """c(slin16): 16 kHz from Asterisk reaches Gemini with no 8 kHz step (a 6 kHz tone survives)."""
    url = gateway.url.replace("http", "ws") + "/asterisk/media?to=%2B15551230000"
    t = np.arange(16000 * 2) / 16000
    tone = (np.sin(2 * math.pi * 6000 * t) * 8000).astype("<i2").tobytes()
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=("media",)) as ws:
        await ws.send_str(_start("plain-text", "1718000000.7", "slin16"))
        for i in range(0, len(tone), 640):
            await ws.send_bytes(tone[i : i + 640])
            await asyncio.sleep(0.02)
    chunks = [a["data"] for m in client_messages(emulator, "realtimeInput") if (a := m.get("audio"))]
    sent = b"".join(base64.b64decode(c) for c in chunks)
    assert len(sent) >= 32000
    assert _tone_energy(sent, 16000, 6000) > 0.8
