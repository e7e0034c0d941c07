"""The simulated Plivo network: "Make a call" is checked as Plivo documents it, the callee's phone sends
Plivo's signed callbacks, the answer URL's XML is run and its ``<Stream>`` opened as Plivo's media stream
(loopback sockets; a small aiohttp app stands in for the gateway; signatures are checked with Plivo's own
SDK, and the SDK's own requests are sent to the network)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import plivo
import plivo.rest.client
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from plivo.exceptions import ResourceNotFoundError
from plivo.utils import validate_signature
from plivo.utils.signature_v3 import validate_v3_signature

from gateway.caller import network as network_cli
from gateway.caller.audio import FRAME_BYTES, is_audible, pcm16_to_ulaw
from gateway.caller.plivo_network import DialledCall, PlivoNetwork
from gateway.caller.wire_plivo import sign_v3

AUTH_ID = "MAZ0123456789ABCDEFG"
TOKEN = "plivo-network-test-auth-token-0123456789"
FROM = "14155550100"
HANGUP_KEYS = {
    "CallUUID", "From", "To", "Direction", "RequestUUID", "ALegUUID", "ALegRequestUUID", "CallStatus",
    "Event", "HangupCause", "HangupCauseName", "HangupCauseCode", "HangupSource", "Duration",
    "BillDuration", "StartTime", "AnswerTime", "EndTime",
}  # fmt: skip


def _basic(auth_id: str = AUTH_ID, token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{auth_id}:{token}".encode()).decode()}


def _tone(seconds: float) -> bytes:
    """A loud 440 Hz tone, μ-law 8 kHz: audio the callee hears as the bot speaking."""
    n = int(8000 * seconds)
    pcm = b"".join(
        int(8000 * math.sin(2 * math.pi * 440 * i / 8000)).to_bytes(2, "little", signed=True)
        for i in range(n)
    )
    return pcm16_to_ulaw(pcm)


def _play(ulaw: bytes) -> str:
    media = {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": base64.b64encode(ulaw).decode()}
    return json.dumps({"event": "playAudio", "media": media})


class FakeGateway:
    """The gateway as the network meets it: answer, ring, hangup, machine and transfer URLs (each with a
    query of its own) checking every signature with Plivo's SDK, an answer giving ``<Stream>`` XML (or a
    ``<Speak>``), and the stream's WebSocket end, which greets and replies with a checkpoint after each
    (``converse``), or clears, or closes after some frames; it hangs up, cancels or transfers on cue."""

    def __init__(
        self,
        net: PlivoNetwork,
        *,
        xml: str = "stream",
        converse: bool = False,
        close_after_frames: int = 0,
        clear: bool = False,
        keep_call_alive: bool = True,
        after_stream: str = "",
        on: tuple[str, str] = ("", ""),
    ) -> None:
        self.net = net
        self.xml, self.converse, self.clear = xml, converse, clear
        self.close_after_frames, self.keep_call_alive, self.after_stream = (
            close_after_frames, keep_call_alive, after_stream,
        )  # fmt: skip
        #: (when, what): on a callback kind (or ``start`` on the stream): hangup, cancel or transfer.
        self.on = on
        #: Callbacks received: (kind, method, Plivo's parameters).
        self.received: list[tuple[str, str, dict[str, str]]] = []
        self.bad_signatures = 0
        self.messages: list[dict[str, Any]] = []
        self.stream_query: dict[str, str] = {}
        self.closed_by_network = False
        self.played: list[str] = []
        #: The network's answers to the gateway's requests: (what, HTTP status).
        self.statuses: list[tuple[str, int]] = []
        self.base = ""
        self.http: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/plivo/{kind}", self._callback)
        app.router.add_get("/ws/stream", self._stream)
        return app

    def url(self, kind: str) -> str:
        return f"{self.base}/plivo/{kind}?t=abc"

    @property
    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.received]

    def params(self, kind: str) -> dict[str, str]:
        return next(params for k, _, params in self.received if k == kind)

    async def act(self, what: str, params: dict[str, str]) -> None:
        assert self.http is not None
        auth = _basic()
        account = f"{self.net.base_url}/v1/Account/{AUTH_ID}"
        if what == "hangup":
            request = self.http.delete(f"{account}/Call/{params['CallUUID']}/", headers=auth)
        elif what == "cancel":
            request = self.http.delete(f"{account}/Request/{params['RequestUUID']}/", headers=auth)
        else:
            body = {"legs": "aleg", "aleg_url": self.url("transfer"), "aleg_method": "POST"}
            request = self.http.post(f"{account}/Call/{params['CallUUID']}/", json=body, headers=auth)
        async with request as resp:
            await resp.read()
            self.statuses.append((what, resp.status))

    def _verified(self, request: web.Request, kind: str, params: dict[str, str]) -> bool:
        """The V3 (and Ma-V3) signature by Plivo's SDK, and the V2 one."""
        url = self.url(kind)
        v3, nonce = (
            request.headers.get("X-Plivo-Signature-V3", ""),
            request.headers.get("X-Plivo-Signature-V3-Nonce", ""),
        )
        v2, nonce2 = (
            request.headers.get("X-Plivo-Signature-V2", ""),
            request.headers.get("X-Plivo-Signature-V2-Nonce", ""),
        )
        return (
            bool(v3 and nonce and v2 and nonce2)
            and validate_v3_signature(request.method, url, nonce, TOKEN, v3, dict(params))
            and request.headers.get("X-Plivo-Signature-Ma-V3") == v3
            and validate_signature(url, nonce2, v2, TOKEN)
        )

    async def _callback(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if request.method == "GET":
            params = {k: v for k, v in request.query.items() if k != "t"}
        else:
            assert request.content_type == "application/x-www-form-urlencoded"
            params = {k: str(v) for k, v in (await request.post()).items()}
        assert request.query.get("t") == "abc"  # the URL's own query is kept
        if not self._verified(request, kind, params):
            self.bad_signatures += 1
            return web.Response(status=401)
        self.received.append((kind, request.method, params))
        if self.on[0] == kind:
            await self.act(self.on[1], params)
        if kind not in ("answer", "transfer"):
            return web.Response(text="")
        if kind == "transfer":
            dial = "<Dial><Number>15550001111</Number></Dial>"
            xml = f"<Response><Speak>Transferring you now.</Speak>{dial}</Response>"
        elif self.xml == "speak":
            xml = "<Response><Speak>Sorry, no one can take your call.</Speak><Hangup/></Response>"
        elif self.xml == "not-xml":
            return web.Response(text="hello", content_type="text/plain")
        else:
            ws = self.base.replace("http://", "ws://") + f"/ws/stream?token=abc&amp;call={params['CallUUID']}"
            alive = "true" if self.keep_call_alive else "false"
            xml = (
                f'<Response><Stream bidirectional="true" keepCallAlive="{alive}" '
                f'contentType="audio/x-mulaw;rate=8000" extraHeaders="campaign=7">{ws}</Stream>'
                f"{self.after_stream}</Response>"
            )
        return web.Response(text=xml, content_type="application/xml")

    async def _stream(self, request: web.Request) -> web.WebSocketResponse:
        self.stream_query = dict(request.query)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        media = heard_speech = quiet = 0
        replied = False
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            doc = json.loads(msg.data)
            self.messages.append(doc)
            event = doc["event"]
            stream_id = doc.get("start", {}).get("streamId") or doc.get("streamId")
            if event == "start":
                if self.on == ("start", "transfer"):
                    await self.act("transfer", {"CallUUID": doc["start"]["callId"]})
                if self.converse:
                    await ws.send_str(_play(_tone(0.5)))  # the greeting
                    await ws.send_str(
                        json.dumps({"event": "checkpoint", "streamId": stream_id, "name": "hi"})
                    )
                if self.clear:
                    await ws.send_str(_play(_tone(2.0)))
                    await ws.send_str(
                        json.dumps({"event": "checkpoint", "streamId": stream_id, "name": "long"})
                    )
                    await asyncio.sleep(0.3)
                    await ws.send_str(json.dumps({"event": "clearAudio", "streamId": stream_id}))
            elif event == "playedStream":
                self.played.append(doc["name"])
            elif event == "media":
                media += 1
                if self.converse and not replied:
                    if is_audible(base64.b64decode(doc["media"]["payload"])):
                        heard_speech, quiet = 1, 0
                    elif heard_speech:
                        quiet += 1
                        if quiet >= 15:  # 300 ms of quiet after the callee spoke: reply
                            replied = True
                            await ws.send_str(_play(_tone(0.5)))
                            checkpoint = {"event": "checkpoint", "streamId": stream_id, "name": "reply"}
                            await ws.send_str(json.dumps(checkpoint))
                if self.close_after_frames and media >= self.close_after_frames:
                    await ws.close()
                    return ws
        self.closed_by_network = True
        return ws


@pytest.fixture
async def net() -> AsyncIterator[PlivoNetwork]:
    async with PlivoNetwork(auth_id=AUTH_ID, auth_token=TOKEN, ring_s=0.2) as network:
        yield network


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
    """A Make a call request to ``to`` (an ``extra`` of None drops that field)."""
    body = {
        "from": FROM,
        "to": to,
        "answer_url": gateway.url("answer"),
        "answer_method": "POST",
        "ring_url": gateway.url("ring"),
        "hangup_url": gateway.url("hangup"),
        **extra,
    }
    return {k: v for k, v in body.items() if v is not None}


async def _make(
    net: PlivoNetwork, body: Any, *, auth: tuple[str, str] | None = (AUTH_ID, TOKEN), account: str = AUTH_ID
) -> tuple[int, dict[str, Any]]:
    basic = _basic(*auth) if auth else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{net.base_url}/v1/Account/{account}/Call/", json=body, headers=basic) as resp,
    ):
        return resp.status, await resp.json()


