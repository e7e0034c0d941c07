"""Asterisk chan_websocket (Asterisk 20.16+/21.11+/22.6+): frames ⇄ telephony events. No I/O.

State table::

    AWAITING_START --MEDIA_START (text)--> STREAMING
    STREAMING: binary raw codec frames | DTMF_END | MEDIA_MARK_PROCESSED | MEDIA_XOFF / MEDIA_XON
               | QUEUE_DRAINED, MEDIA_BUFFERING_COMPLETED, STATUS (nothing to do) | ERROR (ends the call)

What this follows: Asterisk's ``channels/chan_websocket.c`` (read at asterisk/asterisk ``f0c1c1a``, Aug
2026) and its ``chan_websocket_doc.xml``; docs/telephony-providers.md §7.1.

* Asterisk dials out to us (``Dial(WebSocket/<websocket_client.conf id>/c(<codec>)…)``) with WebSocket
  subprotocol ``media``, then sends ``MEDIA_START`` (``_create_event_MEDIA_START``): ``connection_id``,
  ``channel``, ``channel_id`` (the channel's uniqueid: our call id), ``format`` (the ``c()`` codec's
  name), ``optimal_frame_size`` and ``ptime``; in JSON also ``channel_variables``.
* Control messages come in one of two formats, chosen on the Asterisk side (``chan_websocket.conf``
  ``control_message_format`` or the ``f(json)`` dial option, 20.18/22.8/23.2+): plain text
  (``MEDIA_START connection_id:… channel:… format:ulaw optimal_frame_size:160 ptime:20``, ``DTMF_END
  digit:5 channel_id:…``, ``MEDIA_MARK_PROCESSED <id>``, bare ``MEDIA_XOFF``) or one JSON object per
  frame with an ``event`` key. ``handle_command`` parses our commands in the same format, so the codec
  answers in the format ``MEDIA_START`` came in: ``HANGUP``/``FLUSH_MEDIA``/``MARK_MEDIA <id>`` or
  ``{"command":"MARK_MEDIA","correlation_id":…}``. Asterisk ignores a command over 128 bytes
  (``MAX_TEXT_MESSAGE_LEN``); ours are far shorter.
* Media is BINARY raw codec bytes both ways. Asterisk cuts what we send into ``optimal_frame_size``
  frames, queues them and plays one per ``ptime`` (``process_binary_message``); outside bulk mode
  (``START_MEDIA_BUFFERING``) a remainder shorter than a frame is **dropped**. So every message is a
  whole number of optimal frames: ``Capabilities.frames_per_message`` is how many of our 20 ms frames
  make a whole number of Asterisk's (1 → any number, the usual case: 160 B μ-law, 640 B slin16), and the
  bridge pads a reply's last message with silence. No buffering commands are then needed.
* The queue holds 1000 frames; at 900 Asterisk sends ``MEDIA_XOFF`` and drops what comes while full,
  below 800 ``MEDIA_XON``: :class:`~gateway.telephony.events.FlowControl`, the playout holds its frames.
* ``MARK_MEDIA`` is queued behind the audio and answered by ``MEDIA_MARK_PROCESSED`` when it reaches
  the front (about to be heard): our marks. ``FLUSH_MEDIA`` frees every queued frame, queued marks
  included, without answering them: the next mark echoed settles them (``Playout.mark_echoed``).
* Asterisk hangs up by closing the socket (``webchan_hangup``); we send ``HANGUP`` (and ``ANSWER`` once
  admitted, which a channel dialled with ``n`` waits for; a duplicate answer is dropped by Asterisk).
  Nothing on this socket transfers a call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal, assert_never

from gateway.errors import TelephonyProtocolError
from gateway.telephony.events import (
    DTMF_DIGITS,
    CallerAudio,
    CallStarted,
    ClearPlayback,
    DtmfPressed,
    FlowControl,
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
    violation,
)
from gateway.telephony.provider import AudioFormat, Capabilities

__all__ = ["FORMATS", "SUBPROTOCOL", "ChanWebsocketCodec", "ControlFormat"]

#: The WebSocket subprotocol Asterisk's media connections use (``ast_websocket_sub_protocol_alloc("media")``;
#: ``protocols = media`` in websocket_client.conf).
SUBPROTOCOL: Final = "media"
#: Asterisk format names (``ast_format_get_name``) the gateway streams, and what each is here.
FORMATS: Final[Mapping[str, AudioFormat]] = MappingProxyType(
    {
        "ulaw": AudioFormat("ulaw", 8000),
        "alaw": AudioFormat("alaw", 8000),
        "slin": AudioFormat("l16", 8000),
        "slin16": AudioFormat("l16", 16000),
        "slin24": AudioFormat("l16", 24000),
        "slin32": AudioFormat("l16", 32000),
        "slin48": AudioFormat("l16", 48000),
    }
)
ControlFormat = Literal["plain-text", "json"]
#: Events that need no action: a one-shot drained report, bulk-mode completions (we use no bulk mode),
#: the answer to GET_STATUS.
_QUIET: Final = frozenset({"QUEUE_DRAINED", "MEDIA_BUFFERING_COMPLETED", "STATUS"})
_KNOWN: Final = _QUIET | {
    "MEDIA_START", "DTMF_END", "MEDIA_MARK_PROCESSED", "MEDIA_XOFF", "MEDIA_XON", "ERROR",
}  # fmt: skip
#: Asterisk closes the socket (and hangs up) on a message over 65500 bytes; its own frames are 20 ms.
_MAX_IN: Final = 65500
_ID_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:")
_XOFF: Final = FlowControl(paused=True)
_XON: Final = FlowControl(paused=False)


def _plain(text: str) -> tuple[str, dict[str, str], str]:
    """A plain-text event: its name, its ``key:value`` fields and whatever follows the name."""
    name, _, rest = text.strip().partition(" ")
    fields: dict[str, str] = {}
    for token in rest.split():
        key, sep, value = token.partition(":")
        if sep:
            fields[key] = value
    return name, fields, rest.strip()


class ChanWebsocketCodec:
    """One chan_websocket media socket, sans-I/O: raw codec bytes in binary frames, text control."""

    __slots__ = (
        "_audio",
        "_caps",
        "_hangup",
        "_optimal",
        "channel",
        "channel_id",
        "connection_id",
        "control_format",
        "state",
        "variables",
    )

    def __init__(self) -> None:
        self.state = StreamState.AWAITING_START
        #: Which control format Asterisk speaks: what MEDIA_START came in (None before it).
        self.control_format: ControlFormat | None = None
        self.channel_id = ""
        self.channel = ""
        self.connection_id = ""
        self.variables: Mapping[str, str] = MappingProxyType({})
        self._audio = FORMATS["ulaw"]
        self._optimal = self._audio.frame_bytes
        self._caps = _capabilities(1)
        self._hangup = "HANGUP"

    @property
    def capabilities(self) -> Capabilities:
        """Marks, flush, hang-up by command; messages a whole number of Asterisk's optimal frames."""
        return self._caps

    @property
    def audio(self) -> AudioFormat:
        """The ``format`` MEDIA_START announced (μ-law before it)."""
        return self._audio

    @property
    def optimal_frame_size(self) -> int:
        """Bytes Asterisk cuts our audio into (MEDIA_START's ``optimal_frame_size``)."""
        return self._optimal

    # --- inbound -------------------------------------------------------------------------------

    def receive_binary(self, data: bytes) -> CallerAudio:
        """One binary frame of caller audio (the hot path).

        Raises:
            TelephonyProtocolError: audio before MEDIA_START (1008), an empty or over-long frame or an
                odd byte count of 16-bit audio (1007).
        """
        if self.state is not StreamState.STREAMING:
            raise violation(f"binary audio received in state {self.state.value}")
        n = len(data)
        if not n or n > _MAX_IN or (n & 1 and self._audio.width == 2):
            raise invalid(f"a binary frame of {n} bytes is not {self._audio.codec} audio")
        return CallerAudio(data)

    def receive_media(self, text: str) -> CallerAudio | None:
        """chan_websocket carries no audio in text frames."""
        return None

    def receive_text(self, text: str) -> TelephonyEvent | None:
        """One control message → one event (None: nothing to do).

        Raises:
            TelephonyProtocolError: malformed (1007), out of order or an ERROR Asterisk reports (1008),
                a format the gateway cannot stream (1003).
        """
        if self.control_format is None:
            self.control_format = "json" if text.lstrip().startswith("{") else "plain-text"
            self._hangup = '{"command":"HANGUP"}' if self.control_format == "json" else "HANGUP"
        if self.control_format == "json":
            msg = parse(text, "Asterisk")
            name = msg.get("event")
            if type(name) is not str:
                raise invalid("Asterisk JSON event has no string 'event'")
            fields: Mapping[str, Any] = msg
            rest = ""
        else:
            if text.lstrip().startswith("{"):
                raise invalid("a JSON message on a plain-text chan_websocket stream")
            name, fields, rest = _plain(text)
        if name not in _KNOWN:
            # Asterisk adds events over releases; one we do not know asks nothing of us.
            if not name or not name.replace("_", "").isalnum() or not name.isupper():
                raise invalid(f"not a chan_websocket event: {text[:40]!r}")
            return None
        if name == "MEDIA_START":
            if self.state is not StreamState.AWAITING_START:
                raise violation(f"MEDIA_START received in state {self.state.value}")
            return self._start(fields)
        if self.state is not StreamState.STREAMING:
            raise violation(f"{name} received before MEDIA_START")
        if name == "MEDIA_XOFF":
            return _XOFF
        if name == "MEDIA_XON":
            return _XON
        if name == "MEDIA_MARK_PROCESSED":
            mark = fields.get("correlation_id") if self.control_format == "json" else rest
            if type(mark) is not str:
                raise invalid("MEDIA_MARK_PROCESSED correlation_id must be a string")
            return MarkReached(mark) if mark else None
        if name == "DTMF_END":
            digit = fields.get("digit")
            if type(digit) is not str or digit.upper() not in DTMF_DIGITS or len(digit) != 1:
                raise invalid(f"DTMF_END digit {str(digit)[:10]!r} is not a DTMF key")
            return DtmfPressed(digit.upper())
        if name == "ERROR":
            # A command of ours was refused (passthrough mode, media direction 'in'…): the dial string
            # does not suit the gateway, and the call would silently lose barge-in or audio.
            text = fields.get("error_text", rest) if self.control_format == "json" else rest
            raise violation(f"Asterisk refused a command: {str(text)[:120]}")
        return None  # _QUIET

    def _start(self, fields: Mapping[str, Any]) -> CallStarted:
        def text(key: str) -> str:
            value = fields.get(key)
            if type(value) is not str or not value:
                raise invalid(f"MEDIA_START has no {key}")
            return value

        def number(key: str) -> int:
            value = fields.get(key)
            if type(value) is str and value.isascii() and value.isdigit():
                value = int(value)
            if type(value) is not int or not 0 < value <= _MAX_IN:
                raise invalid(f"MEDIA_START {key} must be a positive whole number, got {value!r}")
            return value

        channel_id = text("channel_id")
        if len(channel_id) > 80 or not set(channel_id) <= _ID_CHARS:
            raise invalid("MEDIA_START channel_id is not a channel uniqueid")
        name = text("format")
        audio = FORMATS.get(name)
        if audio is None:
            raise TelephonyProtocolError(
                f"format {name[:20]!r}: the gateway streams {', '.join(FORMATS)} "
                "(dial with c(slin16) or c(ulaw))",
                close_code=CLOSE_UNSUPPORTED_DATA,
            )
        optimal = number("optimal_frame_size")
        ptime = number("ptime") if "ptime" in fields else 20
        if optimal % audio.width or ptime <= 0:
            raise invalid(f"optimal_frame_size {optimal} is not whole {audio.codec} samples")
        variables = fields.get("channel_variables", {})
        if type(variables) is not dict:
            raise invalid("MEDIA_START channel_variables must be an object")
        self._audio, self._optimal = audio, optimal
        self._caps = _capabilities(_frames_per_message(audio.frame_bytes, optimal))
        self.channel_id = channel_id
        self.channel = str(fields.get("channel", ""))
        self.connection_id = str(fields.get("connection_id", ""))
        self.variables = MappingProxyType({str(k): str(v) for k, v in variables.items()})
        self.state = StreamState.STREAMING
        return CallStarted(
            stream_sid=channel_id,
            call_sid=channel_id,
            account_sid="",
            tracks=("inbound",),
            custom_parameters=self.variables,
            encoding=name,
            sample_rate=audio.rate,
        )

    # --- outbound ------------------------------------------------------------------------------

    def encode(self, command: TelephonyCommand) -> bytes | str:
        """One command as a frame: audio as binary, ``MARK_MEDIA``/``FLUSH_MEDIA`` in Asterisk's format.

        Raises:
            TelephonyProtocolError: used before MEDIA_START, or audio that is not whole optimal frames
                (our bug; 1011: Asterisk would drop the remainder).
        """
        if self.state is not StreamState.STREAMING:
            raise TelephonyProtocolError(
                f"cannot send {type(command).__name__} before MEDIA_START", close_code=CLOSE_INTERNAL_ERROR
            )
        if type(command) is PlayAudio:
            payload = command.payload
            if len(payload) % self._optimal:
                raise TelephonyProtocolError(
                    f"{len(payload)} bytes of audio is not a whole number of Asterisk's "
                    f"{self._optimal}-byte frames",
                    close_code=CLOSE_INTERNAL_ERROR,
                )
            return payload
        json_format = self.control_format == "json"
        match command:
            case SetMark(name=name):
                if json_format:
                    return '{"command":"MARK_MEDIA","correlation_id":' + json.dumps(name) + "}"
                return "MARK_MEDIA " + name
            case ClearPlayback():
                return '{"command":"FLUSH_MEDIA"}' if json_format else "FLUSH_MEDIA"
            case PlayAudio():  # pragma: no cover - handled above without the match overhead
                raise AssertionError("unreachable")
            case _:
                assert_never(command)

    def answer_frame(self) -> str:
        """``ANSWER``: a channel dialled with ``n`` waits for it; an answered one drops the duplicate."""
        return '{"command":"ANSWER"}' if self.control_format == "json" else "ANSWER"

    def hangup_frame(self) -> str:
        """``HANGUP``: Asterisk hangs the channel up (``websocket_request_hangup``)."""
        return self._hangup


def _frames_per_message(frame_bytes: int, optimal: int) -> int:
    """How many of our 20 ms frames make a whole number of Asterisk's optimal frames (1: any number)."""
    n = 1
    while (n * frame_bytes) % optimal:
        n += 1
        if n > 50:  # a second of audio: no sane ptime needs more
            raise invalid(f"optimal_frame_size {optimal} does not divide any message of 20 ms frames")
    return n


def _capabilities(per_message: int) -> Capabilities:
    # Asterisk re-times what it gets (one frame per ptime, ~20 s queue): the usual paced lead applies.
    # It forwards no comfort noise (webchan_write drops CNG), so a silent caller may send nothing.
    return Capabilities(
        marks=True, clear=True, frames_per_message=None if per_message == 1 else per_message,
        provider_buffers=True, hangup="command", transfer="none", dtmf_out="inband", binary_audio=True,
        continuous_media=False,
    )  # fmt: skip
