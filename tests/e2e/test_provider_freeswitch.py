"""FreeSWITCH mod_audio_stream end to end over loopback: the simulated module (metadata text frame,
binary 20 ms L16 frames, ``streamAudio`` files back, the event script's ``killAudio`` and DTMF) →
gateway → Gemini Live emulator over wss://."""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from gateway.caller import CallOptions, call as caller_call, place_call, wire_freeswitch as wire
from gateway.caller.call import admin_transcript
from gateway.caller.side_freeswitch import FreeSwitchSide
from gateway.emulator import Emulator, session as emulator_session, voice
from gateway.emulator.scenario import Rule

from .conftest import END_CALL_PLAN, Gateway, GatewayFactory, client_messages, stored_record

pytestmark = pytest.mark.e2e

SECRET = "pbx-secret-for-freeswitch-tests"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "freeswitch"


def _options(gw: Gateway, **changes: Any) -> CallOptions:
    options: dict[str, Any] = {"to": "+15551230000", "auth_token": gw.settings.pbx_secret} | changes
    return CallOptions(
        provider="freeswitch", gateway=gw.url, transcript_source=admin_transcript(gw.url), **options
    )


def _side(monkeypatch: pytest.MonkeyPatch) -> FreeSwitchSide:
    side = FreeSwitchSide()
    monkeypatch.setattr(caller_call, "side_for", lambda provider: side)
    return side


async def test_call_converses_in_whole_100ms_files_at_16khz(
    make_gateway: GatewayFactory, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the secret in the URL: the bot greets and answers in streamAudio files of exactly 100 ms of
    raw 16 kHz L16; Gemini hears 16 kHz; the caller hangs up by closing the socket."""
    gw = await make_gateway(pbx_secret=SECRET)
    side = _side(monkeypatch)
    report = await place_call(_options(gw, play="builtin:hello", hangup_after_s=12.0))
    assert report.answered
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    assert report.marks_sent == 0  # the module has none
    assert report.ended_by == "caller"
    assert [t["role"] for t in report.transcript][:3] == ["bot", "caller", "bot"]
    assert report.pacing["files"] > 20
    assert report.pacing["min_file_ms"] == report.pacing["max_file_ms"] == 100.0
    audio = [m["audio"] for m in client_messages(emulator, "realtimeInput") if "audio" in m]
    assert {a["mimeType"] for a in audio} == {"audio/pcm;rate=16000"}
    [record] = await gw.wait_calls_ended(1)
    assert record["ended_by"] == "caller"
    assert side.start is not None
    assert report.call_sid == side.start.uuid
    stored = await stored_record(gw.url, report.call_sid)
    assert (stored["from"], stored["to"]) == ("+15550001111", "+15551230000")  # from the URL


async def test_barge_in_sends_killaudio_and_the_cut_reply_is_recorded(
    gateway: Gateway, emulator: Emulator
) -> None:
    """Speaking over the greeting: a killAudio at once (the event script's uuid_break), the call goes on."""
    report = await place_call(_options(gateway, play="builtin:hello", speak_at_s=1.5, hangup_after_s=9.0))
    assert report.protocol_errors == []
    assert report.clears >= 1
    cut = [t for t in report.transcript if t["role"] == "bot" and "heard" in t]
    assert cut, report.transcript
    assert len(cut[0]["heard"]) < len(cut[0]["text"])
    [record] = await gateway.wait_calls_ended(1)
    assert record["clears"] >= 1


async def test_dtmf_forwarded_by_the_event_script_reaches_the_model(
    gateway: Gateway, emulator: Emulator
) -> None:
    report = await place_call(_options(gateway, dtmf="12#", greeting_timeout_s=0.5, hangup_after_s=10.0))
    assert report.protocol_errors == []
    assert report.dtmf_sent == "12#"
    texts = [m["text"] for m in client_messages(emulator, "realtimeInput") if "text" in m]
    assert [t for t in texts if "key" in t] == [
        "[The caller pressed the phone key 1]",
        "[The caller pressed the phone key 2]",
        "[The caller pressed the phone key #]",
    ]


async def test_end_call_closes_the_socket_after_the_goodbye(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path
) -> None:
    """The bot hangs up: the goodbye is sent, then the gateway closes the socket (the event script's
    ``uuid_kill`` on the module's disconnect event)."""
    emulator.scenario.rules = [
        Rule(text_contains="Greet the caller", say="Thanks for calling. Goodbye!", tool="end_call", reply="")
    ]
    (dialplan_dir / "default.toml").write_text(END_CALL_PLAN)
    gw = await make_gateway(pbx_secret=SECRET)
    report = await place_call(_options(gw, max_duration_s=20.0))
    assert report.protocol_errors == []
    assert report.ended_by == "gateway"
    assert report.heard_ms > 500
    [record] = await gw.wait_calls_ended(1)
    assert record["ended_by"] == "bot"


async def _upgrade(url: str, **kwargs: Any) -> int:
    """The HTTP status of a media upgrade (101 when accepted; the socket is closed at once)."""
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, **kwargs) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def _basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"fs:{password}".encode()).decode()}