async def _call(net: PlivoNetwork, gateway: FakeGateway, to: str, **extra: Any) -> DialledCall:
    """Make a call to ``to``, wait for it to end, and check what every call shares."""
    status, reply = await _make(net, _body(gateway, to, **extra))
    assert status == 201, reply
    assert set(reply) == {"api_id", "message", "request_uuid"}
    assert reply["message"] == "call fired"
    call = await net.wait(reply["request_uuid"], 25)
    assert call.error == ""
    assert gateway.bad_signatures == 0
    assert all(callback.status == 200 for callback in call.callbacks), call.callbacks
    assert call.kinds == gateway.kinds
    assert call.call_uuid != call.request_uuid
    for _, _, params in gateway.received:
        assert (params["CallUUID"], params["RequestUUID"]) == (call.call_uuid, reply["request_uuid"])
        assert (params["From"], params["To"], params["Direction"]) == (FROM, to.lstrip("+"), "outbound")
    hangup = gateway.params("hangup")
    assert set(hangup) - {"Machine"} == HANGUP_KEYS
    assert (hangup["ALegUUID"], hangup["ALegRequestUUID"]) == (call.call_uuid, call.request_uuid)
    assert hangup["Event"] == "Hangup"
    time.strptime(hangup["StartTime"], "%Y-%m-%d %H:%M:%S")
    return call


