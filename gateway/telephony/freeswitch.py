"""FreeSWITCH mod_audio_stream (community edition): frames ⇄ telephony events. No I/O.

State table::

    AWAITING_METADATA --metadata (text, JSON)--> STREAMING
    STREAMING: binary L16 | {"type":"dtmf","digit":"5"} (text, sent by the FreeSWITCH event script)

What this follows (amigniter/mod_audio_stream ``README.md``, ``mod_audio_stream.c`` and
``audio_streamer_glue.cpp`` at ec2a781; docs/telephony-providers.md §6.1):

* ``uuid_audio_stream <uuid> start <url> mono 16k <metadata>`` connects to us; the module sends the
  metadata string as the socket's first TEXT frame (``send_initial_metadata`` on connect), then BINARY
  L16 frames of caller audio (``stream_frame``: 20 ms each, or ``STREAM_BUFFER_SIZE`` ms) at the
  command's rate. Nothing on the wire says that rate, nor which call this is, so the metadata must:
  the gateway reads it as a JSON object with ``uuid`` (the channel's ``${uuid}``: the call id),
  ``sampleRate`` (8000 or 16000, as the command's ``8k``/``16k``) and optionally ``to`` and ``from``
  (else the URL's ``?to=&from=``). Only ``mono`` is taken: ``mixed`` would feed the bot its own voice,
  ``stereo`` interleaves two channels the metadata does not announce.
* Our audio goes back as TEXT ``{"type":"streamAudio","data":{"audioDataType":"raw","sampleRate":N,
  "audioData":"<base64>"}}`` (``processMessage``; raw rates 8000-64000 map to ``.r8``…``.r64`` files).

What the module cannot do, and what the gateway does about it:

* It does not play anything: each ``streamAudio`` becomes a temp file and a ``mod_audio_stream::play``
  event carrying its path; the FreeSWITCH side must play it (examples/freeswitch/gemini_events.lua
  queues it with ``uuid_broadcast``). So the gateway sends **whole files of 100 ms**
  (``frames_per_message=5``): one file a 20 ms frame would be fifty events a second, and longer files
  make the caller wait for the first one to fill (Gemini's audio arrives about as fast as it plays).
  Files are whole 20 ms frames, so queued ones play back to back; the bridge keeps its usual short lead.
* There is no stop/kill command. Any other JSON text becomes a ``mod_audio_stream::json`` event, so
  barge-in sends ``{"type":"killAudio"}`` (jambonz's name for it, mod_audio_fork's) and the event script
  answers it with ``uuid_break <uuid> all``, which stops the file playing and drops the queued ones.
* No playback-done echo (no marks): what the caller heard comes from the playout clock.
* No DTMF on the socket: the event script forwards ``DTMF`` events with
  ``uuid_audio_stream <uuid> send_text {"type":"dtmf","digit":"5"}``, read here.
* Hang-up is the socket: the caller hanging up stops the media bug and closes it; the gateway closing
  it fires ``mod_audio_stream::disconnect``, on which the event script hangs up the channel. No transfer.
"""

from __future__ import annotations

import base64
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

__all__ = ["FRAMES_PER_FILE", "RATES", "FreeSwitchCodec", "metadata_json"]

#: The rates the gateway takes from the module (its ``8k``/``16k``): the audio core resamples these.
RATES: Final = (8000, 16000)
#: 20 ms frames per ``streamAudio`` file (module docstring: 100 ms).
FRAMES_PER_FILE: Final = 5
#: The metadata keys the gateway reads (README, "FreeSWITCH").
CALL_KEY, RATE_KEY = "uuid", "sampleRate"
_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_KILL: Final = '{"type":"killAudio"}'


def metadata_json(*, uuid: str, rate: int, to: str = "", from_: str = "") -> str:
    """The metadata the gateway expects (what the README's command writes with ``${uuid}``…)."""
    meta: dict[str, Any] = {CALL_KEY: uuid, RATE_KEY: rate}
    if to:
        meta["to"] = to
    if from_:
        meta["from"] = from_
    return json.dumps(meta, separators=(",", ":"))


