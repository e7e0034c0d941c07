"""The simulated Telnyx network: Dial is checked as Telnyx documents it, the callee's phone sends Telnyx's
signed webhooks, and an answered call streams to the gateway as Telnyx's media stream does (loopback
sockets; a small aiohttp app stands in for the gateway)."""

from __future__ import annotations

import base64
import contextlib
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.caller import wire_telnyx as wire
from gateway.caller.audio import FRAME_BYTES, is_audible, pcm16_to_ulaw
from gateway.caller.telnyx_network import DialledCall, TelnyxNetwork

KEY = "KEY0123456789-telnyx-network-test"
CONNECTION = "1494404757140276705"
FROM = "+15550100100"
STATE = base64.b64encode(b"campaign=7").decode()


def _tone(seconds: float) -> bytes:
    """A loud 440 Hz tone, μ-law 8 kHz: audio the callee hears as the bot speaking."""
    n = int(8000 * seconds)
    pcm = b"".join(
        int(8000 * math.sin(2 * math.pi * 440 * i / 8000)).to_bytes(2, "little", signed=True)
        for i in range(n)
    )
    return pcm16_to_ulaw(pcm)


class FakeGateway:
    """The gateway as the network meets it: a webhook receiver that checks every signature with the
    network's public key and answers ``call.answered`` with ``streaming_start``, and the media stream's
    WebSocket end, which greets and replies (``converse``), or closes after some frames."""

    def __init__(
        self,
        net: TelnyxNetwork,
        *,
        stream: bool = True,
        hangup_on: str = "",
        converse: bool = False,
        close_after_frames: int = 0,
        stream_early: bool = False,
    ) -> None:
        self.net = net
        self.public = Ed25519PublicKey.from_public_bytes(base64.b64decode(net.public_key))
        self.stream, self.hangup_on, self.converse = stream, hangup_on, converse
        self.close_after_frames, self.stream_early = close_after_frames, stream_early
        self.webhooks: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.messages: list[dict[str, Any]] = []
        self.stream_query: dict[str, str] = {}
        self.closed_by_network = False
        #: Commands sent to the network: (action, HTTP status, reply).
        self.commands: list[tuple[str, int, dict[str, Any]]] = []
        self.base = ""
        self.http: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/telnyx/events", self._webhook)
        app.router.add_get("/stream", self._stream)
        return app

    @property
    def events(self) -> list[str]:
        return [doc["data"]["event_type"] for doc in self.webhooks]

    def payload(self, event_type: str) -> dict[str, Any]:
        return next(d["data"]["payload"] for d in self.webhooks if d["data"]["event_type"] == event_type)

    async def command(self, call_control_id: str, action: str, body: dict[str, Any]) -> None:
        assert self.http is not None
        url = f"{self.net.base_url}/calls/{call_control_id}/actions/{action}"
        async with self.http.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as resp:
            self.commands.append((action, resp.status, await resp.json()))

    def streaming_start(self) -> dict[str, Any]:
        return {
            "stream_url": self.base.replace("http://", "ws://") + "/stream?token=abc",
            "stream_track": "inbound_track",
            "stream_codec": "PCMU",
            "stream_bidirectional_mode": "rtp",
            "stream_bidirectional_codec": "PCMU",
            "client_state": STATE,
        }

    async def _webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        signature = request.headers.get(wire.SIGNATURE_HEADER, "")
        timestamp = request.headers.get(wire.TIMESTAMP_HEADER, "")
        try:
            self.public.verify(base64.b64decode(signature), timestamp.encode() + b"|" + raw)
        except (InvalidSignature, ValueError):
            self.bad_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        doc = json.loads(raw)
        self.webhooks.append(doc)
        event, ccid = doc["data"]["event_type"], doc["data"]["payload"]["call_control_id"]
        if event == "call.initiated" and self.stream_early:
            await self.command(ccid, "streaming_start", self.streaming_start())
        if event == "call.answered" and self.stream:
            await self.command(ccid, "streaming_start", self.streaming_start())
        if event == self.hangup_on:
            await self.command(ccid, "hangup", {"command_id": "bye"})
        return web.json_response({})

    async def _stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.stream_query = dict(request.query)
        media = heard_speech = quiet = replied = 0
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            doc = json.loads(msg.data)
            self.messages.append(doc)
            if doc["event"] == "start" and self.converse:
                await ws.send_str(_media(_tone(0.5)))  # the greeting
            if doc["event"] != "media":
                continue
            media += 1
            if self.converse and not replied:
                if is_audible(base64.b64decode(doc["media"]["payload"])):
                    heard_speech, quiet = 1, 0
                elif heard_speech:
                    quiet += 1
                    if quiet >= 15:  # 300 ms of quiet after the callee spoke: reply
                        await ws.send_str(_media(_tone(0.5)))
                        replied = 1
            if self.close_after_frames and media >= self.close_after_frames:
                await ws.close()
                return ws
        self.closed_by_network = True
        return ws


