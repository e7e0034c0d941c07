"""The lean load caller: its probes and the load analysis without sockets, its Twilio side over loopback."""

from __future__ import annotations

import array
import asyncio
import base64
import itertools
import math
import time
from typing import Any

import pytest
from aiohttp import web

from gateway.audio.transcode import Uplink
from gateway.caller.load import (
    PROBE_LEVELS,
    CallPattern,
    LoadCall,
    SessionProbe,
    analyse,
    percentile,
    run_calls,
)

from .fake_twilio_gateway import FakeGateway, tone


def _call(number: int) -> LoadCall:
    lead, cycle = CallPattern(lead_silence_s=1.0, speak_s=0.4, silence_s=1.0, probe_every_s=0.2).kinds()
    return LoadCall(number=number, start_at=0.0, lead=lead, cycle=cycle)


def test_probe_levels_are_distinct_and_quiet() -> None:
    """The 16 probe levels stay apart after μ-law and far below any speech threshold."""
    assert len(set(PROBE_LEVELS)) == 16
    assert all(b - a >= 12 for a, b in itertools.pairwise(PROBE_LEVELS))
    assert max(PROBE_LEVELS) < 420


@pytest.mark.parametrize("rate", [16000, 8000])
def test_probes_survive_the_gateways_uplink(rate: int) -> None:
    """Probe frames pushed through the gateway's real μ-law → PCM uplink (16 kHz, or 8 kHz with
    GATEWAY_UPLINK_RATE=8000) decode to number and sequence."""
    call = _call(0xABC)
    uplink, probe = Uplink(out_rate=rate), SessionProbe()
    for k in range(400):
        payload = call._payload(now=float(k))
        call.frame += 1
        probe.audio_in(uplink.process(base64.b64decode(payload)), t=float(k) + 0.5, rate=rate)
    assert probe.number == 0xABC
    assert len(call.probes) >= 10
    assert [s for s, _, _ in probe.probes] == [seq % 16 for seq, _, _ in call.probes]
    # Every probe is timed at its first frame and knows how many frames came before it.
    for (seq, t_sent, index), (_, t_recv, before) in zip(call.probes, probe.probes, strict=True):
        assert t_recv == t_sent + 0.5
        assert before == index, seq


def test_analyse_finds_latency_loss_and_lateness() -> None:
    """The join reports probe latency, frames the gateway dropped, a short turn and a mid-turn stall."""
    turn_at = 10.0
    # 20 frames paced every 20 ms, except a 150 ms stall before frame 10: frames 10.. are late.
    arrivals = [turn_at + 0.001 + 0.02 * i + (0.15 if i >= 10 else 0.0) for i in range(20)]
    call = {
        "number": 7,
        "error": "",
        "t_webhook": 9.0,
        "frames_sent": 500,
        "probes": [(0, 1.0, 50), (1, 2.0, 100)],
        "arrivals": array.array("d", arrivals),
        "clears": array.array("d"),
    }
    session = {
        "number": 7,
        "probes": [(0, 1.002, 50), (1, 2.003, 97)],  # three frames lost between the probes
        "turns": [[turn_at, 960 * 25, False], [20.0, 960, False]],  # 25 frames sent, 20 delivered
    }
    a = analyse([call], [session])
    assert [round(v, 4) for v in a.uplink_s] == [0.002, 0.003]
    assert a.frames_lost_up == 3
    assert a.frames_lost_down == 4  # 25 expected, 20 received, one allowed for the filter tail
    assert a.frames_late >= 1
    assert [round(v, 4) for v in a.downlink_s] == [0.001]
    assert round(a.greeting_s[0], 3) == 1.001


def test_percentile_nearest_rank() -> None:
    """Nearest-rank percentiles, NaN for nothing measured."""
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(range(1, 101)), 99) == 99
    assert math.isnan(percentile([], 50))


# --------------------------------------------------------------------------- over loopback


