"""jambonz ``listen`` end to end over loopback: the simulated jambonz (subprotocol audio.jambonz.org,
basic auth from wsAuth, the metadata frame, binary 20 ms L16, streamed binary audio back, marks echoed
``playout``/``cleared``, ``killAudio``) → gateway → Gemini Live emulator over wss://."""

from __future__ import annotations

import base64
import functools
import json
import math
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from gateway.caller import CallOptions, call as caller_call, place_call, wire_jambonz as wire
from gateway.caller.call import admin_transcript
from gateway.caller.side_jambonz import JambonzSide
from gateway.emulator import Emulator, session as emulator_session, voice
from gateway.emulator.scenario import Rule

from .conftest import END_CALL_PLAN, Gateway, GatewayFactory, client_messages, stored_record

pytestmark = pytest.mark.e2e

SECRET = "pbx-secret-for-jambonz-tests"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "jambonz" / "app.json"


def _options(gw: Gateway, **changes: Any) -> CallOptions:
    options: dict[str, Any] = {"to": "+15551230000", "auth_token": gw.settings.pbx_secret} | changes
    return CallOptions(
        provider="jambonz", gateway=gw.url, transcript_source=admin_transcript(gw.url), **options
    )


def _side(monkeypatch: pytest.MonkeyPatch) -> JambonzSide:
    side = JambonzSide()
    monkeypatch.setattr(caller_call, "side_for", lambda provider: side)
    return side


async def test_call_converses_with_streamed_audio_and_every_mark_played(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """wsAuth's password is the secret: the bot greets and answers in streamed binary 16 kHz L16, every
    mark comes back ``playout``, Gemini hears 16 kHz, and the identity is jambonz's metadata."""
    gw = await make_gateway(pbx_secret=SECRET)
    report = await place_call(_options(gw, play="builtin:hello", hangup_when_done_s=1.0, max_duration_s=40.0))
    assert report.answered
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    assert report.marks_sent > 0
    assert report.marks_acked == report.marks_sent
    assert report.ended_by == "caller"
    assert [t["role"] for t in report.transcript][:3] == ["bot", "caller", "bot"]
    assert report.pacing["messages"] > 50
    assert report.pacing["min_message_ms"] == report.pacing["max_message_ms"] == 100.0
    audio = [m["audio"] for m in client_messages(emulator, "realtimeInput") if "audio" in m]
    assert {a["mimeType"] for a in audio} == {"audio/pcm;rate=16000"}
    [record] = await gw.wait_calls_ended(1)
    assert record["ended_by"] == "caller"
    assert record["marks_acked"] == record["marks_sent"] > 0
    stored = await stored_record(gw.url, report.call_sid)
    assert (stored["from"], stored["to"]) == ("+15550001111", "+15551230000")


async def test_the_gateway_answers_the_jambonz_subprotocol(gateway: Gateway) -> None:
    url = gateway.url.replace("http", "ws", 1) + "/jambonz/media"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=(wire.SUBPROTOCOL,)) as ws:
        assert ws.protocol == wire.SUBPROTOCOL


async def test_barge_in_sends_killaudio_and_pending_marks_come_back_cleared(
    gateway: Gateway, emulator: Emulator
) -> None:
    report = await place_call(_options(gateway, play="builtin:hello", speak_at_s=1.5, hangup_after_s=9.0))
    assert report.protocol_errors == []
    assert report.clears >= 1
    assert report.dropped_ms <= 400  # paced: little is queued at jambonz when killAudio comes
    cut = [t for t in report.transcript if t["role"] == "bot" and "heard" in t]
    assert cut, report.transcript
    assert len(cut[0]["heard"]) < len(cut[0]["text"])
    [record] = await gateway.wait_calls_ended(1)
    assert record["clears"] >= 1
    assert record["marks_sent"] - 1 <= record["marks_acked"] <= record["marks_sent"]


async def test_dtmf_reaches_the_model(gateway: Gateway, emulator: Emulator) -> None:
    report = await place_call(_options(gateway, dtmf="12#", greeting_timeout_s=0.5, hangup_after_s=10.0))
    assert report.protocol_errors == []
    assert report.dtmf_sent == "12#"
    texts = [m["text"] for m in client_messages(emulator, "realtimeInput") if "text" in m]
    assert [t for t in texts if "key" in t] == [
        "[The caller pressed the phone key 1]",
        "[The caller pressed the phone key 2]",
        "[The caller pressed the phone key #]",
    ]


async def test_end_call_closes_the_socket_after_the_goodbye_played(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path
) -> None:
    """The bot hangs up: its goodbye plays out (every mark echoed), then the gateway closes the socket,
    which ends ``listen`` (the application's next verb hangs up)."""
    emulator.scenario.rules = [
        Rule(text_contains="Greet the caller", say="Thanks for calling. Goodbye!", tool="end_call", reply="")
    ]
    (dialplan_dir / "default.toml").write_text(END_CALL_PLAN)
    gw = await make_gateway(pbx_secret=SECRET)
    report = await place_call(_options(gw, max_duration_s=20.0))
    assert report.protocol_errors == []
    assert report.ended_by == "gateway"
    assert report.marks_acked == report.marks_sent > 0
    [record] = await gw.wait_calls_ended(1)
    assert record["ended_by"] == "bot"


