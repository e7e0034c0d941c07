"""jambonz ``listen`` with bidirectional streaming audio: frames ⇄ telephony events. No I/O.

State table::

    AWAITING_METADATA --metadata (text)--> STREAMING
    STREAMING: binary L16 | {"event":"dtmf",…} | {"type":"mark","data":{"name","event"}} | playDone

What this follows (docs/telephony-providers.md §8; jambonz docs ``listen`` verb and "bidirectional
audio" pages, jambonz/next-static-site ``markdown/docs/webhooks/listen.md``; jambonz-feature-server
0.9.8 ``lib/tasks/listen.js``; jambonz/freeswitch-modules 30f2189 ``mod_audio_fork/lws_glue.cpp``):

* jambonz connects with subprotocol ``audio.jambonz.org`` (HTTP basic auth from the verb's ``wsAuth``).
  Its first TEXT frame is the call's info merged with ``sampleRate``, ``mixType`` and the verb's
  ``metadata`` (``listen.js`` ``_startListening``): ``callSid``, ``from``, ``to``, ``direction``,
  ``accountSid``… Then BINARY L16 little-endian caller audio at ``sampleRate``.
* ``passDtmf``: TEXT ``{"event":"dtmf","dtmf":"5","duration":"1600"}`` (``listen.js`` ``_onDtmf``).
* With ``bidirectionalAudio: {"enabled": true, "streaming": true, "sampleRate": N}`` our BINARY L16 at N
  is played (``processIncomingBinary``); the gateway answers at the stream's own rate, so the verb
  must give ``bidirectionalAudio.sampleRate`` equal to ``sampleRate`` (README's application JSON).
* ``{"type":"killAudio"}`` flushes the playout buffer, and every pending mark comes back as
  ``{"type":"mark","data":{"name":…,"event":"cleared"}}``; ``{"type":"mark","data":{"name":…}}``
  comes back with ``"event":"playout"`` once the audio sent before it has played (``dub_speech_frame``).

Two properties of the module shape what the gateway sends:

* Marks are in-band: a pending mark is the sample value ``0xFFFF`` (``AUDIO_MARKER``) in the playout
  buffer, so while marks are pending a real sample of -1 would be taken for one (an early mark, a sample
  lost). Every -1 in our audio is sent as -2, an inaudible change. At most 30 marks may be outstanding
  (``MAX_MARKS``); the bridge has two or three (one per 200 ms, 120 ms ahead).
* Audio goes through a pre-buffer that releases it only in runs of 80 ms (160 ms at first; 40 ms on a
  16 kHz channel): a shorter tail would wait there for the next reply, its mark with it. So the gateway
  sends whole 100 ms messages (``frames_per_message=5``; a multiple of 80 ms would not divide the
  bridge's mark every 200 ms, and a mark mid-message pads it), the end of a reply padded with silence:
  every message releases at once, at no cost in latency, as jambonz would not start playing sooner.

Hang-up: closing the socket ends the ``listen`` verb (the module's disconnect event); the application
JSON follows it with ``hangup``. The socket has no transfer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final, assert_never

from gateway.errors import ConfigError, TelephonyProtocolError
from gateway.telephony.events import (
    DTMF_DIGITS,
    CallerAudio,
    CallStarted,
    ClearPlayback,
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
    invalid,
    parse,
    pcm_frame,
    violation,
)
from gateway.telephony.provider import AudioFormat, Capabilities

__all__ = ["FRAMES_PER_MESSAGE", "RATES", "SUBPROTOCOL", "JambonzCodec", "unmarked"]

#: The WebSocket subprotocol jambonz asks for.
SUBPROTOCOL: Final = "audio.jambonz.org"
#: The ``sampleRate`` values the gateway takes (jambonz offers 8000-64000; the audio core these two).
RATES: Final = (8000, 16000)
#: 20 ms frames per binary message: 100 ms, at least the module's 80 ms pre-buffer run (module docstring).
FRAMES_PER_MESSAGE: Final = 5
#: The module keeps at most this many marks and silently drops more (lws_glue.cpp ``MAX_MARKS``).
MAX_MARKS: Final = 30
_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")
_KILL: Final = '{"type":"killAudio"}'
_MARKER: Final = b"\xff\xff"  # -1 as a little-endian int16: the module's in-band mark


def unmarked(pcm: bytes) -> bytes:
    """``pcm`` with every sample of -1 (jambonz's in-band mark) turned into -2; unchanged (the same
    object) when it has none, the common case, found by one C-speed search."""
    i = pcm.find(_MARKER)
    if i < 0:
        return pcm
    out = bytearray(pcm)
    while i >= 0:
        if i & 1:  # straddles two samples: not a -1 sample
            i = pcm.find(_MARKER, i + 1)
            continue
        out[i] = 0xFE  # 0xFFFF → 0xFFFE (-2), low byte first
        i = pcm.find(_MARKER, i + 2)
    return bytes(out)


class JambonzCodec:
    """One jambonz ``listen`` socket, sans-I/O: JSON metadata and control, binary L16 both ways."""

    __slots__ = ("_audio", "_max_in", "_outstanding", "call_sid", "metadata", "state")

    #: Streaming binary audio (buffered by jambonz) in 100 ms messages, marks, ``killAudio``; closing the
    #: socket ends ``listen``; no transfer on the socket.
    capabilities: ClassVar[Capabilities] = Capabilities(
        marks=True, clear=True, frames_per_message=FRAMES_PER_MESSAGE, provider_buffers=True,
        hangup="close", transfer="none", dtmf_out="inband", binary_audio=True, continuous_media=True,
    )  # fmt: skip

    def __init__(self, rate: int = 8000) -> None:
        """``rate``: jambonz's default ``sampleRate`` until the metadata says the stream's."""
        if rate not in RATES:
            raise ConfigError(f"jambonz L16 is taken at {' or '.join(map(str, RATES))} Hz, not {rate}")
        self.state = StreamState.AWAITING_START
        self.call_sid: str | None = None
        self.metadata: Mapping[str, str] = MappingProxyType({})
        self._outstanding: list[str] = []
        self._set_rate(rate)

    def _set_rate(self, rate: int) -> None:
        self._audio = AudioFormat("l16", rate)
        self._max_in = self._audio.frame_bytes * 50

    @property
    def audio(self) -> AudioFormat:
        """L16 at the metadata's ``sampleRate``, both ways."""
        return self._audio

    # --- inbound -------------------------------------------------------------------------------

    def receive_binary(self, data: bytes) -> CallerAudio:
        """One binary frame of caller audio (the hot path).

        Raises:
            TelephonyProtocolError: audio before the metadata (1008); an empty, odd or over-long frame (1007).
        """
        if self.state is not StreamState.STREAMING:
            raise violation("binary audio before jambonz's metadata text frame")
        return pcm_frame(data, self._max_in)

    def receive_media(self, text: str) -> CallerAudio | None:
        """jambonz carries no audio in text frames."""
        return None

    def receive_text(self, text: str) -> TelephonyEvent | None:
        """The metadata (first), then DTMF, mark echoes and ``playDone``.

        Raises:
            TelephonyProtocolError: malformed JSON or fields (1007), an unknown message (1008), a rate or
                mix the gateway cannot take (1003).
        """
        msg = parse(text, "jambonz")
        if self.state is StreamState.AWAITING_START:
            return self._started(msg)
        if msg.get("event") == "dtmf":
            digit = msg.get("dtmf")
            if type(digit) is not str or digit.upper() not in DTMF_DIGITS:
                raise invalid(f"dtmf {str(digit)[:10]!r} is not a DTMF key")
            return DtmfPressed(digit.upper())
        kind = msg.get("type")
        if kind == "mark":
            data = msg.get("data")
            if type(data) is not dict or type(data.get("name")) is not str:
                raise invalid("a mark event needs data.name")
            if data.get("event") not in ("playout", "cleared"):
                raise invalid(f"mark event {str(data.get('event'))[:20]!r} is neither playout nor cleared")
            name = data["name"]
            if name not in self._outstanding:
                return None  # not ours, or already answered
            self._outstanding.remove(name)
            return MarkReached(name)  # "cleared" too: pending marks come back on a clear
        if kind == "playDone":
            return None  # the end of a non-streaming playAudio: the gateway streams instead
        raise violation(f"unknown jambonz message {str(kind or msg.get('event'))[:40]!r}")

    def _started(self, msg: dict[str, Any]) -> CallStarted:
        call_sid = msg.get("callSid")
        if type(call_sid) is not str or not 0 < len(call_sid) <= 80 or not set(call_sid) <= _ID_CHARS:
            raise invalid("jambonz's metadata has no usable 'callSid'")
        rate = msg.get("sampleRate", 8000)
        if type(rate) is not int or rate not in RATES:
            raise TelephonyProtocolError(
                f"listen sampleRate {rate!r} is not taken: use 8000 or 16000 (and the same "
                "bidirectionalAudio.sampleRate)",
                close_code=CLOSE_UNSUPPORTED_DATA,
            )
        mix = msg.get("mixType", "mono")
        if mix != "mono":
            raise TelephonyProtocolError(
                f"listen mixType {str(mix)[:20]!r} is not taken: use mono (the caller alone)",
                close_code=CLOSE_UNSUPPORTED_DATA,
            )
        for key in ("to", "from"):
            if key in msg and type(msg[key]) is not str:
                raise invalid(f"jambonz's metadata {key!r} must be a string")
        fields = {k: v for k, v in msg.items() if type(v) is str}
        self._set_rate(rate)
        self.call_sid = call_sid
        self.metadata = MappingProxyType(fields)
        self.state = StreamState.STREAMING
        return CallStarted(
            stream_sid=call_sid,
            call_sid=call_sid,
            account_sid=fields.get("accountSid", ""),
            tracks=("inbound",),
            custom_parameters=self.metadata,
            encoding="audio/l16",
            sample_rate=rate,
            from_=fields.get("from", ""),
            to=fields.get("to", ""),
        )

    # --- outbound ------------------------------------------------------------------------------

    def encode(self, command: TelephonyCommand) -> bytes | str:
        """One command as jambonz's frame: audio as binary L16 (no -1 samples), marks and ``killAudio``
        as text.

        Raises:
            TelephonyProtocolError: used before the metadata, or more marks outstanding than jambonz keeps
                (our bug; 1011).
        """
        if self.state is not StreamState.STREAMING:
            raise TelephonyProtocolError(
                f"cannot send {type(command).__name__} before the metadata", close_code=CLOSE_INTERNAL_ERROR
            )
        if type(command) is PlayAudio:
            return unmarked(command.payload)
        match command:
            case SetMark(name=name):
                if len(self._outstanding) >= MAX_MARKS:
                    raise TelephonyProtocolError(
                        f"{MAX_MARKS} marks outstanding: jambonz would drop this one",
                        close_code=CLOSE_INTERNAL_ERROR,
                    )
                self._outstanding.append(name)
                return '{"type":"mark","data":{"name":' + json.dumps(name) + "}}"
            case ClearPlayback():
                return _KILL  # the pending marks come back "cleared", each answered by receive_text
            case PlayAudio():  # pragma: no cover - handled above without the match overhead
                raise AssertionError("unreachable")
            case _:
                assert_never(command)
