"""The simulated Vonage network: "Create an outbound call" is checked as Vonage documents it, the callee's
phone sends Vonage's signed events, the answer URL is fetched for the NCCO, and its websocket is opened
as Vonage opens it (loopback sockets; a small aiohttp app stands in for the gateway)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.caller import wire_vonage as wire
from gateway.caller.vonage_network import DialledCall, VonageNetwork

SECRET = "vonage-network-test-signature-secret-0123456789"
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
FROM = "15550100100"
WS_AUTH = "Bearer ws-token-123"
RATE = 16000
FRAME = wire.frame_bytes(RATE)


@pytest.fixture(scope="module")
def keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    """The application's key pair, and another one."""
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@pytest.fixture
async def net(keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]) -> AsyncIterator[VonageNetwork]:
    async with VonageNetwork(
        application_public_key=keys[0].public_key(),
        signature_secret=SECRET,
        application_id=APP_ID,
        ring_s=0.2,
    ) as network:
        yield network


def _app_jwt(key: rsa.RSAPrivateKey, *, application_id: str = APP_ID, exp_in: int = 300) -> str:
    now = int(time.time())
    claims = {"application_id": application_id, "iat": now, "jti": str(uuid.uuid4()), "exp": now + exp_in}
    return jwt.encode(claims, key, algorithm="RS256")