def _basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"jambonz:{password}".encode()).decode()}


async def _upgrade(url: str, headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, headers=headers, protocols=(wire.SUBPROTOCOL,)) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def test_the_secret_is_required_as_wsauth_password_or_in_the_url(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    gw = await make_gateway(pbx_secret=SECRET)
    base = gw.url.replace("http", "ws", 1) + "/jambonz/media"
    assert await _upgrade(base) == 403
    assert await _upgrade(base, _basic("wrong")) == 403
    assert await _upgrade(base + "?token=wrong") == 403
    assert await _upgrade(base, _basic(SECRET)) == 101
    assert await _upgrade(base + "?token=" + SECRET) == 101
    assert emulator.sessions == []


async def test_without_a_secret_only_direct_loopback_peers_are_served(
    gateway: Gateway, emulator: Emulator
) -> None:
    base = gateway.url.replace("http", "ws", 1) + "/jambonz/media"
    assert await _upgrade(base, {"X-Forwarded-For": "203.0.113.9"}) == 403
    report = await place_call(_options(gateway, hangup_after_s=3.0))
    assert report.protocol_errors == []
    assert report.greeting_ms is not None


@pytest.mark.parametrize(
    ("first", "code"),
    [
        (b"\x00" * 640, 1008),  # audio before the metadata
        ({"sampleRate": 16000, "mixType": "stereo"}, 1003),
        ({"sampleRate": 44100}, 1003),
        ({"to": ""}, 1008),  # no dialled number anywhere
        ({"callSid": "not a sid"}, 1007),
    ],
)
async def test_bad_opening_ends_only_that_stream(
    gateway: Gateway, emulator: Emulator, first: bytes | dict[str, Any], code: int
) -> None:
    url = gateway.url.replace("http", "ws", 1) + "/jambonz/media"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=(wire.SUBPROTOCOL,)) as ws:
        if isinstance(first, bytes):
            await ws.send_bytes(first)
        else:
            base = {"sampleRate": 16000, "mixType": "mono", "callSid": wire.new_sid(), "to": "+15551230000"}
            await ws.send_str(json.dumps(base | first))
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == code
    assert emulator.sessions == []


async def test_the_example_application_converses(
    make_gateway: GatewayFactory, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/jambonz/app.json: its listen verb (URL, wsAuth, rates, streaming, passDtmf) is what the
    simulated jambonz runs, and its next verb hangs up."""
    app = json.loads(EXAMPLE.read_text())
    assert [v["verb"] for v in app] == ["listen", "hangup"]
    verb = json.loads(json.dumps(app[0]).replace("CHANGE-ME", SECRET))
    listen = wire.parse_listen(verb)
    assert listen.streaming
    assert listen.playback_rate == listen.sample_rate == 16000
    assert listen.password == SECRET
    assert listen.pass_dtmf
    gw = await make_gateway(pbx_secret=SECRET)
    side = _side(monkeypatch)
    side.verb = verb
    report = await place_call(_options(gw, play="builtin:hello", hangup_when_done_s=1.0, max_duration_s=40.0))
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert report.reply_ms
    assert report.marks_acked == report.marks_sent > 0


def _band_energy(pcm: bytes, rate: int, lo: float, hi: float) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    total = spectrum.sum()
    return float(spectrum[(freqs >= lo) & (freqs <= hi)].sum() / total) if total else 0.0


async def test_wideband_a_6khz_tone_survives_both_ways(
    gateway: Gateway, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sampleRate 16000 both ways: a 6 kHz tone (above an 8 kHz path's 4 kHz limit) survives each way."""
    tone_hz = 6000.0

    def tone(rate: int, seconds: float) -> bytes:
        t = np.arange(int(rate * seconds)) / rate
        return (np.sin(2 * math.pi * tone_hz * t) * 8000).astype("<i2").tobytes()

    monkeypatch.setattr(voice, "speak", lambda text: tone(24000, 1.0))
    emulator_session._speech_chunks.cache_clear()
    monkeypatch.setattr(emulator_session, "_speech_chunks", functools.lru_cache(maxsize=8)(
        emulator_session._speech_chunks.__wrapped__))  # fmt: skip
    side = _side(monkeypatch)
    up, silence = tone(16000, 1.5), bytes(640)
    side.uplink_source = lambda i: up[(i - 100) * 640 : (i - 99) * 640] if 100 <= i < 175 else silence
    report = await place_call(_options(gateway, hangup_after_s=5.0))
    assert report.protocol_errors == []
    heard = bytes(side.heard_pcm)
    assert len(heard) >= 16000
    assert _band_energy(heard, 16000, tone_hz - 200, tone_hz + 200) > 0.8
    chunks = [a["data"] for m in client_messages(emulator, "realtimeInput") if (a := m.get("audio"))]
    sent = b"".join(base64.b64decode(c) for c in chunks)
    assert len(sent) >= 32000
    assert _band_energy(sent, 16000, tone_hz - 200, tone_hz + 200) > 0.8