def _ended(gateway: FakeGateway) -> tuple[str, str, str, str, str]:
    hangup = gateway.params("hangup")
    return (
        hangup["CallStatus"],
        hangup["HangupCause"],
        hangup["HangupCauseName"],
        hangup["HangupCauseCode"],
        hangup["HangupSource"],
    )


# --- the request checked as Plivo checks it ------------------------------------------------------------

GOOD: dict[str, Any] = {"from": FROM, "to": "14155550199", "answer_url": "http://127.0.0.1:9/answer"}


@pytest.mark.parametrize(
    ("change", "word"),
    [
        ({"from": None}, "from"),
        ({"to": None}, "to"),
        ({"answer_url": None}, "answer_url"),
        ({"to": "555-0100"}, "to"),
        ({"from": "+0123"}, "from"),
        ({"to": "14155550101<14155550102"}, "one phone number"),
        ({"to": "sip:john@phone.plivo.com"}, "one phone number"),
        ({"answer_url": "/relative"}, "answer_url"),
        ({"hangup_url": "ftp://x/y"}, "hangup_url"),
        ({"answer_method": "PUT"}, "answer_method"),
        ({"ring_method": "DELETE"}, "ring_method"),
        ({"machine_detection": "yes"}, "machine_detection"),
        ({"machine_detection_time": 1000}, "machine_detection_time"),
        ({"machine_detection_time": 10001}, "machine_detection_time"),
        ({"machine_detection_maximum_speech_length": 7000}, "machine_detection_maximum_speech_length"),
        ({"ring_timeout": -1}, "ring_timeout"),
        ({"ring_timeout": "soon"}, "ring_timeout"),
        ({"time_limit": 0}, "time_limit"),
    ],
)
async def test_bad_requests_get_400_in_plivos_shape(
    net: PlivoNetwork, change: dict[str, Any], word: str
) -> None:
    body = {k: v for k, v in (GOOD | change).items() if v is not None}
    status, reply = await _make(net, body)
    assert status == 400, reply
    assert set(reply) == {"api_id", "error"}
    assert word in reply["error"]
    assert net.dialled == {}
    assert net.requests == [(400, body)]


