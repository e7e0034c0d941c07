"""SignalWire's side of the wire, written independently of :mod:`gateway.telephony`.

The simulated caller must not share the gateway's SignalWire code, or a mistake in it would be mirrored
here and go unnoticed. Everything below follows SignalWire's own pages (signalwire/docs ``668371b``:
compatibility-api ``cxml/voice/stream.mdx``, ``cxml/voice/overview.mdx``, webhook security): the voice
webhook form and its signature, the cXML answer as SignalWire reads it, every message SignalWire sends
on a bidirectional stream field for field (the example messages of the Stream page), and the checks
SignalWire makes on what the gateway sends back.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import uuid
from collections.abc import Mapping
from typing import Final, Literal
from urllib.parse import urljoin, urlsplit

from gateway.caller import wire
from gateway.errors import TelephonyProtocolError

#: ``<Stream codec=…>`` → the ``start.mediaFormat`` SignalWire announces for it.
MEDIA_FORMATS: Final[Mapping[str, Mapping[str, str | int]]] = {
    "PCMU@8000h": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    "L16@16000h": {"encoding": "audio/x-L16", "sampleRate": 16000, "channels": 1},
    "L16@24000h": {"encoding": "audio/x-L16", "sampleRate": 24000, "channels": 1},
}
SIGNATURE_HEADER: Final = "X-SignalWire-Signature"
_KEYS: Final = frozenset("0123456789*#ABCD")


def new_sid() -> str:
    """SignalWire identifies calls, streams and projects with UUIDs."""
    return str(uuid.uuid4())


#: ``X-SignalWire-Signature`` of a form webhook is Twilio's: base64 HMAC-SHA1 of the URL + name-sorted pairs.
sign = wire.sign


def voice_webhook_form(*, call_sid: str, account_sid: str, from_: str, to: str) -> dict[str, str]:
    """The parameters SignalWire POSTs to a number's cXML URL for an inbound call ("Request parameters")."""
    return {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": from_,
        "To": to,
    }


@dataclasses.dataclass(frozen=True, slots=True)
class StreamAnswer:
    """The ``<Connect><Stream>`` of a cXML answer, as SignalWire would act on it."""

    url: str
    parameters: dict[str, str]
    codec: str
    realtime: bool
    bearer_token: str | None
    status_callback: str | None
    #: Verbs after ``<Connect>``: what SignalWire runs when the stream ends.
    after: list[str]


def parse_cxml(text: str, webhook_url: str) -> StreamAnswer | None:
    """The bidirectional stream a cXML answer asks for, or None when it has no ``<Connect>``.

    Raises:
        TelephonyProtocolError: not cXML, a ``<Stream>`` SignalWire would refuse (no URL, not wss/ws,
            a query string, an unknown codec) or a ``<Parameter>`` without name and value.
    """
    found = wire.connect_stream(text, dialect="cXML", source="voice webhook")
    if found is None:
        return None
    stream, after = found
    url = urljoin(webhook_url, stream.get("url", ""))
    parts = urlsplit(url)
    if parts.scheme not in ("wss", "ws") or parts.query:
        raise TelephonyProtocolError(f"SignalWire streams to wss:// URLs without a query string, not {url!r}")
    codec = stream.get("codec", "PCMU@8000h")
    if codec not in MEDIA_FORMATS:
        raise TelephonyProtocolError(f"SignalWire has no stream codec {codec!r}")
    return StreamAnswer(
        url=url,
        parameters=wire.stream_parameters(stream),
        codec=codec,
        realtime=stream.get("realtime", "false").lower() == "true",
        bearer_token=stream.get("authBearerToken"),
        status_callback=stream.get("statusCallback"),
        after=after,
    )


# --- messages SignalWire sends on the stream -------------------------------------------------------


def connected() -> str:
    """First message; SignalWire's protocol version is 0.2.0."""
    return json.dumps({"event": "connected", "protocol": "Call", "version": "0.2.0"})


def start(
    seq: int,
    *,
    stream_sid: str,
    call_sid: str,
    account_sid: str,
    parameters: Mapping[str, str],
    codec: str = "PCMU@8000h",
) -> str:
    """The ``start`` message, laid out as SignalWire's example (no top-level ``streamSid``)."""
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "start": {
                "streamSid": stream_sid,
                "accountSid": account_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": dict(parameters),
                "mediaFormat": dict(MEDIA_FORMATS[codec]),
            },
        }
    )


def media(seq: int, *, chunk: int, timestamp_ms: int, payload: bytes) -> str:
    """One inbound ``media`` message (no ``streamSid``; counters as decimal strings)."""
    return (
        f'{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{chunk}",'
        f'"timestamp":"{timestamp_ms}","payload":"{base64.b64encode(payload).decode()}"}}}}'
    )


def dtmf(seq: int, *, stream_sid: str, digit: str, duration_ms: int = 100) -> str:
    """A key press; bidirectional streams carry the ``streamSid``, the duration is an integer."""
    return json.dumps(
        {
            "event": "dtmf",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "dtmf": {"digit": digit, "duration": duration_ms},
        }
    )


def mark(*, stream_sid: str, name: str) -> str:
    """Echo of a mark the gateway set (SignalWire's mark carries no sequence number)."""
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def stop(seq: int) -> str:
    """The stream ended; SignalWire's ``stop`` carries only its sequence number."""
    return json.dumps({"event": "stop", "sequenceNumber": str(seq)})


# --- what the gateway sends, as SignalWire checks it -----------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    """One message from the gateway: audio to play, a mark to echo, a clear, or a key to play."""

    kind: Literal["media", "mark", "clear", "dtmf"]
    payload: bytes = b""
    name: str = ""


def parse_command(text: str, *, stream_sid: str) -> Command:
    """Check one text frame from the gateway the way SignalWire's bidirectional stream takes it.

    Raises:
        TelephonyProtocolError: not JSON, an event SignalWire does not take, another stream's SID, or a
            malformed body.
    """
    try:
        msg = json.loads(text)
    except ValueError as exc:
        raise TelephonyProtocolError(f"not JSON: {text[:60]!r}") from exc
    if not isinstance(msg, dict):
        raise TelephonyProtocolError("message is not a JSON object")
    event = msg.get("event")
    if event not in ("media", "mark", "clear", "dtmf"):
        raise TelephonyProtocolError(f"unknown event {event!r} (SignalWire takes media, mark, clear, dtmf)")
    if msg.get("streamSid") != stream_sid:
        raise TelephonyProtocolError(
            f"{event} with streamSid {msg.get('streamSid')!r}, expected {stream_sid!r}"
        )
    if event == "clear":
        return Command("clear")
    body = msg.get(event)
    if not isinstance(body, dict):
        raise TelephonyProtocolError(f"{event} without a {event} object")
    if event == "media":
        payload = body.get("payload")
        if not isinstance(payload, str):
            raise TelephonyProtocolError("media without media.payload string")
        try:
            return Command("media", payload=base64.b64decode(payload, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise TelephonyProtocolError("media.payload is not valid base64") from exc
    if event == "mark":
        name = body.get("name")
        if not isinstance(name, str):
            raise TelephonyProtocolError("mark without mark.name string")
        return Command("mark", name=name)
    digit = body.get("digit")
    if not isinstance(digit, str) or digit not in _KEYS:
        raise TelephonyProtocolError(f"dtmf.digit {digit!r} is not a DTMF key")
    return Command("dtmf", name=digit)