def _gateway_media(stream_sid: str, frames: int) -> str:
    """A media message exactly as the gateway writes it (gateway/telephony/twilio.py): payload last."""
    payload = base64.b64encode(tone(20 * frames)).decode()
    return '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"' + payload + '"}}'


async def test_lean_calls_speak_twilio_and_play_out_marks(serve: Any) -> None:
    """Signed webhook and upgrade, connected/start, a media frame every 20 ms with Twilio's exact shape,
    a mark echoed once the audio before it has played, one at once after a clear, then stop."""
    marks_sent: dict[str, float] = {}

    async def script(fake: FakeGateway, ws: web.WebSocketResponse) -> None:
        for _ in range(2):
            await ws.send_str(_gateway_media(fake.stream_sid, 2))  # 2 × 40 ms, batched as the gateway does
        marks_sent["played"] = await fake.send_mark(ws, "played")
        await asyncio.sleep(0.3)
        await fake.send_media(ws, tone(160))  # the JSON path: not the gateway's compact layout
        marks_sent["cleared"] = await fake.send_mark(ws, "cleared")
        await fake.send_clear(ws)

    fake = FakeGateway(auth_token="secret-token", script=script)
    url = await serve(fake)
    start = time.monotonic() + 0.05
    calls, lag = await run_calls(
        url, [7], start_at=start, ramp_s=0.0, until=start + 1.0, auth_token="secret-token"
    )
    (call,) = calls
    assert call["error"] == ""
    assert fake.webhook_signature_ok is True
    assert fake.ws_signature_ok is True
    assert fake.shape_errors == []
    events = [r.msg["event"] for r in fake.received]
    assert events[:2] == ["connected", "start"]
    assert events[-1] == "stop"
    media = fake.events("media")
    assert 45 <= len(media) <= 52
    assert [int(r.msg["media"]["chunk"]) for r in media] == list(range(1, len(media) + 1))
    assert [int(r.msg["media"]["timestamp"]) for r in media] == [20 * i for i in range(len(media))]
    seqs = [int(r.msg["sequenceNumber"]) for r in fake.received[1:]]
    assert seqs == list(range(1, len(seqs) + 1))
    echoes = {r.msg["mark"]["name"]: r.t for r in fake.events("mark")}
    assert echoes["played"] - marks_sent["played"] >= 0.075  # after the 80 ms before it played
    assert echoes["cleared"] - marks_sent["cleared"] < 0.05  # a clear flushes marks at once
    assert len(call["arrivals"]) == 2 * 2 + 8
    assert len(call["clears"]) == 1
    assert call["frames_sent"] == len(media)
    assert len(lag) > 100


async def test_a_gateway_hanging_up_first_is_a_failed_call(serve: Any) -> None:
    """The stream closed by the gateway before the call's end is reported with its close code."""

    async def script(fake: FakeGateway, ws: web.WebSocketResponse) -> None:
        await asyncio.sleep(0.1)
        await ws.close(code=1011)

    fake = FakeGateway(script=script)
    url = await serve(fake)
    start = time.monotonic()
    calls, _ = await run_calls(url, [1], start_at=start, ramp_s=0.0, until=start + 2.0)
    assert calls[0]["error"] == "gateway closed the stream early (code 1011)"


async def test_a_refused_upgrade_is_a_failed_call(serve: Any) -> None:
    """A media URL the server does not upgrade fails the call with the HTTP status, nothing sent."""
    fake = FakeGateway()
    url = await serve(fake)
    fake.twiml = (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        f'<Stream url="{url.replace("http", "ws")}/nowhere"/></Connect></Response>'
    )
    start = time.monotonic()
    calls, _ = await run_calls(url, [2], start_at=start, ramp_s=0.0, until=start + 1.0)
    assert calls[0]["error"] == "ConnectionError: WebSocket upgrade refused: HTTP 404 Not Found"
    assert calls[0]["frames_sent"] == 0
    assert fake.received == []