async def test_basic_auth_for_the_account_in_the_path(net: PlivoNetwork) -> None:
    """No credentials, a wrong token, another account's path: 401; nothing rings."""
    for auth, account in ((None, AUTH_ID), ((AUTH_ID, "wrong"), AUTH_ID), ((AUTH_ID, TOKEN), "MAOTHER")):
        status, reply = await _make(net, GOOD, auth=auth, account=account)
        assert status == 401
        assert set(reply) == {"api_id", "error"}
    assert net.dialled == {}
    assert [status for status, _ in net.requests] == [401, 401, 401]
    async with (
        aiohttp.ClientSession() as http,
        http.delete(f"{net.base_url}/v1/Account/{AUTH_ID}/Call/{uuid.uuid4()}/") as resp,
    ):
        assert resp.status == 401


async def test_a_form_is_taken_too(net: PlivoNetwork) -> None:
    form = GOOD | {"to": "+14155550199", "ring_timeout": "30", "machine_detection": "hangup"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{net.base_url}/v1/Account/{AUTH_ID}/Call/", data=form, headers=_basic()) as resp,
    ):
        assert resp.status == 201
        reply = await resp.json()
    call = net.call(reply["request_uuid"])
    assert (call.to, call.ring_timeout_s, call.machine_detection) == ("14155550199", 30, "hangup")


# --- the phone ----------------------------------------------------------------------------------------


