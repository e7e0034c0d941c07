"""Telnyx end to end over loopback: simulated Telnyx → gateway → Gemini Live emulator over wss://.

Both ways Telnyx hands over a call: TeXML (a signed form to ``/telnyx/voice``, answered with
``<Connect><Stream bidirectionalMode="rtp">``) and Call Control (a signed ``call.initiated`` webhook,
answered by the gateway's ``answer`` command to Telnyx's API). The API is the simulated caller's own
loopback stand-in (gateway/caller/telnyx_api.py), which records every command the gateway sends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest

from gateway.bridge import control as call_control
from gateway.caller import CallOptions, place_call, wire_telnyx as wire
from gateway.caller.call import admin_transcript
from gateway.caller.telnyx_api import TelnyxApi
from gateway.emulator import Emulator
from gateway.emulator.scenario import Rule
from gateway.errors import AuthError
from gateway.server.state import LIMITS

from .conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.e2e

API_KEY = "KEYtelnyx-api-key-for-tests"
KEY = wire.new_signing_key()
PUBLIC_KEY = wire.public_key_b64(KEY)
SIGNING_KEY = wire.private_key_b64(KEY)
#: Chosen by the dialled number, which a Call Control webhook may carry without its '+'.
SALES_PLAN = """
name = "sales"
numbers = ["+1555010015*"]
voice = "Puck"
language = "en-US"
system_instruction = "You are the sales line."
greeting = "Greet the caller."
"""
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


@pytest.fixture
async def api() -> AsyncIterator[TelnyxApi]:
    async with TelnyxApi(api_key=API_KEY) as stand_in:
        yield stand_in


async def telnyx_gateway(make_gateway: GatewayFactory, api: TelnyxApi, **settings: Any) -> Gateway:
    """A gateway configured for Telnyx: signatures checked, commands to the stand-in."""
    defaults: dict[str, Any] = {
        "telnyx_public_key": PUBLIC_KEY,
        "telnyx_api_key": API_KEY,
        "telnyx_api_base": api.base_url,
    }
    return await make_gateway(**(defaults | settings))


def options(gw: Gateway, api: TelnyxApi, *, call_control: bool = False, **kw: Any) -> CallOptions:
    kw = {"auth_token": SIGNING_KEY, "to": "+15551230000", "provider_api": api.base_url} | kw
    return CallOptions(provider="telnyx-callcontrol" if call_control else "telnyx", gateway=gw.url, **kw)


def realtime_input(emulator: Emulator, key: str) -> list[Any]:
    return [
        f.payload["realtimeInput"][key]
        for s in emulator.sessions
        for f in s.frames
        if f.direction == "in" and f.payload and key in f.payload.get("realtimeInput", {})
    ]


def script(emulator: Emulator, **rule: Any) -> None:
    """The model's answer to the greeting prompt (not a caller turn) calls a tool as ``rule`` says."""
    emulator.scenario.rules = [Rule(text_contains="Greet the caller", **rule)]


# --- TeXML ----------------------------------------------------------------------------------------


async def test_texml_signed_call_converses(
    make_gateway: GatewayFactory, api: TelnyxApi, emulator: Emulator
) -> None:
    """A signed TeXML call: greeting, a reply, every mark echoed, the caller's audio at 16 kHz to Gemini;
    the caller hangs up with ``stop`` and the gateway sends Telnyx no command."""
    gw = await telnyx_gateway(make_gateway, api)
    report = await place_call(
        options(
            gw,
            api,
            play="builtin:hello",
            hangup_when_done_s=1.0,
            max_duration_s=40.0,
            transcript_source=admin_transcript(gw.url),
        )
    )
    assert report.protocol_errors == []
    assert report.warnings == []
    assert report.call_sid.startswith("v3:")
    assert report.greeting_ms is not None
    assert report.greeting_ms < 2000
    assert len(report.reply_ms) == 1
    assert report.marks_sent > 0
    assert report.marks_acked == report.marks_sent
    assert report.ended_by == "caller"
    assert [t["role"] for t in report.transcript][:3] == ["bot", "caller", "bot"]
    assert {a["mimeType"] for a in realtime_input(emulator, "audio")} == {"audio/pcm;rate=16000"}
    (record,) = await gw.wait_calls_ended(1)
    assert (record["call_sid"], record["ended_by"]) == (report.call_sid, "caller")
    assert api.commands == []


