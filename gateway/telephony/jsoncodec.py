"""The base of the JSON-text media codecs (Twilio, SignalWire, Plivo, Telnyx, Exotel), sans-I/O.

They share one message flow: parse a text frame, hand ``media`` to the fast path, check the order of
the control messages (``connected`` → ``start`` → the rest) and the stream id, count. That flow lives
here once, as template methods; what differs between providers is said by class attributes (key
names, error wording) and hook methods (``_connected``, ``_start``, ``_streaming``, ``encode``).

The media path runs 50 times a second per call, so :meth:`JsonMediaCodec._media` reads the provider's
differences from attributes instead of calling hooks: no Python call per message beyond what each
codec made before.
"""

from __future__ import annotations

import abc
import binascii
import json
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Generic, TypeVar, assert_never

from gateway.errors import TelephonyProtocolError
from gateway.telephony.events import (
    CallerAudio,
    CallStarted,
    ClearPlayback,
    Connected,
    PlayAudio,
    SetMark,
    TelephonyCommand,
    TelephonyEvent,
)
from gateway.telephony.jsonmsg import (
    CLOSE_INTERNAL_ERROR,
    StreamState,
    caller_audio,
    invalid,
    media_payload,
    optional_string,
    parse,
    violation,
)
from gateway.telephony.provider import PCMU_8K, AudioFormat, Capabilities

with warnings.catch_warnings():
    # PEP 594 deprecation on 3.11/3.12; the project depends on audioop-lts where it was removed.
    warnings.simplefilter("ignore", DeprecationWarning)
    from audioop import byteswap

__all__ = ["JsonMediaCodec"]

# One global load on the media path instead of a global and an enum attribute.
_STREAMING: Final = StreamState.STREAMING
_AWAITING_CONNECTED: Final = StreamState.AWAITING_CONNECTED
_AWAITING_START: Final = StreamState.AWAITING_START

#: What a codec's control messages give besides events: ``TelephonyEvent`` where every message yields
#: one, ``TelephonyEvent | None`` where some need no action (Plivo's empty ``clearedAudio``).
R = TypeVar("R", bound=TelephonyEvent | None)


