"""Twilio Media Streams (bidirectional ``<Connect><Stream>``) JSON ⇄ telephony events; no I/O.

One :class:`TwilioCodec` per media socket. Feed it every text frame with :meth:`~TwilioCodec.receive_text`
(one Twilio message → one event) and turn commands into text frames with :meth:`~TwilioCodec.encode`.

State table (Twilio "Media Streams – WebSocket Messages")::

    AWAITING_CONNECTED --connected--> AWAITING_START --start--> STREAMING --stop--> STOPPED
    AWAITING_CONNECTED --start------> STREAMING        (lenient: a missing ``connected`` is tolerated)
    STREAMING: media | dtmf | mark (echo of ours)

Anything else raises :class:`~gateway.errors.TelephonyProtocolError` whose ``close_code`` tells the
server how to close the socket: 1007 for undecodable or mistyped data, 1008 for protocol violations
(wrong order, unknown event, another stream's media), 1003 for an audio format we cannot take.

The ``media`` paths in both directions run 50 times a second per call, so they avoid dicts,
``json.dumps`` and per-message validation that only needs doing once per stream.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final, assert_never

from gateway.errors import TelephonyProtocolError
from gateway.telephony.events import (
    CallerAudio,
    CallStarted,
    CallStopped,
    ClearPlayback,
    Connected,
    DtmfPressed,
    MarkReached,
    PlayAudio,
    SetMark,
    TelephonyCommand,
    TelephonyEvent,
)
from gateway.telephony.jsonmsg import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_UNSUPPORTED_DATA,
    StreamState,
    caller_audio,
    invalid,
    media_payload,
    object_field,
    parse,
    string_field,
    violation,
)
from gateway.telephony.provider import PCMU_8K, AudioFormat, Capabilities

#: A stream SID is spliced unescaped into every outbound JSON message, so it must be this plain.
#: Twilio's are ``MZ`` + 32 hex; Twilio-compatible platforms (SignalWire) use UUIDs.
_SID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")
_EMPTY_PARAMS: Final[Mapping[str, str]] = MappingProxyType({})

#: Where a media socket is in Twilio's message sequence (the shared enum; the name stays for callers).
TwilioState = StreamState


class TwilioCodec:
    """Sans-I/O codec for one Twilio media WebSocket.

    Attributes:
        state: where the socket is in the message sequence (:class:`TwilioState`).
        stream_sid, call_sid, account_sid: known once ``start`` has arrived.
        messages_in: every message accepted; media_in / bytes_in: caller audio messages and μ-law bytes;
        media_out / bytes_out: audio messages and μ-law bytes encoded for Twilio.
    """

    __slots__ = (
        "_clear_text",
        "_mark_prefix",
        "_media_prefix",
        "account_sid",
        "bytes_in",
        "bytes_out",
        "call_sid",
        "media_in",
        "media_out",
        "messages_in",
        "state",
        "stream_sid",
    )

    #: Twilio plays any number of frames per message and buffers them; marks and ``clear`` exist;
    #: hanging up is closing the stream (no TwiML follows ``<Connect>``); transfer and DTMF go
    #: through the REST API (docs/telephony-providers.md §1).
    capabilities: ClassVar[Capabilities] = Capabilities(
        marks=True, clear=True, frames_per_message=None, provider_buffers=True, hangup="close",
        transfer="rest", dtmf_out="inband", binary_audio=False, continuous_media=True,
    )  # fmt: skip

    @property
    def audio(self) -> AudioFormat:
        """μ-law at 8 kHz, Twilio's only format (``start.mediaFormat`` is checked against it)."""
        return PCMU_8K

    def __init__(self) -> None:
        self.state = StreamState.AWAITING_CONNECTED
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.account_sid: str | None = None
        self.messages_in = 0
        self.media_in = 0
        self.bytes_in = 0
        self.media_out = 0
        self.bytes_out = 0
        self._media_prefix = ""
        self._mark_prefix = ""
        self._clear_text = ""

    # --- inbound -------------------------------------------------------------------------------

    def receive_text(self, text: str) -> TelephonyEvent:
        """Parse one text frame from Twilio into one event.

        Raises:
            TelephonyProtocolError: malformed JSON or fields, invalid base64, a message out of
                order or for another stream, an unknown event, or an unsupported audio format.
        """
        msg = parse(text, "Twilio")
        event = msg.get("event")
        # The media branch comes first and stays short: it is 50 messages/s per call.
        if event == "media":
            return self._media(msg)
        if not isinstance(event, str):
            raise invalid("Twilio message has no string 'event' field")
        result = self._receive_control(event, msg)
        self.messages_in += 1
        return result

    def receive_media(self, text: str) -> CallerAudio | None:
        """The caller-audio fast path: a ``media`` message's event, or None for any other message.

        None leaves the codec untouched, so the same text can still go through :meth:`receive_text`.
        Raises as :meth:`receive_text` does, for JSON that is not an object and for bad media.
        """
        msg = parse(text, "Twilio")
        return self._media(msg) if msg.get("event") == "media" else None

    def _media(self, msg: dict[str, Any]) -> CallerAudio:
        if self.state is not StreamState.STREAMING:
            raise violation(f"media received in state {self.state.value}")
        sid = msg.get("streamSid")
        if sid is not None and sid != self.stream_sid:
            raise violation("media for another stream")
        media, audio = media_payload(msg.get("media"))
        track = media.get("track")
        if track is not None and track != "inbound":
            raise violation(f"unexpected media track {track!r} on a bidirectional stream")
        event = caller_audio(media, audio)
        self.messages_in += 1
        self.media_in += 1
        self.bytes_in += len(audio)
        return event

    def _receive_control(self, event: str, msg: dict[str, Any]) -> TelephonyEvent:
        state = self.state
        if event == "connected":
            if state is not StreamState.AWAITING_CONNECTED:
                raise violation(f"'connected' received in state {state.value}")
            protocol = msg.get("protocol", "")
            version = msg.get("version", "")
            if not isinstance(protocol, str) or not isinstance(version, str):
                raise invalid("connected.protocol and connected.version must be strings")
            self.state = StreamState.AWAITING_START
            return Connected(protocol, version)
        if event == "start":
            if state not in (StreamState.AWAITING_CONNECTED, StreamState.AWAITING_START):
                raise violation(f"'start' received in state {state.value}")
            return self._start(msg)
        if event in ("dtmf", "mark", "stop"):
            if state is not StreamState.STREAMING:
                raise violation(f"{event!r} received in state {state.value}")
            sid = msg.get("streamSid")
            if sid is not None and sid != self.stream_sid:
                raise violation(f"{event!r} for another stream")
            if event == "dtmf":
                digit = string_field(object_field(msg, "dtmf", "dtmf"), "digit", "dtmf.dtmf")
                if digit not in _DTMF_DIGITS:
                    raise invalid(f"dtmf.digit {digit!r} is not a DTMF key")
                return DtmfPressed(digit)
            if event == "mark":
                return MarkReached(string_field(object_field(msg, "mark", "mark"), "name", "mark.mark"))
            stop = msg.get("stop")
            call_sid = self.call_sid or ""
            if stop is not None:
                if not isinstance(stop, dict):
                    raise invalid("stop.stop must be an object")
                call_sid = stop.get("callSid", call_sid)
                if not isinstance(call_sid, str):
                    raise invalid("stop.callSid must be a string")
            self.state = StreamState.STOPPED
            return CallStopped(call_sid)
        raise violation(f"unknown Twilio event {event[:40]!r}")

    def _start(self, msg: dict[str, Any]) -> CallStarted:
        start = object_field(msg, "start", "start")
        stream_sid = start.get("streamSid", msg.get("streamSid"))
        if not isinstance(stream_sid, str) or not _SID_RE.fullmatch(stream_sid):
            raise invalid("start.streamSid must be a plain identifier (letters, digits, '-', '_')")
        top_sid = msg.get("streamSid")
        if top_sid is not None and top_sid != stream_sid:
            raise violation("start.streamSid differs from the message's streamSid")
        call_sid = string_field(start, "callSid", "start.start")
        account_sid = string_field(start, "accountSid", "start.start")
        tracks_raw = start.get("tracks", ["inbound"])
        if not isinstance(tracks_raw, list) or not all(isinstance(t, str) for t in tracks_raw):
            raise invalid("start.tracks must be a list of strings")
        params_raw = start.get("customParameters")
        params: Mapping[str, str] = _EMPTY_PARAMS
        if params_raw is not None:
            if not isinstance(params_raw, dict) or not all(isinstance(v, str) for v in params_raw.values()):
                raise invalid("start.customParameters must be an object of strings")
            params = MappingProxyType(dict(params_raw))
        fmt = object_field(start, "mediaFormat", "start.start")
        encoding = string_field(fmt, "encoding", "start.mediaFormat")
        rate = fmt.get("sampleRate")
        channels = fmt.get("channels")
        if type(rate) is not int or type(channels) is not int:
            raise invalid("start.mediaFormat.sampleRate and channels must be integers")
        if (encoding, rate, channels) != ("audio/x-mulaw", 8000, 1):
            raise TelephonyProtocolError(
                f"unsupported media format {encoding} {rate} Hz x{channels}; only audio/x-mulaw 8000 Hz mono",
                close_code=CLOSE_UNSUPPORTED_DATA,
            )
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        # The SID was checked to be JSON-safe, so outbound messages can be built by concatenation.
        self._media_prefix = '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"'
        self._mark_prefix = '{"event":"mark","streamSid":"' + stream_sid + '","mark":{"name":'
        self._clear_text = '{"event":"clear","streamSid":"' + stream_sid + '"}'
        self.state = StreamState.STREAMING
        return CallStarted(
            stream_sid, call_sid, account_sid, tuple(tracks_raw), params, encoding, rate, channels
        )

    # --- outbound ------------------------------------------------------------------------------

    def encode(self, command: TelephonyCommand) -> str:
        """Render one command as the text frame Twilio expects.

        Allowed once ``start`` has arrived (the stream SID is needed), also after ``stop`` so a
        bridge racing the hang-up need not special-case it.

        Raises:
            TelephonyProtocolError: used before ``start`` (a bug on our side; close code 1011).
        """
        if not self._media_prefix:
            raise TelephonyProtocolError(
                f"cannot send {type(command).__name__} before Twilio's 'start'",
                close_code=CLOSE_INTERNAL_ERROR,
            )
        if type(command) is PlayAudio:
            payload = command.payload
            self.media_out += 1
            self.bytes_out += len(payload)
            return self._media_prefix + binascii.b2a_base64(payload, newline=False).decode("ascii") + '"}}'
        match command:
            case SetMark(name=name):
                return self._mark_prefix + json.dumps(name) + "}}"
            case ClearPlayback():
                return self._clear_text
            case PlayAudio():  # pragma: no cover - handled above without the match overhead
                raise AssertionError("unreachable")
            case _:
                assert_never(command)
