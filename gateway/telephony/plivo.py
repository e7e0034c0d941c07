"""Plivo Audio Streams (bidirectional ``<Stream>``): JSON ⇄ telephony events, the answer XML, the
``X-Plivo-Signature-V3`` check and the call-control REST requests. No I/O.

State table (Plivo "Stream Event Protocol")::

    AWAITING_START --start--> STREAMING --stop--> STOPPED
    STREAMING: media | dtmf | playedStream (a checkpoint of ours played) | clearedAudio (our clearAudio done)

Plivo sends no ``connected`` frame: ``start`` is first. Errors are
:class:`~gateway.errors.TelephonyProtocolError` with the close codes of :mod:`gateway.telephony.twilio`
(1007 bad data, 1008 order or unknown event, 1003 a format we cannot take, 1011 our own misuse).

What this follows (docs/telephony-providers.md §3, re-checked on Plivo's pages with the search tool):

* message shapes: plivo.com/docs/voice/audio-streaming/audio-streaming, the checkpoint, playAudio and
  clearAudio pages, and docs.plivo.com/docs/voice/xml/audiostream for ``<Stream>``'s attributes;
* ``stop`` is missing from that page but sent per Plivo's Java stream SDK and sample servers, so it is
  accepted (the socket closing stays the authoritative end); ``played`` is the older name of
  ``playedStream`` in a Plivo support article and is accepted too;
* ``audio/x-l16`` is little-endian PCM16: Plivo's docs do not say, Plivo's own
  plivo-labs/agent-transport decodes it with ``i16::from_le_bytes`` [one official source];
* counters (``chunk``, ``timestamp``) are numbers on the protocol page and strings in Plivo's samples:
  either is accepted.

The per-call stream token travels in the stream URL's query string (``?token=…``), not in
``extraHeaders`` (Plivo's only per-stream parameter, delivered in ``start``): that attribute allows
only ``[A-Za-z0-9]`` (our tokens hold ``.``, ``-`` and ``_``) and would arrive only after the socket
was accepted, while the query is on the upgrade request and is checked before accepting. Plivo's
docs do not say it keeps the query; pipecat's Plivo examples and other deployments rely on it [S].

``clearAudio`` drops the checkpoints queued behind it: Plivo never answers them (``playedStream`` only
follows audio that played). The neutral contract is Twilio's (pending marks come back on a clear,
:class:`~gateway.telephony.events.MarkReached`: "or playback was cleared"), so ``clearedAudio`` is
reported as the newest checkpoint the clear dropped.

The media path (``receive_media``, ``encode(PlayAudio)``) builds no dicts and calls no ``json.dumps``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, Final
from urllib.parse import parse_qs, parse_qsl, urlencode, urlparse, urlsplit, urlunparse, urlunsplit

from gateway.errors import ConfigError, TelephonyProtocolError, ToolError
from gateway.telephony.events import (
    DTMF_DIGITS,
    CallStarted,
    CallStopped,
    DtmfPressed,
    MarkReached,
    PlayAudio,
    TelephonyCommand,
    TelephonyEvent,
)
from gateway.telephony.jsoncodec import JsonMediaCodec
from gateway.telephony.jsonmsg import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_UNSUPPORTED_DATA,
    StreamState,
    counter,
    invalid,
    object_field,
    string_field,
    string_map,
    violation,
)
from gateway.telephony.provider import PCMU_8K, AudioFormat, Capabilities
from gateway.telephony.rest import RestRequest

__all__ = [
    "PLIVO_API_BASE",
    "PlivoCodec",
    "PlivoState",
    "RestRequest",
    "dial_xml",
    "hangup_request",
    "hangup_xml",
    "make_call_request",
    "plivo_signature_v3",
    "stream_xml",
    "transfer_request",
    "verify_plivo_signature_v3",
]

#: Stream and call ids are UUIDs; they are spliced unescaped into JSON and REST paths, so must be this plain.
_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})
#: ``start.mediaFormat.encoding`` → our codec name, and the rates Plivo offers for it.
_CODECS: Final = {"audio/x-mulaw": ("ulaw", (8000,)), "audio/x-l16": ("l16", (8000, 16000))}
#: ``<Stream contentType>`` / ``playAudio`` ``media.contentType`` per audio format.
_CONTENT_TYPES: Final = {
    ("ulaw", 8000): "audio/x-mulaw",
    ("l16", 8000): "audio/x-l16",
    ("l16", 16000): "audio/x-l16",
}
#: Checkpoints remembered for a clear; a provider that never answers them must not grow memory.
_MAX_OUTSTANDING: Final = 64


#: Where a media socket is in Plivo's message sequence (the shared enum; the name stays for callers).
PlivoState = StreamState


def _extra_headers(value: object) -> dict[str, str]:
    """``extra_headers``: ``k=v`` pairs joined by ``;`` (the protocol page) or ``,`` (the XML page)."""
    if value is None:
        return {}
    if type(value) is not str:
        raise invalid("extra_headers must be a string")
    pairs = (part.partition("=") for part in re.split(r"[;,]", value))
    return {key.strip(): val.strip() for key, eq, val in pairs if eq and key.strip()}


class PlivoCodec(JsonMediaCodec[TelephonyEvent | None]):
    """Sans-I/O codec for one Plivo media WebSocket; the message flow is :class:`JsonMediaCodec`'s.

    Attributes:
        state: where the socket is in the message sequence (:class:`PlivoState`).
        stream_id, call_id, account_id: known once ``start`` has arrived.
        stop_reason: ``stop``'s ``reason``, when Plivo gave one.
        audio: the format ``start.mediaFormat`` announced (before it, what was asked for).
        messages_in, media_in, bytes_in, media_out, bytes_out: counters, as on TwilioCodec.
    """

    __slots__ = ("_clears", "_outstanding", "account_id", "call_id", "stop_reason")

    _provider = "Plivo"
    _sid_key = "streamId"
    _has_connected = False  # ``start`` is first
    _events = ("dtmf", "playedStream", "played", "clearedAudio", "stop")

    #: Plivo plays ``playAudio`` of any size and buffers it in order (no size limit is documented);
    #: checkpoints and ``clearAudio`` exist; hang-up and transfer are REST calls (closing the socket
    #: would run the XML after ``<Stream>``). Outbound DTMF: Plivo lists a ``sendDTMF`` stream event
    #: whose fields its docs do not give, so the bot's digits go in band.
    capabilities: ClassVar[Capabilities] = Capabilities(
        marks=True, clear=True, frames_per_message=None, provider_buffers=True, hangup="rest",
        transfer="rest", dtmf_out="inband", binary_audio=False, continuous_media=True,
    )  # fmt: skip

    def __init__(self, audio: AudioFormat = PCMU_8K) -> None:
        """``audio``: the format asked for in the answer XML; ``start.mediaFormat`` replaces it."""
        super().__init__(audio)
        self.call_id: str | None = None
        self.account_id: str | None = None
        self.stop_reason: str | None = None
        self._pcm16 = audio.codec == "l16"
        self._outstanding: list[str] = []
        self._clears: deque[tuple[str, ...]] = deque(maxlen=_MAX_OUTSTANDING)

    @property
    def stream_id(self) -> str | None:
        """Known once ``start`` has arrived."""
        return self._stream

    # --- inbound: the hooks of JsonMediaCodec's message flow ------------------------------------
    # ``receive_text`` answers None for a ``clearedAudio`` that dropped nothing.

    def _streaming(self, event: str, msg: dict[str, Any]) -> TelephonyEvent | None:
        if event == "dtmf":
            digit = string_field(object_field(msg, "dtmf"), "digit", "dtmf.dtmf").upper()
            if digit not in DTMF_DIGITS:
                raise invalid(f"dtmf.digit {digit!r} is not a DTMF key")
            return DtmfPressed(digit)
        if event == "clearedAudio":
            dropped = self._clears.popleft() if self._clears else ()
            # The newest dropped checkpoint; a clear that dropped none needs no action (an echo of a
            # mark never sent would count as one acknowledged too many).
            return MarkReached(dropped[-1]) if dropped else None
        if event == "stop":
            stop = msg.get("stop", msg)  # the Java SDK models a top-level reason; accept a "stop" object too
            if type(stop) is not dict:
                raise invalid("stop.stop must be an object")
            reason = stop.get("reason")
            if reason is not None and type(reason) is not str:
                raise invalid("stop.reason must be a string")
            self.stop_reason = reason
            self.state = StreamState.STOPPED
            return CallStopped(self.call_id or "")
        name = string_field(msg, "name", event)
        if name in self._outstanding:
            self._outstanding.remove(name)
        return MarkReached(name)

    def _start(self, msg: dict[str, Any]) -> CallStarted:
        start = object_field(msg, "start")
        stream_id = start.get("streamId", msg.get("streamId"))
        if type(stream_id) is not str or not _ID_RE.fullmatch(stream_id):
            raise invalid("start.streamId must be a plain identifier (letters, digits, '-', '_')")
        top_id = msg.get("streamId")
        if top_id is not None and top_id != stream_id:
            raise violation("start.streamId differs from the message's streamId")
        call_id = string_field(start, "callId", "start.start")
        if not _ID_RE.fullmatch(call_id):
            raise invalid("start.callId must be a plain identifier (letters, digits, '-', '_')")
        account_id = start.get("accountId", "")
        if type(account_id) is not str:
            raise invalid("start.accountId must be a string")
        tracks = start.get("tracks", ["inbound"])
        if type(tracks) is not list or not all(type(t) is str for t in tracks):
            raise invalid("start.tracks must be a list of strings")
        params = _extra_headers(msg.get("extra_headers", start.get("extra_headers")))
        params.update(string_map(start, "customParameters", "start"))  # modelled by Plivo's Java stream SDK
        fmt = object_field(start, "mediaFormat")
        encoding_text = string_field(fmt, "encoding", "start.mediaFormat")
        encoding, _, options = encoding_text.partition(";")
        encoding = encoding.strip().lower()
        rate = counter(fmt.get("sampleRate"), "start.mediaFormat.sampleRate")
        if rate is None:  # "audio/x-l16;rate=16000", the spelling of <Stream contentType>
            rate = counter(dict(parse_qsl(options.strip())).get("rate", "8000"), "mediaFormat rate")
        codec, rates = _CODECS.get(encoding, ("", ()))
        if rate is None or rate not in rates:
            raise TelephonyProtocolError(
                f"unsupported media format {encoding_text[:40]!r} at {rate} Hz; Plivo streams "
                "audio/x-mulaw 8000 Hz or audio/x-l16 8000/16000 Hz",
                close_code=CLOSE_UNSUPPORTED_DATA,
            )
        self._audio = AudioFormat(codec, rate)
        self._pcm16 = codec == "l16"
        self._stream, self.call_id, self.account_id = stream_id, call_id, account_id
        # The ids were checked to be JSON-safe, so outbound messages are built by concatenation.
        self._media_prefix = (
            '{"event":"playAudio","media":{"contentType":"'
            + _CONTENT_TYPES[codec, rate]
            + f'","sampleRate":{rate},"payload":"'
        )
        self._mark_prefix = '{"event":"checkpoint","streamId":"' + stream_id + '","name":'
        self._clear_text = '{"event":"clearAudio","streamId":"' + stream_id + '"}'
        self.state = StreamState.STREAMING
        return CallStarted(
            stream_id, call_id, account_id, tuple(tracks), MappingProxyType(params) if params else _EMPTY,
            encoding, rate, 1,
        )  # fmt: skip

    # --- outbound ------------------------------------------------------------------------------

    def encode(self, command: TelephonyCommand) -> str:
        """Render one command as the text frame Plivo expects (``playAudio``, ``checkpoint``, ``clearAudio``).

        Allowed once ``start`` has arrived, also after ``stop``.

        Raises:
            TelephonyProtocolError: used before ``start``, or 16-bit audio with an odd byte count (our
                bug; close code 1011).
        """
        if not self._media_prefix:
            raise self._not_started(command)
        if type(command) is PlayAudio:
            payload = command.payload
            if self._pcm16 and len(payload) & 1:
                raise TelephonyProtocolError(
                    "PlayAudio of 16-bit audio with an odd byte count", close_code=CLOSE_INTERNAL_ERROR
                )
            self.media_out += 1
            self.bytes_out += len(payload)
            return self._media_prefix + binascii.b2a_base64(payload, newline=False).decode("ascii") + '"}}'
        return self._command(command)

    def _mark(self, name: str) -> str:
        """A ``checkpoint``, remembered until it plays or a clear drops it."""
        if len(self._outstanding) >= _MAX_OUTSTANDING:
            del self._outstanding[0]
        self._outstanding.append(name)
        return self._mark_prefix + json.dumps(name) + "}"

    def _clear(self) -> str:
        """``clearAudio``; the checkpoints it drops are reported when ``clearedAudio`` comes back."""
        self._clears.append(tuple(self._outstanding))
        self._outstanding.clear()
        return self._clear_text


# --- the answer XML ------------------------------------------------------------------------------

_XML_DECLARATION: Final = '<?xml version="1.0" encoding="UTF-8"?>'
_NOT_XML: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ALNUM: Final = re.compile(r"[A-Za-z0-9]+")
_DIAL_NUMBER: Final = re.compile(r"\+?[0-9]{3,20}")


def _xml_safe(value: str, what: str) -> str:
    if _NOT_XML.search(value):
        raise ConfigError(f"{what} contains a control character that XML cannot carry")
    return value


def _render(root: ET.Element) -> str:
    return _XML_DECLARATION + ET.tostring(root, encoding="unicode")


def stream_xml(
    stream_url: str,
    token: str,
    *,
    audio: AudioFormat = PCMU_8K,
    extra_headers: Mapping[str, str] | None = None,
    stream_timeout_s: int | None = None,
    status_callback_url: str | None = None,
) -> str:
    """``<Response><Stream bidirectional keepCallAlive contentType>wss://…?token=…</Stream></Response>``.

    ``keepCallAlive="true"`` makes the stream the whole call: Plivo runs nothing after it until the
    socket closes. ``audio`` picks ``contentType`` (μ-law 8 kHz, or L16 8/16 kHz for wideband).

    Raises:
        ConfigError: the URL is not ws(s)://host/path, the token is empty, Plivo has no such format,
            or an ``extraHeaders`` key/value is not ``[A-Za-z0-9]`` or the whole exceeds 512 bytes.
    """
    parts = urlsplit(stream_url)
    if parts.scheme not in ("wss", "ws") or not parts.netloc or parts.fragment:
        raise ConfigError(
            f"stream URL must be wss://host/path (ws:// only for local tests), got {stream_url!r}"
        )
    if not token:
        raise ConfigError("the stream token must not be empty")
    content_type = _CONTENT_TYPES.get((audio.codec, audio.rate))
    if content_type is None:
        raise ConfigError(f"Plivo streams μ-law 8 kHz or L16 8/16 kHz, not {audio.codec} {audio.rate} Hz")
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("token", token)]
    url = urlunsplit(parts._replace(query=urlencode(query)))
    response = ET.Element("Response")
    stream = ET.SubElement(
        response,
        "Stream",
        bidirectional="true",
        keepCallAlive="true",
        contentType=f"{content_type};rate={audio.rate}",
    )
    if stream_timeout_s is not None:
        if stream_timeout_s <= 0:
            raise ConfigError("streamTimeout must be a positive number of seconds")
        stream.set("streamTimeout", str(int(stream_timeout_s)))
    if status_callback_url is not None:
        stream.set("statusCallbackUrl", _xml_safe(status_callback_url, "status callback URL"))
        stream.set("statusCallbackMethod", "POST")
    if extra_headers:
        if not all(_ALNUM.fullmatch(k) and _ALNUM.fullmatch(v) for k, v in extra_headers.items()):
            raise ConfigError("Plivo extraHeaders keys and values may hold only A-Z, a-z and 0-9")
        joined = ",".join(f"{k}={v}" for k, v in extra_headers.items())
        if len(joined) > 512:
            raise ConfigError("Plivo extraHeaders must fit in 512 bytes")
        stream.set("extraHeaders", joined)
    stream.text = _xml_safe(url, "stream URL")
    return _render(response)


def hangup_xml(text: str | None = None) -> str:
    """Optionally ``<Speak>`` ``text``, then ``<Hangup/>`` (refusing a call politely)."""
    response = ET.Element("Response")
    if text:
        ET.SubElement(response, "Speak").text = _xml_safe(text, "text")
    ET.SubElement(response, "Hangup")
    return _render(response)


def dial_xml(number: str, *, caller_id: str | None = None) -> str:
    """The XML a transfer's ``aleg_url`` serves: ``<Dial>`` a ``<Number>`` (or a ``<User>`` for ``sip:``).

    Plivo writes numbers as digits with the country code; a leading ``+`` is dropped.

    Raises:
        ConfigError: the target is neither a phone number nor a ``sip:`` URI, or the caller id is no number.
    """
    target = number.strip()
    response = ET.Element("Response")
    dial = ET.SubElement(response, "Dial")
    if caller_id is not None:
        if not _DIAL_NUMBER.fullmatch(caller_id.strip()):
            raise ConfigError(f"caller id must be a phone number, got {caller_id!r}")
        dial.set("callerId", caller_id.strip().lstrip("+"))
    if target.startswith("sip:") and len(target) > 4:
        ET.SubElement(dial, "User").text = _xml_safe(target, "dial target")
    elif _DIAL_NUMBER.fullmatch(target):
        ET.SubElement(dial, "Number").text = target.lstrip("+")
    else:
        raise ConfigError(f"dial target must be a phone number or sip: URI, got {number!r}")
    return _render(response)


# --- X-Plivo-Signature-V3 --------------------------------------------------------------------------
# Plivo's algorithm as plivo-python's utils/signature_v3.py implements it (tests check ours against it):
# base = scheme://netloc/path; GET: the request's and the URL's query parameters merged (the URL's win),
# sorted, "k=v&k=v" after "?"; POST: the URL's own query after "?", then (if the body has parameters)
# "." only when that query is non-empty and the form sorted as "kv" pairs with no separator. The
# signed text is base + "." + nonce; the header holds base64 HMAC-SHA256 values, one per active auth
# token, separated by commas.

Params = Mapping[str, str | Sequence[str]]


def _grouped(params: Params | None) -> dict[str, list[str]]:
    """Every value per name; ``items()`` of a multidict (aiohttp's ``request.post()``) repeats names."""
    grouped: dict[str, list[str]] = {}
    for key, value in (params or {}).items():
        values = grouped.setdefault(key, [])
        if isinstance(value, str):
            values.append(value)
        else:
            values.extend(value)
    return grouped


def _query_text(grouped: Mapping[str, list[str]]) -> str:
    return "&".join(f"{key}={value}" for key in sorted(grouped) for value in sorted(grouped[key]))


def _signed_base(method: str, url: str, params: Params | None) -> str:
    parts = urlparse(url)
    base = urlunparse((parts.scheme, parts.netloc, parts.path, "", "", ""))
    url_query = parse_qs(parts.query, keep_blank_values=True)
    form = _grouped(params)
    if method == "GET":
        query = _query_text(form | url_query)
        return f"{base}?{query}" if query else base
    query = _query_text(url_query)
    if not form:
        return f"{base}?{query}" if query else base
    body = "".join(key + value for key in sorted(form) for value in sorted(form[key]))
    return f"{base}?{query}{'.' if query else ''}{body}"


def plivo_signature_v3(auth_token: str, *, method: str, url: str, nonce: str, params: Params | None) -> str:
    """The ``X-Plivo-Signature-V3`` Plivo would send for a ``method`` request to ``url`` with ``params``.

    Raises:
        ConfigError: the auth token is empty, or the method is neither GET nor POST.
    """
    if not auth_token:
        raise ConfigError("Plivo auth token is empty")
    verb = method.upper()
    if verb not in ("GET", "POST"):
        raise ConfigError(f"Plivo signs GET and POST requests, not {method!r}")
    text = f"{_signed_base(verb, url, params)}.{nonce}"
    digest = hmac.new(auth_token.encode(), text.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_plivo_signature_v3(
    auth_token: str, *, method: str, url: str, nonce: str, signature: str, params: Params | None
) -> bool:
    """Whether any comma-separated value of ``signature`` is Plivo's for this request; constant-time.

    Raises:
        ConfigError: the auth token is empty, or the method is neither GET nor POST.
    """
    expected = plivo_signature_v3(auth_token, method=method, url=url, nonce=nonce, params=params)
    if not nonce:
        return False
    ok = False
    for candidate in signature.split(","):
        ok |= hmac.compare_digest(expected.encode("ascii"), candidate.strip().encode("utf-8", "replace"))
    return ok


# --- call control over Plivo's REST API -----------------------------------------------------------

#: Plivo's API; the gateway's setting replaces it so tests use a local stand-in.
PLIVO_API_BASE: Final = "https://api.plivo.com"
_AUTH_ID_RE: Final = re.compile(r"[A-Za-z0-9]{2,64}")


_PLIVO_NUMBER_RE: Final = re.compile(r"[1-9][0-9]{1,14}")


def _account_url(base_url: str, auth_id: str, auth_token: str, path: str) -> tuple[str, dict[str, str]]:
    """``{base}/v1/Account/{auth_id}/{path}`` and its Basic authorization."""
    base = urlsplit(base_url)
    if base.scheme not in ("https", "http") or not base.netloc:
        raise ConfigError(f"Plivo API base URL must be https://host, got {base_url!r}")
    if not _AUTH_ID_RE.fullmatch(auth_id) or not auth_token:
        raise ConfigError("Plivo REST needs PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN")
    basic = base64.b64encode(f"{auth_id}:{auth_token}".encode()).decode("ascii")
    url = f"{base_url.rstrip('/')}/v1/Account/{auth_id}/{path}"
    return url, {"Authorization": f"Basic {basic}", "Accept": "application/json"}


def _call_url(base_url: str, auth_id: str, auth_token: str, call_uuid: str) -> tuple[str, dict[str, str]]:
    if not _ID_RE.fullmatch(call_uuid):
        raise ToolError("this call has no valid provider id, so it cannot be updated")
    return _account_url(base_url, auth_id, auth_token, f"Call/{call_uuid}/")


def hangup_request(
    *, auth_id: str, auth_token: str, call_uuid: str, base_url: str = PLIVO_API_BASE
) -> RestRequest:
    """``DELETE /v1/Account/{auth_id}/Call/{call_uuid}/`` (Plivo "Hang up a call"): 204 when hung up,
    404 when the call had already ended, which is what a hang-up wants anyway.

    Raises:
        ConfigError: bad credentials or base URL. ToolError: the call id is not a plain identifier.
    """
    url, headers = _call_url(base_url, auth_id, auth_token, call_uuid)
    return RestRequest("DELETE", url, headers, None, frozenset({204, 404}))


def transfer_request(
    *,
    auth_id: str,
    auth_token: str,
    call_uuid: str,
    aleg_url: str,
    aleg_method: str = "POST",
    base_url: str = PLIVO_API_BASE,
) -> RestRequest:
    """``POST /v1/Account/{auth_id}/Call/{call_uuid}/`` with ``legs=aleg`` (Plivo "Transfer a call"):
    the caller's leg fetches ``aleg_url`` (serving :func:`dial_xml`) and runs it; the stream ends.
    Plivo answers 202. The body is JSON, as Plivo's SDK sends it.

    Raises:
        ConfigError: bad credentials, base URL, ``aleg_url`` or method. ToolError: bad call id.
    """
    url, headers = _call_url(base_url, auth_id, auth_token, call_uuid)
    target = urlsplit(aleg_url)
    if target.scheme not in ("https", "http") or not target.netloc:
        raise ConfigError(f"transfer aleg_url must be an http(s) URL, got {aleg_url!r}")
    if aleg_method not in ("GET", "POST"):
        raise ConfigError(f"aleg_method must be GET or POST, got {aleg_method!r}")
    body = json.dumps({"legs": "aleg", "aleg_url": aleg_url, "aleg_method": aleg_method}).encode()
    return RestRequest("POST", url, headers | {"Content-Type": "application/json"}, body, frozenset({202}))


def make_call_request(
    *,
    auth_id: str,
    auth_token: str,
    to: str,
    from_: str,
    answer_url: str,
    hangup_url: str,
    ring_url: str,
    ring_timeout_s: int,
    machine_detection_url: str | None = None,
    base_url: str = PLIVO_API_BASE,
) -> RestRequest:
    """``POST /v1/Account/{auth_id}/Call/`` (Plivo "Make an outbound call"), JSON as Plivo's SDK sends it.

    Numbers go as Plivo writes them, country code and digits. Every URL is POSTed a signed form (the
    methods are Plivo's defaults, sent anyway so that an account's defaults cannot change them).
    ``machine_detection_url``: asynchronous machine detection (``machine_detection: true``): the verdict
    is POSTed there while the call runs; the gateway, not Plivo, carries out the plan's choice, so every
    provider's record says the same. Plivo answers 201 ``{"message": "call fired", "request_uuid", …}``:
    the request's id; the call's own ``CallUUID`` comes only with its callbacks.

    Raises:
        ConfigError: bad credentials, base URL or callback URL, or a number that is not E.164.
    """
    url, headers = _account_url(base_url, auth_id, auth_token, "Call/")
    callbacks = {"answer_url": answer_url, "hangup_url": hangup_url, "ring_url": ring_url}
    if machine_detection_url is not None:
        callbacks["machine_detection_url"] = machine_detection_url
    for name, callback in callbacks.items():
        target = urlsplit(callback)
        if target.scheme not in ("https", "http") or not target.netloc:
            raise ConfigError(f"Plivo's {name} must be an http(s) URL, got {callback!r}")
    body: dict[str, str | int] = {
        "from": _plivo_number(from_, "from"),
        "to": _plivo_number(to, "to"),
        "answer_url": answer_url,
        "answer_method": "POST",
        "hangup_url": hangup_url,
        "hangup_method": "POST",
        "ring_url": ring_url,
        "ring_method": "POST",
        "ring_timeout": ring_timeout_s,
    }
    if machine_detection_url is not None:
        body |= {
            "machine_detection": "true",
            "machine_detection_url": machine_detection_url,
            "machine_detection_method": "POST",
        }
    payload = json.dumps(body).encode()
    return RestRequest(
        "POST", url, headers | {"Content-Type": "application/json"}, payload, frozenset({200, 201})
    )


def _plivo_number(number: str, name: str) -> str:
    """``+14155550100`` → ``14155550100`` (Plivo's own way of writing numbers)."""
    digits = number.removeprefix("+")
    if not number.startswith("+") or not _PLIVO_NUMBER_RE.fullmatch(digits):
        raise ConfigError(f"Plivo's {name} must be an E.164 number like +14155550100, got {number!r}")
    return digits
