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
``json.dumps`` and per-message validation that only needs doing once per stream. They, the message
order and ``encode`` are :class:`~gateway.telephony.jsoncodec.JsonMediaCodec`'s, shared with the other
JSON providers; this module says what is Twilio's: key names, ``connected``/``start``/``stop`` fields.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Final

from gateway.errors import TelephonyProtocolError
from gateway.telephony.events import (
    CallStarted,
    CallStopped,
    Connected,
    TelephonyEvent,
)
from gateway.telephony.jsoncodec import JsonMediaCodec
from gateway.telephony.jsonmsg import (
    CLOSE_UNSUPPORTED_DATA,
    StreamState,
    dtmf_pressed,
    invalid,
    mark_reached,
    object_field,
    string_field,
    string_map,
    violation,
)
from gateway.telephony.provider import PCMU_8K, Capabilities

#: A stream SID is spliced unescaped into every outbound JSON message, so it must be this plain.
#: Twilio's are ``MZ`` + 32 hex; Twilio-compatible platforms (SignalWire) use UUIDs.
_SID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")

#: Where a media socket is in Twilio's message sequence (the shared enum; the name stays for callers).
TwilioState = StreamState


class TwilioCodec(JsonMediaCodec[TelephonyEvent]):
    """Sans-I/O codec for one Twilio media WebSocket; the message flow is :class:`JsonMediaCodec`'s.

    Attributes:
        state: where the socket is in the message sequence (:class:`TwilioState`).
        stream_sid, call_sid, account_sid: known once ``start`` has arrived.
        audio: μ-law at 8 kHz, Twilio's only format (``start.mediaFormat`` is checked against it).
        messages_in: every message accepted; media_in / bytes_in: caller audio messages and μ-law bytes;
        media_out / bytes_out: audio messages and μ-law bytes encoded for Twilio.
    """

    __slots__ = ("account_sid", "call_sid")

    _provider = "Twilio"
    _sid_key = "streamSid"
    _events = ("dtmf", "mark", "stop")

    #: Twilio plays any number of frames per message and buffers them; marks and ``clear`` exist;
    #: hanging up is closing the stream (no TwiML follows ``<Connect>``); transfer and DTMF go
    #: through the REST API (docs/telephony-providers.md §1).
    capabilities: ClassVar[Capabilities] = Capabilities(
        marks=True, clear=True, frames_per_message=None, provider_buffers=True, hangup="close",
        transfer="rest", dtmf_out="inband", binary_audio=False, continuous_media=True,
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(PCMU_8K)
        self.call_sid: str | None = None
        self.account_sid: str | None = None

    @property
    def stream_sid(self) -> str | None:
        """Known once ``start`` has arrived."""
        return self._stream

    # --- inbound: the hooks of JsonMediaCodec's message flow ------------------------------------

    def _connected(self, msg: dict[str, Any]) -> Connected:
        protocol = msg.get("protocol", "")
        version = msg.get("version", "")
        if not isinstance(protocol, str) or not isinstance(version, str):
            raise invalid("connected.protocol and connected.version must be strings")
        return Connected(protocol, version)

    def _streaming(self, event: str, msg: dict[str, Any]) -> TelephonyEvent:
        if event == "dtmf":
            return dtmf_pressed(msg)
        if event == "mark":
            return mark_reached(msg)
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
        params = string_map(start, "customParameters", "start")
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
        self._stream = stream_sid
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