async def test_texml_barge_in_clears_the_greeting(gateway: Gateway, emulator: Emulator) -> None:
    """Unsigned on loopback (no credentials, as `make run`): speaking over the greeting sends ``clear``;
    Telnyx drops what was queued and returns the pending marks."""
    report = await place_call(
        CallOptions(provider="telnyx", to="+15551230000", gateway=gateway.url, play="builtin:hello",
                    speak_at_s=1.5, hangup_after_s=7.0)
    )  # fmt: skip
    assert report.protocol_errors == []
    assert report.clears >= 1
    assert report.dropped_ms <= 200
    assert report.heard_ms < 7000
    assert report.marks_acked == report.marks_sent


async def test_texml_dtmf_reaches_the_model(gateway: Gateway, emulator: Emulator) -> None:
    """Each key the caller presses arrives at Gemini as realtime text."""
    report = await place_call(
        CallOptions(provider="telnyx", to="+15551230000", gateway=gateway.url, dtmf="12#",
                    greeting_timeout_s=0.5, hangup_after_s=10.0)
    )  # fmt: skip
    assert report.dtmf_sent == "12#"
    assert [t for t in realtime_input(emulator, "text") if "key" in t] == [
        "[The caller pressed the phone key 1]",
        "[The caller pressed the phone key 2]",
        "[The caller pressed the phone key #]",
    ]


async def test_texml_end_call_hangs_up_by_call_control_after_the_goodbye(
    make_gateway: GatewayFactory, api: TelnyxApi, emulator: Emulator, dialplan_dir: Path
) -> None:
    """end_call: the goodbye plays out, then ``hangup`` goes to Telnyx's API with the Bearer key, for the
    TeXML call's CallSid (its call_control_id), and the stream closes."""
    (dialplan_dir / "default.toml").write_text(TOOLS_PLAN)
    script(
        emulator, say="Thanks for calling Acme. Goodbye!", tool="end_call", args={"reason": "done"}, reply=""
    )
    gw = await telnyx_gateway(make_gateway, api)
    report = await place_call(options(gw, api, max_duration_s=20.0))
    assert report.ended_by == "gateway"
    assert report.protocol_errors == []
    assert report.heard_ms >= report.bytes_received / 8 - 20  # everything sent was heard before the close
    assert report.marks_acked == report.marks_sent > 0
    [command] = api.commands
    assert (command.action, command.call_control_id, command.body) == ("hangup", report.call_sid, {})
    assert command.authorization == f"Bearer {API_KEY}"
    (record,) = await gw.wait_calls_ended(1)
    assert (record["ended_by"], record["reason"]) == ("bot", "done")


