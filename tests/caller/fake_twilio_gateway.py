"""A tiny Twilio-facing server for the caller's tests: answers the voice webhook, accepts the media
socket, checks every message the caller sends is exactly Twilio-shaped, and runs a script that
plays the gateway's part (media, marks, clear, closing)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from twilio.request_validator import RequestValidator

SHAPES: dict[str, tuple[set[str], str | None, set[str]]] = {
    "connected": ({"event", "protocol", "version"}, None, set()),
    "start": (
        {"event", "sequenceNumber", "start", "streamSid"},
        "start",
        {"accountSid", "streamSid", "callSid", "tracks", "mediaFormat", "customParameters"},
    ),
    "media": (
        {"event", "sequenceNumber", "media", "streamSid"},
        "media",
        {"track", "chunk", "timestamp", "payload"},
    ),
    "dtmf": ({"event", "streamSid", "sequenceNumber", "dtmf"}, "dtmf", {"track", "digit"}),
    "mark": ({"event", "sequenceNumber", "streamSid", "mark"}, "mark", {"name"}),
    "stop": ({"event", "sequenceNumber", "streamSid", "stop"}, "stop", {"accountSid", "callSid"}),
}


def tone(ms: int, level: int = 0x20) -> bytes:
    """An audible μ-law square-ish tone of ``ms`` milliseconds."""
    return bytes([level, level ^ 0x80] * 4) * ms  # 8 samples per ms


@dataclass
class Received:
    t: float
    msg: dict[str, Any]


@dataclass
class FakeGateway:
    auth_token: str = ""
    parameters: dict[str, str] = field(
        default_factory=lambda: {"from_number": "+15550001111", "tenant": "a&b"}
    )
    twiml: str | None = None
    script: Callable[[FakeGateway, web.WebSocketResponse], Awaitable[None]] | None = None
    form: dict[str, str] = field(default_factory=dict)
    webhook_signature_ok: bool | None = None
    ws_signature_ok: bool | None = None
    ws_query: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    shape_errors: list[str] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    stream_sid: str = ""
    new_message: asyncio.Condition = field(default_factory=asyncio.Condition)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/twilio/voice", self.voice)
        app.router.add_get("/twilio/media", self.media)
        return app

    async def voice(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.form = {k: str(v) for k, v in form.items()}
        if self.auth_token:
            url = str(request.url)
            sig = request.headers.get("X-Twilio-Signature", "")
            self.webhook_signature_ok = RequestValidator(self.auth_token).validate(url, self.form, sig)
            if not self.webhook_signature_ok:
                return web.Response(status=403)
        if self.twiml is not None:
            return web.Response(text=self.twiml, content_type="text/xml")
        params = "".join(
            f'<Parameter name="{k}" value="{v.replace("&", "&amp;")}"/>' for k, v in self.parameters.items()
        )
        url = f"ws://{request.host}/twilio/media?dropped=yes"
        twiml = (
            '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
            f'<Stream url="{url}">{params}</Stream></Connect><Say>Bye</Say></Response>'
        )
        return web.Response(text=twiml, content_type="text/xml")

    async def media(self, request: web.Request) -> web.StreamResponse:
        self.ws_query = dict(request.query)
        if self.auth_token:
            url = f"ws://{request.host}{request.path}"
            sig = request.headers.get("X-Twilio-Signature", "")
            self.ws_signature_ok = RequestValidator(self.auth_token).validate(url, {}, sig)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        script_task: asyncio.Task[None] | None = None
        async for raw in ws:
            msg = json.loads(raw.data)
            self.check_shape(msg)
            async with self.new_message:
                self.received.append(Received(loop.time(), msg))
                self.new_message.notify_all()
            if msg["event"] == "start":
                self.stream_sid = msg["streamSid"]
                self.started.set()
                if self.script is not None:
                    script_task = asyncio.create_task(self.script(self, ws))
        if script_task is not None:
            script_task.cancel()
        return ws

    def check_shape(self, msg: dict[str, Any]) -> None:
        event = msg.get("event")
        if event not in SHAPES:
            self.shape_errors.append(f"unknown event {event}")
            return
        top, inner, inner_keys = SHAPES[event]
        if set(msg) != top:
            self.shape_errors.append(f"{event}: keys {sorted(msg)}")
        if inner is not None and set(msg[inner]) != inner_keys:
            self.shape_errors.append(f"{event}.{inner}: keys {sorted(msg[inner])}")
        if "sequenceNumber" in msg and not isinstance(msg["sequenceNumber"], str):
            self.shape_errors.append(f"{event}: sequenceNumber not a string")

    def events(self, name: str) -> list[Received]:
        return [r for r in self.received if r.msg["event"] == name]

    async def wait_for(self, predicate: Callable[[Received], bool]) -> Received:
        """The first received message matching ``predicate``, waiting up to 5 s for it."""
        async with asyncio.timeout(5), self.new_message:
            while True:
                for r in self.received:
                    if predicate(r):
                        return r
                await self.new_message.wait()

    async def wait_len(self, count: int) -> Received:
        """The ``count``-th received message (1-based), waiting up to 5 s for it."""
        async with asyncio.timeout(5), self.new_message:
            await self.new_message.wait_for(lambda: len(self.received) >= count)
            return self.received[count - 1]

    async def send_media(self, ws: web.WebSocketResponse, payload: bytes) -> None:
        await ws.send_json(
            {
                "event": "media",
                "streamSid": self.stream_sid,
                "media": {"payload": base64.b64encode(payload).decode()},
            }
        )

    async def send_mark(self, ws: web.WebSocketResponse, name: str) -> float:
        await ws.send_json({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
        return asyncio.get_running_loop().time()

    async def send_clear(self, ws: web.WebSocketResponse) -> float:
        await ws.send_json({"event": "clear", "streamSid": self.stream_sid})
        return asyncio.get_running_loop().time()
