"""The simulated caller against a fake Twilio-facing gateway over loopback."""

from __future__ import annotations

import asyncio
import audioop
import base64
import itertools
import json
import sys
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.caller import CallOptions, CallReport, place_call
from gateway.errors import AuthError

from .fake_twilio_gateway import FakeGateway, tone


async def call(
    serve: Callable[[FakeGateway], Awaitable[str]], fake: FakeGateway, **options: Any
) -> CallReport:
    base = await serve(fake)
    return await place_call(CallOptions(to="+15551230000", gateway=base, **options))


async def test_frames_are_paced_in_real_time_and_twilio_shaped(serve: Any) -> None:
    """Silence goes out as 20 ms frames on a real-time clock with Twilio's exact message shapes."""
    fake = FakeGateway()
    report = await call(serve, fake, hangup_after_s=1.0)
    assert fake.shape_errors == []
    events = [r.msg["event"] for r in fake.received]
    assert events[:2] == ["connected", "start"]
    assert events[-1] == "stop"
    media = fake.events("media")
    assert 48 <= len(media) <= 51
    assert report.frames_sent == len(media)
    seqs = [int(r.msg["sequenceNumber"]) for r in fake.received[1:]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [int(r.msg["media"]["chunk"]) for r in media] == list(range(1, len(media) + 1))
    assert [int(r.msg["media"]["timestamp"]) for r in media] == [20 * i for i in range(len(media))]
    span = media[-1].t - media[0].t
    assert abs(span - 0.02 * (len(media) - 1)) < 0.06
    assert all(base64.b64decode(r.msg["media"]["payload"]) == b"\xff" * 160 for r in media)
    assert report.ended_by == "caller"


async def test_webhook_and_start_carry_twilio_fields(serve: Any) -> None:
    """The webhook form, the start message and the <Parameter>s look like Twilio's; the query is dropped."""
    fake = FakeGateway()
    report = await call(serve, fake, hangup_after_s=0.2)
    form = fake.form
    assert form["CallSid"].startswith("CA")
    assert len(form["CallSid"]) == 34
    assert form["AccountSid"].startswith("AC")
    assert len(form["AccountSid"]) == 34
    assert (form["To"], form["Called"], form["From"], form["Caller"]) == (
        "+15551230000",
        "+15551230000",
        "+15550001111",
        "+15550001111",
    )
    assert (form["Direction"], form["CallStatus"], form["ApiVersion"]) == ("inbound", "ringing", "2010-04-01")
    start = fake.events("start")[0].msg
    assert start["streamSid"] == start["start"]["streamSid"] == report.stream_sid
    assert report.stream_sid.startswith("MZ")
    assert len(report.stream_sid) == 34
    assert start["start"]["callSid"] == form["CallSid"]
    assert start["start"]["accountSid"] == form["AccountSid"]
    assert start["start"]["tracks"] == ["inbound"]
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert start["start"]["customParameters"] == {"from_number": "+15550001111", "tenant": "a&b"}
    assert fake.ws_query == {}
    assert any("query string" in w for w in report.warnings)
    assert report.after_stream == ["Say"]
    stop = fake.events("stop")[0].msg
    assert stop["stop"] == {"accountSid": form["AccountSid"], "callSid": form["CallSid"]}


async def test_requests_are_signed_like_twilio(serve: Any) -> None:
    """With an auth token, the webhook and the WebSocket upgrade pass Twilio's RequestValidator."""
    fake = FakeGateway(auth_token="secret-token-0123456789abcdef")
    await call(serve, fake, hangup_after_s=0.1, auth_token="secret-token-0123456789abcdef")
    assert fake.webhook_signature_ok is True
    assert fake.ws_signature_ok is True


async def test_wrong_token_is_refused_with_auth_error(serve: Any) -> None:
    """A webhook refused with 403 raises AuthError."""
    fake = FakeGateway(auth_token="secret-token-0123456789abcdef")
    with pytest.raises(AuthError):
        await call(serve, fake, hangup_after_s=0.1, auth_token="wrong-token-0123456789abcdef")


async def test_mark_is_echoed_only_after_its_audio_played(serve: Any) -> None:
    """A mark after 500 ms of audio comes back ≈500 ms later; a mark on an idle line comes back at once."""
    times: dict[str, float] = {}

    async def script(fake: FakeGateway, ws: web.WebSocketResponse) -> None:
        await fake.send_media(ws, tone(500))
        times["a"] = await fake.send_mark(ws, "a")
        await fake.wait_for(lambda r: r.msg["event"] == "mark" and r.msg["mark"]["name"] == "a")
        await asyncio.sleep(0.1)
        times["b"] = await fake.send_mark(ws, "b")

    fake = FakeGateway(script=script)
    report = await call(serve, fake, hangup_after_s=1.2)
    echoes = {r.msg["mark"]["name"]: r.t for r in fake.events("mark")}
    assert set(echoes) == {"a", "b"}
    assert 0.47 <= echoes["a"] - times["a"] <= 0.6
    assert echoes["b"] - times["b"] < 0.05
    assert (report.marks_sent, report.marks_acked, report.frames_received) == (2, 2, 25)  # 20 ms frames
    assert fake.shape_errors == []


async def test_clear_drops_unplayed_audio_and_echoes_marks_at_once(serve: Any, tmp_path: Path) -> None:
    """clear ≈300 ms into a 2 s reply echoes its mark immediately and the caller hears only what played
    until the clear (measured, not assumed: a loaded machine oversleeps the script's 0.3 s)."""
    times: dict[str, float] = {}
    sent = tone(2000)

    async def script(fake: FakeGateway, ws: web.WebSocketResponse) -> None:
        times["start"] = asyncio.get_running_loop().time()
        await asyncio.sleep(0.2)
        times["media"] = asyncio.get_running_loop().time()
        await fake.send_media(ws, sent)
        await fake.send_mark(ws, "reply")
        await asyncio.sleep(0.3)
        times["clear"] = await fake.send_clear(ws)

    fake = FakeGateway(script=script)
    record = tmp_path / "heard.wav"
    report = await call(serve, fake, hangup_after_s=1.5, record=record)
    echo = fake.events("mark")[0]
    assert echo.msg["mark"]["name"] == "reply"
    assert echo.t - times["clear"] < 0.05
    assert report.clears == 1
    played_ms = (times["clear"] - times["media"]) * 1000
    assert abs(report.heard_ms - played_ms) < 40
    assert abs(report.dropped_ms - (2000 - played_ms)) < 40

    with wave.open(str(record)) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (8000, 2, 1)
        pcm = wav.readframes(wav.getnframes())
        frames = wav.getnframes()
    assert abs(frames - 1.5 * 8000) < 200
    samples = memoryview(pcm).cast("h")
    nonzero = [i for i, s in enumerate(samples) if s != 0]
    first, last = nonzero[0], nonzero[-1]
    assert abs(first - (times["media"] - times["start"]) * 8000) < 300
    assert abs((last - first) - played_ms * 8) < 320
    # What was heard is exactly the start of what was sent, decoded.
    heard = pcm[first * 2 : (last + 1) * 2]
    assert heard == audioop.ulaw2lin(sent, 2)[: len(heard)]
    assert all(s == 0 for s in samples[last + 1 :])


async def test_dtmf_after_greeting_timeout(serve: Any) -> None:
    """DTMF keys go out in order, one per 300 ms, in Twilio's dtmf shape."""
    fake = FakeGateway()
    report = await call(serve, fake, hangup_after_s=1.6, dtmf="12#", greeting_timeout_s=0.2)
    dtmf = fake.events("dtmf")
    assert [r.msg["dtmf"] for r in dtmf] == [
        {"track": "inbound_track", "digit": "1"},
        {"track": "inbound_track", "digit": "2"},
        {"track": "inbound_track", "digit": "#"},
    ]
    gaps = [b.t - a.t for a, b in itertools.pairwise(dtmf)]
    assert all(0.27 <= g <= 0.36 for g in gaps)
    assert report.dtmf_sent == "12#"
    assert fake.shape_errors == []


async def test_gateway_closing_the_socket_ends_the_call(serve: Any) -> None:
    """When the gateway closes the media socket the call ends at once with ended_by=gateway."""

    async def script(fake: FakeGateway, ws: web.WebSocketResponse) -> None:
        await asyncio.sleep(0.3)
        await ws.close()

    fake = FakeGateway(script=script)
    report = await call(serve, fake, hangup_after_s=10)
    assert report.ended_by == "gateway"
    assert report.duration_s < 2
    assert fake.events("stop") == []


async def test_greeting_and_reply_latency(serve: Any) -> None:
    """greeting_ms: start → first bot audio; reply_ms: end of the caller's utterance → the reply."""

    async def script(fake: FakeGateway, ws: web.WebSocketResponse) -> None:
        await asyncio.sleep(0.1)
        await fake.send_media(ws, tone(400))

        # Wait for the caller's speech, then its end (10 quiet frames), then answer.
        def loud(r: Any) -> bool:
            if r.msg["event"] != "media":
                return False
            return audioop.rms(audioop.ulaw2lin(base64.b64decode(r.msg["media"]["payload"]), 2), 2) > 300

        first_loud = await fake.wait_for(loud)
        index = fake.received.index(first_loud) + 1
        quiet = 0
        while quiet < 10:
            index += 1
            r = await fake.wait_len(index)
            if loud(r):
                quiet = 0
            elif r.msg["event"] == "media":
                quiet += 1
        await asyncio.sleep(0.1)
        await fake.send_media(ws, tone(300))

    fake = FakeGateway(script=script)
    report = await call(serve, fake, hangup_after_s=3.2, play="builtin:hello")
    assert report.greeting_ms is not None
    assert 60 <= report.greeting_ms <= 250
    assert len(report.reply_ms) == 1
    # The server answered 10 quiet frames + 100 ms after the utterance's last loud frame.
    assert 250 <= report.reply_ms[0] <= 450


async def test_bad_gateway_messages_are_reported_not_fatal(serve: Any) -> None:
    """Messages Twilio would reject (wrong streamSid, bad base64, unknown event, binary) are reported."""

    async def script(fake: FakeGateway, ws: web.WebSocketResponse) -> None:
        await ws.send_json({"event": "media", "streamSid": "MZwrong", "media": {"payload": "//8="}})
        await ws.send_json({"event": "media", "streamSid": fake.stream_sid, "media": {"payload": "!!"}})
        await ws.send_json({"event": "hangup", "streamSid": fake.stream_sid})
        await ws.send_bytes(b"\x00")
        await ws.send_str("{nope")

    fake = FakeGateway(script=script)
    report = await call(serve, fake, hangup_after_s=0.4)
    assert len(report.protocol_errors) == 5
    assert report.frames_received == 0
    assert report.ended_by == "caller"


async def test_twiml_without_stream_is_not_answered(serve: Any) -> None:
    """TwiML that only says and hangs up ends the call by the gateway with no stream."""
    fake = FakeGateway(twiml="<Response><Say>No</Say><Hangup/></Response>")
    report = await call(serve, fake, hangup_after_s=1)
    assert (report.answered, report.ended_by, report.after_stream) == (False, "gateway", ["Say", "Hangup"])
    assert fake.received == []


async def test_transcript_source_fills_the_report(serve: Any) -> None:
    """The optional transcript source is awaited once at the end, with the call SID, and fills the report."""
    asked: list[str] = []

    async def source(call_sid: str) -> list[dict[str, str]]:
        asked.append(call_sid)
        return [{"role": "bot", "text": "Hello"}, {"role": "caller", "text": "Hi"}]

    report = await call(serve, FakeGateway(), hangup_after_s=0.1, transcript_source=source)
    assert report.transcript == [{"role": "bot", "text": "Hello"}, {"role": "caller", "text": "Hi"}]
    assert asked == [report.call_sid]


async def test_cli_prints_one_json_report(serve: Any) -> None:
    """`gateway call … --json` prints one JSON object with the documented keys."""
    fake = FakeGateway()
    base = await serve(fake)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "call",
        "+15551230000",
        "--gateway",
        base,
        "--hangup-after",
        "0.4",
        "--dtmf",
        "5",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"TWILIO_AUTH_TOKEN": "", "PATH": ""},
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    doc = json.loads(out)
    for key in (
        "greeting_ms",
        "reply_ms",
        "frames_sent",
        "frames_received",
        "marks_sent",
        "marks_acked",
        "clears",
        "transcript",
        "ended_by",
    ):
        assert key in doc
    assert doc["ended_by"] == "caller"
    assert 18 <= doc["frames_sent"] <= 21


async def test_cli_reports_unreachable_gateway() -> None:
    """An unreachable gateway exits 1 with a clear message, not a traceback."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "call",
        "+15551230000",
        "--gateway",
        "http://127.0.0.1:9",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 1
    assert b"cannot reach" in err
    assert b"Traceback" not in err
