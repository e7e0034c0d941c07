"""Plivo end to end over loopback: simulated Plivo (signed Answer URL, ``<Stream>``, stream events) →
gateway → Gemini Live emulator over wss://, with Plivo's REST API as a local stand-in."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.bridge import control as call_control
from gateway.caller import CallOptions, place_call, wire_plivo as wire
from gateway.caller.call import admin_transcript
from gateway.emulator import Emulator
from gateway.emulator.scenario import Rule
from gateway.errors import AuthError
from gateway.server.plivo import e164

from .conftest import Gateway, GatewayFactory, client_messages, stored_record

pytestmark = pytest.mark.e2e

AUTH_ID = "MA" + "A1B2C3D4E5F6G7H8I9"
AUTH_TOKEN = "plivo-auth-token-for-tests"
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
#: Chosen by the dialled number, which Plivo sends as 15550100150: only its E.164 form matches.
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


class PlivoApi:
    """Plivo's REST API: hang-up (``DELETE …/Call/{uuid}/``) and transfer (``POST`` with ``aleg_url``,
    which it then fetches, signed, as Plivo does, to run the ``<Dial>`` it serves)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str, dict[str, Any]]] = []
        self.fetched: list[tuple[int, str]] = []
        app = web.Application()
        app.router.add_route("*", "/v1/Account/{auth_id}/Call/{uuid}/", self.call)
        self.server = TestServer(app, host="127.0.0.1")

    async def call(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        auth = request.headers.get("Authorization", "")
        self.requests.append((request.method, request.path, auth, body))
        if request.method == "DELETE":
            return web.Response(status=204)
        async with aiohttp.ClientSession() as http:
            params = {"CallUUID": request.match_info["uuid"], "CallStatus": "in-progress"}
            nonce = "12345678901234567890"
            headers = {
                "X-Plivo-Signature-V3": wire.sign_v3(AUTH_TOKEN, body["aleg_url"], nonce, params),
                "X-Plivo-Signature-V3-Nonce": nonce,
            }
            async with http.post(body["aleg_url"], data=params, headers=headers) as resp:
                self.fetched.append((resp.status, await resp.text()))
        return web.json_response({"message": "call transferred", "api_id": "x"}, status=202)

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


@pytest.fixture
async def plivo_api() -> AsyncIterator[PlivoApi]:
    api = PlivoApi()
    await api.server.start_server()
    yield api
    await api.server.close()


def _options(gw: Gateway, **changes: Any) -> CallOptions:
    options: dict[str, Any] = {"to": "+15551230000", "auth_token": gw.settings.plivo_auth_token} | changes
    return CallOptions(
        provider="plivo", gateway=gw.url, transcript_source=admin_transcript(gw.url), **options
    )


async def test_greeting_reply_checkpoints_and_the_dialplan_by_e164(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path
) -> None:
    """A signed call: the bot greets, answers an utterance, every checkpoint is answered with
    playedStream, and the number Plivo sends without '+' picks the plan listing it in E.164."""
    (dialplan_dir / "sales.toml").write_text(SALES_PLAN)
    gw = await make_gateway(plivo_auth_token=AUTH_TOKEN)
    # Hang up once the reply has played (every checkpoint answered), not at a fixed time a slow machine
    # can reach with the last checkpoint still playing.
    report = await place_call(
        _options(gw, to="+15550100150", play="builtin:hello", hangup_when_done_s=1.0, max_duration_s=40.0)
    )
    assert report.answered
    assert report.protocol_errors == []
    assert report.warnings == []
    assert report.greeting_ms is not None
    assert report.greeting_ms < 2000
    assert len(report.reply_ms) == 1
    assert report.marks_sent > 0
    assert report.marks_acked == report.marks_sent
    assert report.ended_by == "caller"
    assert [t["role"] for t in report.transcript][:3] == ["bot", "caller", "bot"]
    [record] = await gw.wait_calls_ended(1)
    assert record["dialplan"] == "sales"
    stored = await stored_record(gw.url, report.call_sid)
    assert (stored["from"], stored["to"]) == ("+15550001111", "+15550100150")
    assert emulator.sessions[0].audio_in_bytes >= 10 * 32000


async def test_wideband_l16_16k_converses_end_to_end(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """GATEWAY_PLIVO_CONTENT_TYPE=audio/x-l16;rate=16000: the <Stream> asks for it, Plivo streams L16
    16 kHz both ways, Gemini hears 16 kHz PCM and the caller hears the bot's answer."""
    gw = await make_gateway(plivo_content_type="audio/x-l16;rate=16000", preconnect=False)
    async with aiohttp.ClientSession() as http:
        form = wire.answer_form(call_uuid=wire.new_uuid(), from_="+15550001111", to="+15551230000")
        async with http.post(gw.url + "/plivo/answer", data=form) as resp:
            spec, _ = wire.parse_answer(await resp.text())
    assert spec is not None
    assert spec.content_type == "audio/x-l16;rate=16000"
    assert (spec.bidirectional, spec.keep_call_alive, spec.after) == (True, True, [])
    report = await place_call(_options(gw, play="builtin:hello", hangup_when_done_s=1.0, max_duration_s=40.0))
    assert report.protocol_errors == []
    assert report.warnings == []  # every playAudio was L16 16 kHz, as the stream
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    assert report.marks_acked == report.marks_sent > 0
    assert report.heard_ms > 1000
    audio = [m["audio"] for m in client_messages(emulator, "realtimeInput") if "audio" in m]
    assert {a["mimeType"] for a in audio} == {"audio/pcm;rate=16000"}
    assert emulator.sessions[0].audio_in_bytes >= 10 * 32000


async def test_barge_in_sends_clear_audio_and_the_cut_reply_is_recorded(
    gateway: Gateway, emulator: Emulator
) -> None:
    """Speaking over the greeting: clearAudio at once, Plivo's clearedAudio is taken, the call goes on."""
    report = await place_call(_options(gateway, play="builtin:hello", speak_at_s=1.5, hangup_after_s=9.0))
    assert report.protocol_errors == []
    assert report.clears >= 1
    assert report.dropped_ms <= 200
    cut = [t for t in report.transcript if t["role"] == "bot" and "heard" in t]
    assert cut, report.transcript
    assert len(cut[0]["heard"]) < len(cut[0]["text"])
    assert report.heard_ms < 9000
    assert report.ended_by == "caller"
    # clearedAudio stands for the checkpoint the clear dropped, never for one that was not sent.
    [record] = await gateway.wait_calls_ended(1)
    assert record["clears"] >= 1
    assert record["marks_sent"] - 1 <= record["marks_acked"] <= record["marks_sent"]


async def test_dtmf_reaches_the_model(gateway: Gateway, emulator: Emulator) -> None:
    """Plivo's dtmf events arrive at Gemini as realtime text, in order."""
    report = await place_call(_options(gateway, dtmf="12#", greeting_timeout_s=0.5, hangup_after_s=10.0))
    assert report.dtmf_sent == "12#"
    texts = [m["text"] for m in client_messages(emulator, "realtimeInput") if "text" in m]
    assert [t for t in texts if "key" in t] == [
        "[The caller pressed the phone key 1]",
        "[The caller pressed the phone key 2]",
        "[The caller pressed the phone key #]",
    ]


async def _tool_gateway(make_gateway: GatewayFactory, dialplan_dir: Path, plivo_api: PlivoApi) -> Gateway:
    (dialplan_dir / "default.toml").write_text(TOOLS_PLAN)
    return await make_gateway(
        plivo_auth_id=AUTH_ID, plivo_auth_token=AUTH_TOKEN, plivo_api_base=plivo_api.base_url
    )


async def test_end_call_hangs_up_by_rest_after_the_goodbye_played(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path, plivo_api: PlivoApi
) -> None:
    """end_call: the goodbye plays out (every checkpoint answered), then DELETE …/Call/{CallUUID}/ with
    Basic auth_id:auth_token, and the gateway closes the stream."""
    emulator.scenario.rules = [
        Rule(text_contains="Greet the caller", say="Thanks for calling. Goodbye!", tool="end_call", reply="")
    ]
    gw = await _tool_gateway(make_gateway, dialplan_dir, plivo_api)
    report = await place_call(_options(gw, max_duration_s=20.0))
    assert report.ended_by == "gateway"
    assert report.protocol_errors == []
    assert report.bytes_received >= 8000
    assert report.heard_ms >= report.bytes_received / 8 - 20
    assert report.marks_acked == report.marks_sent > 0
    basic = "Basic " + base64.b64encode(f"{AUTH_ID}:{AUTH_TOKEN}".encode()).decode()
    assert plivo_api.requests == [("DELETE", f"/v1/Account/{AUTH_ID}/Call/{report.call_sid}/", basic, {})]
    [record] = await gw.wait_calls_ended(1)
    assert record["ended_by"] == "bot"


async def test_transfer_call_points_the_leg_at_a_dial_document(
    make_gateway: GatewayFactory,
    emulator: Emulator,
    dialplan_dir: Path,
    plivo_api: PlivoApi,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """transfer_call: POST …/Call/{CallUUID}/ with legs=aleg and an aleg_url on the gateway; Plivo's
    signed fetch of it gets <Dial><Number> of the plan's number (digits, as Plivo writes them)."""
    monkeypatch.setattr(call_control, "TRANSFER_GRACE_S", 0.3)
    emulator.scenario.rules = [
        Rule(text_contains="Greet the caller", say="I'm transferring you now.", tool="transfer_call",
             args={"target": "agent"})
    ]  # fmt: skip
    gw = await _tool_gateway(make_gateway, dialplan_dir, plivo_api)
    report = await place_call(_options(gw, max_duration_s=20.0))
    [(method, path, _, body)] = plivo_api.requests
    assert (method, path) == ("POST", f"/v1/Account/{AUTH_ID}/Call/{report.call_sid}/")
    assert body == {
        "legs": "aleg",
        "aleg_url": gw.url + "/plivo/transfer?to=%2B15550100199",
        "aleg_method": "POST",
    }
    [(status, document)] = plivo_api.fetched
    assert status == 200
    assert document.endswith("<Response><Dial><Number>15550100199</Number></Dial></Response>")
    assert report.ended_by == "gateway"
    [record] = await gw.wait_calls_ended(1)
    assert (record["ended_by"], record["transfer_to"]) == ("bot", "+15550100199")


async def test_forged_and_absent_signatures_are_refused(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """With PLIVO_AUTH_TOKEN set, an answer request signed with another token, tampered with, or not
    signed at all is refused (403) and opens nothing; GET and POST signed by Plivo's rules pass."""
    gw = await make_gateway(plivo_auth_token=AUTH_TOKEN)
    with pytest.raises(AuthError):
        await place_call(_options(gw, auth_token="not-the-token", hangup_after_s=1.0))
    with pytest.raises(AuthError):
        await place_call(_options(gw, auth_token="", hangup_after_s=1.0))
    url = gw.url + "/plivo/answer"
    form = wire.answer_form(call_uuid=wire.new_uuid(), from_="+15550001111", to="+15551230000")
    headers = wire.answer_headers(AUTH_TOKEN, url, form)
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=form | {"To": "15559999999"}, headers=headers) as resp:
            assert resp.status == 403
        async with http.post(url, data=form, headers=headers | {"X-Plivo-Signature-V3-Nonce": "1"}) as resp:
            assert resp.status == 403
        assert emulator.sessions == []
        async with http.post(url, data=form, headers=headers) as resp:
            assert resp.status == 200
            assert "<Stream" in await resp.text()
        get_url = url + "?" + "&".join(f"{k}={v}" for k, v in form.items() if k != "CallUUID")
        get_url += "&CallUUID=" + wire.new_uuid()
        nonce = "98765"
        signed = {
            "X-Plivo-Signature-V3": wire.sign_v3(AUTH_TOKEN, get_url, nonce, {}, method="GET"),
            "X-Plivo-Signature-V3-Nonce": nonce,
        }
        async with http.get(get_url, headers=signed) as resp:
            assert resp.status == 200
            assert "<Stream" in await resp.text()


async def test_absent_or_forged_stream_tokens_open_no_gemini_session(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """No token in the stream URL: refused at the upgrade. A forged token, or a real one for another
    call: closed 1008 at start. Neither opens a Gemini session."""
    gw = await make_gateway(preconnect=False)
    call_uuid = wire.new_uuid()
    async with aiohttp.ClientSession() as http:
        form = wire.answer_form(call_uuid=call_uuid, from_="+15550001111", to="+15551230000")
        async with http.post(gw.url + "/plivo/answer", data=form) as resp:
            spec, _ = wire.parse_answer(await resp.text())
        assert spec is not None
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(spec.url.split("?")[0])
        assert refused.value.status == 403
        forged = spec.url.split("?")[0] + "?token=v1.e30.AAAA"
        for stream_url, call_id in ((forged, call_uuid), (spec.url, wire.new_uuid())):
            async with http.ws_connect(stream_url) as ws:
                start = wire.start(1, call_id=call_id, stream_id=wire.new_uuid(), account_id=AUTH_ID,
                                   content_type=spec.content_type)  # fmt: skip
                await ws.send_str(start)
                msg = await ws.receive(timeout=5)
                assert msg.type is aiohttp.WSMsgType.CLOSE
                assert ws.close_code == 1008
    assert emulator.sessions == []


async def test_a_hangup_notification_at_the_answer_url_starts_nothing(
    gateway: Gateway, emulator: Emulator
) -> None:
    """Plivo notifies the hangup URL (by default the answer URL) when the call ends: no stream, no session."""
    form = wire.answer_form(call_uuid=wire.new_uuid(), from_="+15550001111", to="+15551230000")
    form |= {"CallStatus": "completed", "Event": "Hangup"}
    async with aiohttp.ClientSession() as http, http.post(gateway.url + "/plivo/answer", data=form) as resp:
        assert resp.status == 200
        spec, tags = wire.parse_answer(await resp.text())
    assert (spec, tags) == (None, ["Hangup"])
    await asyncio.sleep(0.2)
    assert emulator.sessions == []


def test_plivo_numbers_become_e164() -> None:
    """Digits gain '+'; E.164 stays; SIP URIs and withheld numbers are left alone."""
    assert e164("14155550100") == "+14155550100"
    assert e164(" +14155550100 ") == "+14155550100"
    assert e164("sip:alice@example.com") == "sip:alice@example.com"
    assert e164("anonymous") == "anonymous"
    assert e164("12345") == "12345"  # too short for a number with its country code
    assert e164("") == ""