async def test_a_person_answers_talks_and_hangs_up(net: PlivoNetwork) -> None:
    """ring → answer (signed, in-progress, StartApp) → the <Stream> (query kept; start, media, playedStream
    for each checkpoint) → the person hears the greeting, speaks, hears the reply and hangs up → hangup
    (completed, NORMAL_CLEARING, Callee)."""
    async with _serving(FakeGateway(net, converse=True)) as gateway:
        call = await _call(net, gateway, "+14155550101")
    assert call.kinds == ["ring", "answer", "hangup"]
    assert gateway.params("ring")["CallStatus"] == "ringing"
    assert gateway.params("answer") == {
        "CallUUID": call.call_uuid,
        "From": FROM,
        "To": "14155550101",
        "Direction": "outbound",
        "CallStatus": "in-progress",
        "Event": "StartApp",
        "RequestUUID": call.request_uuid,
        "ALegUUID": call.call_uuid,
        "ALegRequestUUID": call.request_uuid,
    }
    assert gateway.stream_query == {"token": "abc", "call": call.call_uuid}
    kinds = [m["event"] for m in gateway.messages]
    assert kinds[0] == "start"
    assert kinds[-1] == "stop"  # the callee hangs up: Plivo says stop, then closes
    start = gateway.messages[0]["start"]
    assert (start["callId"], start["accountId"], start["tracks"]) == (call.call_uuid, AUTH_ID, ["inbound"])
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000}
    assert gateway.messages[0]["extra_headers"] == "campaign=7"
    frames = [base64.b64decode(m["media"]["payload"]) for m in gateway.messages if m["event"] == "media"]
    assert all(len(f) == FRAME_BYTES for f in frames)
    assert any(is_audible(f) for f in frames)
    assert gateway.played == ["hi", "reply"]
    assert gateway.closed_by_network
    assert _ended(gateway) == ("completed", "NORMAL_CLEARING", "Normal Hangup", "4000", "Callee")
    hangup = gateway.params("hangup")
    assert int(hangup["Duration"]) >= 3
    assert hangup["BillDuration"] == hangup["Duration"]
    assert hangup["AnswerTime"]
    assert call.report is not None
    assert call.report.protocol_errors == []
    assert len(call.report.reply_ms) == 1
    assert call.first_word_s is not None
    assert call.stream_started_at
    assert call.ended_by == "callee"
    assert call.streams[0].keep_call_alive


