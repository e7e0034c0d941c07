"""Telnyx's side of the wire, written independently of :mod:`gateway.telephony`.

The simulated caller must not share the gateway's Telnyx code, or a mistake in it would be mirrored here
and go unnoticed. This module plays Telnyx for both ways of answering a call:

* TeXML: the form request to the application's voice URL, and reading the ``<Connect><Stream>`` answer;
* Call Control: the JSON ``call.initiated`` webhook, and reading the ``answer`` command the gateway sends
  to the REST API (``POST /v2/calls/{call_control_id}/actions/answer``) for the stream parameters;

both signed as Telnyx signs (Ed25519 over ``"{timestamp}|{raw body}"``, ``telnyx-signature-ed25519`` and
``telnyx-timestamp``); then every message Telnyx sends on the media stream, field for field as the
"Stream call media over WebSocket" AsyncAPI page shows them, and the checks Telnyx makes on what comes
back in RTP mode (``media`` of 20 ms to 30 s, ``mark``, ``clear``). L16 travels in network byte order.
"""

from __future__ import annotations

import array
import base64
import binascii
import dataclasses
import json
import secrets
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import unquote, urljoin, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from gateway.caller import wire
from gateway.errors import ConfigError, TelephonyProtocolError

SIGNATURE_HEADER: Final = "telnyx-signature-ed25519"
TIMESTAMP_HEADER: Final = "telnyx-timestamp"
#: Sample rate of each RTP codec the gateway may ask for (Telnyx: L16 runs at 16 kHz).
RATES: Final[Mapping[str, int]] = {"PCMU": 8000, "PCMA": 8000, "L16": 16000}
_WIDTH: Final[Mapping[str, int]] = {"PCMU": 1, "PCMA": 1, "L16": 2}


def new_call_control_id() -> str:
    """A Call Control id shaped like Telnyx's: a version prefix and base64url."""
    return "v3:" + secrets.token_urlsafe(36)


def new_id() -> str:
    """Telnyx names streams, sessions, legs and users with UUIDs (stream ids upper-case in its example)."""
    return str(uuid.uuid4())


# --- signing ------------------------------------------------------------------------------------


