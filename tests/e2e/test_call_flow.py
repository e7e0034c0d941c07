"""A phone call end to end over loopback: simulated Twilio caller → gateway → Gemini Live emulator."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from gateway.bridge.call import CallBridge
from gateway.caller import CallOptions, place_call
from gateway.caller.call import admin_transcript
from gateway.emulator import Emulator
from gateway.gemini.messages import ModelAudio, ServerEvent
from gateway.server.state import PRECONNECT

from .conftest import Gateway, GatewayFactory, client_messages

pytestmark = pytest.mark.e2e


def _out_has(emulator: Emulator, key: str, session: int = 0) -> bool:
    return any(
        f.direction == "out" and f.payload is not None and key in json.dumps(f.payload)
        for f in emulator.sessions[session].frames
    )


async def test_greeting_reply_transcript_and_recording(
    gateway: Gateway, emulator: Emulator, tmp_path: Path
) -> None:
    """The bot speaks first, answers an utterance, marks are all echoed and the caller's WAV holds both."""
    record = tmp_path / "heard.wav"
    report = await place_call(
        CallOptions(
            to="+15551230000",
            gateway=gateway.url,
            play="builtin:hello",
            record=record,
            hangup_after_s=14.0,
            transcript_source=admin_transcript(gateway.url),
        )
    )
    assert report.answered
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert report.greeting_ms < 2000
    assert len(report.reply_ms) == 1
    assert report.frames_sent >= 650  # 14 s of 20 ms frames, paced in real time
    assert report.frames_received > 300
    assert report.marks_sent > 0
    assert report.marks_acked == report.marks_sent
    assert report.ended_by == "caller"
    roles = [t["role"] for t in report.transcript]
    assert roles[:3] == ["bot", "caller", "bot"]
    assert "emulator" in report.transcript[0]["text"]
    # The recording is what the caller heard: 8 kHz 16-bit mono, with the bot audible in it.
    with wave.open(str(record)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    assert len(pcm) / 8000 == pytest.approx(14.0, abs=0.5)
    assert np.sqrt(np.mean(pcm[: 8000 * 5] ** 2)) > 300  # the greeting is audible
    # The gateway streamed the caller's audio to Gemini as 16 kHz PCM and sent the greeting prompt.
    audio = [m["audio"] for m in client_messages(emulator, "realtimeInput") if "audio" in m]
    assert audio
    assert audio[0]["mimeType"] == "audio/pcm;rate=16000"
    assert emulator.sessions[0].audio_in_bytes >= 13 * 32000
    assert client_messages(emulator, "clientContent")
    # The Gemini session ended with the call.
    await asyncio.wait_for(emulator.sessions[0].closed.wait(), 5)


async def test_gemini_audio_reaches_the_caller_from_the_live_sockets_read_callback(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gemini's audio is handled where the Live socket is read (LiveSession.direct → ResilientSession →
    CallBridge._audio_now): a reply's first frames are written to the caller there, no task wake-up
    between the two sockets. Counted on the real path of a call; the call itself is whole."""
    outcomes: list[bool] = []
    original = CallBridge._audio_now

    def counted(self: CallBridge, event: ServerEvent) -> bool:
        taken = original(self, event)
        if isinstance(event, ModelAudio):
            outcomes.append(taken)
        return taken

    monkeypatch.setattr(CallBridge, "_audio_now", counted)
    report = await place_call(
        CallOptions(
            to="+15551230000",
            gateway=gateway.url,
            play="builtin:hello",
            hangup_when_done_s=1.0,
            max_duration_s=30.0,
        )
    )
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    assert report.marks_sent > 0
    assert report.marks_acked == report.marks_sent
    assert outcomes.count(True) > len(outcomes) // 2  # most of Gemini's audio took the direct path


async def test_uplink_at_the_phones_own_rate(make_gateway: GatewayFactory, emulator: Emulator) -> None:
    """GATEWAY_UPLINK_RATE=8000: caller audio reaches Gemini as 8 kHz PCM, unresampled, and is answered."""
    gateway = await make_gateway(uplink_rate=8000)
    report = await place_call(
        CallOptions(to="+15551230000", gateway=gateway.url, play="builtin:hello", hangup_after_s=14.0)
    )
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1  # the emulator heard the utterance at 8 kHz and answered it
    audio = [m["audio"] for m in client_messages(emulator, "realtimeInput") if "audio" in m]
    assert {a["mimeType"] for a in audio} == {"audio/pcm;rate=8000"}
    # 20 ms of 8 kHz PCM16 per message (320 bytes, 428 in base64), ~16 kB of audio per second.
    assert len(audio[len(audio) // 2]["data"]) == 428
    assert emulator.sessions[0].audio_in_bytes >= 13 * 16000


async def test_multi_turn_conversation(gateway: Gateway, emulator: Emulator) -> None:
    """Three utterances get three answers, in order, on one Gemini session."""
    report = await place_call(
        CallOptions(
            to="+15551230000",
            gateway=gateway.url,
            play="builtin:hello",
            turns=3,
            hangup_after_s=22.0,
            transcript_source=admin_transcript(gateway.url),
        )
    )
    assert report.protocol_errors == []
    assert len(emulator.sessions) == 1
    assert len(report.reply_ms) == 3
    roles = [t["role"] for t in report.transcript]
    assert roles == ["bot", "caller", "bot", "caller", "bot", "caller", "bot"], report.transcript


async def test_barge_in_clears_and_stale_audio_never_plays(gateway: Gateway, emulator: Emulator) -> None:
    """Speaking over the greeting sends clear at once; the cut reply is recorded with what was heard."""
    report = await place_call(
        CallOptions(
            to="+15551230000",
            gateway=gateway.url,
            play="builtin:hello",
            speak_at_s=1.5,
            hangup_after_s=9.0,
            transcript_source=admin_transcript(gateway.url),
        )
    )
    assert report.protocol_errors == []
    assert report.clears >= 1
    # Paced playout keeps the provider's buffer short, so a clear drops at most ~the lead.
    assert report.dropped_ms <= 200
    assert _out_has(emulator, "interrupted")
    cut = [t for t in report.transcript if t["role"] == "bot" and "heard" in t]
    assert cut, report.transcript
    assert len(cut[0]["heard"]) < len(cut[0]["text"])
    # The greeting is ~7 s long; the caller heard well under that before the clear.
    assert report.heard_ms < 9000


async def test_dtmf_reaches_the_model_as_text(gateway: Gateway, emulator: Emulator) -> None:
    """Each key the caller presses arrives at Gemini as realtime text."""
    report = await place_call(
        CallOptions(
            to="+15551230000", gateway=gateway.url, dtmf="12#", greeting_timeout_s=0.5, hangup_after_s=10.0
        )
    )
    assert report.dtmf_sent == "12#"
    texts = [m["text"] for m in client_messages(emulator, "realtimeInput") if "text" in m]
    assert [t for t in texts if "key" in t] == [
        "[The caller pressed the phone key 1]",
        "[The caller pressed the phone key 2]",
        "[The caller pressed the phone key #]",
    ]


async def test_a_clean_close_from_gemini_mid_call_is_resumed_not_dead_air(
    gateway: Gateway, emulator: Emulator
) -> None:
    """The service closes the call's connection with 1000: the call resumes on a new connection and the
    caller is still answered, rather than the line going dead or hanging up."""
    task = asyncio.create_task(
        place_call(
            CallOptions(to="+15551230000", gateway=gateway.url, play="builtin:hello", hangup_after_s=16.0)
        )
    )
    await emulator.wait_for(
        lambda f: f.direction == "out" and "sessionResumptionUpdate" in (f.payload or {}), timeout=15
    )
    emulator.inject_close(1000, "The operation was cancelled.", session=0)
    report = await asyncio.wait_for(task, 30)
    assert report.ended_by == "caller"
    assert len(emulator.sessions) == 2
    assert emulator.sessions[1].resumed_from is not None
    assert len(report.reply_ms) >= 1, "the caller was answered after the close"
    (record,) = await gateway.wait_calls_ended(1)
    assert record["ended_by"] == "caller"


async def test_caller_hangup_closes_the_gemini_session(gateway: Gateway, emulator: Emulator) -> None:
    """Twilio's stop ends the call and the gateway closes its Gemini session normally."""
    report = await place_call(CallOptions(to="+15551230000", gateway=gateway.url, hangup_after_s=2.0))
    assert report.ended_by == "caller"
    await asyncio.wait_for(emulator.sessions[0].closed.wait(), 5)
    closes = [f for f in emulator.sessions[0].frames if f.kind == "close"]
    assert closes
    assert closes[0].close_code == 1000


async def _twiml_stream(gateway: Gateway, call_sid: str) -> tuple[str, str]:
    async with aiohttp.ClientSession() as http:
        form = {
            "CallSid": call_sid,
            "AccountSid": "AC" + "0" * 32,
            "From": "+15550001111",
            "To": "+15551230000",
        }
        async with http.post(gateway.url + "/twilio/voice", data=form) as resp:
            assert resp.status == 200
            body = await resp.text()
    token = body.split('name="token" value="')[1].split('"')[0]
    url = body.split('<Stream url="')[1].split('"')[0]
    return url, token


def _start(call_sid: str, token: str) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": "MZ" + "1" * 32,
            "start": {
                "streamSid": "MZ" + "1" * 32,
                "accountSid": "AC" + "0" * 32,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": {"token": token},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        ("{not json", 1007),
        (json.dumps({"event": "media", "media": {"payload": "!!!not base64!!!"}}), 1007),
        (json.dumps({"event": "media", "media": 5}), 1007),
        (json.dumps({"event": "start", "start": {}}), 1007),
    ],
)
async def test_malformed_twilio_input_ends_only_that_call(
    gateway: Gateway, emulator: Emulator, garbage: str, code: int
) -> None:
    """A malformed message closes that media socket with a meaningful code; a parallel call is unharmed."""
    healthy = asyncio.create_task(
        place_call(
            CallOptions(to="+15551230000", gateway=gateway.url, play="builtin:hello", hangup_after_s=11.0)
        )
    )
    call_sid = "CA" + "9" * 32
    url, token = await _twiml_stream(gateway, call_sid)
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send_str(_start(call_sid, token))
        await asyncio.sleep(0.3)
        await ws.send_str(
            garbage.replace('"event": "media"', '"event": "media", "streamSid": "MZ' + "1" * 32 + '"')
        )
        msg = await ws.receive(timeout=5)
        while msg.type is aiohttp.WSMsgType.TEXT:
            msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code in (code, 1008)
    report = await healthy
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    assert report.ended_by == "caller"


async def test_a_caller_whose_media_stops_is_hung_up_on(make_gateway: Any, emulator: Emulator) -> None:
    """A caller that vanished without closing its socket (no media for GATEWAY_MEDIA_TIMEOUT_S) no longer
    holds the line and its Gemini session: the call ends as the caller's, with the reason."""
    gw = await make_gateway(media_timeout_s=1.0)
    call_sid = "CA" + "8" * 32
    url, token = await _twiml_stream(gw, call_sid)
    silence = json.dumps(
        {
            "event": "media",
            "streamSid": "MZ" + "1" * 32,
            "media": {"payload": base64.b64encode(b"\xff" * 160).decode()},
        }
    )
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send_str(_start(call_sid, token))
        for _ in range(25):  # half a second of audio, then nothing: the socket stays open
            await ws.send_str(silence)
            await asyncio.sleep(0.02)
        stopped = time.monotonic()
        async with asyncio.timeout(5):
            async for _ in ws:  # the greeting's media and marks, until the gateway closes
                pass
        waited = time.monotonic() - stopped
    assert ws.close_code == 1000
    assert 0.9 <= waited < 3.0  # between the timeout and 1.5 times it, after the last frame
    (record,) = await gw.wait_calls_ended(1)
    assert record["ended_by"] == "caller"
    assert record["reason"] == "no media from the caller for 1 s"
    async with asyncio.timeout(3):
        await emulator.sessions[0].closed.wait()


async def test_media_socket_without_a_valid_token_opens_no_gemini_session(
    gateway: Gateway, emulator: Emulator
) -> None:
    """A stream whose token is missing or forged is closed 1008 before any Gemini session exists."""
    for token in ("", "v1.e30.AAAA"):
        call_sid = "CA" + "7" * 32
        async with aiohttp.ClientSession() as http, http.ws_connect(gateway.url + "/twilio/media") as ws:
            await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send_str(_start(call_sid, token))
            msg = await ws.receive(timeout=5)
            assert msg.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1008
    assert emulator.sessions == []


async def test_an_unclaimed_preconnect_closes_on_its_own_timer(make_gateway: Any, emulator: Emulator) -> None:
    """The caller hangs up before the media stream opens: the preconnected Gemini session is closed when
    its time is up, without waiting for another webhook to sweep it."""
    gw = await make_gateway(preconnect=True)
    gw.app[PRECONNECT].ttl_s = 0.5
    await _twiml_stream(gw, "CA" + "7" * 32)
    await emulator.wait_for(lambda f: f.payload is not None and "setupComplete" in f.payload, timeout=5)
    async with asyncio.timeout(3):
        await emulator.sessions[0].closed.wait()
    assert emulator.sessions[0].close_code == 1000
    assert gw.app[PRECONNECT].waiting == 0
    assert gw.app[PRECONNECT].expired == 1


async def test_preconnect_opens_gemini_at_the_webhook(make_gateway: Any, emulator: Emulator) -> None:
    """Preconnect opens Gemini at the webhook, before the media socket; without it nothing opens yet."""
    gw = await make_gateway(preconnect=True)
    call_sid = "CA" + "5" * 32
    await _twiml_stream(gw, call_sid)
    await emulator.wait_for(lambda f: f.payload is not None and "setupComplete" in f.payload, timeout=5)
    assert len(emulator.sessions) == 1
    off = await make_gateway(preconnect=False)
    await _twiml_stream(off, "CA" + "6" * 32)
    await asyncio.sleep(0.3)
    assert len(emulator.sessions) == 1
