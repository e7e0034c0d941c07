"""Vonage end to end over loopback: simulated Vonage (signed answer webhook, NCCO ``connect`` websocket,
binary 20 ms L16 frames) → gateway → Gemini Live emulator over wss://, with the Voice REST API as a
local stand-in (application JWT, RS256)."""

from __future__ import annotations

import base64
import functools
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.bridge import control as call_control
from gateway.caller import CallOptions, call as caller_call, place_call, wire_vonage as wire
from gateway.caller.call import admin_transcript
from gateway.caller.side_vonage import VonageSide
from gateway.emulator import Emulator, session as emulator_session, voice
from gateway.emulator.scenario import Rule

from .conftest import Gateway, GatewayFactory, client_messages

pytestmark = pytest.mark.e2e

SECRET = "vonage-signature-secret-for-tests-0123456789"
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
TOOLS_PLAN = """
default = true
voice = "Puck"
language = "en-US"
system_instruction = "You are the Acme support line."
greeting = "Greet the caller."
tools = ["end_call", "transfer_call"]
[vad]
silence_duration_ms = 300
[transfer]
agent = "+15550100199"
"""


class VonageApi:
    """Vonage's Voice REST API on loopback: ``PUT /v1/calls/{uuid}``, checked as Vonage checks it (an
    application JWT signed RS256 by the application's key, naming the application, not expired)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []
        self.problems: list[str] = []
        app = web.Application()
        app.router.add_route("*", "/v1/calls/{uuid}", self.call)
        self.server = TestServer(app, host="127.0.0.1")

    async def call(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            claims = jwt.decode(token, _KEY.public_key(), algorithms=["RS256"], options={"require": ["exp"]})
        except jwt.PyJWTError as exc:
            self.problems.append(f"bad JWT: {exc}")
            return web.json_response({"title": "Unauthorized"}, status=401)
        if scheme != "Bearer" or claims.get("application_id") != APP_ID:
            self.problems.append("wrong application")
            return web.json_response({"title": "Unauthorized"}, status=401)
        body = await request.json()
        self.requests.append((request.method, request.path, claims, body))
        return web.Response(status=204)

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


@pytest.fixture
async def vonage_api() -> AsyncIterator[VonageApi]:
    api = VonageApi()
    await api.server.start_server()
    yield api
    await api.server.close()


def _options(gw: Gateway, **changes: Any) -> CallOptions:
    options: dict[str, Any] = {
        "to": "+15551230000",
        "auth_token": gw.settings.vonage_signature_secret,
    } | changes
    return CallOptions(
        provider="vonage", gateway=gw.url, transcript_source=admin_transcript(gw.url), **options
    )


def _side(monkeypatch: pytest.MonkeyPatch) -> VonageSide:
    """The call's Vonage side, kept for inspection (place_call makes its own otherwise)."""
    side = VonageSide()
    monkeypatch.setattr(caller_call, "side_for", lambda provider: side)
    return side