def _media(ulaw: bytes) -> str:
    return json.dumps({"event": "media", "media": {"payload": base64.b64encode(ulaw).decode()}})


@pytest.fixture
async def net() -> AsyncIterator[TelnyxNetwork]:
    async with TelnyxNetwork(api_key=KEY, connection_id=CONNECTION, ring_s=0.2) as network:
        yield network


@contextlib.asynccontextmanager
async def _serving(gateway: FakeGateway) -> AsyncIterator[FakeGateway]:
    """The fake gateway on loopback for the block's duration."""
    server = TestServer(gateway.app(), host="127.0.0.1", port=0)
    await server.start_server()
    gateway.base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            gateway.http = http
            yield gateway
    finally:
        await server.close()


def _dial_body(gateway: FakeGateway, to: str, **extra: Any) -> dict[str, Any]:
    return {
        "connection_id": CONNECTION,
        "to": to,
        "from": FROM,
        "webhook_url": gateway.base + "/telnyx/events",
        "webhook_url_method": "POST",
        "timeout_secs": 30,
        "client_state": STATE,
        "command_id": f"dial-{to}",
        **extra,
    }


async def _dial(net: TelnyxNetwork, body: Any, *, key: str | None = KEY) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{net.base_url}/calls", json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def _call(net: TelnyxNetwork, gateway: FakeGateway, to: str, **extra: Any) -> DialledCall:
    """Dial ``to``, wait for the call to end, and check what every call shares."""
    status, reply = await _dial(net, _dial_body(gateway, to, **extra))
    assert status == 200, reply
    data = reply["data"]
    assert (data["is_alive"], data["record_type"], data["client_state"]) == (False, "call", STATE)
    assert data["call_control_id"].startswith("v3:")
    call = await net.wait(data["call_control_id"], 20)
    assert call.error == ""
    assert gateway.bad_signatures == 0
    assert all(status == 200 for _, status in call.webhooks), call.webhooks
    assert call.events == gateway.events
    first = gateway.webhooks[0]
    assert first["meta"] == {"attempt": 1, "delivered_to": gateway.base + "/telnyx/events"}
    assert first["data"]["record_type"] == "event"
    for doc in gateway.webhooks:
        payload = doc["data"]["payload"]
        assert payload["call_control_id"] == data["call_control_id"]
        assert payload["call_leg_id"] == data["call_leg_id"]
        assert payload["call_session_id"] == data["call_session_id"]
        assert (payload["connection_id"], payload["client_state"]) == (CONNECTION, STATE)
        assert (payload["from"], payload["to"]) == (FROM, to)
    initiated = gateway.payload("call.initiated")
    assert (initiated["direction"], initiated["state"]) == ("outgoing", "bridging")
    return call


# --- Dial checked as Telnyx checks it ------------------------------------------------------------------

GOOD = {
    "connection_id": CONNECTION,
    "to": "+15551230099",
    "from": FROM,
    "webhook_url": "http://127.0.0.1:9/w",
}


@pytest.mark.parametrize(
    ("body", "code", "pointer"),
    [
        ({k: v for k, v in GOOD.items() if k != "connection_id"}, "10004", "/connection_id"),
        (GOOD | {"connection_id": "999"}, "10017", "/connection_id"),
        ({k: v for k, v in GOOD.items() if k != "to"}, "10004", "/to"),
        (GOOD | {"to": "555-1234"}, "10016", "/to"),
        (GOOD | {"from": "+0123"}, "10016", "/from"),
        ({k: v for k, v in GOOD.items() if k != "webhook_url"}, "10004", "/webhook_url"),
        (GOOD | {"webhook_url": "/relative"}, "10003", "/webhook_url"),
        (GOOD | {"webhook_url_method": "PUT"}, "10015", "/webhook_url_method"),
        (GOOD | {"timeout_secs": 4}, "10015", "/timeout_secs"),
        (GOOD | {"timeout_secs": "30"}, "10015", "/timeout_secs"),
        (GOOD | {"answering_machine_detection": "enable"}, "10015", "/answering_machine_detection"),
        (GOOD | {"client_state": "not base64!"}, "10015", "/client_state"),
        (GOOD | {"stream_url": "http://x/s"}, "10015", "/stream_url"),
    ],
)
async def test_bad_dials_get_telnyxs_errors(
    net: TelnyxNetwork, body: dict[str, Any], code: str, pointer: str
) -> None:
    """Missing or malformed fields: 422 in Telnyx's error shape, naming the field; nothing rings."""
    status, reply = await _dial(net, body)
    assert status == 422
    (error,) = reply["errors"]
    assert (error["code"], error["source"]["pointer"]) == (code, pointer)
    assert error["title"]
    assert error["detail"]
    assert net.dialled == {}
    assert net.requests == [(422, body)]