async def test_texml_transfer_call_by_call_control(
    make_gateway: GatewayFactory,
    api: TelnyxApi,
    emulator: Emulator,
    dialplan_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """transfer_call: once the bot's words have played, ``transfer`` to the plan's number."""
    monkeypatch.setattr(call_control, "TRANSFER_GRACE_S", 0.3)
    (dialplan_dir / "default.toml").write_text(TOOLS_PLAN)
    script(emulator, say="Transferring you now.", tool="transfer_call", args={"target": "agent"})
    gw = await telnyx_gateway(make_gateway, api)
    report = await place_call(options(gw, api, max_duration_s=20.0))
    [command] = api.commands
    assert (command.action, command.call_control_id, command.body) == (
        "transfer", report.call_sid, {"to": "+15550100199"}
    )  # fmt: skip
    assert report.ended_by == "gateway"
    assert report.protocol_errors == []
    (record,) = await gw.wait_calls_ended(1)
    assert (record["reason"], record["transfer_to"]) == ("transferred to agent", "+15550100199")


# --- Call Control ---------------------------------------------------------------------------------


async def test_call_control_wideband_call_converses(
    make_gateway: GatewayFactory, api: TelnyxApi, emulator: Emulator
) -> None:
    """call.initiated → the ``answer`` command with an L16 RTP stream (token in its URL) → a 16 kHz call:
    greeting and reply; the webhooks Telnyx sends around the stream are acknowledged and start nothing."""
    gw = await telnyx_gateway(make_gateway, api, telnyx_codec="L16")
    report = await place_call(
        options(gw, api, call_control=True, play="builtin:hello", hangup_when_done_s=1.0, max_duration_s=40.0)
    )
    assert report.protocol_errors == []
    assert report.warnings == []  # every webhook was taken, and nothing else was commanded
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    assert report.marks_acked == report.marks_sent > 0
    [answer] = api.commands
    assert answer.action == "answer"
    assert answer.call_control_id == report.call_sid
    assert answer.authorization == f"Bearer {API_KEY}"
    url = urlsplit(answer.body.pop("stream_url"))
    assert (url.scheme, url.netloc, url.path) == ("ws", urlsplit(gw.url).netloc, "/telnyx/media")
    assert list(parse_qs(url.query)) == ["token"]
    assert answer.body == {
        "stream_track": "inbound_track",
        "stream_codec": "L16",
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": "L16",
        "command_id": "answer",
    }
    # 16 kHz end to end: 20 ms of L16 per message in, passed to Gemini without resampling.
    audio = realtime_input(emulator, "audio")
    assert {a["mimeType"] for a in audio} == {"audio/pcm;rate=16000"}
    assert emulator.sessions[0].audio_in_bytes >= 11 * 32000
    assert len(emulator.sessions) == 1


async def test_the_dialled_number_chooses_the_dialplan_in_e164(
    make_gateway: GatewayFactory, api: TelnyxApi, dialplan_dir: Path
) -> None:
    """A number Telnyx sends without its '+' is matched as E.164, so the sales plan answers."""
    (dialplan_dir / "sales.toml").write_text(SALES_PLAN)
    gw = await telnyx_gateway(make_gateway, api)
    report = await place_call(options(gw, api, call_control=True, to="15550100150", hangup_after_s=1.0))
    assert report.answered
    (record,) = await gw.wait_calls_ended(1)
    assert (record["call_sid"], record["dialplan"]) == (report.call_sid, "sales")


async def test_call_control_end_call_hangs_up_by_command(
    make_gateway: GatewayFactory, api: TelnyxApi, emulator: Emulator, dialplan_dir: Path
) -> None:
    """On Call Control closing the stream would leave the call up: end_call sends ``hangup`` first."""
    (dialplan_dir / "default.toml").write_text(TOOLS_PLAN)
    script(emulator, say="Goodbye!", tool="end_call", args={"reason": "done"}, reply="")
    gw = await telnyx_gateway(make_gateway, api)
    report = await place_call(options(gw, api, call_control=True, max_duration_s=20.0))
    assert report.ended_by == "gateway"
    assert report.protocol_errors == []
    assert report.warnings == ["Telnyx's API took the gateway's hangup command"]
    assert [c.action for c in api.commands] == ["answer", "hangup"]


async def test_call_control_call_the_gateway_ends_is_hung_up_at_telnyx(
    make_gateway: GatewayFactory, api: TelnyxApi, dialplan_dir: Path
) -> None:
    """A call the gateway ends on its own (here the plan's duration limit, after its goodbye) is hung up
    through Telnyx's API too: on Call Control the closed stream alone would leave the caller in silence."""
    (dialplan_dir / "default.toml").write_text(
        'default = true\nsystem_instruction = "Support."\ngreeting = "Greet the caller."\n'
        '[limits]\nmax_duration_s = 3\nmax_duration_say = "Goodbye!"\n'
    )
    gw = await telnyx_gateway(make_gateway, api)
    report = await place_call(options(gw, api, call_control=True, max_duration_s=20.0))
    assert report.ended_by == "gateway"
    assert report.protocol_errors == []
    assert [c.action for c in api.commands] == ["answer", "hangup"]  # once, before the stream closed
    assert api.commands[1].call_control_id == report.call_sid


async def _signed_post(url: str, body: bytes, content_type: str, headers: dict[str, str]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers={"Content-Type": content_type, **headers}) as resp,
    ):
        return resp.status, await resp.text()