async def test_signed_call_converses_with_paced_20ms_binary_frames(
    make_gateway: GatewayFactory, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signed call: the bot greets and answers, every notify comes back, every binary message is
    exactly 640 bytes (20 ms at 16 kHz) and the audio arrives paced in real time; Gemini hears 16 kHz."""
    gw = await make_gateway(vonage_signature_secret=SECRET)
    side = _side(monkeypatch)
    report = await place_call(_options(gw, play="builtin:hello", hangup_after_s=12.0))
    assert report.answered
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    assert report.marks_sent > 0
    assert report.marks_acked == report.marks_sent
    assert report.ended_by == "caller"
    assert [t["role"] for t in report.transcript][:3] == ["bot", "caller", "bot"]
    assert report.pacing["messages"] > 100
    assert report.pacing["bad_sizes"] == 0
    assert report.pacing["max_ahead_ms"] <= 120
    summary = side.pacing_summary()
    assert summary["jitter_p50_ms"] < 5, summary
    audio = [m["audio"] for m in client_messages(emulator, "realtimeInput") if "audio" in m]
    assert {a["mimeType"] for a in audio} == {"audio/pcm;rate=16000"}
    [record] = await gw.wait_calls_ended(1)
    assert record["ended_by"] == "caller"


async def test_unsigned_answer_is_refused_when_a_secret_is_set(make_gateway: GatewayFactory) -> None:
    """With VONAGE_SIGNATURE_SECRET, an answer request without a valid JWT gets 403 and no NCCO."""
    gw = await make_gateway(vonage_signature_secret=SECRET)
    query = wire.answer_query(call_uuid=wire.new_uuid(), from_="+15550001111", to="+15551230000")
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/vonage/answer", params=query) as resp:
            assert resp.status == 403
        forged = "Bearer " + wire.signed_jwt("another-secret-entirely-0123456789", wire.query_payload(query))
        async with http.get(
            gw.url + "/vonage/answer", params=query, headers={"Authorization": forged}
        ) as resp:
            assert resp.status == 403
        good = "Bearer " + wire.signed_jwt(SECRET, wire.query_payload(query))
        async with http.get(gw.url + "/vonage/answer", params=query, headers={"Authorization": good}) as resp:
            assert resp.status == 200
            endpoint, actions = wire.parse_ncco(await resp.text())
    assert actions == ["connect"]
    assert endpoint is not None
    assert endpoint.content_type == "audio/l16;rate=16000"
    assert endpoint.headers["uuid"] == query["uuid"]
    assert (endpoint.headers["from"], endpoint.headers["to"]) == ("+15550001111", "+15551230000")
    assert endpoint.authorization == endpoint.headers["token"]


async def test_media_socket_without_a_valid_token_is_closed(gateway: Gateway, emulator: Emulator) -> None:
    """A socket whose websocket:connected brings no token of ours is closed (1008) and opens no session."""
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(gateway.url.replace("http", "ws") + "/vonage/media") as ws,
    ):
        await ws.send_str(
            wire.connected("audio/l16;rate=16000", {"uuid": wire.new_uuid(), "token": "forged"})
        )
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1008
    assert emulator.sessions == []


async def test_barge_in_sends_clear_and_the_cut_reply_is_recorded(
    gateway: Gateway, emulator: Emulator
) -> None:
    """Speaking over the greeting: a clear at once, websocket:cleared is taken, the call goes on."""
    report = await place_call(_options(gateway, play="builtin:hello", speak_at_s=1.5, hangup_after_s=9.0))
    assert report.protocol_errors == []
    assert report.clears >= 1
    assert report.dropped_ms <= 100  # paced in real time: little is queued at Vonage when the clear comes
    cut = [t for t in report.transcript if t["role"] == "bot" and "heard" in t]
    assert cut, report.transcript
    assert len(cut[0]["heard"]) < len(cut[0]["text"])
    [record] = await gateway.wait_calls_ended(1)
    assert record["clears"] >= 1
    assert record["marks_sent"] - 1 <= record["marks_acked"] <= record["marks_sent"]


async def test_dtmf_reaches_the_model(gateway: Gateway, emulator: Emulator) -> None:
    """websocket:dtmf events arrive at Gemini as realtime text, in order."""
    report = await place_call(_options(gateway, dtmf="12#", greeting_timeout_s=0.5, hangup_after_s=10.0))
    assert report.protocol_errors == []
    assert report.dtmf_sent == "12#"
    texts = [m["text"] for m in client_messages(emulator, "realtimeInput") if "text" in m]
    assert [t for t in texts if "key" in t] == [
        "[The caller pressed the phone key 1]",
        "[The caller pressed the phone key 2]",
        "[The caller pressed the phone key #]",
    ]


async def _tool_gateway(make_gateway: GatewayFactory, dialplan_dir: Path, api: VonageApi) -> Gateway:
    (dialplan_dir / "default.toml").write_text(TOOLS_PLAN)
    return await make_gateway(
        vonage_application_id=APP_ID,
        vonage_private_key=PRIVATE_PEM,
        vonage_signature_secret=SECRET,
        vonage_api_base=api.base_url,
    )


async def test_end_call_hangs_up_by_rest_after_the_goodbye_played(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path, vonage_api: VonageApi
) -> None:
    """end_call: the goodbye plays out (every notify echoed), then PUT /v1/calls/{uuid} hangup with an
    application JWT, and the gateway closes the socket."""
    emulator.scenario.rules = [
        Rule(text_contains="Greet the caller", say="Thanks for calling. Goodbye!", tool="end_call", reply="")
    ]
    gw = await _tool_gateway(make_gateway, dialplan_dir, vonage_api)
    report = await place_call(_options(gw, max_duration_s=20.0))
    assert report.ended_by == "gateway"
    assert report.protocol_errors == []
    assert report.marks_acked == report.marks_sent > 0
    assert vonage_api.problems == []
    [(method, path, claims, body)] = vonage_api.requests
    assert (method, path, body) == ("PUT", f"/v1/calls/{report.call_sid}", {"action": "hangup"})
    assert claims["application_id"] == APP_ID
    [record] = await gw.wait_calls_ended(1)
    assert record["ended_by"] == "bot"


async def test_transfer_call_sends_a_connect_ncco(
    make_gateway: GatewayFactory,
    emulator: Emulator,
    dialplan_dir: Path,
    vonage_api: VonageApi,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """transfer_call: PUT /v1/calls/{uuid} with a transfer to an NCCO connecting the plan's number."""
    monkeypatch.setattr(call_control, "TRANSFER_GRACE_S", 0.3)
    emulator.scenario.rules = [
        Rule(text_contains="Greet the caller", say="I'm transferring you now.", tool="transfer_call",
             args={"target": "agent"})
    ]  # fmt: skip
    gw = await _tool_gateway(make_gateway, dialplan_dir, vonage_api)
    report = await place_call(_options(gw, max_duration_s=20.0))
    assert vonage_api.problems == []
    [(method, path, _, body)] = vonage_api.requests
    assert (method, path) == ("PUT", f"/v1/calls/{report.call_sid}")
    assert body == {
        "action": "transfer",
        "destination": {
            "type": "ncco",
            "ncco": [{"action": "connect", "endpoint": [{"type": "phone", "number": "15550100199"}]}],
        },
    }


def _band_energy(pcm: bytes, rate: int, lo: float, hi: float) -> float:
    """Fraction of the signal's energy between ``lo`` and ``hi`` Hz."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    total = spectrum.sum()
    return float(spectrum[(freqs >= lo) & (freqs <= hi)].sum() / total) if total else 0.0


async def test_wideband_a_6khz_tone_survives_both_ways(
    gateway: Gateway, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 kHz L16 from the phone reaches Gemini with no 8 kHz step, and Gemini's 24 kHz comes back at
    16 kHz: a 6 kHz tone (above μ-law 8 kHz's 4 kHz Nyquist) survives each direction."""
    tone_hz = 6000.0

    def tone(rate: int, seconds: float) -> bytes:
        t = np.arange(int(rate * seconds)) / rate
        return (np.sin(2 * math.pi * tone_hz * t) * 8000).astype("<i2").tobytes()

    monkeypatch.setattr(voice, "speak", lambda text: tone(24000, 1.0))  # what the bot "says"
    emulator_session._speech_chunks.cache_clear()  # phrases another test had spoken are cached
    monkeypatch.setattr(emulator_session, "_speech_chunks", functools.lru_cache(maxsize=8)(
        emulator_session._speech_chunks.__wrapped__))  # fmt: skip
    side = _side(monkeypatch)
    up, silence = tone(16000, 1.5), bytes(640)
    # Silence while the greeting plays, then 1.5 s of tone (the caller's turn), then silence again.
    side.uplink_source = lambda i: up[(i - 100) * 640 : (i - 99) * 640] if 100 <= i < 175 else silence
    report = await place_call(_options(gateway, hangup_after_s=5.0))
    assert report.protocol_errors == []
    assert report.ended_by == "caller", report
    assert report.greeting_ms is not None
    # Downlink: what the caller received, 16 kHz L16, carries the tone.
    heard = bytes(side.heard_pcm)
    assert len(heard) >= 16000  # at least half a second
    assert _band_energy(heard, 16000, tone_hz - 200, tone_hz + 200) > 0.8
    # Uplink: what Gemini received, 16 kHz PCM, carries the tone.
    chunks = [a["data"] for m in client_messages(emulator, "realtimeInput") if (a := m.get("audio"))]
    sent = b"".join(base64.b64decode(c) for c in chunks)
    assert len(sent) >= 32000
    assert _band_energy(sent, 16000, tone_hz - 200, tone_hz + 200) > 0.8