async def test_dial_needs_the_bearer_key_and_json(net: TelnyxNetwork) -> None:
    for key in (None, "wrong"):
        status, reply = await _dial(net, GOOD, key=key)
        assert (status, reply["errors"][0]["code"]) == (401, "10009")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{net.base_url}/calls", data="to=+1555", headers={"Authorization": f"Bearer {KEY}"}
        ) as resp,
    ):
        assert resp.status == 422
    assert net.dialled == {}


async def test_unknown_fields_are_taken_and_a_repeated_command_id_is_the_same_call(
    net: TelnyxNetwork,
) -> None:
    body = GOOD | {"command_id": "once", "record": "record-from-answer", "sip_region": "Europe"}
    first = await _dial(net, body)
    again = await _dial(net, body)
    assert first[0] == again[0] == 200
    assert first[1] == again[1]
    assert len(net.dialled) == 1


# --- the phone ----------------------------------------------------------------------------------------


async def test_a_person_answers_talks_and_hangs_up(net: TelnyxNetwork) -> None:
    """initiated → answered → streaming_start → the stream (connected, start, media) → AMD ``human`` → the
    person hears the greeting, speaks, hears the reply and hangs up: normal_clearing from the callee."""
    async with _serving(FakeGateway(net, converse=True)) as gateway:
        call = await _call(net, gateway, "+15551230001", answering_machine_detection="detect")
    assert call.events == [
        "call.initiated",
        "call.answered",
        "streaming.started",
        "call.machine.detection.ended",
        "streaming.stopped",
        "call.hangup",
    ]
    assert call.amd == [("call.machine.detection.ended", "human", 200)]
    assert gateway.payload("call.answered")["state"] == "answered"
    hangup = gateway.payload("call.hangup")
    assert (hangup["state"], hangup["hangup_cause"], hangup["hangup_source"]) == (
        "hangup",
        "normal_clearing",
        "callee",
    )
    assert [c[:2] for c in gateway.commands] == [("streaming_start", 200)]
    kinds = [m["event"] for m in gateway.messages]
    assert kinds[:2] == ["connected", "start"]
    assert kinds[-1] == "stop"
    start = gateway.messages[1]["start"]
    assert (start["from"], start["to"], start["call_control_id"]) == (
        FROM,
        "+15551230001",
        call.call_control_id,
    )
    assert start["media_format"] == {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}
    frames = [base64.b64decode(m["media"]["payload"]) for m in gateway.messages if m["event"] == "media"]
    assert all(len(f) == FRAME_BYTES for f in frames)
    assert any(is_audible(f) for f in frames)
    assert gateway.stream_query == {"token": "abc"}
    assert call.report is not None
    assert len(call.report.reply_ms) == 1
    assert call.first_word_s is not None
    assert call.answered_at
    assert call.stream_started_at
    assert (call.hangup_cause, call.hangup_source, call.ended_by) == (
        "normal_clearing",
        "callee",
        "normal_clearing",
    )


async def test_the_gateway_hangs_up_an_answered_call(net: TelnyxNetwork) -> None:
    """hangup after AMD's verdict: the stream gets ``stop`` and is closed; normal_clearing from the caller;
    a later command meets Telnyx's 90018."""
    async with _serving(FakeGateway(net, hangup_on="call.machine.detection.ended")) as gateway:
        call = await _call(net, gateway, "+15551230002", answering_machine_detection="detect_words")
        await gateway.command(call.call_control_id, "hangup", {})
    assert call.events[-3:] == ["call.machine.detection.ended", "streaming.stopped", "call.hangup"]
    assert gateway.payload("call.hangup")["hangup_source"] == "caller"
    assert gateway.payload("call.hangup")["hangup_cause"] == "normal_clearing"
    assert gateway.messages[-1]["event"] == "stop"
    assert gateway.closed_by_network
    assert gateway.messages[-1]["stop"]["call_control_id"] == call.call_control_id
    action, status, reply = gateway.commands[-1]
    assert (action, status, reply["errors"][0]["code"]) == ("hangup", 422, "90018")