class JsonMediaCodec(abc.ABC, Generic[R]):
    """One JSON-text media WebSocket: the message flow, the counters and the stream state.

    Attributes:
        state: where the socket is in the provider's message sequence.
        messages_in: every message accepted; media_in / bytes_in: caller audio messages and bytes;
        media_out / bytes_out: audio messages and bytes encoded for the provider.
    """

    __slots__ = (
        "_audio",
        "_clear_text",
        "_mark_prefix",
        "_media_prefix",
        "_pcm16",
        "_stream",
        "_swap16",
        "bytes_in",
        "bytes_out",
        "media_in",
        "media_out",
        "messages_in",
        "state",
    )

    capabilities: ClassVar[Capabilities]
    #: Names the sender in errors ("Twilio message is not valid JSON", "unknown Twilio event").
    _provider: ClassVar[str]
    #: The message key of the stream id, and a second spelling read when the first is absent (Exotel).
    _sid_key: ClassVar[str]
    _sid_alt: ClassVar[str] = ""
    #: The stream opens with ``connected`` (Plivo's does not: ``start`` is first).
    _has_connected: ClassVar[bool] = True
    #: The events after ``start`` besides ``media``, handed to :meth:`_streaming`.
    _events: ClassVar[tuple[str, ...]]
    #: Track names besides ``inbound`` that mean the caller (Telnyx: ``inbound_track``).
    _inbound_aliases: ClassVar[tuple[str, ...]] = ()
    #: Ends the error for a media message of another track.
    _track_hint: ClassVar[str] = " on a bidirectional stream"
    #: The error for 16-bit caller audio with an odd byte count.
    _odd_payload: ClassVar[str] = "media.payload has an odd byte count for 16-bit audio"

    def __init__(self, audio: AudioFormat = PCMU_8K) -> None:
        self.state = _AWAITING_CONNECTED if self._has_connected else _AWAITING_START
        self.messages_in = 0
        self.media_in = 0
        self.bytes_in = 0
        self.media_out = 0
        self.bytes_out = 0
        self._audio = audio
        #: The stream id media must carry (set by ``start``; the providers name it publicly).
        self._stream: str | None = None
        #: Caller audio must be whole 16-bit samples; ``_swap16``: big-endian (RTP) L16, swapped to LE.
        self._pcm16 = False
        self._swap16 = False
        #: Outbound frames built by concatenation once ``start`` gave a JSON-safe id; "" before it.
        self._media_prefix = ""
        self._mark_prefix = ""
        self._clear_text = ""

    @property
    def audio(self) -> AudioFormat:
        """The stream's format: what ``start`` announced (before it, the default or what was asked for)."""
        return self._audio

    # --- inbound -------------------------------------------------------------------------------

    def receive_text(self, text: str) -> TelephonyEvent | R:
        """Parse one text frame into one event.

        Raises:
            TelephonyProtocolError: malformed JSON or fields, invalid base64, a message out of order
                or for another stream, an unknown event, or an unsupported audio format.
        """
        msg = parse(text, self._provider)
        event = msg.get("event")
        # The media branch comes first and stays short: it is 50 messages/s per call.
        if event == "media":
            return self._media(msg)
        if type(event) is not str:
            raise invalid(f"{self._provider} message has no string 'event' field")
        result = self._control(event, msg)
        self.messages_in += 1
        return result

    def receive_media(self, text: str) -> CallerAudio | None:
        """The caller-audio fast path: a ``media`` message's event, or None for any other message.

        None leaves the codec untouched, so the same text can still go through :meth:`receive_text`.
        Raises as :meth:`receive_text` does, for JSON that is not an object and for bad media.
        """
        msg = parse(text, self._provider)
        return self._media(msg) if msg.get("event") == "media" else None

    def _media(self, msg: dict[str, Any]) -> CallerAudio:
        if self.state is not _STREAMING:
            raise violation(f"media received in state {self.state.value}")
        sid = msg.get(self._sid_key)  # inline, not _sid_of: no extra call per message
        if sid is None and self._sid_alt:
            sid = msg.get(self._sid_alt)
        if sid is not None and sid != self._stream:
            raise violation("media for another stream")
        media, audio = media_payload(msg.get("media"))
        track = media.get("track")
        if track is not None and track != "inbound" and track not in self._inbound_aliases:
            raise violation(f"unexpected media track {track!r}{self._track_hint}")
        if self._pcm16:
            if len(audio) & 1:
                raise invalid(self._odd_payload)
            if self._swap16:
                audio = byteswap(audio, 2)
        event = caller_audio(media, audio)
        self.messages_in += 1
        self.media_in += 1
        self.bytes_in += len(audio)
        return event

    def _sid_of(self, msg: Mapping[str, Any]) -> object:
        """The stream id ``msg`` carries under the provider's key (or its second spelling), or None."""
        sid = msg.get(self._sid_key)
        return msg.get(self._sid_alt) if sid is None and self._sid_alt else sid

    def _control(self, event: str, msg: dict[str, Any]) -> TelephonyEvent | R:
        """The order every provider enforces; the messages themselves go to the hooks."""
        state = self.state
        if event == "connected" and self._has_connected:
            if state is not _AWAITING_CONNECTED:
                raise violation(f"'connected' received in state {state.value}")
            connected = self._connected(msg)
            self.state = _AWAITING_START
            return connected
        if event == "start":
            # Lenient: a missing ``connected`` is tolerated.
            if state is not _AWAITING_CONNECTED and state is not _AWAITING_START:
                raise violation(f"'start' received in state {state.value}")
            return self._start(msg)
        if event not in self._events:
            raise violation(f"unknown {self._provider} event {event[:40]!r}")
        if state is not _STREAMING:
            raise violation(f"{event!r} received in state {state.value}")
        sid = self._sid_of(msg)
        if sid is not None and sid != self._stream:
            raise violation(f"{event!r} for another stream")
        return self._streaming(event, msg)

    def _connected(self, msg: dict[str, Any]) -> Connected:
        """The ``connected`` message's event (checked before the state moves on): optional string
        ``protocol`` and ``version``. Only read where ``_has_connected``."""
        return Connected(
            optional_string(msg, "protocol", "connected"), optional_string(msg, "version", "connected")
        )

    @abc.abstractmethod
    def _start(self, msg: dict[str, Any]) -> CallStarted:
        """The ``start`` message: sets the stream id, format and outbound prefixes, then ``STREAMING``."""

    @abc.abstractmethod
    def _streaming(self, event: str, msg: dict[str, Any]) -> TelephonyEvent | R:
        """One of ``_events``, in order and for this stream."""

    # --- outbound ------------------------------------------------------------------------------

    def encode(self, command: TelephonyCommand) -> str:
        """Render one command as the provider's text frame; audio goes as it comes.

        Allowed once ``start`` has arrived (the stream id is needed), also after ``stop`` so a
        bridge racing the hang-up need not special-case it. A provider with rules for the audio it
        takes overrides this, keeping the same shape (no extra call per message).

        Raises:
            TelephonyProtocolError: used before ``start`` (a bug on our side; close code 1011).
        """
        if not self._media_prefix:
            raise self._not_started(command)
        if type(command) is PlayAudio:
            payload = command.payload
            self.media_out += 1
            self.bytes_out += len(payload)
            if self._swap16:  # big-endian L16 out, as _media swaps it in
                payload = byteswap(payload, 2)
            return self._media_prefix + binascii.b2a_base64(payload, newline=False).decode("ascii") + '"}}'
        return self._command(command)

    def _not_started(self, command: TelephonyCommand) -> TelephonyProtocolError:
        return TelephonyProtocolError(
            f"cannot send {type(command).__name__} before {self._provider}'s 'start'",
            close_code=CLOSE_INTERNAL_ERROR,
        )

    def _command(self, command: TelephonyCommand) -> str:
        """A command other than audio (marks and clears: a few per turn, so hooks are fine here)."""
        match command:
            case SetMark(name=name):
                return self._mark(name)
            case ClearPlayback():
                return self._clear()
            case PlayAudio():  # pragma: no cover - encode handles it without the match overhead
                raise AssertionError("unreachable")
            case _:
                assert_never(command)

    def _mark(self, name: str) -> str:
        return self._mark_prefix + json.dumps(name) + "}}"

    def _clear(self) -> str:
        return self._clear_text