def _initiated(call_control_id: str = "v3:" + "c" * 40) -> bytes:
    return wire.call_initiated(
        call_control_id=call_control_id, call_leg_id=wire.new_id(), call_session_id=wire.new_id(),
        connection_id="1234567890", from_="+15550001111", to="+15551230000", delivered_to="x",
    )  # fmt: skip


async def test_call_control_without_an_api_key_is_a_503_that_costs_nothing(
    make_gateway: GatewayFactory, api: TelnyxApi, emulator: Emulator
) -> None:
    """A Call Control call cannot be answered without TELNYX_API_KEY: Telnyx is told (503, its portal
    shows the failed webhook), and no place or Gemini session is taken."""
    gw = await telnyx_gateway(make_gateway, api, telnyx_api_key="")
    body = _initiated()
    status, text = await _signed_post(
        gw.url + "/telnyx/voice",
        body,
        "application/json",
        wire.signed_headers(KEY, body, timestamp=int(time.time())),
    )
    assert (status, "TELNYX_API_KEY" in text) == (503, True)
    assert gw.app[LIMITS].admission.in_use() == 0
    assert emulator.sessions == []
    assert api.commands == []


async def test_call_control_over_capacity_rejects_the_call(
    make_gateway: GatewayFactory, api: TelnyxApi, emulator: Emulator
) -> None:
    """With every place taken, the call is refused with ``reject`` (the caller hears busy), not answered."""
    gw = await telnyx_gateway(make_gateway, api, max_calls=1, telnyx_public_key="", preconnect=False)
    form = {"CallSid": "v3:" + "h" * 40, "To": "+15551230000", "From": "+15550001111"}
    status, _ = await _signed_post(gw.url + "/telnyx/voice", urlencode(form).encode(),
                                   "application/x-www-form-urlencoded", {})  # fmt: skip
    assert status == 200  # a TeXML call holds the only place until its stream arrives
    report = await place_call(options(gw, api, call_control=True))
    assert not report.answered
    assert report.after_stream == ["reject"]
    [reject] = api.commands
    assert (reject.action, reject.call_control_id, reject.body) == (
        "reject",
        report.call_sid,
        {"cause": "USER_BUSY"},
    )
    assert emulator.sessions == []


# --- signatures and stream tokens -------------------------------------------------------------------


@pytest.mark.parametrize("flow", ["texml", "callcontrol"])
async def test_forged_absent_and_stale_signatures_are_refused(
    make_gateway: GatewayFactory, api: TelnyxApi, emulator: Emulator, flow: str
) -> None:
    """With TELNYX_PUBLIC_KEY, a request not signed by its private half, unsigned, signed over another
    body, or signed more than 300 s ago is a 403; nothing is reserved or opened."""
    gw = await telnyx_gateway(make_gateway, api)
    if flow == "texml":
        content_type = "application/x-www-form-urlencoded"
        body = urlencode({"CallSid": "v3:" + "f" * 40, "To": "+15551230000", "From": "+15550001111"}).encode()
    else:
        content_type, body = "application/json", _initiated()
    now = int(time.time())
    forger = wire.new_signing_key()
    attempts = [
        wire.signed_headers(forger, body, timestamp=now),
        {},
        wire.signed_headers(KEY, body + b" ", timestamp=now),
        wire.signed_headers(KEY, body, timestamp=now - 301),
        {**wire.signed_headers(KEY, body, timestamp=now), wire.TIMESTAMP_HEADER: str(now + 1)},
    ]
    for headers in attempts:
        status, _ = await _signed_post(gw.url + "/telnyx/voice", body, content_type, headers)
        assert status == 403, headers
    assert gw.app[LIMITS].admission.in_use() == 0
    assert emulator.sessions == []
    assert api.commands == []
    # The simulated Telnyx signing with the wrong key is refused too; with the right one it is served.
    with pytest.raises(AuthError):
        await place_call(
            options(gw, api, call_control=flow == "callcontrol", auth_token=wire.private_key_b64(forger))
        )
    if flow == "callcontrol":
        api.expect("v3:" + "c" * 40)  # the call Telnyx would know, so that answering it succeeds
    status, _ = await _signed_post(
        gw.url + "/telnyx/voice", body, content_type, wire.signed_headers(KEY, body, timestamp=now)
    )
    assert status == 200
    assert [c.action for c in api.commands] == (["answer"] if flow == "callcontrol" else [])