def new_signing_key() -> Ed25519PrivateKey:
    """A key pair standing in for Telnyx's; give the gateway :func:`public_key_b64` of it."""
    return Ed25519PrivateKey.generate()


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """The public half as Mission Control shows it: base64 of the 32 raw bytes."""
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def private_key_b64(key: Ed25519PrivateKey) -> str:
    """The private half as base64 of its 32 raw bytes: what ``gateway call --auth-token`` takes."""
    return base64.b64encode(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode()


def load_signing_key(encoded: str) -> Ed25519PrivateKey:
    """A key from :func:`private_key_b64`'s form.

    Raises:
        ConfigError: not base64 of 32 bytes.
    """
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError("a Telnyx signing key is base64 of a 32-byte Ed25519 private key")
    return Ed25519PrivateKey.from_private_bytes(raw)


def signed_headers(key: Ed25519PrivateKey, body: bytes, *, timestamp: int) -> dict[str, str]:
    """The two headers Telnyx adds to every webhook and TeXML request."""
    signature = key.sign(str(timestamp).encode() + b"|" + body)
    return {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: str(timestamp)}


# --- the call arrives -----------------------------------------------------------------------------


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def call_initiated(
    *,
    call_control_id: str,
    call_leg_id: str,
    call_session_id: str,
    connection_id: str,
    from_: str,
    to: str,
    delivered_to: str,
) -> bytes:
    """The Call Control ``call.initiated`` webhook body for an inbound call (raw bytes: they are signed)."""
    doc = {
        "data": {
            "event_type": "call.initiated",
            "id": new_id(),
            "occurred_at": _now_iso(),
            "payload": {
                "call_control_id": call_control_id,
                "call_leg_id": call_leg_id,
                "call_session_id": call_session_id,
                "client_state": None,
                "connection_id": connection_id,
                "direction": "incoming",
                "from": from_,
                "start_time": _now_iso(),
                "state": "parked",
                "to": to,
            },
            "record_type": "event",
        },
        "meta": {"attempt": 1, "delivered_to": delivered_to},
    }
    return json.dumps(doc).encode()


def call_event(
    event_type: str,
    *,
    call_control_id: str,
    call_leg_id: str,
    call_session_id: str,
    connection_id: str,
    delivered_to: str,
    payload: Mapping[str, Any] | None = None,
) -> bytes:
    """Any later Call Control webhook (``call.answered``, ``streaming.started``, ``call.hangup``…): the
    call's ids and ``payload``'s event-specific fields, shaped as ``call.initiated`` is."""
    body: dict[str, Any] = {
        "call_control_id": call_control_id,
        "call_leg_id": call_leg_id,
        "call_session_id": call_session_id,
        "client_state": None,
        "connection_id": connection_id,
        **(payload or {}),
    }
    doc = {
        "data": {
            "event_type": event_type,
            "id": new_id(),
            "occurred_at": _now_iso(),
            "payload": body,
            "record_type": "event",
        },
        "meta": {"attempt": 1, "delivered_to": delivered_to},
    }
    return json.dumps(doc).encode()


def texml_voice_form(
    *, call_sid: str, account_sid: str, call_session_id: str, connection_id: str, from_: str, to: str
) -> dict[str, str]:
    """The form a TeXML application's voice URL receives (Twilio-compatible names; the full list Telnyx
    sends is not documented in what was read, so only the fields the gateway may use are here)."""
    return {
        "AccountSid": account_sid,
        "CallSid": call_sid,
        "CallSessionId": call_session_id,
        "CallStatus": "ringing",
        "ConnectionId": connection_id,
        "Direction": "inbound",
        "From": from_,
        "To": to,
    }


@dataclasses.dataclass(frozen=True, slots=True)
class StreamRequest:
    """The media stream the gateway asked for, by TeXML or by the ``answer`` command."""

    url: str
    track: str
    codec: str
    bidirectional_mode: str
    bidirectional_codec: str
    #: TeXML verbs after ``<Connect>`` (empty for Call Control).
    after: list[str] = dataclasses.field(default_factory=list)


def _check(req: StreamRequest) -> StreamRequest:
    parts = urlsplit(req.url)
    if parts.scheme not in ("wss", "ws") or not parts.netloc:
        raise TelephonyProtocolError(f"Telnyx streams to ws(s):// URLs, not {req.url!r}")
    if req.track not in ("inbound_track", "outbound_track", "both_tracks"):
        raise TelephonyProtocolError(f"unknown stream track {req.track!r}")
    if req.bidirectional_mode != "rtp":
        raise TelephonyProtocolError(f"bidirectional mode {req.bidirectional_mode!r}: raw audio needs 'rtp'")
    if req.bidirectional_codec not in RATES:
        raise TelephonyProtocolError(
            f"bidirectional codec {req.bidirectional_codec!r} is not PCMU, PCMA or L16"
        )
    return req


def parse_texml(text: str, webhook_url: str) -> StreamRequest | None:
    """The bidirectional stream a TeXML answer asks for, or None when it has no ``<Connect>``.

    Raises:
        TelephonyProtocolError: not TeXML, no ``<Stream url>``, or a stream Telnyx would not run as asked.
    """
    found = wire.connect_stream(text, dialect="TeXML", source="voice URL")
    if found is None:
        return None
    stream, after = found
    rate = stream.get("bidirectionalSamplingRate", "8000")
    if rate != "8000":
        raise TelephonyProtocolError(f"PCMU/PCMA run at 8000 Hz, not bidirectionalSamplingRate={rate}")
    return _check(
        StreamRequest(
            url=urljoin(webhook_url, stream.get("url", "")),
            track=stream.get("track", "inbound_track"),
            codec=stream.get("codec", "default"),
            bidirectional_mode=stream.get("bidirectionalMode", "mp3"),
            bidirectional_codec=stream.get("bidirectionalCodec", "PCMU"),
            after=after,
        )
    )


def parse_action_path(path: str) -> tuple[str, str]:
    """``(call_control_id, action)`` of a Call Control command path ``…/calls/{id}/actions/{action}``.

    Raises:
        TelephonyProtocolError: not a Call Control command path.
    """
    parts = urlsplit(path).path.rstrip("/").split("/")
    if len(parts) < 4 or parts[-4] != "calls" or parts[-2] != "actions" or not parts[-3]:
        raise TelephonyProtocolError(f"not a Call Control command path: {path!r}")
    return unquote(parts[-3]), parts[-1]


def parse_answer(body: bytes) -> StreamRequest:
    """The stream parameters of an ``answer`` command body, as Telnyx would run them.

    Raises:
        TelephonyProtocolError: not a JSON object, no ``stream_url``, or a stream Telnyx would not run.
    """
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise TelephonyProtocolError("answer command body is not JSON") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("stream_url"), str):
        raise TelephonyProtocolError("answer command without a stream_url")

    def text(key: str, default: str) -> str:
        value = doc.get(key, default)
        if not isinstance(value, str):
            raise TelephonyProtocolError(f"answer command: {key} must be a string")
        return value

    return _check(
        StreamRequest(
            url=doc["stream_url"],
            track=text("stream_track", "inbound_track"),
            codec=text("stream_codec", "default"),
            bidirectional_mode=text("stream_bidirectional_mode", "mp3"),
            bidirectional_codec=text("stream_bidirectional_codec", "PCMU"),
        )
    )


# --- messages Telnyx sends on the stream ------------------------------------------------------------


def connected() -> str:
    """First frame: only the protocol version."""
    return json.dumps({"event": "connected", "version": "1.0.0"})


