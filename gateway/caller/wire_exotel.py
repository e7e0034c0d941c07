"""Exotel's side of the wire (the Voicebot applet), written independently of :mod:`gateway.telephony`.

The simulated caller must not share the gateway's Exotel code, or a mistake in it would be mirrored
here and go unnoticed. This module builds the request the applet sends to a dynamic URL and reads
its ``{"url": …}`` reply, derives what Exotel does with a stream URL (credentials → ``Authorization:
Basic``, ``sample-rate``, query pairs → ``start.custom_parameters``), formats every message Exotel
sends (``connected``, ``start``, ``media``, ``dtmf``, ``mark``, ``stop``) and checks every message the
gateway sends (``media``, ``mark``, ``clear``) as Exotel's AgentStream "WebSocket protocol" and
"Stream & Voicebot applet" pages document them, chunk-size rule included.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from gateway.errors import TelephonyProtocolError

#: What the applet accepts from the bot: bytes per ``media`` message (Exotel's applet guide).
CHUNK_MIN, CHUNK_MAX, CHUNK_MULTIPLE = 3200, 100_000, 320
SAMPLE_RATES = (8000, 16000, 24000)


def new_sid() -> str:
    """A call or stream SID as Exotel writes them: 32 lowercase hex digits."""
    return secrets.token_hex(16)


def voicebot_request(*, call_sid: str, from_: str, to: str) -> dict[str, str]:
    """The GET query the applet sends to a dynamic URL, as for Exotel's other applet URL requests."""
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    return {
        "CallSid": call_sid,
        "CallFrom": from_,
        "CallTo": to,
        "Direction": "incoming",
        "Created": now,
        "StartTime": now,
        "CallType": "call-attempt",
    }


def parse_voicebot_reply(body: str) -> str:
    """The stream URL in a dynamic URL's ``{"url": "wss://…"}`` reply.

    Raises:
        TelephonyProtocolError: not that JSON object, or not a ws(s):// URL.
    """
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise TelephonyProtocolError(f"the dynamic URL's reply is not JSON: {body[:80]!r}") from exc
    url = doc.get("url") if isinstance(doc, dict) else None
    if not isinstance(url, str) or urlsplit(url).scheme not in ("ws", "wss"):
        raise TelephonyProtocolError(f"the dynamic URL's reply has no ws(s):// url: {body[:80]!r}")
    return url


@dataclass(frozen=True, slots=True)
class StreamTarget:
    """How Exotel connects to a stream URL."""

    url: str  # without credentials
    headers: dict[str, str] = field(default_factory=dict)
    sample_rate: int = 8000
    custom_parameters: dict[str, str] = field(default_factory=dict)


def stream_target(url: str) -> StreamTarget:
    """Exotel's view of a stream URL: ``user:pass@`` becomes ``Authorization: Basic``, ``sample-rate``
    (or ``sample_rate``) picks the rate, and the other query pairs (at most 3, 256 characters) become
    ``start.custom_parameters``.

    Raises:
        TelephonyProtocolError: not ws(s)://, an unknown rate, or custom parameters beyond the limits.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise TelephonyProtocolError(f"stream URL must be ws(s)://host/path, got {url!r}")
    headers: dict[str, str] = {}
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    rate, custom = 8000, {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("sample-rate", "sample_rate"):
            if not value.isdigit() or int(value) not in SAMPLE_RATES:
                raise TelephonyProtocolError(f"sample-rate {value!r} is not one Exotel streams at")
            rate = int(value)
        else:
            custom[key] = value
    if len(custom) > 3 or len(parts.query) > 256:
        raise TelephonyProtocolError("Exotel passes at most 3 custom parameters, 256 characters in all")
    return StreamTarget(urlunsplit(parts._replace(netloc=netloc)), headers, rate, custom)


# --- what Exotel sends on the stream --------------------------------------------------------------


def connected() -> str:
    """First message on the socket."""
    return json.dumps({"event": "connected"})


def start(
    seq: int,
    *,
    stream_sid: str,
    call_sid: str,
    account_sid: str,
    from_: str,
    to: str,
    custom_parameters: Mapping[str, str],
    sample_rate: int = 8000,
) -> str:
    """The ``start`` message: ids, numbers, the URL's custom parameters and the media format."""
    return json.dumps(
        {
            "event": "start",
            "sequence_number": str(seq),
            "stream_sid": stream_sid,
            "start": {
                "stream_sid": stream_sid,
                "call_sid": call_sid,
                "account_sid": account_sid,
                "from": from_,
                "to": to,
                "custom_parameters": dict(custom_parameters),
                "media_format": {
                    "encoding": "audio/x-raw",
                    "sample_rate": str(sample_rate),
                    "bit_rate": "16",
                },
            },
        }
    )


