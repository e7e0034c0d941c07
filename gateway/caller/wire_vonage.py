"""Vonage's side of the wire, written independently of :mod:`gateway.telephony`.

The simulated caller must not share the gateway's Vonage code, or a mistake in it would be mirrored
here. This module builds the answer webhook Vonage sends for an inbound call (GET with ``to``, ``from``,
``uuid``, ``conversation_uuid``; signed with a JWT, HS256 under the signature secret, whose
``payload_hash`` is the SHA-256 of the parameters), reads the NCCO Vonage would follow (a ``connect``
to a ``websocket`` endpoint), formats every text message Vonage sends on the socket
(``websocket:connected`` with the endpoint's headers flattened into it, ``websocket:dtmf``,
``websocket:notify``, ``websocket:cleared``) and checks every message the gateway sends: binary audio
of exactly one 20 ms frame, text ``{"action":"clear"}`` and ``{"action":"notify","payload":{…}}``.
Sources: Vonage's "WebSockets in the Vonage Voice API" guide and NCCO reference (``connect``,
websocket endpoint: ``uri``, ``content-type``, ``headers`` ≤ 512 bytes, ``authorization``), its
"Signed webhooks" page, and the "Play audio into a WebSocket" tutorial (message sizes, buffering).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt
from jwt.warnings import InsecureKeyLengthWarning

from gateway.errors import TelephonyProtocolError

#: Endpoint ``content-type`` values Vonage streams, and the rate of each.
CONTENT_TYPES = {"audio/l16;rate=8000": 8000, "audio/l16;rate=16000": 16000, "audio/l16;rate=24000": 24000}


def new_uuid() -> str:
    """A call or conversation id as Vonage writes them (a lowercase UUID; conversations ``CON-…``)."""
    return str(uuid.uuid4())


def frame_bytes(rate: int) -> int:
    """One 20 ms frame of 16-bit mono audio at ``rate``: 320, 640 or 960 bytes."""
    return rate // 50 * 2


def answer_query(*, call_uuid: str, from_: str, to: str) -> dict[str, str]:
    """The parameters of Vonage's answer webhook for an inbound call (numbers without ``+``)."""
    return {
        "to": to.lstrip("+"),
        "from": from_.lstrip("+"),
        "uuid": call_uuid,
        "conversation_uuid": "CON-" + new_uuid(),
    }