def _tone_frame(index: int) -> bytes:
    """One loud 20 ms frame of a 440 Hz tone, L16 at 16 kHz: the bot speaking."""
    t = (np.arange(RATE // 50) + index * (RATE // 50)) / RATE
    return (8000 * np.sin(2 * math.pi * 440 * t)).astype("<i2").tobytes()


def _loud(frame: bytes) -> bool:
    pcm = np.frombuffer(frame, "<i2").astype(np.float64)
    return bool(pcm.size) and float(np.sqrt((pcm * pcm).mean())) > 300


class FakeGateway:
    """The gateway as the network meets it: an answer URL giving an NCCO (a ``connect`` to its websocket,
    or a ``talk``), an event URL checking every signed JWT and ``payload_hash``, and the websocket, which
    greets and replies (``converse``), or closes after some frames, or PUTs hangup on an event."""

    def __init__(
        self,
        net: VonageNetwork,
        key: rsa.RSAPrivateKey,
        *,
        ncco: str = "connect",
        converse: bool = False,
        close_after_frames: int = 0,
        hangup_on: str = "",
    ) -> None:
        self.net, self.key = net, key
        self.ncco, self.converse = ncco, converse
        self.close_after_frames, self.hangup_on = close_after_frames, hangup_on
        self.events: list[dict[str, Any]] = []
        self.event_methods: list[str] = []
        self.answers: list[tuple[str, dict[str, str]]] = []
        self.bad_signatures = 0
        self.upgrade: dict[str, str] = {}
        self.ws_query: dict[str, str] = {}
        self.connected: dict[str, Any] = {}
        self.frames_in = 0
        self.loud_frames = 0
        self.bad_frames = 0
        self.closed_by_network = False
        self.puts: list[int] = []
        self.base = ""
        self.http: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/vonage/answer", self._answer)
        app.router.add_route("*", "/vonage/events", self._event)
        app.router.add_get("/vonage/ws", self._ws)
        return app

    @property
    def statuses(self) -> list[str]:
        return [e["status"] + (f":{e['sub_state']}" if "sub_state" in e else "") for e in self.events]

    def event(self, status: str) -> dict[str, Any]:
        return next(e for e in self.events if e["status"] == status)

    async def put(self, call_uuid: str, body: dict[str, Any]) -> int:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {_app_jwt(self.key)}"}
        async with self.http.put(
            f"{self.net.base_url}/v1/calls/{call_uuid}", json=body, headers=headers
        ) as r:
            await r.read()
            self.puts.append(r.status)
            return r.status

    async def _signed(self, request: web.Request) -> dict[str, str] | None:
        """The webhook's fields if its JWT and payload_hash check out, else None."""
        raw = await request.read()
        if request.method == "GET":
            fields = dict(request.query)
            payload = wire.query_payload(fields)
        else:
            assert request.content_type == "application/json"
            fields = json.loads(raw)
            payload = raw
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            claims = jwt.decode(token, SECRET, algorithms=["HS256"])
        except jwt.PyJWTError:
            claims = {}
        if scheme != "Bearer" or claims.get("payload_hash") != hashlib.sha256(payload).hexdigest():
            self.bad_signatures += 1
            return None
        return fields

    async def _answer(self, request: web.Request) -> web.Response:
        fields = await self._signed(request)
        if fields is None:
            return web.json_response({"error": "bad signature"}, status=401)
        self.answers.append((request.method, fields))
        if self.ncco == "talk":
            return web.json_response([{"action": "talk", "text": "Sorry, no one can take your call."}])
        uri = self.base.replace("http://", "ws://") + "/vonage/ws?call=" + fields["uuid"]
        endpoint = {
            "type": "websocket",
            "uri": uri,
            "content-type": f"audio/l16;rate={RATE}",
            "headers": {"call_uuid": fields["uuid"], "campaign": "7"},
            "authorization": {"type": "custom", "value": WS_AUTH},
        }
        return web.json_response([{"action": "connect", "endpoint": [endpoint]}])

    async def _event(self, request: web.Request) -> web.Response:
        fields = await self._signed(request)
        if fields is None:
            return web.json_response({"error": "bad signature"}, status=401)
        self.events.append(fields)
        self.event_methods.append(request.method)
        if self.hangup_on and self.statuses[-1] == self.hangup_on:
            await self.put(fields["uuid"], {"action": "hangup"})
        return web.Response(status=204)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        self.upgrade = dict(request.headers)
        self.ws_query = dict(request.query)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        speaker: asyncio.Task[None] | None = None
        heard_speech = quiet = 0
        replied = False
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    doc = json.loads(msg.data)
                    if doc.get("event") == "websocket:connected":
                        self.connected = doc
                        if self.converse:
                            speaker = asyncio.create_task(self._speak(ws, 30))  # the greeting
                    continue
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    break
                self.frames_in += 1
                self.loud_frames += _loud(msg.data)
                self.bad_frames += len(msg.data) != FRAME
                if self.converse and not replied:
                    if _loud(msg.data):
                        heard_speech, quiet = 1, 0
                    elif heard_speech:
                        quiet += 1
                        if quiet >= 15:  # 300 ms of quiet after the callee spoke: reply
                            replied = True
                            speaker = asyncio.create_task(self._speak(ws, 25))
                if self.close_after_frames and self.frames_in >= self.close_after_frames:
                    await ws.close()
                    return ws
            self.closed_by_network = True
        finally:
            if speaker is not None:
                speaker.cancel()
                await asyncio.gather(speaker, return_exceptions=True)
        return ws

    @staticmethod
    async def _speak(ws: web.WebSocketResponse, frames: int) -> None:
        """Audio paced in real time, one 20 ms binary message per 20 ms, as Vonage wants it."""
        start = time.monotonic()
        for i in range(frames):
            await asyncio.sleep(max(0.0, start + i * 0.02 - time.monotonic()))
            if ws.closed:
                return
            with contextlib.suppress(ConnectionError):
                await ws.send_bytes(_tone_frame(i))


@contextlib.asynccontextmanager
async def _serving(gateway: FakeGateway) -> AsyncIterator[FakeGateway]:
    server = TestServer(gateway.app(), host="127.0.0.1", port=0)
    await server.start_server()
    gateway.base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            gateway.http = http
            yield gateway
    finally:
        await server.close()


def _body(gateway: FakeGateway, to: str, **extra: Any) -> dict[str, Any]:
    """A create request to ``to`` (an ``extra`` of None drops that field)."""
    body = {
        "to": [{"type": "phone", "number": to}],
        "from": {"type": "phone", "number": FROM},
        "answer_url": [gateway.base + "/vonage/answer"],
        "event_url": [gateway.base + "/vonage/events"],
        **extra,
    }
    return {k: v for k, v in body.items() if v is not None}


async def _create(net: VonageNetwork, body: Any, *, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{net.base_url}/v1/calls", json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def _call(net: VonageNetwork, gateway: FakeGateway, to: str, **extra: Any) -> DialledCall:
    """Create a call to ``to``, wait for it to end, and check what every call shares."""
    status, reply = await _create(net, _body(gateway, to, **extra), token=_app_jwt(gateway.key))
    assert status == 201, reply
    assert (reply["status"], reply["direction"]) == ("started", "outbound")
    assert reply["conversation_uuid"].startswith("CON-")
    call = await net.wait(reply["uuid"], 20)
    assert call.error == ""
    assert gateway.bad_signatures == 0
    assert all(e[-1] in (200, 204) for e in call.events), call.events
    assert call.statuses == gateway.statuses
    for event in gateway.events:
        assert (event["uuid"], event["conversation_uuid"]) == (reply["uuid"], reply["conversation_uuid"])
        assert (event["to"], event["from"], event["direction"]) == (to, FROM, "outbound")
        assert event["timestamp"].endswith("Z")
    return call


# --- the create request checked as Vonage checks it ------------------------------------------------------

GOOD: dict[str, Any] = {
    "to": [{"type": "phone", "number": "14155550101"}],
    "from": {"type": "phone", "number": FROM},
    "answer_url": ["http://127.0.0.1:9/answer"],
    "event_url": ["http://127.0.0.1:9/events"],
}


async def test_create_needs_the_applications_jwt(
    net: VonageNetwork, keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    """No JWT, one signed with another key, for another application, or expired: 401 in Vonage's shape."""
    own, other = keys
    for token in (
        None,
        "not-a-jwt",
        _app_jwt(other),
        _app_jwt(own, application_id="another-app"),
        _app_jwt(own, exp_in=-60),
    ):
        status, reply = await _create(net, GOOD, token=token)
        assert status == 401, token
        assert reply["type"].startswith("https://developer.nexmo.com/api-errors#")
        assert reply["title"] == "Unauthorized"
        assert reply["detail"]
        assert reply["instance"]
    assert net.dialled == {}
    assert [s for s, _ in net.requests] == [401] * 5


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"to": None}, "to"),
        ({"to": {"type": "phone", "number": "14155550101"}}, "to"),
        ({"to": [{"type": "phone", "number": "+14155550101"}]}, "to"),
        ({"to": [{"type": "sip", "uri": "sip:a@b.example"}]}, "to"),
        ({"from": None}, "from"),
        ({"from": {"type": "phone", "number": "555-0100"}}, "from"),
        ({"answer_url": None}, "answer_url"),
        ({"ncco": [{"action": "talk", "text": "hi"}]}, "answer_url"),
        ({"answer_url": "http://127.0.0.1:9/answer"}, "answer_url"),
        ({"answer_url": ["/relative"]}, "answer_url"),
        ({"answer_method": "PUT"}, "answer_method"),
        ({"event_url": None}, "event_url"),
        ({"event_method": "DELETE"}, "event_method"),
        ({"ringing_timer": 0}, "ringing_timer"),
        ({"ringing_timer": 121}, "ringing_timer"),
        ({"ringing_timer": "60"}, "ringing_timer"),
        ({"length_timer": 7201}, "length_timer"),
        ({"machine_detection": "detect"}, "machine_detection"),
        ({"advanced_machine_detection": "default"}, "advanced_machine_detection"),
        ({"advanced_machine_detection": {"behavior": "drop"}}, "advanced_machine_detection.behavior"),
        ({"advanced_machine_detection": {"mode": "fast"}}, "advanced_machine_detection.mode"),
        ({"advanced_machine_detection": {"beep_timeout": 30}}, "advanced_machine_detection.beep_timeout"),
    ],
)
async def test_bad_bodies_get_400_naming_the_field(
    net: VonageNetwork, keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey], change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in (GOOD | change).items() if v is not None}
    status, reply = await _create(net, body, token=_app_jwt(keys[0]))
    assert status == 400, reply
    assert reply["title"] == "Bad Request"
    assert reply["detail"].startswith(field + ":")
    assert reply["invalid_parameters"][0]["name"] == field
    assert net.dialled == {}
    assert net.requests == [(400, body)]