async def test_unsigned_requests_only_from_the_local_operator(make_gateway: GatewayFactory) -> None:
    """Without TELNYX_PUBLIC_KEY, a proxied (internet) request is refused unless explicitly allowed."""
    gw = await make_gateway(preconnect=False)
    body = urlencode({"CallSid": "v3:" + "u" * 40, "To": "+15551230000", "From": "+15550001111"}).encode()
    form = "application/x-www-form-urlencoded"
    status, text = await _signed_post(
        gw.url + "/telnyx/voice", body, form, {"X-Forwarded-For": "203.0.113.7"}
    )
    assert (status, "TELNYX_PUBLIC_KEY" in text) == (403, True)
    assert (await _signed_post(gw.url + "/telnyx/voice", body, form, {}))[0] == 200


async def _texml_stream_url(gw: Gateway, call_sid: str) -> str:
    body = urlencode({"CallSid": call_sid, "To": "+15551230000", "From": "+15550001111"}).encode()
    status, texml = await _signed_post(
        gw.url + "/telnyx/voice", body, "application/x-www-form-urlencoded",
        wire.signed_headers(KEY, body, timestamp=int(time.time())),
    )  # fmt: skip
    assert status == 200
    stream = wire.parse_texml(texml, gw.url)
    assert stream is not None
    return stream.url


async def test_absent_or_forged_stream_tokens_open_no_gemini_session(
    make_gateway: GatewayFactory, api: TelnyxApi, emulator: Emulator
) -> None:
    """Telnyx does not sign its upgrade: a stream URL without the token is refused before any WebSocket,
    and one with a forged or another call's token is closed at ``start``; Gemini is never reached."""
    gw = await telnyx_gateway(make_gateway, api, preconnect=False)
    call_sid = "v3:" + "t" * 40
    url = await _texml_stream_url(gw, call_sid)
    token = parse_qs(urlsplit(url).query)["token"][0]
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url.split("?")[0])
        assert refused.value.status == 403
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        for sid, tok in ((call_sid, forged), ("v3:" + "o" * 40, token)):  # forged; bound to another call
            async with http.ws_connect(url.split("?")[0] + "?token=" + tok) as ws:
                await ws.send_str(wire.connected())
                await ws.send_str(
                    wire.start(1, stream_id=wire.new_id(), call_control_id=sid, call_session_id=wire.new_id(),
                               user_id=wire.new_id(), from_="+15550001111", to="+15551230000")
                )  # fmt: skip
                msg = await ws.receive(timeout=5)
                assert msg.type is aiohttp.WSMsgType.CLOSE
                assert ws.close_code == 1008
    assert emulator.sessions == []
    # The real token still works once: the refusals above did not spend it.
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(wire.connected())
        await ws.send_str(
            wire.start(1, stream_id=wire.new_id(), call_control_id=call_sid, call_session_id=wire.new_id(),
                       user_id=wire.new_id(), from_="+15550001111", to="+15551230000")
        )  # fmt: skip
        first = await ws.receive(timeout=5)
        assert first.type is aiohttp.WSMsgType.TEXT
        assert json.loads(first.data)["event"] in ("media", "mark")
    await asyncio.wait_for(emulator.sessions[0].closed.wait(), 5)