def signed_jwt(secret: str, payload: bytes, *, now: float | None = None) -> str:
    """The JWT of a signed webhook: HS256 under the signature secret, ``payload_hash`` = SHA-256 (hex)."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iat": issued,
        "jti": new_uuid(),
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(payload).hexdigest(),
        "api_key": "a1b2c3d4",
        "application_id": new_uuid(),
    }
    with warnings.catch_warnings():  # a short test secret is the test's business
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm="HS256")


def query_payload(params: Mapping[str, str]) -> bytes:
    """What a GET webhook's ``payload_hash`` covers: its parameters as compact JSON, in order."""
    return json.dumps(dict(params), separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The websocket endpoint of an NCCO ``connect``, as Vonage reads it."""

    uri: str
    content_type: str
    headers: dict[str, str]
    #: What Vonage sends in the upgrade's ``Authorization`` header ("" for none).
    authorization: str = ""
    event_url: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def rate(self) -> int:
        return CONTENT_TYPES[self.content_type]


def parse_ncco(body: str, *, signature_secret: str = "") -> tuple[Endpoint | None, list[str]]:
    """The websocket endpoint of the answer's ``connect`` (None if there is none) and every action.

    Raises:
        TelephonyProtocolError: not an NCCO, or a websocket endpoint Vonage would refuse.
    """
    try:
        ncco = json.loads(body)
    except ValueError as exc:
        raise TelephonyProtocolError(f"the answer is not JSON: {exc}") from exc
    if not isinstance(ncco, list) or not all(isinstance(a, dict) for a in ncco):
        raise TelephonyProtocolError("an NCCO is a JSON array of action objects")
    actions = [str(a.get("action")) for a in ncco]
    for action in ncco:
        if action.get("action") != "connect":
            continue
        endpoints = action.get("endpoint")
        if not isinstance(endpoints, list) or len(endpoints) != 1 or not isinstance(endpoints[0], dict):
            raise TelephonyProtocolError("connect.endpoint must be an array of one endpoint")
        ep: dict[str, Any] = endpoints[0]
        if ep.get("type") != "websocket":
            continue
        uri = ep.get("uri")
        if not isinstance(uri, str) or urlsplit(uri).scheme not in ("ws", "wss"):
            raise TelephonyProtocolError(f"websocket endpoint uri must be ws(s)://, got {uri!r}")
        ctype = str(ep.get("content-type", "")).replace(" ", "").lower()
        if ctype not in CONTENT_TYPES:
            raise TelephonyProtocolError(f"websocket content-type {ctype!r} is not one Vonage streams")
        headers = ep.get("headers", {})
        if not isinstance(headers, dict):
            raise TelephonyProtocolError("websocket headers must be an object")
        if len(json.dumps(headers, separators=(",", ":")).encode()) > 512:
            raise TelephonyProtocolError("websocket headers exceed 512 bytes")
        auth = ep.get("authorization")
        value = ""
        if isinstance(auth, dict):
            if auth.get("type") == "custom" and isinstance(auth.get("value"), str):
                value = auth["value"]
            elif auth.get("type") == "vonage":
                value = "Bearer " + signed_jwt(signature_secret or "unset", b"")
            else:
                raise TelephonyProtocolError(f"websocket authorization {auth!r} is not vonage or custom")
        event_url = action.get("eventUrl")
        return (
            Endpoint(
                uri=uri,
                content_type=ctype,
                headers={str(k): v if isinstance(v, str) else json.dumps(v) for k, v in headers.items()},
                authorization=value,
                event_url=event_url[0] if isinstance(event_url, list) and event_url else None,
            ),
            actions,
        )
    return None, actions


# --- what Vonage sends on the socket ---------------------------------------------------------------


def connected(content_type: str, headers: Mapping[str, str]) -> str:
    """The first message: the content-type and the endpoint's headers at the top level."""
    return json.dumps({**headers, "event": "websocket:connected", "content-type": content_type})


def dtmf(digit: str, duration_ms: int = 260) -> str:
    """One key the caller pressed."""
    return json.dumps({"event": "websocket:dtmf", "digit": digit, "duration": duration_ms})


def notify(payload: Mapping[str, Any]) -> str:
    """The echo of a ``notify``: the audio sent before it has played."""
    return json.dumps({"event": "websocket:notify", "payload": dict(payload)})


def cleared() -> str:
    """The acknowledgement of ``clear``."""
    return json.dumps({"event": "websocket:cleared"})


# --- what the gateway sends ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClearMsg:
    """``{"action":"clear"}``: drop the queued audio."""


@dataclass(frozen=True, slots=True)
class NotifyMsg:
    """``{"action":"notify","payload":{…}}``: echo the payload once the audio before it has played."""

    payload: dict[str, Any]


def parse_gateway_text(text: str) -> ClearMsg | NotifyMsg:
    """Check one text frame from the gateway as Vonage reads it.

    Raises:
        ValueError: naming what Vonage would reject.
    """
    try:
        msg = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {text[:60]!r}") from exc
    if not isinstance(msg, dict):
        raise ValueError("message is not a JSON object")
    action = msg.get("action")
    if action == "clear":
        return ClearMsg()
    if action == "notify":
        payload = msg.get("payload")
        if not isinstance(payload, dict):
            raise ValueError("notify without a payload object")
        return NotifyMsg(payload)
    raise ValueError(f"unknown action {action!r} (Vonage takes clear and notify as text; audio as binary)")


def check_audio(data: bytes, rate: int) -> None:
    """Raise ValueError unless ``data`` is exactly one 20 ms frame of L16 at ``rate``."""
    if len(data) != frame_bytes(rate):
        raise ValueError(
            f"binary message of {len(data)} bytes: Vonage takes exactly {frame_bytes(rate)} "
            f"(20 ms at {rate} Hz)"
        )