def media(seq: int, *, stream_sid: str, chunk: int, timestamp_ms: int, payload: bytes) -> str:
    """One ``media`` message of caller audio (16-bit PCM LE; Exotel sends about 100 ms each)."""
    return (
        f'{{"event":"media","sequence_number":"{seq}","stream_sid":"{stream_sid}","media":{{'
        f'"chunk":"{chunk}","timestamp":"{timestamp_ms}","payload":"{base64.b64encode(payload).decode()}"}}}}'
    )


def dtmf(seq: int, *, stream_sid: str, digit: str, duration_ms: int = 100) -> str:
    """A key the caller pressed (Voicebot applet only)."""
    return json.dumps(
        {
            "event": "dtmf",
            "sequence_number": str(seq),
            "stream_sid": stream_sid,
            "dtmf": {"digit": digit, "duration": str(duration_ms)},
        }
    )


def mark(seq: int, *, stream_sid: str, name: str) -> str:
    """A mark of the gateway's came back: the audio sent before it has played (or was cleared)."""
    return json.dumps(
        {"event": "mark", "sequence_number": str(seq), "stream_sid": stream_sid, "mark": {"name": name}}
    )


def stop(seq: int, *, stream_sid: str, call_sid: str, account_sid: str, reason: str = "callended") -> str:
    """The stream ended: ``callended`` (the caller hung up) or ``stopped`` (the applet ended)."""
    return json.dumps(
        {
            "event": "stop",
            "sequence_number": str(seq),
            "stream_sid": stream_sid,
            "stop": {"call_sid": call_sid, "account_sid": account_sid, "reason": reason},
        }
    )


# --- what the gateway sends ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaMsg:
    """``media``: PCM to queue for the caller."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class MarkMsg:
    """``mark``: echo ``name`` once what is queued has played."""

    name: str


@dataclass(frozen=True, slots=True)
class ClearMsg:
    """``clear``: drop queued audio that has not started playing."""


GatewayMsg = MediaMsg | MarkMsg | ClearMsg


def parse_gateway_message(text: str, *, stream_sid: str) -> GatewayMsg:
    """Check one text frame from the gateway as the Voicebot applet reads it.

    The stream id may be spelled ``stream_sid`` (Exotel's docs) or ``streamSid`` (Exotel's own bots);
    a ``media`` payload must be 3,200-100,000 bytes in multiples of 320 (else Exotel distorts, times
    out or leaves gaps).

    Raises:
        ValueError: naming what Exotel would reject (not JSON, an unknown event, another stream, a rule).
    """
    try:
        msg = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {text[:60]!r}") from exc
    if not isinstance(msg, dict):
        raise ValueError("message is not a JSON object")
    event = msg.get("event")
    ids = {msg[k] for k in ("stream_sid", "streamSid") if k in msg}
    if ids != {stream_sid}:
        raise ValueError(f"{event} with stream ids {sorted(map(str, ids))}, expected {stream_sid!r}")
    if event == "media":
        body = msg.get("media")
        payload = body.get("payload") if isinstance(body, dict) else None
        if not isinstance(payload, str):
            raise ValueError("media without a media.payload string")
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("media.payload is not valid base64") from exc
        if len(audio) % CHUNK_MULTIPLE or not CHUNK_MIN <= len(audio) <= CHUNK_MAX:
            raise ValueError(
                f"media of {len(audio)} bytes: Exotel takes {CHUNK_MIN}-{CHUNK_MAX} "
                f"in multiples of {CHUNK_MULTIPLE}"
            )
        return MediaMsg(audio)
    if event == "mark":
        body = msg.get("mark")
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str):
            raise ValueError("mark without a mark.name string")
        return MarkMsg(name)
    if event == "clear":
        return ClearMsg()
    raise ValueError(f"unknown event {event!r} (the Voicebot applet takes media, mark, clear)")
