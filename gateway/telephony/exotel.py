"""Exotel Voicebot applet (bidirectional stream): JSON ⇄ telephony events, the dynamic-URL answer and
the stream URL's secret. No I/O.

State table (Exotel "WebSocket protocol")::

    AWAITING_CONNECTED --connected--> AWAITING_START --start--> STREAMING --stop--> STOPPED
    AWAITING_CONNECTED --start------> STREAMING        (lenient: a missing ``connected`` is tolerated)
    STREAMING: media | dtmf | mark (echo of ours)

Errors are :class:`~gateway.errors.TelephonyProtocolError` with the close codes of
:mod:`gateway.telephony.twilio` (1007 bad data, 1008 order or unknown event, 1003 a format we cannot
take, 1011 our own misuse).

What this follows (docs/telephony-providers.md §5, re-checked with the search tool in Exotel's docs
(rahulkumar-exo/exotel-docs ``docs/agentstream/websocket-protocol.md`` and
``stream-voicebot-applet.md``) and Exotel's own exotel/Agent-Stream code):

* audio is 16-bit little-endian PCM, mono, at 8 kHz or the URL's ``?sample-rate=16000|24000``;
  ``start.media_format`` (``encoding`` ``raw``/``audio/x-raw``, ``sample_rate`` as a string) says which.
  A beta "extension guide" lists μ-law too; it contradicts the base guide and is refused (1003);
* ``sequence_number``/``chunk``/``timestamp`` are strings in one page and numbers in another: both taken;
* the docs spell the stream id ``stream_sid``, Exotel's own bridges send ``streamSid``: both are read,
  and outbound messages carry both (harmless extra JSON);
* chunk rule for audio we send: **3,200 to 100,000 bytes, a multiple of 320** ("smaller chunks risk
  distortion, larger cause timeouts, non-compliant sizes create gaps"). The page calls 3.2 KB
  "100 ms", which is true only at 16 kHz (it is 200 ms at 8 kHz); Exotel's own sender uses 100 ms
  (1,600 B at 8 kHz), below the documented minimum. We keep to the documented bytes: every message
  is ten 20 ms frames (3,200 B at 8 kHz, 6,400 B at 16 kHz, 9,600 B at 24 kHz) and ``encode``
  refuses any other size. Exotel asks for about real-time pacing (its sender waits 0.9× each chunk's
  duration; "blasting frames" correlated with dropped calls), hence ``provider_buffers=False``;
* no hang-up command: closing the socket ends the applet (the flow moves on); no transfer.

The stream token: the dynamic URL's answer puts ``token=…`` in the stream URL's query. Exotel opens
the socket with that URL (the server checks it before accepting) and also copies the query's pairs
into ``start.custom_parameters``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.errors import ConfigError, TelephonyProtocolError
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
    optional_string,
    string_map,
    violation,
)
from gateway.telephony.provider import AudioFormat, Capabilities

__all__ = [
    "CHUNK_MULTIPLE",
    "MAX_CHUNK_BYTES",
    "MIN_CHUNK_BYTES",
    "RATES",
    "ExotelCall",
    "ExotelCodec",
    "ExotelState",
    "exotel_call",
    "exotel_number",
    "static_stream_url",
    "verify_exotel_secret",
    "voicebot_answer",
]

#: Exotel's rules for the audio we send (bytes per ``media`` message).
CHUNK_MULTIPLE: Final = 320
MIN_CHUNK_BYTES: Final = 3200
MAX_CHUNK_BYTES: Final = 100_000
#: Sample rates the applet streams at (``?sample-rate=``).
RATES: Final = (8000, 16000, 24000)
#: 20 ms frames per message: the smallest constant count meeting MIN_CHUNK_BYTES at every rate.
FRAMES_PER_MESSAGE: Final = 10

_SID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: ``start.media_format.encoding`` values meaning 16-bit linear PCM ("raw/slin" in the applet guide).
_PCM_ENCODINGS: Final = frozenset({"raw", "audio/x-raw", "slin", "audio/l16", "audio/x-l16", "linear16"})


#: Where a media socket is in Exotel's message sequence (the shared enum; the name stays for callers).
ExotelState = StreamState


class ExotelCodec(JsonMediaCodec[TelephonyEvent]):
    """Sans-I/O codec for one Exotel Voicebot media WebSocket; the message flow is :class:`JsonMediaCodec`'s.

    Attributes:
        state: where the socket is in the message sequence (:class:`ExotelState`).
        stream_sid, call_sid, account_sid: known once ``start`` has arrived.
        from_number, to_number: ``start.from`` / ``start.to`` (Exotel's view; the server trusts them
            only as far as the stream URL's secret or token vouches for the socket).
        stop_reason: ``stop.reason``: ``stopped`` (the applet ended) or ``callended`` (caller hung up).
        audio: 16-bit little-endian PCM at the stream's rate (``start.media_format.sample_rate``).
        messages_in, media_in, bytes_in, media_out, bytes_out: counters, as on TwilioCodec.
    """

    __slots__ = ("account_sid", "call_sid", "from_number", "stop_reason", "to_number")

    _provider = "Exotel"
    #: The stream id's two spellings (docs: ``stream_sid``; Exotel's code: ``streamSid``).
    _sid_key = "stream_sid"
    _sid_alt = "streamSid"
    _events = ("dtmf", "mark", "stop")
    # Only with the beta "both tracks" option, which we do not take.
    _track_hint = ": configure the applet for the inbound track"

    #: Marks and ``clear`` exist; every message must be ten whole 20 ms frames (see the module
    #: docstring: 3,200 B at 8 kHz, the documented minimum); the gateway paces at real time as
    #: Exotel asks; hang-up is closing the socket; the applet has no transfer and no DTMF out.
    capabilities: ClassVar[Capabilities] = Capabilities(
        marks=True, clear=True, frames_per_message=FRAMES_PER_MESSAGE, provider_buffers=False,
        hangup="close", transfer="none", dtmf_out="inband", binary_audio=False, continuous_media=True,
    )  # fmt: skip

    def __init__(self, sample_rate: int = 8000) -> None:
        """``sample_rate``: the stream URL's ``?sample-rate=``; ``start.media_format`` replaces it."""
        if sample_rate not in RATES:
            raise ConfigError(f"Exotel streams at {', '.join(map(str, RATES))} Hz, not {sample_rate}")
        super().__init__(AudioFormat("l16", sample_rate))
        self.call_sid: str | None = None
        self.account_sid: str | None = None
        self.from_number: str | None = None
        self.to_number: str | None = None
        self.stop_reason: str | None = None
        self._pcm16 = True

    @property
    def stream_sid(self) -> str | None:
        """Known once ``start`` has arrived."""
        return self._stream

    # --- inbound: the hooks of JsonMediaCodec's message flow ------------------------------------

    def _streaming(self, event: str, msg: dict[str, Any]) -> TelephonyEvent:
        if event == "dtmf":
            body = msg.get("dtmf", msg)  # the beta guide shows the digit at the top level
            if type(body) is not dict or type(body.get("digit")) is not str:
                raise invalid("dtmf.digit must be a string")
            digit = body["digit"].upper()
            if digit not in DTMF_DIGITS:
                raise invalid(f"dtmf.digit {digit!r} is not a DTMF key")
            return DtmfPressed(digit)
        if event == "mark":
            name = object_field(msg, "mark").get("name")
            if type(name) is not str:
                raise invalid("mark.name must be a string")
            return MarkReached(name)
        stop = msg.get("stop", {})
        if type(stop) is not dict:
            raise invalid("stop.stop must be an object")
        call_sid = stop.get("call_sid", self.call_sid or "")
        reason = stop.get("reason")
        if type(call_sid) is not str or (reason is not None and type(reason) is not str):
            raise invalid("stop.call_sid and stop.reason must be strings")
        self.stop_reason = reason
        self.state = StreamState.STOPPED
        return CallStopped(call_sid)

    def _start(self, msg: dict[str, Any]) -> CallStarted:
        start = object_field(msg, "start")
        top_sid = self._sid_of(msg)
        stream_sid = self._sid_of(start)
        if stream_sid is None:
            stream_sid = top_sid
        if type(stream_sid) is not str or not _SID_RE.fullmatch(stream_sid):
            raise invalid("start.stream_sid must be a plain identifier (letters, digits, '-', '_')")
        if top_sid is not None and top_sid != stream_sid:
            raise violation("start.stream_sid differs from the message's stream_sid")
        call_sid = start.get("call_sid", start.get("callSid"))
        if type(call_sid) is not str:
            raise invalid("start.call_sid must be a string")
        account_sid = optional_string(start, "account_sid", "start.start")
        from_number = optional_string(start, "from", "start.start")
        to_number = optional_string(start, "to", "start.start")
        params = string_map(start, "custom_parameters", "start")
        rate = self._audio.rate
        encoding = "audio/x-raw"
        fmt = start.get("media_format")
        if fmt is not None:
            if type(fmt) is not dict:
                raise invalid("start.media_format must be an object")
            encoding = optional_string(fmt, "encoding", "start.media_format") or encoding
            announced = counter(fmt.get("sample_rate"), "start.media_format.sample_rate")
            rate = rate if announced is None else announced
            if encoding.partition(";")[0].strip().lower() not in _PCM_ENCODINGS or rate not in RATES:
                raise TelephonyProtocolError(
                    f"unsupported media format {encoding[:40]!r} at {rate} Hz; the Voicebot applet streams "
                    "16-bit PCM at 8000, 16000 or 24000 Hz",
                    close_code=CLOSE_UNSUPPORTED_DATA,
                )
        self._audio = AudioFormat("l16", rate)
        self._stream, self.call_sid, self.account_sid = stream_sid, call_sid, account_sid
        self.from_number, self.to_number = from_number, to_number
        # The SID was checked to be JSON-safe, so outbound messages are built by concatenation.
        ids = '"stream_sid":"' + stream_sid + '","streamSid":"' + stream_sid + '"'
        self._media_prefix = '{"event":"media",' + ids + ',"media":{"payload":"'
        self._mark_prefix = '{"event":"mark",' + ids + ',"mark":{"name":'
        self._clear_text = '{"event":"clear",' + ids + "}"
        self.state = StreamState.STREAMING
        return CallStarted(
            stream_sid, call_sid, account_sid, ("inbound",), params, encoding, rate, 1, from_number, to_number
        )

    # --- outbound ------------------------------------------------------------------------------

    def encode(self, command: TelephonyCommand) -> str:
        """Render one command as the text frame Exotel expects (``media``, ``mark``, ``clear``).

        Allowed once ``start`` has arrived, also after ``stop``.

        Raises:
            TelephonyProtocolError: used before ``start``, or audio that breaks Exotel's chunk rule
                (a multiple of 320 bytes from 3,200 to 100,000): our bug, close code 1011.
        """
        if not self._media_prefix:
            raise self._not_started(command)
        if type(command) is PlayAudio:
            payload = command.payload
            size = len(payload)
            if size % CHUNK_MULTIPLE or not MIN_CHUNK_BYTES <= size <= MAX_CHUNK_BYTES:
                raise TelephonyProtocolError(
                    f"Exotel plays chunks of {MIN_CHUNK_BYTES}-{MAX_CHUNK_BYTES} bytes in multiples of "
                    f"{CHUNK_MULTIPLE}, not {size} (send {FRAMES_PER_MESSAGE} whole 20 ms frames a message)",
                    close_code=CLOSE_INTERNAL_ERROR,
                )
            self.media_out += 1
            self.bytes_out += size
            return self._media_prefix + binascii.b2a_base64(payload, newline=False).decode("ascii") + '"}}'
        return self._command(command)


# --- the applet's URL: the dynamic answer, the static URL and its secret -------------------------------

#: Characters a secret may hold so that it travels in a URL unencoded (RFC 3986 "unreserved").
_URL_SAFE: Final = re.compile(r"[A-Za-z0-9._~-]{16,256}")


def _stream_url(stream_url: str) -> tuple[str, str, list[tuple[str, str]]]:
    parts = urlsplit(stream_url)
    if parts.scheme not in ("wss", "ws") or not parts.hostname or parts.fragment or parts.username:
        raise ConfigError(
            f"stream URL must be wss://host/path (ws:// only for local tests), got {stream_url!r}"
        )
    return parts.scheme, parts.netloc, parse_qsl(parts.query, keep_blank_values=True)


def _with_query(stream_url: str, query: list[tuple[str, str]], netloc: str | None = None) -> str:
    parts = urlsplit(stream_url)
    return urlunsplit(parts._replace(query=urlencode(query), netloc=netloc or parts.netloc))


def voicebot_answer(stream_url: str, token: str, *, sample_rate: int = 8000) -> str:
    """The dynamic URL's reply, ``{"url": "wss://…?token=…"}``, with ``sample-rate`` unless 8000 Hz.

    Exotel copies the URL's query pairs into ``start.custom_parameters``: at most 3 pairs and 256
    characters (Exotel's applet guide), which a token of ours (about 200 characters) fits.

    Raises:
        ConfigError: the URL is not ws(s)://host/path, the token is empty, or the rate is not Exotel's.
    """
    _, _, query = _stream_url(stream_url)
    if not token:
        raise ConfigError("the stream token must not be empty")
    if sample_rate not in RATES:
        raise ConfigError(f"Exotel streams at {', '.join(map(str, RATES))} Hz, not {sample_rate}")
    if sample_rate != 8000:
        query.append(("sample-rate", str(sample_rate)))
    query.append(("token", token))
    return json.dumps({"url": _with_query(stream_url, query)})


def static_stream_url(
    stream_url: str, secret: str, *, sample_rate: int = 8000, form: Literal["basic", "query"] = "basic"
) -> str:
    """The URL to paste into the applet when there is no dynamic endpoint, carrying the gateway's secret.

    ``basic`` (preferred): ``wss://exotel:SECRET@host/path``, which Exotel sends as ``Authorization:
    Basic`` (its applet guide), so the secret stays out of logs and ``custom_parameters``. ``query``:
    ``?secret=SECRET``, for setups that strip credentials from URLs.

    Raises:
        ConfigError: bad URL or rate, or a secret of fewer than 16 or other than URL-safe characters.
    """
    _, netloc, query = _stream_url(stream_url)
    if not _URL_SAFE.fullmatch(secret):
        raise ConfigError("the Exotel secret must be 16-256 characters of A-Z a-z 0-9 . _ ~ -")
    if sample_rate not in RATES:
        raise ConfigError(f"Exotel streams at {', '.join(map(str, RATES))} Hz, not {sample_rate}")
    if sample_rate != 8000:
        query.append(("sample-rate", str(sample_rate)))
    if form == "query":
        return _with_query(stream_url, [*query, ("secret", secret)])
    return _with_query(stream_url, query, netloc=f"exotel:{secret}@{netloc}")


def verify_exotel_secret(secret: str, *, authorization: str | None, query_secret: str | None) -> bool:
    """Whether the upgrade (or dynamic-URL) request carries ``secret``: as the password of a Basic
    ``Authorization`` header, or as the ``secret`` query parameter. Compared in constant time.

    Raises:
        ConfigError: the configured secret is empty.
    """
    if not secret:
        raise ConfigError("Exotel secret is empty")
    expected = secret.encode()
    given: list[bytes] = []
    if authorization is not None:
        scheme, _, encoded = authorization.strip().partition(" ")
        if scheme.lower() == "basic":
            try:
                given.append(base64.b64decode(encoded.strip(), validate=True).partition(b":")[2])
            except (binascii.Error, ValueError):
                pass
    if query_secret is not None:
        given.append(query_secret.encode("utf-8", "replace"))
    ok = False
    for candidate in given:
        ok |= hmac.compare_digest(expected, candidate)
    return ok


@dataclass(frozen=True, slots=True)
class ExotelCall:
    """The call a dynamic-URL request is about (Exotel's applet request parameters)."""

    call_sid: str
    from_: str
    to: str


def exotel_call(query: Mapping[str, str]) -> ExotelCall:
    """Read ``CallSid``, ``CallFrom`` and ``CallTo`` from the dynamic URL's GET query.

    These are the parameters Exotel documents for its applets' URL requests (Passthru, Connect's
    dynamic URL); one of its pages spells ``Callfrom``, so names are matched without case.

    Raises:
        TelephonyProtocolError: ``CallSid`` is missing or not a plain identifier.
    """
    lowered = {key.lower(): value for key, value in query.items()}
    call_sid = lowered.get("callsid", "")
    if not _SID_RE.fullmatch(call_sid):
        raise violation("Exotel's request has no valid CallSid")
    return ExotelCall(
        call_sid,
        lowered.get("callfrom", lowered.get("from", "")),
        lowered.get("callto", lowered.get("to", "")),
    )


#: Separators people and dashboards put in numbers (Exotel's shows ``080-472-59725``).
_SEPARATORS: Final = str.maketrans("", "", " -().")


def exotel_number(number: str, country_code: str = "91") -> str:
    """``number`` in E.164 where Exotel wrote it otherwise, so dialplans (E.164) match it.

    Exotel's applet URL requests carry ``CallFrom``/``CallTo`` in national form with the trunk prefix
    (``09876543210``, its applet pages' examples), while its stream ``start`` and Passthru payloads use
    E.164 (``+919876543210``). ``0`` + number becomes ``+<country_code>`` + number, ``00`` + number
    ``+`` + number; an E.164 number loses its separators; anything else (a name, digits without a
    prefix, whose country cannot be told) is returned as it came.
    """
    stripped = number.strip()
    compact = stripped.translate(_SEPARATORS)
    digits = compact.removeprefix("+")
    if not digits or not digits.isascii() or not digits.isdigit():
        return stripped
    if compact.startswith("+"):
        return compact
    if digits.startswith("00") and len(digits) > 2:
        return "+" + digits[2:]
    if digits.startswith("0") and len(digits) > 1:
        return "+" + country_code + digits[1:]
    return stripped