async def test_a_json_object_is_required(
    net: VonageNetwork, keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    headers = {"Authorization": f"Bearer {_app_jwt(keys[0])}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{net.base_url}/v1/calls", data="to=1415", headers=headers) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["invalid_parameters"][0]["name"] == "body"


# --- the phone ----------------------------------------------------------------------------------------


async def test_a_person_answers_talks_and_hangs_up(
    net: VonageNetwork, keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    """started → ringing → answered → the answer URL (POST, JSON, signed) → the NCCO's websocket
    (Authorization, query kept, websocket:connected with the headers) → ``human`` → the person hears the
    greeting, speaks, hears the reply and hangs up → ``completed`` with a duration."""
    async with _serving(FakeGateway(net, keys[0], converse=True)) as gateway:
        call = await _call(
            net,
            gateway,
            "14155550101",
            answer_method="POST",
            advanced_machine_detection={"behavior": "continue", "mode": "default", "beep_timeout": 45},
        )
    assert call.statuses == ["started", "ringing", "answered", "human", "completed"]
    ((method, fields),) = gateway.answers
    assert method == "POST"
    assert fields == {
        "to": "14155550101",
        "from": FROM,
        "uuid": call.uuid,
        "conversation_uuid": call.conversation_uuid,
    }
    assert call.answer_fetch == ("POST", 200)
    assert gateway.upgrade["Authorization"] == WS_AUTH
    assert gateway.ws_query == {"call": call.uuid}
    assert gateway.connected == {
        "event": "websocket:connected",
        "content-type": "audio/l16;rate=16000",
        "call_uuid": call.uuid,
        "campaign": "7",
    }
    assert gateway.frames_in > 50
    assert gateway.bad_frames == 0
    assert gateway.closed_by_network
    assert call.endpoint is not None
    assert call.endpoint.rate == RATE
    assert call.ncco is not None
    assert call.ncco[0]["action"] == "connect"
    assert call.report is not None
    assert call.report.protocol_errors == []
    assert len(call.report.reply_ms) == 1
    assert call.ended_by == "callee"
    assert call.answered_at
    assert call.stream_started_at
    assert call.first_word_s is not None
    assert 0 < call.first_word_s < 2
    completed = gateway.event("completed")
    assert int(completed["duration"]) >= 3
    assert gateway.event("answered")["start_time"]
    assert gateway.event_methods == ["POST"] * 5


async def test_a_machine_is_detected_then_its_beep(
    net: VonageNetwork, keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    """Mode ``default``: ``machine`` about a second into the stream, then ``machine`` with ``sub_state:
    beep_start`` once its greeting's beep has played; the gateway hangs up then (PUT → 204)."""
    async with _serving(FakeGateway(net, keys[0], hangup_on="machine:beep_start")) as gateway:
        call = await _call(
            net,
            gateway,
            "14155550110",
            advanced_machine_detection={"behavior": "continue", "mode": "default"},
        )
    assert call.behaviour == "machine"
    assert call.statuses == ["started", "ringing", "answered", "machine", "machine:beep_start", "completed"]
    assert gateway.puts == [204]
    assert [c[:1] + c[2:] for c in call.commands] == [("hangup", 204)]
    assert call.ended_by == "gateway"
    assert gateway.closed_by_network
    assert call.stream_started_at is not None
    (_, _, _, machine, beep, _) = call.events
    assert machine == ("machine", 204)
    assert beep == ("machine", "beep_start", 204)
    assert call.report is not None
    assert call.report.duration_s >= 2.8  # the greeting and the beep played first


async def test_behavior_hangup_lets_vonage_hang_up_on_a_machine(
    net: VonageNetwork, keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    async with _serving(FakeGateway(net, keys[0])) as gateway:
        call = await _call(
            net, gateway, "14155550120", advanced_machine_detection={"behavior": "hangup", "mode": "default"}
        )
    assert call.statuses == ["started", "ringing", "answered", "machine", "completed"]
    assert call.ended_by == "machine-detection"
    assert gateway.closed_by_network
    assert gateway.puts == []


async def test_synchronous_detection_holds_the_ncco_until_the_beep(
    net: VonageNetwork, keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    """``detect_beep``: the answer URL is fetched only after ``machine`` and its beep; the machine is then
    recording (silence). The gateway closes the websocket: the NCCO has run out, the call completes."""
    async with _serving(FakeGateway(net, keys[0], close_after_frames=25)) as gateway:
        call = await _call(net, gateway, "14155550130", advanced_machine_detection={"mode": "detect_beep"})
    assert call.statuses == ["started", "ringing", "answered", "machine", "machine:beep_start", "completed"]
    assert gateway.answers
    assert call.answered_at is not None
    assert call.stream_started_at is not None
    assert call.stream_started_at - call.answered_at >= 2.8
    assert call.ended_by == "gateway-websocket"
    assert not gateway.closed_by_network


async def test_synchronous_detect_streams_what_is_left_of_the_greeting(
    net: VonageNetwork, keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    """``detect``: ``machine`` about a second after the answer, then the NCCO; the websocket carries the
    rest of the greeting (speech, beep), no ``beep_start``."""
    async with _serving(FakeGateway(net, keys[0], close_after_frames=110)) as gateway:
        call = await _call(net, gateway, "14155550140", advanced_machine_detection={"mode": "detect"})
    assert call.statuses == ["started", "ringing", "answered", "machine", "completed"]
    assert call.answered_at is not None
    assert call.stream_started_at is not None
    assert 0.9 <= call.stream_started_at - call.answered_at < 1.8
    assert 40 <= gateway.loud_frames <= 100  # about 1 s of speech and the 0.5 s beep, not the whole 2.5 s


async def test_a_talk_ncco_completes_the_call_without_a_websocket(
    net: VonageNetwork, keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    """A refusal: the NCCO is a ``talk``; Vonage speaks it and the call completes. GET webhooks: the answer
    in the query, the events too, each signed over its parameters."""
    async with _serving(FakeGateway(net, keys[0], ncco="talk")) as gateway:
        call = await _call(net, gateway, "14155550102", answer_method="GET", event_method="GET")
    assert call.statuses == ["started", "ringing", "answered", "completed"]
    assert [m for m, _ in gateway.answers] == ["GET"]
    assert set(gateway.event_methods) == {"GET"}
    assert call.endpoint is None
    assert call.ncco == [{"action": "talk", "text": "Sorry, no one can take your call."}]
    assert gateway.upgrade == {}
    assert call.report is None
    assert call.ended_by == "ncco"


async def test_an_ncco_in_the_request_runs_without_an_answer_webhook(
    net: VonageNetwork, keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    async with _serving(FakeGateway(net, keys[0])) as gateway:
        ncco = [{"action": "talk", "text": "Hello"}]
        call = await _call(net, gateway, "14155550106", answer_url=None, ncco=ncco)
    assert call.statuses == ["started", "ringing", "answered", "completed"]
    assert call.ncco == ncco
    assert call.answer_fetch is None
    assert gateway.answers == []


async def test_the_public_key_may_be_pem(keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]) -> None:
    pem = (
        keys[0]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    async with VonageNetwork(application_public_key=pem.decode(), signature_secret=SECRET) as network:
        assert (
            await _create(
                network, GOOD | {"to": [{"type": "phone", "number": "14155550197"}]}, token=_app_jwt(keys[0])
            )
        )[0] == 201
        assert (await _create(network, GOOD, token=_app_jwt(keys[1])))[0] == 401


@pytest.mark.parametrize(
    ("to", "statuses", "ended_by"),
    [
        ("14155550199", ["started", "ringing", "busy", "completed"], "callee"),
        ("14155550198", ["started", "ringing", "timeout", "completed"], "callee"),
        ("14155550197", ["started", "rejected"], "callee"),
    ],
)
async def test_unanswered_calls(
    net: VonageNetwork,
    keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey],
    to: str,
    statuses: list[str],
    ended_by: str,
) -> None:
    """Busy, no answer (``timeout``: ringing_timer or the simulated ring ran out), rejected; ``completed``
    follows all but ``rejected``."""
    async with _serving(FakeGateway(net, keys[0])) as gateway:
        call = await _call(net, gateway, to, ringing_timer=20)
    assert call.statuses == statuses
    assert call.ended_by == ended_by
    assert call.answered_at is None
    assert gateway.answers == []
    if "completed" in statuses:
        assert gateway.event("completed")["duration"] == "0"


async def test_a_ringing_timer_shorter_than_the_ring_times_out(
    net: VonageNetwork, keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    net.ring_s = 1.5
    async with _serving(FakeGateway(net, keys[0])) as gateway:
        call = await _call(net, gateway, "14155550103", ringing_timer=1)
    assert call.statuses == ["started", "ringing", "timeout", "completed"]


async def test_hanging_up_while_it_rings_cancels_the_call(
    net: VonageNetwork, keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    """PUT hangup on ``ringing``: 204, ``cancelled`` then ``completed``; once it is over a PUT is a 400, and
    an unknown uuid a 404."""
    net.ring_s = 5.0
    async with _serving(FakeGateway(net, keys[0], hangup_on="ringing")) as gateway:
        call = await _call(net, gateway, "14155550104")
        assert await gateway.put(call.uuid, {"action": "hangup"}) == 400
        assert await gateway.put(str(uuid.uuid4()), {"action": "hangup"}) == 404
    assert call.statuses == ["started", "ringing", "cancelled", "completed"]
    assert gateway.puts == [204, 400, 404]
    assert [(action, status) for action, _, status in call.commands] == [("hangup", 204), ("hangup", 400)]
    assert call.ended_by == "gateway"
    assert call.answered_at is None
    assert time.monotonic() - call.created_at < 4


async def test_updates_need_the_jwt_and_a_known_action(
    net: VonageNetwork, keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    net.ring_s = 5.0
    async with _serving(FakeGateway(net, keys[0])) as gateway:
        status, reply = await _create(net, _body(gateway, "14155550105"), token=_app_jwt(keys[0]))
        assert status == 201
        call_uuid = reply["uuid"]
        async with gateway.http.put(  # type: ignore[union-attr]
            f"{net.base_url}/v1/calls/{call_uuid}", json={"action": "hangup"}
        ) as resp:
            assert resp.status == 401
        assert await gateway.put(call_uuid, {"action": "explode"}) == 400
        assert await gateway.put(call_uuid, {"action": "mute"}) == 204
        assert await gateway.put(call_uuid, {"action": "hangup"}) == 204
        call = await net.wait(call_uuid, 10)
    assert call.statuses == ["started", "ringing", "cancelled", "completed"]
