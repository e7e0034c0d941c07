"""Hostile-client probes: the traffic an attacker or a broken peer sends, to check the gateway's defences.

Used by ``bench/abuse.py`` and the server fuzz tests; never by the gateway itself. Each
:class:`Probe` is one connection: an HTTP request to the voice webhook, or a media WebSocket with a
list of frames to send. :func:`run_probe` sends it and reports how the gateway answered (HTTP status,
or the close code and reason of the socket). Probes are generated from a seeded RNG, so a failing
run can be replayed exactly.

Unauthenticated probes must never cost a Gemini session; authenticated ones (:func:`abusive_call`)
carry a real stream token and must end only their own call.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.errors import AuthError
from gateway.telephony.signature import twilio_signature

VOICE_PATH = "/twilio/voice"
MEDIA_PATH = "/twilio/media"

Frame = str | bytes


@dataclass(frozen=True)
class Probe:
    """One hostile connection. ``frames`` go to the media socket; ``form`` (if set) to the webhook."""

    kind: str
    frames: tuple[Frame, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    form: tuple[tuple[str, str], ...] | None = None
    #: Raw webhook body instead of ``form`` (malformed encodings).
    body: bytes | None = None


@dataclass
class ProbeResult:
    kind: str
    http_status: int | None = None
    close_code: int | None = None
    close_reason: str = ""
    #: Text the gateway sent back (HTTP body, or text frames), for leak checks.
    replies: list[str] = field(default_factory=list)
    error: str = ""


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def connected() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start(call_sid: str, stream_sid: str, parameters: dict[str, Any] | None = None, seq: int = 1) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "start": {
                "accountSid": _sid("AC"),
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": parameters or {},
            },
        }
    )


def media(stream_sid: str, seq: int, payload: str | None = None) -> str:
    data = payload if payload is not None else base64.b64encode(b"\xff" * 160).decode()
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "media": {"track": "inbound", "chunk": str(seq), "timestamp": str(seq * 20), "payload": data},
        }
    )


def _junk_json(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(8 if depth < 3 else 5)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.randint(-(2**63), 2**63)
    if pick == 3:
        return rng.choice([1e308, -0.0, 3.14])
    if pick == 4:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(12)))
    if pick == 5:
        return [_junk_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["event", "start", "media", "payload", "streamSid", "callSid", "customParameters", "token", "x"]
    return {rng.choice(keys): _junk_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def _pre_auth_probes(rng: random.Random) -> list[Callable[[], Probe]]:
    """Media-socket probes that never hold a valid token."""
    stream = _sid("MZ")

    def bad_token(token: str) -> Probe:
        return Probe("bad-token", (connected(), start(_sid("CA"), stream, {"token": token})))

    return [
        lambda: Probe("malformed-json", (connected(), '{"event": "start", "start": {')),
        lambda: Probe("not-json", ("\x00\x01garbage",)),
        lambda: Probe("wrong-types", (connected(), json.dumps(_junk_json(rng)))),
        lambda: Probe(
            "wrong-types", (json.dumps({"event": "start", "start": rng.choice([[], 7, "x", None])}),)
        ),
        lambda: Probe("binary-frame", (connected(), bytes(rng.randrange(256) for _ in range(64)))),
        lambda: Probe("huge-message", (connected(), '{"event":"connected","pad":"' + "A" * 200_000 + '"}')),
        lambda: Probe("invalid-base64", (connected(), media(stream, 2, payload="!!not base64!!"))),
        lambda: Probe("out-of-order", (connected(), media(stream, 2))),
        lambda: Probe(
            "out-of-order",
            (json.dumps({"event": "stop", "streamSid": stream, "sequenceNumber": "1", "stop": {}}),),
        ),
        lambda: Probe("flood", (connected(), *(connected() for _ in range(rng.randrange(50, 400))))),
        lambda: Probe("no-token", (connected(), start(_sid("CA"), stream))),
        lambda: bad_token("v1.e30.AAAA"),
        lambda: bad_token("x" * rng.randrange(1, 5000)),
        lambda: bad_token(rng.choice(["", "v1..", "v1.\u00e9.\u00e9", "..", "v1." + "A" * 300 + ".B"])),
        lambda: Probe("bad-token-type", (connected(), start(_sid("CA"), stream, {"token": 12345}))),
        lambda: Probe(
            "unsigned-upgrade",
            (connected(), start(_sid("CA"), stream)),
            headers=(("X-Twilio-Signature", ""),),
        ),
        lambda: Probe(
            "bad-ws-signature",
            (connected(), start(_sid("CA"), stream, {"token": "v1.e30.AAAA"})),
            headers=(("X-Twilio-Signature", base64.b64encode(secrets.token_bytes(20)).decode()),),
        ),
    ]


def _webhook_probes(rng: random.Random) -> list[Callable[[], Probe]]:
    def form(**extra: str) -> tuple[tuple[str, str], ...]:
        base = {"CallSid": _sid("CA"), "AccountSid": _sid("AC"), "From": "+15550001111", "To": "+15551230000"}
        base.update(extra)
        return tuple(base.items())

    return [
        lambda: Probe("webhook-unsigned", form=form()),
        lambda: Probe(
            "webhook-bad-signature",
            form=form(),
            headers=(("X-Twilio-Signature", base64.b64encode(secrets.token_bytes(20)).decode()),),
        ),
        lambda: Probe("webhook-proxied-unsigned", form=form(), headers=(("X-Forwarded-For", "203.0.113.9"),)),
        lambda: Probe("webhook-huge-body", body=b"CallSid=" + b"A" * 600_000),
        lambda: Probe("webhook-garbage-body", body=bytes(rng.randrange(256) for _ in range(200))),
    ]


def hostile_probes(rng: random.Random, count: int, *, webhooks: bool = True) -> list[Probe]:
    """``count`` probes drawn from every kind (unauthenticated: none may cost a Gemini session)."""
    makers = _pre_auth_probes(rng) + (_webhook_probes(rng) if webhooks else [])
    return [makers[i % len(makers)]() for i in range(count)]


async def _send_all(ws: aiohttp.ClientWebSocketResponse, frames: tuple[Frame, ...]) -> None:
    for frame in frames:
        if ws.closed:
            return
        try:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
        except (aiohttp.ClientError, ConnectionError):
            return  # the gateway closed the socket mid-burst: its close frame is read below


async def run_probe(
    http: aiohttp.ClientSession, base_url: str, probe: Probe, *, wait_s: float = 5.0, auth_token: str = ""
) -> ProbeResult:
    """Send one probe and report the HTTP status or how the socket was closed; never raises.

    ``auth_token``: sign the media upgrade as Twilio does (a probe with its own signature keeps it), so
    the probe reaches what lies behind the upgrade check. The upgrade's signature covers only the URL:
    this is what an attacker holding one captured signature can do, for ever.
    """
    result = ProbeResult(probe.kind)
    headers = dict(probe.headers)
    try:
        if probe.form is not None or probe.body is not None:
            data: Any = probe.body if probe.body is not None else dict(probe.form or ())
            if probe.body is not None:
                headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
            async with http.post(base_url + VOICE_PATH, data=data, headers=headers) as resp:
                result.http_status = resp.status
                result.replies.append(await resp.text())
            return result
        ws_url = base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + MEDIA_PATH
        if auth_token:
            headers.setdefault("X-Twilio-Signature", twilio_signature(auth_token, ws_url))
        async with http.ws_connect(ws_url, headers=headers, max_msg_size=0) as ws:
            async with asyncio.timeout(wait_s):
                await _send_all(ws, probe.frames)
                while True:
                    msg = await ws.receive()
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        result.replies.append(msg.data)
                    elif msg.type is aiohttp.WSMsgType.CLOSE:
                        result.close_reason = str(msg.extra or "")
                        break
                    elif msg.type in (
                        aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR,
                    ):
                        break
            result.close_code = ws.close_code
    except aiohttp.WSServerHandshakeError as exc:
        result.http_status = exc.status
    except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


async def stream_token(
    http: aiohttp.ClientSession, base_url: str, *, to: str, auth_token: str = "", call_sid: str = ""
) -> tuple[str, str]:
    """Answer-side half of a real call: POST the (signed) webhook and return (call SID, stream token).

    ``call_sid``: the webhook of that call again (a Twilio retry, or a replay); default a new call.

    Raises:
        AuthError: the webhook answered without a stream token (refused, or over capacity).
    """
    call_sid = call_sid or _sid("CA")
    form = {"CallSid": call_sid, "AccountSid": _sid("AC"), "From": "+15550001111", "To": to}
    url = base_url + VOICE_PATH
    headers = {"X-Twilio-Signature": twilio_signature(auth_token, url, form)} if auth_token else {}
    async with http.post(url, data=form, headers=headers) as resp:
        body = await resp.text()
    try:
        params = {p.get("name"): p.get("value") for p in ET.fromstring(body).iter("Parameter")}
    except ET.ParseError:
        params = {}
    token = params.get("token")
    if not token:
        raise AuthError(f"the webhook issued no stream token (HTTP {resp.status})")
    return call_sid, token


#: Misbehaviour after authenticating: each must end only its own call, with a clear close code.
ABUSIVE_KINDS = ("flood", "garbage-json", "invalid-base64", "second-start", "binary-frame", "huge-message")


def abusive_frames(kind: str, call_sid: str, token: str, rng: random.Random) -> tuple[Frame, ...]:
    """An authenticated stream (``connected``, ``start`` with ``token``) followed by ``kind`` abuse."""
    stream = _sid("MZ")
    opening: tuple[Frame, ...] = (connected(), start(call_sid, stream, {"token": token}))
    tail: tuple[Frame, ...]
    if kind == "flood":
        tail = tuple(media(stream, i) for i in range(2, 3000))
    elif kind == "garbage-json":
        tail = (media(stream, 2), json.dumps(_junk_json(rng)) + "}")
    elif kind == "invalid-base64":
        tail = (media(stream, 2), media(stream, 3, payload="%%%"))
    elif kind == "second-start":
        tail = (media(stream, 2), start(call_sid, stream, {"token": token}, seq=3))
    elif kind == "binary-frame":
        tail = (media(stream, 2), b"\x00" * 320)
    elif kind == "huge-message":
        tail = (media(stream, 2, payload="A" * 300_000),)
    else:
        raise ValueError(f"unknown abuse kind {kind!r}")
    return opening + tail
