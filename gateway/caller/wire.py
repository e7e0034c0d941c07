"""Twilio's side of the wire, written independently of :mod:`gateway.telephony`.

The simulated caller must not share the gateway's Twilio code, or a mistake in it would be
mirrored here and go unnoticed. This module builds the voice-webhook form, signs requests the way
Twilio does, and formats the Media Streams messages Twilio sends, field for field.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Mapping

from gateway.errors import TelephonyProtocolError

MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two-letter prefix + 32 lowercase hex digits."""
    return prefix + secrets.token_hex(16)


def sign(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature``: base64 HMAC-SHA1 over the URL and the name-sorted name+value pairs."""
    text = url + "".join(k + v for k, v in sorted(params.items()))
    return base64.b64encode(hmac.new(auth_token.encode(), text.encode(), hashlib.sha1).digest()).decode()


def connect_stream(text: str, *, dialect: str, source: str) -> tuple[ET.Element, list[str]] | None:
    """The ``<Stream url>`` of a TwiML-shaped answer's first ``<Connect>`` (TwiML, cXML, TeXML) and the verbs
    after that ``<Connect>`` (what runs when the stream ends); None when the answer has no ``<Connect>``.

    Raises:
        TelephonyProtocolError: not XML, a root other than ``<Response>``, or a ``<Connect>`` without a
            stream URL.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise TelephonyProtocolError(f"{source} returned invalid {dialect}: {exc}") from exc
    if root.tag != "Response":
        raise TelephonyProtocolError(f"{dialect} root must be <Response>, got <{root.tag}>")
    verbs = list(root)
    for i, verb in enumerate(verbs):
        if verb.tag != "Connect":
            continue
        stream = verb.find("Stream")
        if stream is None or not stream.get("url"):
            raise TelephonyProtocolError("<Connect> without a <Stream url=…>")
        return stream, [v.tag for v in verbs[i + 1 :]]
    return None


def stream_parameters(stream: ET.Element) -> dict[str, str]:
    """A ``<Stream>``'s ``<Parameter name value>`` children.

    Raises:
        TelephonyProtocolError: a ``<Parameter>`` without name or value.
    """
    params: dict[str, str] = {}
    for p in stream.findall("Parameter"):
        name, value = p.get("name"), p.get("value")
        if name is None or value is None:
            raise TelephonyProtocolError("<Parameter> needs name and value")
        params[name] = value
    return params


def voice_webhook_form(*, call_sid: str, account_sid: str, from_: str, to: str) -> dict[str, str]:
    """The form fields Twilio POSTs to a number's voice URL for an inbound call."""
    return {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": to,
        "CalledCity": "",
        "CalledCountry": "US",
        "CalledState": "",
        "CalledZip": "",
        "Caller": from_,
        "CallerCity": "",
        "CallerCountry": "US",
        "CallerState": "",
        "CallerZip": "",
        "Direction": "inbound",
        "From": from_,
        "FromCity": "",
        "FromCountry": "US",
        "FromState": "",
        "FromZip": "",
        "To": to,
        "ToCity": "",
        "ToCountry": "US",
        "ToState": "",
        "ToZip": "",
    }


def connected() -> str:
    """First message on the socket; it has no streamSid or sequenceNumber."""
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start(
    seq: int, *, stream_sid: str, call_sid: str, account_sid: str, parameters: Mapping[str, str]
) -> str:
    """The ``start`` message: identities, ``<Parameter>`` values, tracks and media format."""
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": MEDIA_FORMAT,
                "customParameters": dict(parameters),
            },
            "streamSid": stream_sid,
        }
    )


def media(seq: int, *, stream_sid: str, chunk: int, timestamp_ms: int, payload: bytes) -> str:
    """One inbound ``media`` message; counters are decimal strings, as Twilio sends them."""
    return (
        f'{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{chunk}",'
        f'"timestamp":"{timestamp_ms}","payload":"{base64.b64encode(payload).decode()}"}},'
        f'"streamSid":"{stream_sid}"}}'
    )


def dtmf(seq: int, *, stream_sid: str, digit: str) -> str:
    """A key press on a bidirectional stream (track is always ``inbound_track``)."""
    return json.dumps(
        {
            "event": "dtmf",
            "streamSid": stream_sid,
            "sequenceNumber": str(seq),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def mark(seq: int, *, stream_sid: str, name: str) -> str:
    """Echo of a mark the gateway set."""
    return json.dumps(
        {"event": "mark", "sequenceNumber": str(seq), "streamSid": stream_sid, "mark": {"name": name}}
    )


def stop(seq: int, *, stream_sid: str, call_sid: str, account_sid: str) -> str:
    """The stream ended because the call ended."""
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    )