async def test_plivos_sdk_makes_and_hangs_up_a_call(
    net: PlivoNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plivo-python SDK's own requests: create (its JSON and defaults) → 201 with a request_uuid; delete
    the answered call → 204 (the stream gets ``stop`` and is closed; API Request); again → 404."""
    monkeypatch.setattr(plivo.rest.client, "API_VOICE_BASE_URI", f"{net.base_url}/v1/Account")
    client = plivo.RestClient(AUTH_ID, TOKEN)
    async with _serving(FakeGateway(net)) as gateway:
        reply = await asyncio.to_thread(
            client.calls.create,
            from_=FROM,
            to_="14155550102",
            answer_url=gateway.url("answer"),
            hangup_url=gateway.url("hangup"),
        )
        request_uuid = reply.request_uuid
        assert reply.message == "call fired"
        call = net.call(request_uuid)
        async with asyncio.timeout(10):
            await call.stream_running.wait()
        await asyncio.sleep(0.3)
        await asyncio.to_thread(client.calls.delete, call.call_uuid)
        call = await net.wait(request_uuid, 10)
        with pytest.raises(ResourceNotFoundError):
            await asyncio.to_thread(client.calls.delete, call.call_uuid)
    assert net.requests[0][1]["ring_timeout"] == 120  # the SDK's defaults, taken
    assert call.kinds == ["answer", "hangup"]
    assert _ended(gateway) == ("completed", "NORMAL_CLEARING", "Normal Hangup", "4000", "API Request")
    assert gateway.messages[-1]["event"] == "stop"
    assert gateway.closed_by_network
    assert [c[:3:2] for c in call.commands] == [("DELETE", 204), ("DELETE", 404)]
    assert call.ended_by == "api"


async def test_the_sdks_cancel_ends_a_ringing_call(
    net: PlivoNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``DELETE …/Request/{request_uuid}/`` while it rings: 204, hangup with ``cancel`` (1000 Canceled, API
    Request); the request is no longer pending: a second cancel is a 404."""
    monkeypatch.setattr(plivo.rest.client, "API_VOICE_BASE_URI", f"{net.base_url}/v1/Account")
    client = plivo.RestClient(AUTH_ID, TOKEN)
    net.ring_s = 5.0
    async with _serving(FakeGateway(net)) as gateway:
        reply = await asyncio.to_thread(
            client.calls.create,
            from_=FROM,
            to_="14155550103",
            answer_url=gateway.url("answer"),
            ring_url=gateway.url("ring"),
            hangup_url=gateway.url("hangup"),
        )
        await asyncio.sleep(0.3)
        await asyncio.to_thread(client.calls.cancel, reply.request_uuid)
        call = await net.wait(reply.request_uuid, 10)
        with pytest.raises(ResourceNotFoundError):
            await asyncio.to_thread(client.calls.cancel, reply.request_uuid)
    assert call.kinds == ["ring", "hangup"]
    assert _ended(gateway) == ("cancel", "ORIGINATOR_CANCEL", "Canceled", "1000", "API Request")
    hangup = gateway.params("hangup")
    assert (hangup["Duration"], hangup["AnswerTime"]) == ("0", "")
    assert call.answered_at is None
    assert time.monotonic() - call.created_at < 4


async def test_hanging_up_by_call_uuid_while_it_rings_cancels_too(net: PlivoNetwork) -> None:
    net.ring_s = 5.0
    async with _serving(FakeGateway(net, on=("ring", "hangup"))) as gateway:
        call = await _call(net, gateway, "14155550104")
    assert gateway.statuses == [("hangup", 204)]
    assert call.kinds == ["ring", "hangup"]
    assert _ended(gateway)[:2] == ("cancel", "ORIGINATOR_CANCEL")


async def test_asynchronous_machine_detection_posts_the_verdict(net: PlivoNetwork) -> None:
    """``machine_detection=true`` with a ``machine_detection_url``: the XML runs at once, the verdict comes
    about a second into the stream, with Plivo's parameters; the gateway hangs up on it."""
    async with _serving(FakeGateway(net, on=("machine", "hangup"))) as gateway:
        call = await _call(
            net,
            gateway,
            "14155550110",
            machine_detection="true",
            machine_detection_url=gateway.url("machine"),
            machine_detection_method="POST",
        )
    assert call.behaviour == "machine"
    assert call.kinds == ["ring", "answer", "machine", "hangup"]
    assert "Machine" not in gateway.params("answer")
    machine = gateway.params("machine")
    assert machine == {
        "CallUUID": call.call_uuid,
        "From": FROM,
        "To": "14155550110",
        "Direction": "outbound",
        "RequestUUID": call.request_uuid,
        "ALegUUID": call.call_uuid,
        "ALegRequestUUID": call.request_uuid,
        "Machine": "true",
        "IfMachine": "continue",
        "Event": "MachineDetection",
        "CallStatus": "in-progress",
    }
    assert call.stream_started_at is not None
    verdict_at = next(line for line in call.log if "Machine=true" in line)
    assert float(verdict_at[1:8]) - (call.stream_started_at - call.created_at) >= 0.9
    assert _ended(gateway)[-1] == "API Request"
    assert gateway.messages[-1]["event"] == "stop"


async def test_machine_detection_hangup_lets_plivo_hang_up(net: PlivoNetwork) -> None:
    async with _serving(FakeGateway(net)) as gateway:
        call = await _call(
            net,
            gateway,
            "14155550120",
            machine_detection="hangup",
            machine_detection_url=gateway.url("machine"),
        )
    assert call.kinds == ["ring", "answer", "machine", "hangup"]
    assert (gateway.params("machine")["Machine"], gateway.params("machine")["IfMachine"]) == (
        "true",
        "hangup",
    )
    assert _ended(gateway)[-1] == "Plivo"
    assert call.ended_by == "machine-detection"
    assert gateway.closed_by_network


async def test_synchronous_detection_holds_the_answer_url(net: PlivoNetwork) -> None:
    """No ``machine_detection_url``: the answer URL is fetched once the verdict is in, with ``Machine``
    (and the hangup URL has it too)."""
    async with _serving(FakeGateway(net, converse=True)) as gateway:
        call = await _call(net, gateway, "14155550105", machine_detection="true")
    assert call.kinds == ["ring", "answer", "hangup"]
    assert gateway.params("answer")["Machine"] == "false"
    assert gateway.params("hangup")["Machine"] == "false"
    assert call.answered_at is not None
    assert call.stream_started_at is not None
    assert call.stream_started_at - call.answered_at >= 0.9


async def test_synchronous_hangup_on_a_machine_never_fetches_the_answer_url(net: PlivoNetwork) -> None:
    async with _serving(FakeGateway(net)) as gateway:
        call = await _call(net, gateway, "14155550130", machine_detection="hangup")
    assert call.kinds == ["ring", "hangup"]
    assert gateway.params("hangup")["Machine"] == "true"
    assert _ended(gateway) == ("completed", "NORMAL_CLEARING", "Normal Hangup", "4000", "Plivo")
    assert int(gateway.params("hangup")["Duration"]) >= 1


@pytest.mark.parametrize(
    ("to", "kinds", "ended"),
    [
        ("14155550199", ["hangup"], ("busy", "USER_BUSY")),
        ("14155550198", ["ring", "hangup"], ("no-answer", "NO_ANSWER")),
        ("14155550197", ["ring", "hangup"], ("failed", "CALL_REJECTED")),
    ],
)
async def test_unanswered_calls(net: PlivoNetwork, to: str, kinds: list[str], ended: tuple[str, str]) -> None:
    async with _serving(FakeGateway(net)) as gateway:
        call = await _call(net, gateway, to, ring_timeout=30)
    assert call.kinds == kinds
    assert _ended(gateway)[:2] == ended
    assert gateway.params("hangup")["Duration"] == "0"
    assert call.answered_at is None


async def test_a_ring_timeout_shorter_than_the_ring_is_no_answer(net: PlivoNetwork) -> None:
    net.ring_s = 1.5
    async with _serving(FakeGateway(net)) as gateway:
        call = await _call(net, gateway, "14155550106", ring_timeout=1)
    assert call.kinds == ["ring", "hangup"]
    assert _ended(gateway)[:2] == ("no-answer", "NO_ANSWER")


async def test_speak_then_hangup_xml(net: PlivoNetwork) -> None:
    """A refusal: ``<Speak>`` is said (the call waits for it), ``<Hangup/>`` ends the call (Answer XML)."""
    async with _serving(FakeGateway(net, xml="speak")) as gateway:
        call = await _call(net, gateway, "14155550107")
    assert call.elements == ["Speak", "Hangup"]
    assert call.ended_at is not None
    assert call.answered_at is not None
    assert call.ended_at - call.answered_at >= 1.5  # 33 characters
    assert _ended(gateway) == ("completed", "NORMAL_CLEARING", "Normal Hangup", "4000", "Answer XML")
    assert gateway.messages == []


async def test_a_stream_the_gateway_closes_lets_the_xml_go_on(net: PlivoNetwork) -> None:
    """keepCallAlive: the next element runs once the gateway closes the stream; then the XML runs out (End
    Of XML Instructions)."""
    gateway = FakeGateway(net, close_after_frames=10, after_stream="<Speak>Bye</Speak>")
    async with _serving(gateway):
        call = await _call(net, gateway, "14155550108")
    assert call.elements == ["Stream", "Speak"]
    assert not gateway.closed_by_network
    assert _ended(gateway) == ("completed", "NORMAL_CLEARING", "End Of XML Instructions", "4010", "Plivo")


async def test_without_keep_call_alive_the_call_ends_with_the_xml(net: PlivoNetwork) -> None:
    gateway = FakeGateway(net, keep_call_alive=False, after_stream="<Wait length='1'/>")
    async with _serving(gateway):
        call = await _call(net, gateway, "14155550109")
    assert call.elements == ["Stream", "Wait"]
    assert gateway.messages[-1]["event"] == "stop"
    assert gateway.closed_by_network
    assert _ended(gateway)[2] == "End Of XML Instructions"
    assert call.report is not None
    assert any("keepCallAlive" in warning for warning in call.report.warnings)


async def test_clear_audio_is_acknowledged_and_its_checkpoint_dropped(net: PlivoNetwork) -> None:
    async with _serving(FakeGateway(net, clear=True, close_after_frames=60)) as gateway:
        await _call(net, gateway, "14155550111")
    events = [m["event"] for m in gateway.messages]
    assert "clearedAudio" in events
    assert gateway.played == []


async def test_a_transfer_stops_the_stream_and_runs_the_aleg_url(net: PlivoNetwork) -> None:
    """``POST …/Call/{uuid}/`` with ``legs=aleg``: 202; the stream gets ``stop``; the aleg_url is fetched
    (signed) and run; a transfer of an unknown call is a 404."""
    async with _serving(FakeGateway(net, on=("start", "transfer"))) as gateway:
        call = await _call(net, gateway, "14155550112")
        await gateway.act("transfer", {"CallUUID": str(uuid.uuid4())})
    assert gateway.statuses == [("transfer", 202), ("transfer", 404)]
    assert call.kinds == ["ring", "answer", "transfer", "hangup"]
    assert gateway.params("transfer")["CallStatus"] == "in-progress"
    assert gateway.messages[-1]["event"] == "stop"
    assert call.elements == ["Stream", "Speak", "Dial"]
    assert _ended(gateway)[2] == "End Of XML Instructions"


async def test_the_hangup_url_defaults_to_the_answer_url_and_get_callbacks_are_signed(
    net: PlivoNetwork,
) -> None:
    """No hangup_url: the hangup goes to the answer URL; GET methods put the parameters in the query, and the
    V3 signature covers them with the URL's own query."""
    async with _serving(FakeGateway(net, xml="speak")) as gateway:
        status, reply = await _make(
            net,
            _body(
                gateway,
                "14155550113",
                hangup_url=None,
                answer_method="GET",
                hangup_method="GET",
                ring_method="GET",
            ),
        )
        assert status == 201
        call = await net.wait(reply["request_uuid"], 10)
    assert gateway.bad_signatures == 0
    assert [(kind, method) for kind, method, _ in gateway.received] == [
        ("ring", "GET"),
        ("answer", "GET"),
        ("answer", "GET"),
    ]
    assert gateway.received[-1][2]["Event"] == "Hangup"
    assert call.callbacks[-1].kind == "hangup"


async def test_an_answer_that_is_not_xml_ends_the_call(net: PlivoNetwork) -> None:
    async with _serving(FakeGateway(net, xml="not-xml")) as gateway:
        status, reply = await _make(net, _body(gateway, "14155550114"))
        assert status == 201
        call = await net.wait(reply["request_uuid"], 10)
    assert "invalid XML" in call.error
    assert "Content-Type" in call.problems[0]
    assert _ended(gateway)[-1] == "Error"


def test_signature_v3_matches_the_sdks_construction() -> None:
    """The simulated side's signer against the SDK's check: a query of its own, repeated keys, GET."""
    url = "https://gw.example/plivo/answer?b=2&a=1&a=0"
    params = {"CallUUID": "x", "From": "1415", "Empty": ""}
    for method in ("POST", "GET"):
        signature = sign_v3(TOKEN, url, "12345", params, method=method)
        assert validate_v3_signature(method, url, "12345", TOKEN, signature, dict(params))


def test_the_cli_needs_plivos_credentials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PLIVO_AUTH_ID", raising=False)
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "x")
    parser = argparse.ArgumentParser()
    network_cli.configure(parser)
    assert network_cli.run(parser.parse_args(["--provider", "plivo"])) == 2
    err = capsys.readouterr().err
    assert "PLIVO_AUTH_ID" in err
    assert "PLIVO_AUTH_TOKEN" in err
    assert err.count("\n") == 1
