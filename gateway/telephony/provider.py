"""What a phone provider's media stream is, as the bridge needs to know it: audio format and capabilities.

Every provider codec (``telephony/twilio.py`` and the next ones) is sans-I/O and declares a
:class:`Capabilities`; the bridge, the playout and the call control read the flags instead of
assuming Twilio. The shape follows ``docs/provider-interface.md``: flags for what differs
between providers (marks, clear, message sizes, pacing, how to hang up and transfer), one
:class:`AudioFormat` for the stream, and a :class:`MediaCodec` protocol of frames in → neutral events,
commands out → frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from gateway.audio.formats import CODEC_WIDTH, FRAME_MS, check_codec, frame_bytes
from gateway.audio.transcode import SILENCE_BYTE
from gateway.telephony.events import CallerAudio, TelephonyCommand, TelephonyEvent

__all__ = [
    "PCMU_8K",
    "AudioFormat",
    "BinaryMediaCodec",
    "CallCommands",
    "Capabilities",
    "Frame",
    "MediaCodec",
]

#: One outbound WebSocket message: ``str`` goes as a text frame, ``bytes`` as a binary frame (raw audio
#: of the binary-frame providers: Vonage, and the PBX connectors built the same way).
Frame = str | bytes


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """The audio a stream carries in both directions: ``ulaw``/``alaw`` (G.711) or ``l16`` (PCM16 LE)."""

    codec: str = "ulaw"
    rate: int = 8000

    def __post_init__(self) -> None:
        check_codec(self.codec)
        frame_bytes(self.rate, CODEC_WIDTH[self.codec])  # a 20 ms frame must be whole samples

    @property
    def width(self) -> int:
        """Bytes per sample."""
        return CODEC_WIDTH[self.codec]

    @property
    def frame_bytes(self) -> int:
        """Bytes in one 20 ms frame."""
        return frame_bytes(self.rate, self.width, FRAME_MS)

    @property
    def silence(self) -> bytes:
        """One 20 ms frame of silence in this format."""
        return bytes([SILENCE_BYTE[self.codec]]) * self.frame_bytes

    @property
    def wideband(self) -> bool:
        """16 kHz or more: the phone side needs no 8 kHz bottleneck."""
        return self.rate >= 16000


#: Twilio's only format, and every G.711 provider's default.
PCMU_8K = AudioFormat("ulaw", 8000)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider's stream can do; the bridge reads these instead of special-casing providers."""

    #: Playback-done echoes (Twilio mark, Plivo checkpoint, Vonage notify): what the caller really heard.
    marks: bool = True
    #: A command that drops queued, unplayed audio (barge-in); without it the gateway never queues far ahead.
    clear: bool = True
    #: 20 ms frames per media message: ``None`` any number (Twilio), 1 exactly one (Vonage, AudioSocket);
    #: N > 1 (Exotel: 10) means whole multiples of N frames, the end of a turn padded with silence.
    frames_per_message: int | None = None
    #: The provider buffers audio sent ahead of real time; ``False``: the gateway paces in real time.
    provider_buffers: bool = True
    #: How the call is hung up: close the stream, a stream command, or the provider's REST API.
    hangup: Literal["close", "command", "rest"] = "close"
    #: How the call is transferred, if at all.
    transfer: Literal["rest", "command", "none"] = "rest"
    #: How the bot sends DTMF: a stream command, the REST API, or tones in the audio.
    dtmf_out: Literal["command", "rest", "inband"] = "inband"
    #: Caller audio arrives in binary frames (raw samples) rather than JSON text.
    binary_audio: bool = False
    #: The provider sends media continuously, silence included: a stream without media is a dead caller.
    continuous_media: bool = True


class MediaCodec(Protocol):
    """A provider's media-stream protocol, sans-I/O: one per socket.

    ``receive_text`` turns one text frame into one event (or ``None`` for a frame that needs no action);
    ``receive_media`` is the hot path for caller audio (``None``: not a media frame, let
    ``receive_text`` have it) so the socket's parser can hand audio to the bridge with no task switch;
    ``encode`` turns a command into one frame: text (``str``) for the JSON providers, and for the
    binary-frame ones (:class:`BinaryMediaCodec`) raw audio as ``bytes`` and control as ``str``.
    Malformed input raises :class:`~gateway.errors.TelephonyProtocolError` with the close code to use.
    """

    @property
    def capabilities(self) -> Capabilities:
        """What the provider's stream can do (constant per provider)."""
        ...

    @property
    def audio(self) -> AudioFormat:
        """The stream's audio format (known once the stream started)."""
        ...

    def receive_text(self, text: str) -> TelephonyEvent | None: ...

    def receive_media(self, text: str) -> CallerAudio | None: ...

    def encode(self, command: TelephonyCommand) -> Frame: ...


@runtime_checkable
class BinaryMediaCodec(MediaCodec, Protocol):
    """A codec whose caller audio arrives in binary frames (``Capabilities.binary_audio``).

    ``receive_binary`` is the hot path: one binary frame → its :class:`CallerAudio` (or ``None`` for a
    frame that needs no action), called where the socket's parser delivers it. Text frames still carry
    the control messages, through ``receive_text``; ``receive_media`` may answer ``None`` for every text.
    """

    def receive_binary(self, data: bytes) -> CallerAudio | None: ...


@runtime_checkable
class CallCommands(Protocol):
    """A codec whose stream carries call control of its own (``Capabilities.hangup == "command"``):
    Asterisk's ``ANSWER``/``HANGUP`` text commands, AudioSocket's hang-up frame.

    ``answer_frame`` is sent once the gateway has admitted the call (None: nothing to send), so a PBX
    that waits for it (chan_websocket's ``n`` dial option) answers only calls the gateway takes;
    ``hangup_frame`` is sent before the gateway closes a call it ended itself.
    """

    def answer_frame(self) -> Frame | None: ...

    def hangup_frame(self) -> Frame: ...