class FreeSwitchCodec:
    """One mod_audio_stream socket, sans-I/O: JSON metadata, binary L16 in, ``streamAudio`` JSON out."""

    __slots__ = ("_audio", "_max_in", "_prefix", "call_uuid", "metadata", "state")

    #: Whole 100 ms files the FreeSWITCH side plays in order and breaks on ``killAudio``; no marks; the
    #: socket is the call (closing it hangs up); no transfer.
    capabilities: ClassVar[Capabilities] = Capabilities(
        marks=False, clear=True, frames_per_message=FRAMES_PER_FILE, provider_buffers=True, hangup="close",
        transfer="none", dtmf_out="inband", binary_audio=True, continuous_media=True,
    )  # fmt: skip

    def __init__(self, rate: int = 8000) -> None:
        """``rate``: a placeholder until the metadata's ``sampleRate`` says the stream's."""
        if rate not in RATES:
            raise ConfigError(
                f"mod_audio_stream L16 is taken at {' or '.join(map(str, RATES))} Hz, not {rate}"
            )
        self.state = StreamState.AWAITING_START
        self.call_uuid: str | None = None
        self.metadata: Mapping[str, str] = MappingProxyType({})
        self._set_rate(rate)

    def _set_rate(self, rate: int) -> None:
        self._audio = AudioFormat("l16", rate)
        self._max_in = self._audio.frame_bytes * 50  # one second: STREAM_BUFFER_SIZE far above 20 ms
        self._prefix = (
            f'{{"type":"streamAudio","data":{{"audioDataType":"raw","sampleRate":{rate},"audioData":"'
        )

    @property
    def audio(self) -> AudioFormat:
        """L16 at the metadata's ``sampleRate``."""
        return self._audio

    # --- inbound -------------------------------------------------------------------------------

    def receive_binary(self, data: bytes) -> CallerAudio:
        """One binary frame of caller audio (the hot path).

        Raises:
            TelephonyProtocolError: audio before the metadata (1008); an empty, odd or over-long frame (1007).
        """
        if self.state is not StreamState.STREAMING:
            raise violation(
                "binary audio before the metadata text frame: start the stream with the metadata JSON "
                "(uuid, sampleRate) as the command's last argument"
            )
        return pcm_frame(data, self._max_in)

    def receive_media(self, text: str) -> CallerAudio | None:
        """mod_audio_stream carries no audio in text frames."""
        return None

    def receive_text(self, text: str) -> TelephonyEvent | None:
        """The metadata (first), then the event script's ``dtmf`` messages.

        Raises:
            TelephonyProtocolError: malformed JSON or fields (1007), an unknown message (1008), a rate or
                mix the gateway cannot take (1003).
        """
        msg = parse(text, "mod_audio_stream")
        if self.state is StreamState.AWAITING_START:
            return self._started(msg)
        kind = msg.get("type")
        if kind == "dtmf":
            digit = msg.get("digit")
            if type(digit) is not str or digit.upper() not in DTMF_DIGITS:
                raise invalid(f"dtmf digit {str(digit)[:10]!r} is not a DTMF key")
            return DtmfPressed(digit.upper())
        raise violation(f"unknown message type {str(kind)[:40]!r} on a mod_audio_stream socket")

    def _started(self, msg: dict[str, Any]) -> CallStarted:
        uuid = msg.get(CALL_KEY)
        if type(uuid) is not str or not 0 < len(uuid) <= 64 or not set(uuid) <= _ID_CHARS:
            raise invalid("the metadata must carry the channel's 'uuid' (${uuid} in the command)")
        rate = msg.get(RATE_KEY)
        if type(rate) is not int or rate not in RATES:
            raise TelephonyProtocolError(
                f"the metadata's 'sampleRate' must be 8000 or 16000 (the command's 8k or 16k), got {rate!r}",
                close_code=CLOSE_UNSUPPORTED_DATA,
            )
        mix = msg.get("mixType", "mono")
        if mix != "mono":
            raise TelephonyProtocolError(
                f"mix type {str(mix)[:20]!r} is not taken: start the stream with 'mono'",
                close_code=CLOSE_UNSUPPORTED_DATA,
            )
        fields = {k: v for k, v in msg.items() if type(v) is str}
        for key in ("to", "from"):
            if key in msg and type(msg[key]) is not str:
                raise invalid(f"the metadata's {key!r} must be a string")
        self._set_rate(rate)
        self.call_uuid = uuid
        self.metadata = MappingProxyType(fields)
        self.state = StreamState.STREAMING
        return CallStarted(
            stream_sid=uuid,
            call_sid=uuid,
            account_sid="",
            tracks=("inbound",),
            custom_parameters=self.metadata,
            encoding="audio/l16",
            sample_rate=rate,
            from_=fields.get("from", ""),
            to=fields.get("to", ""),
        )

    # --- outbound ------------------------------------------------------------------------------

    def encode(self, command: TelephonyCommand) -> str:
        """One command as the module's text: audio as a ``streamAudio`` file, a clear as ``killAudio``.

        Raises:
            TelephonyProtocolError: used before the metadata, or a mark (the module has none): our bug (1011).
        """
        if self.state is not StreamState.STREAMING:
            raise TelephonyProtocolError(
                f"cannot send {type(command).__name__} before the metadata", close_code=CLOSE_INTERNAL_ERROR
            )
        match command:
            case PlayAudio(payload=payload):
                return self._prefix + base64.b64encode(payload).decode("ascii") + '"}}'
            case ClearPlayback():
                return _KILL
            case SetMark():
                raise TelephonyProtocolError(
                    "mod_audio_stream has no marks (Capabilities.marks is false)",
                    close_code=CLOSE_INTERNAL_ERROR,
                )
            case _:
                assert_never(command)