async def test_the_secret_is_required_in_the_url_or_as_basic_auth(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    gw = await make_gateway(pbx_secret=SECRET)
    base = gw.url.replace("http", "ws", 1) + "/freeswitch/media"
    assert await _upgrade(base) == 403
    assert await _upgrade(base + "?token=wrong") == 403
    assert await _upgrade(base, headers=_basic("wrong")) == 403
    assert await _upgrade(base + "?token=" + SECRET) == 101
    assert await _upgrade(base, headers=_basic(SECRET)) == 101
    assert emulator.sessions == []


async def test_without_a_secret_only_direct_loopback_peers_are_served(
    gateway: Gateway, emulator: Emulator
) -> None:
    """No GATEWAY_PBX_SECRET: a PBX on this host is served; a request through a proxy is not."""
    base = gateway.url.replace("http", "ws", 1) + "/freeswitch/media"
    assert await _upgrade(base, headers={"X-Forwarded-For": "203.0.113.9"}) == 403
    report = await place_call(_options(gateway, hangup_after_s=3.0))
    assert report.protocol_errors == []
    assert report.greeting_ms is not None


@pytest.mark.parametrize(
    ("first", "code"),
    [
        (b"\x00" * 640, 1008),  # audio with no metadata before it
        ('{"uuid":"abc","sampleRate":44100}', 1003),
        ('{"uuid":"abc","sampleRate":16000}', 1008),  # no dialled number anywhere
        ("caller=1001", 1007),  # metadata that is not the gateway's JSON
    ],
)
async def test_bad_opening_ends_only_that_stream(
    gateway: Gateway, emulator: Emulator, first: str | bytes, code: int
) -> None:
    url = gateway.url.replace("http", "ws", 1) + "/freeswitch/media"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await (ws.send_bytes(first) if isinstance(first, bytes) else ws.send_str(first))
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == code
    assert emulator.sessions == []


def _example_command(gw: Gateway, *, uuid: str, to: str, from_: str) -> str:
    """The example dialplan's command, expanded as FreeSWITCH would for one channel."""
    actions = ET.parse(EXAMPLES / "gemini.xml").getroot().iter("action")
    [data] = [a.get("data", "") for a in actions if "uuid_audio_stream" in a.get("data", "")]
    match = re.fullmatch(r"gemini_stream=\$\{uuid_audio_stream\((.*)\)\}", data)
    assert match, data
    variables = {"uuid": uuid, "destination_number": to, "caller_id_number": from_}
    command = re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], match.group(1))
    host = gw.url.replace("http://", "ws://", 1)
    return "uuid_audio_stream " + command.replace("wss://gateway.example.com", host).replace(
        "CHANGE-ME", SECRET
    )


async def test_the_example_dialplan_command_converses(
    make_gateway: GatewayFactory, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/freeswitch/gemini.xml: its uuid_audio_stream command, expanded, is what the simulated
    module runs (same URL, query, mix, rate and metadata), and the call converses."""
    gw = await make_gateway(pbx_secret=SECRET)
    uuid = wire.new_uuid()
    command = _example_command(gw, uuid=uuid, to="+15551230000", from_="1001")
    start = wire.parse_start(command)
    assert (start.mix, start.rate) == ("mono", 16000)
    assert json.loads(start.metadata or "") == {
        "uuid": uuid, "sampleRate": 16000, "to": "+15551230000", "from": "1001",
    }  # fmt: skip
    side = _side(monkeypatch)
    side.command = command
    report = await place_call(_options(gw, play="builtin:hello", hangup_after_s=12.0))
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert report.reply_ms
    [record] = await gw.wait_calls_ended(1)
    assert record["call_sid"] == uuid
    stored = await stored_record(gw.url, uuid)
    assert (stored["from"], stored["to"]) == ("1001", "+15551230000")
    lua = (EXAMPLES / "gemini_events.lua").read_text()
    for needed in ("mod_audio_stream::play", "uuid_broadcast", "killAudio", "uuid_break", "send_text"):
        assert needed in lua


def _band_energy(pcm: bytes, rate: int, lo: float, hi: float) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    total = spectrum.sum()
    return float(spectrum[(freqs >= lo) & (freqs <= hi)].sum() / total) if total else 0.0


async def test_wideband_a_6khz_tone_survives_both_ways(
    gateway: Gateway, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``16k``: the caller's 16 kHz L16 reaches Gemini with no 8 kHz step and Gemini's 24 kHz comes back
    as 16 kHz files: a 6 kHz tone (above an 8 kHz path's 4 kHz limit) survives each direction."""
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
