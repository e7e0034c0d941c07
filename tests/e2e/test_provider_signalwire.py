"""SignalWire end to end over loopback: simulated SignalWire (signed cXML webhook, ``<Connect><Stream>``,
stream events) → gateway → Gemini Live emulator over wss://, with the Compatibility REST API as a local
stand-in, in μ-law 8 kHz and in wideband L16 16 kHz."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.bridge import control as call_control
from gateway.caller import CallOptions, CallReport, place_call, wire_signalwire as wire
from gateway.caller.call import admin_transcript
from gateway.caller.registry import SIDES
from gateway.caller.side_signalwire import SignalWireSide
from gateway.caller.sides import Heard
from gateway.emulator import Emulator
from gateway.emulator.scenario import Rule
from gateway.errors import AuthError
from gateway.server.signalwire import upgrade_bearer
from gateway.server.state import CALLS

from .conftest import Gateway, GatewayFactory, client_messages

pytestmark = pytest.mark.e2e

PROJECT = "b08dacad-2f6c-4de1-93d6-cc732e0c69c5"
API_TOKEN = "signalwire-api-token-for-tests"
SIGNING_KEY = "signalwire-signing-key-for-tests"
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
SALES_PLAN = """
name = "sales"
numbers = ["+1555010015*"]
voice = "Puck"
language = "en-US"
system_instruction = "You are the sales line."
greeting = "Greet the caller."
[vad]
silence_duration_ms = 300
"""


class SignalWireApi:
    """The Compatibility API's "Update a Call": ``Status=completed`` hangs up; ``Url`` redirects the call,
    which SignalWire then fetches (POST, signed) to run the cXML it serves."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.fetched: list[tuple[int, str]] = []
        app = web.Application()
        app.router.add_post("/api/laml/2010-04-01/Accounts/{project}/Calls/{call}", self.update)
        self.server = TestServer(app, host="127.0.0.1")

    async def update(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append((request.path, request.headers.get("Authorization", ""), form))
        call_sid = request.match_info["call"].removesuffix(".json")
        if "Url" in form:
            params = {"CallSid": call_sid, "AccountSid": PROJECT, "CallStatus": "in-progress"}
            headers = {wire.SIGNATURE_HEADER: wire.sign(SIGNING_KEY, form["Url"], params)}
            async with (
                aiohttp.ClientSession() as http,
                http.post(form["Url"], data=params, headers=headers) as r,
            ):
                self.fetched.append((r.status, await r.text()))
        return web.json_response({"sid": call_sid, "status": "in-progress"})

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


@pytest.fixture
async def signalwire_api() -> AsyncIterator[SignalWireApi]:
    api = SignalWireApi()
    await api.server.start_server()
    yield api
    await api.server.close()


def _options(gw: Gateway, **changes: Any) -> CallOptions:
    options: dict[str, Any] = {
        "to": "+15551230000",
        "auth_token": gw.settings.signalwire_signing_key,
    } | changes
    return CallOptions(
        provider="signalwire", gateway=gw.url, transcript_source=admin_transcript(gw.url), **options
    )


async def _signed_gateway(
    make_gateway: GatewayFactory, api: SignalWireApi | None = None, **more: Any
) -> Gateway:
    rest = {}
    if api is not None:
        rest = {
            "signalwire_project_id": PROJECT,
            "signalwire_api_token": API_TOKEN,
            "signalwire_space_url": api.base_url,
        }
    return await make_gateway(signalwire_signing_key=SIGNING_KEY, **rest, **more)


async def test_greeting_reply_marks_and_the_dialplan_by_number(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path
) -> None:
    """A signed call: the bot greets, answers an utterance, every mark is echoed, the dialled number picks
    its plan, and the caller's μ-law reaches Gemini as 16 kHz PCM."""
    (dialplan_dir / "sales.toml").write_text(SALES_PLAN)
    gw = await _signed_gateway(make_gateway)
    report = await place_call(
        _options(gw, to="+15550100150", play="builtin:hello", hangup_when_done_s=1.0, max_duration_s=40.0)
    )
    assert report.answered
    assert report.protocol_errors == []
    assert report.warnings == []
    assert report.stream_url == gw.url.replace("http://", "ws://") + "/signalwire/media"
    assert set(report.custom_parameters) == {"token", "from", "to"}
    assert report.greeting_ms is not None
    assert report.greeting_ms < 2000
    assert len(report.reply_ms) == 1
    assert report.marks_sent > 0
    assert report.marks_acked == report.marks_sent
    assert report.ended_by == "caller"
    assert [t["role"] for t in report.transcript][:3] == ["bot", "caller", "bot"]
    audio = [m["audio"] for m in client_messages(emulator, "realtimeInput") if "audio" in m]
    assert {a["mimeType"] for a in audio} == {"audio/pcm;rate=16000"}
    [record] = await gw.wait_calls_ended(1)
    assert record["dialplan"] == "sales"
    assert record["call_sid"] == report.call_sid


async def test_barge_in_clears_and_the_clear_is_acknowledged(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """Speaking over the greeting: the gateway sends clear, SignalWire echoes the pending marks and
    acknowledges the clear, and the call carries on (the acknowledgement is not a protocol error)."""
    gw = await make_gateway()  # no credentials: a loopback caller is served unsigned
    report = await place_call(_options(gw, play="builtin:hello", speak_at_s=1.5, hangup_after_s=9.0))
    assert report.protocol_errors == []
    assert report.clears >= 1
    assert report.dropped_ms <= 200
    assert report.marks_acked == report.marks_sent
    assert report.ended_by == "caller"
    assert any(
        "interrupted" in json.dumps(f.payload) for f in emulator.sessions[0].frames if f.direction == "out"
    )
    cut = [t for t in report.transcript if t["role"] == "bot" and "heard" in t]
    assert cut, report.transcript


async def test_dtmf_reaches_the_model_as_text(make_gateway: GatewayFactory, emulator: Emulator) -> None:
    """Each key SignalWire reports arrives at Gemini as realtime text."""
    gw = await make_gateway()
    report = await place_call(_options(gw, dtmf="7*", greeting_timeout_s=0.5, hangup_after_s=10.0))
    assert report.dtmf_sent == "7*"
    texts = [m["text"] for m in client_messages(emulator, "realtimeInput") if "text" in m]
    assert [t for t in texts if "key" in t] == [
        "[The caller pressed the phone key 7]",
        "[The caller pressed the phone key *]",
    ]


async def test_end_call_completes_the_call_over_rest(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path, signalwire_api: SignalWireApi
) -> None:
    """end_call: once the goodbye has played, ``Status=completed`` with Basic ProjectID:APIToken."""
    (dialplan_dir / "default.toml").write_text(TOOLS_PLAN)
    emulator.scenario.rules = [
        Rule(text_contains="Greet the caller", say="Goodbye!", tool="end_call", args={"reason": "done"},
             reply="")
    ]  # fmt: skip
    gw = await _signed_gateway(make_gateway, signalwire_api)
    report = await place_call(_options(gw, max_duration_s=20.0))
    assert report.ended_by == "gateway"
    assert report.marks_acked == report.marks_sent > 0
    [(path, auth, form)] = signalwire_api.requests
    assert path == f"/api/laml/2010-04-01/Accounts/{PROJECT}/Calls/{report.call_sid}.json"
    assert auth == "Basic " + base64.b64encode(f"{PROJECT}:{API_TOKEN}".encode()).decode()
    assert form == {"Status": "completed"}
    [record] = await gw.wait_calls_ended(1)
    assert (record["ended_by"], record["reason"]) == ("bot", "done")


async def test_transfer_redirects_the_call_to_a_signed_dial_document(
    make_gateway: GatewayFactory,
    emulator: Emulator,
    dialplan_dir: Path,
    signalwire_api: SignalWireApi,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """transfer_call: the call is redirected (``Url``, ``Method=POST``) to the gateway's transfer URL,
    which, fetched signed as SignalWire fetches it, answers ``<Dial>`` to the plan's number."""
    monkeypatch.setattr(call_control, "TRANSFER_GRACE_S", 0.3)
    (dialplan_dir / "default.toml").write_text(TOOLS_PLAN)
    emulator.scenario.rules = [
        Rule(text_contains="Greet the caller", say="Transferring you now.", tool="transfer_call",
             args={"target": "agent"})
    ]  # fmt: skip
    gw = await _signed_gateway(make_gateway, signalwire_api)
    report = await place_call(_options(gw, max_duration_s=20.0))
    [(path, _, form)] = signalwire_api.requests
    assert path.endswith(f"/Calls/{report.call_sid}.json")
    assert form == {"Url": f"{gw.url}/signalwire/transfer?to=%2B15550100199", "Method": "POST"}
    [(status, document)] = signalwire_api.fetched
    assert status == 200
    assert document.endswith("<Response><Dial>+15550100199</Dial></Response>")
    [record] = await gw.wait_calls_ended(1)
    assert record["transfer_to"] == "+15550100199"
    assert report.ended_by == "gateway"


async def test_forged_and_absent_signatures_are_refused(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """With a Signing Key, an unsigned or wrongly signed webhook gets 403 and opens nothing; SignalWire's
    compatibility header (X-Twilio-Signature) carries the same signature and is accepted."""
    gw = await _signed_gateway(make_gateway)
    for key in ("not-the-signing-key", ""):
        with pytest.raises(AuthError):
            await place_call(_options(gw, auth_token=key, hangup_after_s=1.0))
    url = gw.url + "/signalwire/voice"
    form = wire.voice_webhook_form(
        call_sid=wire.new_sid(), account_sid=PROJECT, from_="+15550001111", to="+1555"
    )
    transfer = gw.url + "/signalwire/transfer?to=%2B15550100199"
    async with aiohttp.ClientSession() as http:
        async with http.post(transfer, data={"CallSid": "x"}) as resp:
            assert resp.status == 403
        headers = {"X-Twilio-Signature": wire.sign(SIGNING_KEY, url, form)}
        async with http.post(url, data=form, headers=headers) as resp:
            assert resp.status == 200
            answer = wire.parse_cxml(await resp.text(), url)
    assert answer is not None
    assert answer.bearer_token == upgrade_bearer(SIGNING_KEY)
    await asyncio.sleep(0.2)
    assert len(emulator.sessions) == 1  # only the accepted webhook preconnected a session
    assert gw.app[CALLS].active == {}


async def _open_stream(gw: Gateway, parameters: dict[str, str], headers: dict[str, str]) -> int | None:
    """A media socket that sends connected and start with ``parameters``; the gateway's close code."""
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(gw.url + "/signalwire/media", headers=headers) as ws,
    ):
        await ws.send_str(wire.connected())
        start = wire.start(
            1, stream_sid=wire.new_sid(), call_sid=wire.new_sid(), account_sid=PROJECT, parameters=parameters
        )
        await ws.send_str(start)
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        return ws.close_code


async def test_absent_or_forged_stream_token_or_bearer_is_refused_before_gemini(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """A media socket without a valid token (or, with a Signing Key, without the cXML's bearer on the
    upgrade) is closed or refused, and no Gemini session ever opens."""
    open_gw = await make_gateway()
    assert await _open_stream(open_gw, {}, {}) == 1008
    assert await _open_stream(open_gw, {"token": "v1.e30.forged"}, {}) == 1008
    signed = await _signed_gateway(make_gateway)
    bearer = {"Authorization": f"Bearer {upgrade_bearer(SIGNING_KEY)}"}
    assert await _open_stream(signed, {"token": "v1.e30.forged"}, bearer) == 1008
    for headers in ({}, {"Authorization": "Bearer forged"}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await _open_stream(signed, {}, headers)
        assert refused.value.status == 403
    assert emulator.sessions == []


class _RecordingSide(SignalWireSide):
    """SignalWire's side, keeping the L16 it sent and the payloads it received."""

    sides: ClassVar[list[_RecordingSide]] = []

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.received: list[int] = []
        _RecordingSide.sides.append(self)

    def media(self, report: CallReport, index: int, ulaw: bytes) -> str:
        message = super().media(report, index, ulaw)
        self.sent.append(base64.b64decode(json.loads(message)["media"]["payload"]))
        return message

    def receive(self, report: CallReport, text: str) -> Heard:
        msg = json.loads(text)
        if msg.get("event") == "media":
            self.received.append(len(base64.b64decode(msg["media"]["payload"])))
        return super().receive(report, text)


async def test_wideband_l16_16k_end_to_end(
    make_gateway: GatewayFactory, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GATEWAY_SIGNALWIRE_CODEC=L16@16000h: the cXML asks for L16 at 16 kHz, the call converses over it,
    the caller's samples reach Gemini unchanged (no resampling: 16 kHz is Gemini's input rate) and the bot
    speaks in 20 ms L16 frames."""
    monkeypatch.setitem(SIDES, "signalwire", _RecordingSide)
    monkeypatch.setattr(_RecordingSide, "sides", [])
    gw = await make_gateway(signalwire_codec="L16@16000h")
    report = await place_call(_options(gw, play="builtin:hello", hangup_when_done_s=1.0, max_duration_s=40.0))
    [side] = _RecordingSide.sides
    assert side._codec == "L16@16000h"
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    assert report.marks_acked == report.marks_sent > 0
    assert [t["role"] for t in report.transcript][:3] == ["bot", "caller", "bot"]
    assert {len(chunk) for chunk in side.sent} == {640}
    assert side.received
    assert all(n % 640 == 0 for n in side.received)
    audio = [m["audio"] for m in client_messages(emulator, "realtimeInput") if "audio" in m]
    assert {a["mimeType"] for a in audio} == {"audio/pcm;rate=16000"}
    chunks = [base64.b64decode(a["data"]) for a in audio]
    speech = [c for c in chunks if any(c)]
    assert len(speech) > 25  # the utterance, not just silence
    assert set(speech) <= set(side.sent)  # byte for byte what SignalWire sent