@pytest.mark.parametrize(
    ("mode", "detection", "greeting"),
    [
        ("greeting_end", "call.machine.detection.ended", "call.machine.greeting.ended"),
        ("premium", "call.machine.premium.detection.ended", "call.machine.premium.greeting.ended"),
    ],
)
async def test_a_machine_is_detected_then_its_beep(
    net: TelnyxNetwork, mode: str, detection: str, greeting: str
) -> None:
    """An answering machine: ``machine`` about a second in, then ``beep_detected`` once its greeting ends;
    the gateway hangs up at the beep."""
    async with _serving(FakeGateway(net, hangup_on=greeting)) as gateway:
        call = await _call(net, gateway, "+15551230010", answering_machine_detection=mode)
    assert call.behaviour == "machine"
    assert call.amd == [(detection, "machine", 200), (greeting, "beep_detected", 200)]
    assert call.events == [
        "call.initiated",
        "call.answered",
        "streaming.started",
        detection,
        greeting,
        "streaming.stopped",
        "call.hangup",
    ]
    assert call.stream_started_at is not None
    assert call.report is not None
    assert call.report.duration_s >= 2.8  # the greeting and the beep played first
    assert gateway.payload("call.hangup")["hangup_source"] == "caller"


async def test_a_stream_closed_without_hangup_leaves_the_callee_in_silence(net: TelnyxNetwork) -> None:
    """Closing the stream does not end a Call Control call: the callee hangs up a moment later."""
    async with _serving(FakeGateway(net, close_after_frames=10)) as gateway:
        call = await _call(net, gateway, "+15551230003")
    assert call.events == [
        "call.initiated",
        "call.answered",
        "streaming.started",
        "streaming.stopped",
        "call.hangup",
    ]
    assert gateway.payload("call.hangup")["hangup_source"] == "callee"
    assert any("without a hangup command" in line for line in call.log)


@pytest.mark.parametrize(
    ("to", "cause", "source"),
    [
        ("+15551230099", "user_busy", "callee"),
        ("+15551230098", "timeout", "unknown"),
        ("+15551230097", "call_rejected", "callee"),
    ],
)
async def test_unanswered_calls_end_with_telnyxs_causes(
    net: TelnyxNetwork, to: str, cause: str, source: str
) -> None:
    async with _serving(FakeGateway(net)) as gateway:
        call = await _call(net, gateway, to, timeout_secs=5)
    assert call.events == ["call.initiated", "call.hangup"]
    hangup = gateway.payload("call.hangup")
    assert (hangup["hangup_cause"], hangup["hangup_source"]) == (cause, source)
    assert call.answered_at is None
    assert call.report is None


async def test_hanging_up_while_it_rings_cancels_the_call(net: TelnyxNetwork) -> None:
    """streaming_start before the answer is refused (422); hangup while ringing: originator_cancel."""
    net.ring_s = 5.0
    async with _serving(FakeGateway(net, stream_early=True, hangup_on="call.initiated")) as gateway:
        call = await _call(net, gateway, "+15551230004")
    assert call.events == ["call.initiated", "call.hangup"]
    hangup = gateway.payload("call.hangup")
    assert (hangup["hangup_cause"], hangup["hangup_source"]) == ("originator_cancel", "caller")
    assert [c[:2] for c in gateway.commands] == [("streaming_start", 422), ("hangup", 200)]
    assert call.problems
    assert "not been answered" in call.problems[0]
    assert call.answered_at is None


async def test_the_network_still_takes_inbound_call_commands(net: TelnyxNetwork) -> None:
    """The TelnyxApi routes work as before for calls the network did not dial."""
    call = net.expect("v3:inbound")
    body = {
        "stream_url": "wss://gw.example/telnyx/stream",
        "stream_track": "inbound_track",
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": "PCMU",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{net.base_url}/calls/v3:inbound/actions/answer",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
        ) as resp,
    ):
        assert (resp.status, await resp.json()) == (200, {"data": {"result": "ok"}})
    stream = call.answered.result()
    assert stream is not None
    assert stream.url == body["stream_url"]
