"""Plivo's side of the wire, written independently of :mod:`gateway.telephony`.

The simulated caller must not share the gateway's Plivo code, or a mistake in it would be mirrored
here and go unnoticed. This module builds the Answer URL request Plivo sends for an inbound call
(signed with ``X-Plivo-Signature-V3``), reads the ``<Stream>`` Plivo would follow, formats every
message Plivo sends on the stream (``start``, ``media``, ``dtmf``, ``playedStream``, ``clearedAudio``,
``stop``) and checks every message the gateway sends (``playAudio``, ``checkpoint``, ``clearAudio``,
``sendDTMF``) as Plivo documents them ("Stream Event Protocol", the ``<Stream>`` XML page, "XML
request" for the Answer URL's parameters).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from gateway.errors import TelephonyProtocolError

#: ``<Stream contentType>`` values Plivo accepts, and what each streams; the default is L16 8 kHz.
CONTENT_TYPES = {
    "audio/x-l16;rate=8000": ("audio/x-l16", 8000),
    "audio/x-l16;rate=16000": ("audio/x-l16", 16000),
    "audio/x-mulaw;rate=8000": ("audio/x-mulaw", 8000),
}
DEFAULT_CONTENT_TYPE = "audio/x-l16;rate=8000"


def new_uuid() -> str:
    """A call or stream id as Plivo writes them (a lowercase UUID)."""
    return str(uuid.uuid4())


def new_auth_id() -> str:
    """A Plivo account id: ``MA`` and 18 uppercase letters and digits."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "MA" + "".join(secrets.choice(alphabet) for _ in range(18))


