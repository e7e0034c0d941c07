"""Asterisk AudioSocket: TCP byte stream ⇄ frames ⇄ telephony events. No I/O.

Every message is one byte of *kind*, a 16-bit big-endian payload length, and the payload. What this
follows: Asterisk's ``include/asterisk/res_audiosocket.h`` (the kinds) and ``res/res_audiosocket.c``
(``ast_audiosocket_init``, ``ast_audiosocket_send_frame``, ``ast_audiosocket_receive_frame_with_hangup``),
``apps/app_audiosocket.c`` and ``channels/chan_audiosocket.c`` (asterisk/asterisk ``f0c1c1a``, Aug
2026); Asterisk's AudioSocket protocol page (docs/telephony-providers.md §7.2) for 0xff::

    0x00 hang-up (no payload)          0x01 the call's UUID (16 bytes, first message)
    0x03 one DTMF digit (ASCII)        0x10 slin 8 kHz; 0x11-0x18 slin 12/16/24/32/44.1/48/96/192 kHz
    0xff an error (optional code byte: 0x01 the caller hung up, 0x02 frame forwarding, 0x04 memory)

State table::

    AWAITING_UUID --0x01--> AWAITING_AUDIO --first audio frame--> STREAMING (CallStarted)
    STREAMING: audio of that one kind | 0x03 DTMF | 0x00 hang-up / 0xff error (CallStopped)

The audio kind is the stream's format: the ``AudioSocket()`` application always sends slin 8 kHz
(``ast_set_write_format(chan, ast_format_slin)``), the ``AudioSocket/host:port/uuid/c(slin16)`` channel
sends its ``c()`` codec, so the call starts on the first audio frame (its 20 ms of the caller's audio
ride on :class:`CallStarted` as ``audio``, which the bridge hears first) and we answer in the same kind.
Audio is signed 16-bit little-endian.

AudioSocket buffers nothing: Asterisk writes each frame we send to the channel at once, so the gateway
paces one 20 ms frame per message in real time (``frames_per_message=1``, ``provider_buffers=False``).
There are no marks and no clear: what is heard follows the playout clock, and barge-in drops the
gateway's own queue. The protocol carries no dialled number and no caller, and no authentication: the
server side maps the UUID to a number (gateway/server/audiosocket.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, Final

from gateway.errors import TelephonyProtocolError
from gateway.telephony.events import (
    CallerAudio,
    CallStarted,
    CallStopped,
    DtmfPressed,
    PlayAudio,
    TelephonyCommand,
    TelephonyEvent,
)
from gateway.telephony.jsonmsg import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_UNSUPPORTED_DATA,
    StreamState,
    invalid,
    violation,
)
from gateway.telephony.provider import AudioFormat, Capabilities

__all__ = [
    "AUDIO_KINDS",
    "HANGUP",
    "KIND_AUDIO",
    "KIND_DTMF",
    "KIND_ERROR",
    "KIND_HANGUP",
    "KIND_UUID",
    "AudioSocketCodec",
    "FrameReader",
    "frame",
]

KIND_HANGUP: Final = 0x00
KIND_UUID: Final = 0x01
KIND_DTMF: Final = 0x03
KIND_AUDIO: Final = 0x10
KIND_ERROR: Final = 0xFF
#: Audio kinds and their sample rates (res_audiosocket.h: AST_AUDIOSOCKET_KIND_AUDIO…_SLIN192).
AUDIO_KINDS: Final[Mapping[int, int]] = MappingProxyType(
    {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000, 0x15: 44100, 0x16: 48000,
     0x17: 96000, 0x18: 192000}
)  # fmt: skip
#: The hang-up message: kind 0x00, length 0.
HANGUP: Final = b"\x00\x00\x00"
_ERROR_CODES: Final = {
    0x01: "the calling party hung up",
    0x02: "frame forwarding error",
    0x04: "memory error",
}
_DTMF_DIGITS: Final = frozenset(b"0123456789*#ABCDabcd")
#: The longest message we accept: 20 ms at 192 kHz is 7680 bytes (the header would allow 64 KiB).
MAX_PAYLOAD: Final = 16000
_IDLE: Final = StreamState.AWAITING_CONNECTED  # waiting for the UUID
_CAPABILITIES: Final = Capabilities(
    marks=False, clear=False, frames_per_message=1, provider_buffers=False, hangup="command",
    transfer="none", dtmf_out="inband", binary_audio=True, continuous_media=False,
)  # fmt: skip


def frame(kind: int, payload: bytes = b"") -> bytes:
    """One AudioSocket message."""
    return bytes((kind, len(payload) >> 8, len(payload) & 0xFF)) + payload


class FrameReader:
    """Cuts the TCP byte stream into whole messages (header included), in order.

    Raises:
        TelephonyProtocolError: a length over :data:`MAX_PAYLOAD` (1009-like: too big; 1007 here).
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        if not buffer and len(data) >= 3:  # the usual case: whole messages, nothing carried over
            size = 3 + (data[1] << 8 | data[2])
            if len(data) == size and size - 3 <= MAX_PAYLOAD:
                return [data]
        buffer += data
        out: list[bytes] = []
        start, end = 0, len(buffer)
        while end - start >= 3:
            length = buffer[start + 1] << 8 | buffer[start + 2]
            if length > MAX_PAYLOAD:
                raise invalid(f"an AudioSocket message of {length} bytes is longer than this gateway takes")
            if end - start < 3 + length:
                break
            out.append(bytes(buffer[start : start + 3 + length]))
            start += 3 + length
        del buffer[:start]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held back."""
        return len(self._buffer)


class AudioSocketCodec:
    """One AudioSocket connection, sans-I/O: whole messages in (see :class:`FrameReader`), messages out."""

    __slots__ = ("_audio", "_kind", "call_uuid", "state")

    capabilities: ClassVar[Capabilities] = _CAPABILITIES

    def __init__(self) -> None:
        self.state = _IDLE
        self.call_uuid = ""
        self._kind = KIND_AUDIO
        self._audio = AudioFormat("l16", 8000)

    @property
    def audio(self) -> AudioFormat:
        """L16 at the rate of the first audio frame's kind (8 kHz before it)."""
        return self._audio

    # --- inbound -------------------------------------------------------------------------------

    def receive_binary(self, data: bytes) -> CallerAudio | None:
        """The hot path: one message of the stream's audio kind → its audio; None for any other message
        (:meth:`receive_frame` takes those).

        Raises:
            TelephonyProtocolError: an odd byte count (1007).
        """
        if data[0] != self._kind or self.state is not StreamState.STREAMING:
            return None
        if (len(data) - 3) & 1:
            raise invalid(f"an audio message of {len(data) - 3} bytes is not 16-bit samples")
        return CallerAudio(data[3:])

    def receive_media(self, text: str) -> CallerAudio | None:
        """AudioSocket has no text."""
        return None

    def receive_text(self, text: str) -> TelephonyEvent | None:
        """AudioSocket has no text: a programming error to call."""
        raise violation("AudioSocket carries no text messages")

    def receive_frame(self, data: bytes) -> TelephonyEvent | None:
        """One whole message → one event (None: nothing to do).

        Raises:
            TelephonyProtocolError: a message out of order or malformed (1007/1008), an unknown kind or a
                second audio format (1003), an error Asterisk reports other than the caller hanging up.
        """
        if len(data) < 3 or len(data) != 3 + (data[1] << 8 | data[2]):
            raise invalid("not one whole AudioSocket message")
        kind, payload = data[0], data[3:]
        if kind == KIND_HANGUP:
            self.state = StreamState.STOPPED
            return CallStopped(self.call_uuid)
        if kind == KIND_ERROR:
            code = payload[0] if payload else 0
            if code & 0x01:
                self.state = StreamState.STOPPED
                return CallStopped(self.call_uuid)
            names = [text for bit, text in _ERROR_CODES.items() if code & bit] or [f"code {code:#04x}"]
            raise violation(f"Asterisk reported an AudioSocket error: {', '.join(names)}")
        if kind == KIND_UUID:
            if self.state is not _IDLE:
                raise violation("a second UUID message")
            if len(payload) != 16:
                raise invalid(f"the UUID message has {len(payload)} bytes, not 16")
            self.call_uuid = str(uuid.UUID(bytes=payload))
            self.state = StreamState.AWAITING_START
            return None
        if self.state is _IDLE:
            raise violation(f"message kind {kind:#04x} before the UUID")
        if kind == KIND_DTMF:
            if len(payload) != 1 or payload[0] not in _DTMF_DIGITS:
                raise invalid(f"DTMF message {payload[:4]!r} is not one key")
            return DtmfPressed(chr(payload[0]).upper())
        rate = AUDIO_KINDS.get(kind)
        if rate is None:
            raise TelephonyProtocolError(
                f"unknown AudioSocket message kind {kind:#04x}", close_code=CLOSE_UNSUPPORTED_DATA
            )
        if not payload or len(payload) & 1:
            raise invalid(f"an audio message of {len(payload)} bytes is not 16-bit samples")
        if self.state is StreamState.AWAITING_START:
            self._kind, self._audio = kind, AudioFormat("l16", rate)
            self.state = StreamState.STREAMING
            return CallStarted(
                stream_sid=self.call_uuid,
                call_sid=self.call_uuid,
                account_sid="",
                tracks=("inbound",),
                encoding=f"audio/l16;rate={rate}",
                sample_rate=rate,
                audio=payload,
            )
        if kind != self._kind:
            raise TelephonyProtocolError(
                f"audio kind {kind:#04x} on a stream that started as {self._kind:#04x}",
                close_code=CLOSE_UNSUPPORTED_DATA,
            )
        if self.state is StreamState.STREAMING:
            return CallerAudio(payload)
        return None  # after a hang-up: nothing more to do

    # --- outbound ------------------------------------------------------------------------------

    def encode(self, command: TelephonyCommand) -> bytes:
        """One 20 ms frame of audio as a message of the stream's kind. AudioSocket has no marks or clear
        (``capabilities`` says so; the bridge sends none).

        Raises:
            TelephonyProtocolError: before the stream started, or a command AudioSocket lacks (1011).
        """
        if type(command) is not PlayAudio or self.state is not StreamState.STREAMING:
            raise TelephonyProtocolError(
                f"AudioSocket cannot send {type(command).__name__} now", close_code=CLOSE_INTERNAL_ERROR
            )
        payload = command.payload
        n = len(payload)
        return bytes((self._kind, n >> 8, n & 0xFF)) + payload

    def answer_frame(self) -> None:
        """Nothing: the dialplan answered before ``AudioSocket()`` (the application requires it)."""
        return None

    def hangup_frame(self) -> bytes:
        """Kind 0x00: Asterisk ends the application (or hangs up the AudioSocket channel)."""
        return HANGUP