def start(
    seq: int,
    *,
    stream_id: str,
    call_control_id: str,
    call_session_id: str,
    user_id: str,
    from_: str,
    to: str,
    encoding: str = "PCMU",
    custom_parameters: Mapping[str, str] | None = None,
    client_state: str | None = None,
) -> str:
    """The ``start`` frame: the stream id on top, the call and its media format inside."""
    body: dict[str, Any] = {
        "user_id": user_id,
        "call_control_id": call_control_id,
        "call_session_id": call_session_id,
        "from": from_,
        "to": to,
        "tags": [],
        "client_state": client_state,
    }
    if custom_parameters:
        body["custom_parameters"] = dict(custom_parameters)
    body["media_format"] = {"encoding": encoding, "sample_rate": RATES[encoding], "channels": 1}
    return json.dumps({"event": "start", "sequence_number": str(seq), "stream_id": stream_id, "start": body})


def media(seq: int, *, stream_id: str, chunk: int, timestamp_ms: int, payload: bytes) -> str:
    """One inbound ``media`` frame: base64 of the RTP payload (no RTP header), counters as strings."""
    return (
        f'{{"event":"media","sequence_number":"{seq}","media":{{"track":"inbound","chunk":"{chunk}",'
        f'"timestamp":"{timestamp_ms}","payload":"{base64.b64encode(payload).decode()}"}},'
        f'"stream_id":"{stream_id}"}}'
    )


def dtmf(seq: int, *, stream_id: str, digit: str) -> str:
    """A key press, stamped with when the media engine saw it (Telnyx may deliver these out of order)."""
    return json.dumps(
        {
            "event": "dtmf",
            "stream_id": stream_id,
            "occurred_at": _now_iso(),
            "sequence_number": str(seq),
            "dtmf": {"digit": digit},
        }
    )


def mark(seq: int, *, stream_id: str, name: str) -> str:
    """Echo of a mark the gateway sent, once the media before it has played (or was cleared)."""
    return json.dumps(
        {"event": "mark", "sequence_number": str(seq), "stream_id": stream_id, "mark": {"name": name}}
    )


def error(seq: int, *, stream_id: str, code: int, title: str, detail: str) -> str:
    """Telnyx refusing a frame (100003 ``malformed_frame``, 100004 ``invalid_media``, …)."""
    return json.dumps(
        {
            "event": "error",
            "sequence_number": str(seq),
            "stream_id": stream_id,
            "payload": {"code": code, "title": title, "detail": detail},
        }
    )


def stop(seq: int, *, stream_id: str, user_id: str, call_control_id: str) -> str:
    """The stream ended (the call was hung up or streaming stopped)."""
    return json.dumps(
        {
            "event": "stop",
            "sequence_number": str(seq),
            "stream_id": stream_id,
            "stop": {"user_id": user_id, "call_control_id": call_control_id},
        }
    )


# --- L16 in network byte order ------------------------------------------------------------------------


def _swap16(data: bytes) -> bytes:
    samples = array.array("h", data)
    samples.byteswap()
    return samples.tobytes()


def l16_from_pcm16(pcm: bytes) -> bytes:
    """Native little-endian PCM16 → RTP L16 (big-endian) as it goes on the wire."""
    return _swap16(pcm) if sys.byteorder == "little" else pcm


def pcm16_from_l16(payload: bytes) -> bytes:
    """RTP L16 (big-endian) from the wire → little-endian PCM16."""
    return _swap16(payload) if sys.byteorder == "little" else payload


# --- what the gateway sends, as Telnyx checks it in RTP mode -------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    """One frame from the gateway: audio to play (wire bytes), a mark to echo, or a clear."""

    kind: Literal["media", "mark", "clear"]
    payload: bytes = b""
    name: str = ""


def parse_command(text: str, *, codec: str = "PCMU") -> Command:
    """Check one text frame from the gateway the way Telnyx's bidirectional RTP stream takes it.

    Raises:
        TelephonyProtocolError: not JSON, an event Telnyx does not take, a malformed body, or media that
            is not base64 or not 20 ms to 30 s of ``codec`` audio.
    """
    try:
        msg = json.loads(text)
    except ValueError as exc:
        raise TelephonyProtocolError(f"not JSON: {text[:60]!r}") from exc
    if not isinstance(msg, dict):
        raise TelephonyProtocolError("message is not a JSON object")
    event = msg.get("event")
    if event == "clear":
        return Command("clear")
    if event not in ("media", "mark"):
        raise TelephonyProtocolError(f"unknown event {event!r} (Telnyx takes media, mark, clear)")
    body = msg.get(event)
    if not isinstance(body, dict):
        raise TelephonyProtocolError(f"{event} without a {event} object")
    if event == "mark":
        name = body.get("name")
        if not isinstance(name, str):
            raise TelephonyProtocolError("mark without mark.name string")
        return Command("mark", name=name)
    payload = body.get("payload")
    if not isinstance(payload, str):
        raise TelephonyProtocolError("media without media.payload string")
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TelephonyProtocolError("media.payload is not valid base64 (Telnyx error 100004)") from exc
    per_ms = RATES[codec] * _WIDTH[codec] // 1000
    if not 20 * per_ms <= len(audio) <= 30_000 * per_ms or len(audio) % _WIDTH[codec]:
        raise TelephonyProtocolError(f"media of {len(audio)} bytes is not 20 ms to 30 s of {codec}")
    return Command("media", payload=audio)
