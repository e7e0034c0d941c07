"""The browser softphone's media socket (``/phone/media``): frames ⇄ telephony events. No I/O.

This protocol is the gateway's own (the page at ``/phone`` speaks it; gateway/server/static/phone/). It
is the Vonage shape (docs/telephony-providers.md §4) without a provider's constraints: raw 16 kHz PCM16
in binary frames both ways, JSON text for control. Wideband end to end: the page resamples the
microphone to 16 kHz itself, and nothing on this path is ever μ-law.

State table::

    AWAITING_START --start (text)--> STREAMING --stop (text)--> STOPPED
    STREAMING: binary PCM16 | mark (a mark of ours played) | dtmf (a dial-pad key)

Page → gateway:

* first, TEXT ``{"event":"start","call_sid":"BR…","token":"v1.…","to":"+15551230000",
  "media_format":{"encoding":"audio/l16","sample_rate":16000,"channels":1}}``: ``call_sid`` and
  ``token`` are what ``POST /phone/call`` returned (the token is signed, bound to that call id,
  short-lived and single-use, and says the dialled number); ``to`` is informational, the token's claim
  decides. ``media_format`` may be left out; if given it must be exactly that.
* then BINARY frames of caller audio: PCM16 little-endian mono at 16 kHz, 20 ms (640 bytes) each; any
  whole number of samples up to one second is taken. The page sends continuously, silence included.
* ``{"event":"mark","name":"…"}`` once the audio sent before that mark has actually played (left the
  page's playback buffer), or at once for every pending mark when a ``clear`` emptied the buffer;
* ``{"event":"dtmf","digit":"5"}`` for a dial-pad key during the call;
* ``{"event":"stop"}`` when the user hangs up (closing the socket does the same).

Gateway → page:

* BINARY: the bot's audio, PCM16 little-endian mono at 16 kHz, one or more 20 ms frames a message,
  sent a short lead ahead of real time (the page holds a jitter buffer and plays without gaps);
* ``{"event":"mark","name":"…"}``: echo it when the audio before it has played;
* ``{"event":"clear"}``: barge-in, drop every unplayed sample now (then echo the pending marks).

The call ends when the gateway closes the socket (the bot hung up, a limit, shutdown) or the page does.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Final, assert_never

from gateway.errors import TelephonyProtocolError
from gateway.telephony.events import (
    DTMF_DIGITS,
    CallerAudio,
    CallStarted,
    CallStopped,
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
    StreamState,
    invalid,
    parse,
    pcm_frame,
    string_field,
    violation,
)
from gateway.telephony.provider import AudioFormat, Capabilities

__all__ = ["CALL_ID_PREFIX", "ENCODING", "RATE", "BrowserCodec"]

#: The only format on this path: 16 kHz PCM16 (L16, little-endian), both ways.
RATE: Final = 16000
ENCODING: Final = "audio/l16"
#: Browser call ids are the gateway's own: ``BR`` and 32 hex digits (POST /phone/call makes them).
CALL_ID_PREFIX: Final = "BR"
_CALL_ID_RE: Final = re.compile(r"BR[0-9a-f]{32}")
#: A mark name is ours (a short counter string); anything long is not an echo of one.
_MAX_MARK: Final = 64
_CLEAR: Final = '{"event":"clear"}'
_MARK_PREFIX: Final = '{"event":"mark","name":'


class BrowserCodec:
    """One softphone socket, sans-I/O: binary 16 kHz PCM16 audio, JSON text control."""

    __slots__ = ("_max_in", "call_sid", "state")

    #: The page buffers what it is sent (a ring buffer with a jitter buffer) and plays it on its own
    #: clock, so the gateway sends a short lead ahead, any number of frames a message; marks and clear
    #: as on a phone; hang-up closes the socket; no transfer (a browser has nowhere to be put through).
    capabilities: ClassVar[Capabilities] = Capabilities(
        marks=True, clear=True, frames_per_message=None, provider_buffers=True, hangup="close",
        transfer="none", dtmf_out="inband", binary_audio=True, continuous_media=True,
    )  # fmt: skip
    _AUDIO: ClassVar[AudioFormat] = AudioFormat("l16", RATE)

    def __init__(self) -> None:
        self.state = StreamState.AWAITING_START
        self.call_sid: str | None = None
        self._max_in = self._AUDIO.frame_bytes * 50  # one second

    @property
    def audio(self) -> AudioFormat:
        """Always 16 kHz L16: the page resamples its microphone, the gateway its 24 kHz model audio."""
        return self._AUDIO

    # --- inbound -------------------------------------------------------------------------------

    def receive_binary(self, data: bytes) -> CallerAudio | None:
        """One binary frame of caller audio (the hot path); None for frames still in flight after ``stop``.

        Raises:
            TelephonyProtocolError: audio before ``start`` (1008); an empty, odd-sized or over-long
                frame (1007).
        """
        if self.state is not StreamState.STREAMING:
            if self.state is StreamState.STOPPED:
                return None
            raise violation(f"binary audio received in state {self.state.value}")
        return pcm_frame(data, self._max_in)

    def receive_media(self, text: str) -> CallerAudio | None:
        """No audio travels in text frames here: every text goes to :meth:`receive_text`."""
        return None

    def receive_text(self, text: str) -> TelephonyEvent | None:
        """One text frame → one event.

        Raises:
            TelephonyProtocolError: malformed JSON or fields (1007); an unknown event, one out of order,
                or a second ``start`` (1008).
        """
        msg = parse(text, "softphone")
        event = msg.get("event")
        if type(event) is not str:
            raise invalid("softphone message has no string 'event' field")
        if event == "start":
            if self.state is not StreamState.AWAITING_START:
                raise violation(f"'start' received in state {self.state.value}")
            return self._start(msg)
        if event not in ("mark", "dtmf", "stop"):
            raise violation(f"unknown softphone event {event[:40]!r}")
        if self.state is StreamState.STOPPED:
            return None  # the page's last echoes, sent as it hung up
        if self.state is not StreamState.STREAMING:
            raise violation(f"{event!r} received in state {self.state.value}")
        if event == "mark":
            name = string_field(msg, "name", "mark")
            if not name or len(name) > _MAX_MARK:
                raise invalid("mark.name must be a mark name the gateway sent")
            return MarkReached(name)
        if event == "dtmf":
            digit = msg.get("digit")
            if type(digit) is not str or digit.upper() not in DTMF_DIGITS:
                raise invalid(f"dtmf.digit {str(digit)[:10]!r} is not a DTMF key")
            return DtmfPressed(digit.upper())
        self.state = StreamState.STOPPED
        return CallStopped(self.call_sid or "")

    def _start(self, msg: dict[str, Any]) -> CallStarted:
        call_sid = string_field(msg, "call_sid", "start")
        if not _CALL_ID_RE.fullmatch(call_sid):
            raise invalid("start.call_sid must be the id POST /phone/call returned")
        token = string_field(msg, "token", "start")
        to = msg.get("to", "")
        if type(to) is not str or len(to) > 256 or not to.isprintable():
            raise invalid("start.to must be a printable number of at most 256 characters")
        media = msg.get("media_format")
        if media is not None:
            wanted = {"encoding": ENCODING, "sample_rate": RATE, "channels": 1}
            if type(media) is not dict or any(media.get(k) != v for k, v in wanted.items()):
                raise TelephonyProtocolError(
                    f"start.media_format must be {json.dumps(wanted)}: the softphone path is 16 kHz PCM16",
                    close_code=1003,
                )
        self.call_sid = call_sid
        self.state = StreamState.STREAMING
        return CallStarted(
            stream_sid=call_sid,
            call_sid=call_sid,
            account_sid="",
            tracks=("inbound",),
            custom_parameters={"token": token},
            encoding=ENCODING,
            sample_rate=RATE,
            to=to,
        )

    # --- outbound ------------------------------------------------------------------------------

    def encode(self, command: TelephonyCommand) -> bytes | str:
        """One command as the page's frame: audio as binary, ``mark`` and ``clear`` as text.

        Raises:
            TelephonyProtocolError: used before ``start``, or audio that is not whole samples (our bug:
                close code 1011).
        """
        if self.state is StreamState.AWAITING_START:
            raise TelephonyProtocolError(
                f"cannot send {type(command).__name__} before 'start'", close_code=CLOSE_INTERNAL_ERROR
            )
        if type(command) is PlayAudio:
            payload = command.payload
            if not payload or len(payload) & 1:
                raise TelephonyProtocolError(
                    f"the softphone takes whole 16-bit samples, not {len(payload)} bytes",
                    close_code=CLOSE_INTERNAL_ERROR,
                )
            return payload
        match command:
            case SetMark(name=name):
                return _MARK_PREFIX + json.dumps(name) + "}"
            case ClearPlayback():
                return _CLEAR
            case PlayAudio():  # pragma: no cover - handled above without the match overhead
                raise AssertionError("unreachable")
            case _:
                assert_never(command)