def _base(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _query_string(params: Mapping[str, list[str]]) -> str:
    return "&".join(f"{key}={value}" for key in sorted(params) for value in sorted(params[key]))


def sign_v3(auth_token: str, url: str, nonce: str, params: Mapping[str, str], *, method: str = "POST") -> str:
    """``X-Plivo-Signature-V3``: base64 HMAC-SHA256 of ``{text}.{nonce}``.

    ``text`` is ``scheme://host/path``; for GET, ``?`` and the URL's query merged with the parameters (the
    URL's own values win), sorted as ``k=v&k=v``; for POST, ``?`` and the URL's query sorted so, then (with
    parameters) ``.`` if that query was not empty, and the parameters sorted as ``kv`` with no separator
    (the ``?`` is there whenever there are parameters). A key given several times gives each value, sorted.
    """
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    text = _base(url)
    if method == "GET":
        merged = {key: [value] for key, value in params.items()} | query
        if merged:
            text += "?" + _query_string(merged)
    else:
        own = _query_string(query)
        if own or params:
            text += "?" + own
        if own and params:
            text += "."
        text += "".join(key + params[key] for key in sorted(params))
    digest = hmac.new(auth_token.encode(), f"{text}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sign_v2(auth_token: str, url: str, nonce: str) -> str:
    """``X-Plivo-Signature-V2``: base64 HMAC-SHA256 of the URL without its query, followed by the nonce."""
    digest = hmac.new(auth_token.encode(), (_base(url) + nonce).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def answer_form(*, call_uuid: str, from_: str, to: str) -> dict[str, str]:
    """The parameters Plivo POSTs to the Answer URL for an inbound call (numbers without ``+``)."""
    return {
        "CallUUID": call_uuid,
        "From": from_.lstrip("+"),
        "To": to.lstrip("+"),
        "CallStatus": "ringing",
        "Direction": "inbound",
    }


def answer_headers(auth_token: str, url: str, form: Mapping[str, str]) -> dict[str, str]:
    """The signature headers of an Answer URL request (none without an auth token)."""
    if not auth_token:
        return {}
    nonce = str(secrets.randbelow(10**20))
    return {
        "X-Plivo-Signature-V3": sign_v3(auth_token, url, nonce, form),
        "X-Plivo-Signature-V3-Nonce": nonce,
    }


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A ``<Stream>`` as Plivo reads it, and the tags of the elements it would run after the stream."""

    url: str
    bidirectional: bool
    keep_call_alive: bool
    content_type: str
    extra_headers: dict[str, str] = field(default_factory=dict)
    status_callback_url: str | None = None
    after: list[str] = field(default_factory=list)


def _bool(value: str | None, name: str) -> bool:
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise TelephonyProtocolError(f"<Stream {name}> must be true or false, got {value!r}")


def parse_answer(body: str) -> tuple[StreamSpec | None, list[str]]:
    """The ``<Stream>`` in an answer document (None if there is none) and the tags of every element.

    Raises:
        TelephonyProtocolError: not Plivo XML, or a ``<Stream>`` Plivo would refuse.
    """
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise TelephonyProtocolError(f"the answer is not XML: {exc}") from exc
    if root.tag != "Response":
        raise TelephonyProtocolError(f"the answer's root is <{root.tag}>, Plivo expects <Response>")
    tags = [child.tag for child in root]
    for i, child in enumerate(root):
        if child.tag != "Stream":
            continue
        url = (child.text or "").strip()
        if urlsplit(url).scheme not in ("ws", "wss"):
            raise TelephonyProtocolError(f"<Stream> must hold a ws(s):// URL, got {url!r}")
        content_type = child.get("contentType", DEFAULT_CONTENT_TYPE)
        if content_type not in CONTENT_TYPES:
            raise TelephonyProtocolError(f"<Stream contentType={content_type!r}> is not one Plivo offers")
        if child.get("audioTrack", "inbound") != "inbound" and _bool(
            child.get("bidirectional"), "bidirectional"
        ):
            raise TelephonyProtocolError("a bidirectional <Stream> must stream the inbound track only")
        extra = child.get("extraHeaders", "")
        headers = dict(pair.split("=", 1) for pair in extra.split(",") if "=" in pair)
        if len(extra.encode()) > 512 or not all(k.isalnum() and v.isalnum() for k, v in headers.items()):
            raise TelephonyProtocolError("<Stream extraHeaders> allows only [A-Za-z0-9] pairs, 512 bytes")
        spec = StreamSpec(
            url=url,
            bidirectional=_bool(child.get("bidirectional"), "bidirectional"),
            keep_call_alive=_bool(child.get("keepCallAlive"), "keepCallAlive"),
            content_type=content_type,
            extra_headers=headers,
            status_callback_url=child.get("statusCallbackUrl"),
            after=tags[i + 1 :],
        )
        return spec, tags
    return None, tags


# --- what Plivo sends on the stream ---------------------------------------------------------------


def start(
    seq: int, *, call_id: str, stream_id: str, account_id: str, content_type: str, extra_headers: str = ""
) -> str:
    """The first message: ids, the track and the media format of the ``<Stream contentType>``."""
    encoding, rate = CONTENT_TYPES[content_type]
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": seq,
            "start": {
                "callId": call_id,
                "streamId": stream_id,
                "accountId": account_id,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": encoding, "sampleRate": rate},
            },
            "extra_headers": extra_headers,
        }
    )


def media(seq: int, *, stream_id: str, chunk: int, timestamp_ms: int, payload: bytes) -> str:
    """One inbound ``media`` message (``timestamp``: ms since the stream started; ``chunk`` from 1)."""
    return (
        f'{{"event":"media","sequenceNumber":{seq},"streamId":"{stream_id}","media":{{"track":"inbound",'
        f'"timestamp":"{timestamp_ms}","chunk":{chunk},"payload":"{base64.b64encode(payload).decode()}"}},'
        f'"extra_headers":""}}'
    )


def dtmf(seq: int, *, stream_id: str, digit: str, timestamp_ms: int) -> str:
    """A key the caller pressed."""
    return json.dumps(
        {
            "event": "dtmf",
            "sequenceNumber": seq,
            "streamId": stream_id,
            "dtmf": {"track": "inbound", "digit": digit, "timestamp": str(timestamp_ms)},
            "extra_headers": "",
        }
    )


def played_stream(seq: int, *, stream_id: str, name: str) -> str:
    """The answer to a ``checkpoint``: everything queued before it has played."""
    return json.dumps({"event": "playedStream", "sequenceNumber": seq, "streamId": stream_id, "name": name})


def cleared_audio(seq: int, *, stream_id: str) -> str:
    """The answer to ``clearAudio`` (the cleared checkpoints are never answered)."""
    return json.dumps({"sequenceNumber": seq, "event": "clearedAudio", "streamId": stream_id})


def stop(seq: int, *, stream_id: str, reason: str = "call ended") -> str:
    """The stream ended (Plivo's Java stream SDK models it; the protocol page omits it)."""
    return json.dumps({"event": "stop", "sequenceNumber": seq, "streamId": stream_id, "reason": reason})


# --- what the gateway sends ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlayAudioMsg:
    """``playAudio``: raw audio to queue, in ``content_type`` at ``sample_rate``."""

    content_type: str
    sample_rate: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class CheckpointMsg:
    """``checkpoint``: answer ``playedStream`` with ``name`` once what is queued has played."""

    name: str


@dataclass(frozen=True, slots=True)
class ClearAudioMsg:
    """``clearAudio``: drop everything queued."""


@dataclass(frozen=True, slots=True)
class SendDtmfMsg:
    """``sendDTMF``: play ``digits`` into the call."""

    digits: str


GatewayMsg = PlayAudioMsg | CheckpointMsg | ClearAudioMsg | SendDtmfMsg

_RATES = {"audio/x-l16": (8000, 16000), "audio/x-mulaw": (8000,)}


def _stream_id(msg: Mapping[str, object], stream_id: str, *, required: bool) -> None:
    got = msg.get("streamId")
    if got is None and not required:
        return
    if got != stream_id:
        raise ValueError(f"{msg.get('event')} with streamId {got!r}, expected {stream_id!r}")


def parse_gateway_message(text: str, *, stream_id: str) -> GatewayMsg:
    """Check one text frame from the gateway as Plivo reads it.

    Raises:
        ValueError: naming what Plivo would reject (not JSON, an event it does not take, a bad field).
    """
    try:
        msg = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {text[:60]!r}") from exc
    if not isinstance(msg, dict):
        raise ValueError("message is not a JSON object")
    event = msg.get("event")
    if event == "playAudio":
        _stream_id(msg, stream_id, required=False)
        body = msg.get("media")
        if not isinstance(body, dict):
            raise ValueError("playAudio without a media object")
        content_type, rate, payload = body.get("contentType"), body.get("sampleRate"), body.get("payload")
        if content_type not in _RATES or rate not in _RATES[content_type]:
            raise ValueError(f"playAudio as {content_type!r} at {rate!r} Hz is not one Plivo plays")
        if not isinstance(payload, str):
            raise ValueError("playAudio without a media.payload string")
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("playAudio media.payload is not valid base64") from exc
        return PlayAudioMsg(content_type, rate, audio)
    if event == "checkpoint":
        _stream_id(msg, stream_id, required=True)
        name = msg.get("name")
        if not isinstance(name, str):
            raise ValueError("checkpoint without a name string")
        return CheckpointMsg(name)
    if event == "clearAudio":
        _stream_id(msg, stream_id, required=True)
        return ClearAudioMsg()
    if event == "sendDTMF":
        digits = msg.get("dtmf")
        if not isinstance(digits, str) or not digits or set(digits) - set("0123456789*#ABCD"):
            raise ValueError(f"sendDTMF with digits {digits!r}")
        return SendDtmfMsg(digits)
    raise ValueError(f"unknown event {event!r} (Plivo takes playAudio, checkpoint, clearAudio, sendDTMF)")
