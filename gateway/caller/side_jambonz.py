"""jambonz's side of a simulated call: the ``listen`` verb with bidirectional streaming audio.

No webhook reaches the gateway: the jambonz application runs ``listen`` and jambonz opens its ``url``
with subprotocol ``audio.jambonz.org`` (and ``wsAuth`` as basic auth), sends the metadata frame (the
call info: ``callSid``, ``from``, ``to``…), then one binary 20 ms L16 frame every 20 ms at
``sampleRate``; DTMF as ``{"event":"dtmf",…}`` when ``passDtmf``. The gateway's binary audio is played
in order, its ``mark``s come back ``playout`` once the audio before them has played, and ``killAudio``
drops what is queued and answers every pending mark ``cleared``. It hangs up by closing the socket.
``listen`` replays an application's own verb (the example's test); the default is the README's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp

from gateway.audio.resample import StreamResampler
from gateway.caller import wire_jambonz as wire
from gateway.caller.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.caller.sides import CallerSide, Heard, Offer
from gateway.errors import TelephonyProtocolError

if TYPE_CHECKING:
    from gateway.caller.call import CallOptions, CallReport

__all__ = ["JambonzSide", "listen_verb"]

MEDIA_PATH = "/jambonz/media"


def listen_verb(gateway: str, *, password: str = "", rate: int = 16000) -> dict[str, Any]:
    """The README's ``listen`` verb for ``gateway``: streaming bidirectional audio at ``rate``."""
    base = gateway.rstrip("/").replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    verb: dict[str, Any] = {
        "verb": "listen",
        "url": base + MEDIA_PATH,
        "sampleRate": rate,
        "mixType": "mono",
        "passDtmf": True,
        "bidirectionalAudio": {"enabled": True, "streaming": True, "sampleRate": rate},
    }
    if password:
        verb["wsAuth"] = {"username": "jambonz", "password": password}
    return verb


class JambonzSide(CallerSide):
    """jambonz ``listen``: metadata text, binary L16 both ways, JSON marks and ``killAudio``."""

    name = "jambonz"
    credential_env = "GATEWAY_PBX_SECRET"
    binary = True
    #: ``killAudio`` answers every pending mark with ``event: "cleared"``.
    clear_echoes_marks = True

    def __init__(self, rate: int = 16000) -> None:
        self.rate = rate
        #: The application's ``listen`` verb to replay instead of the default one.
        self.verb: Mapping[str, Any] | None = None
        self.listen: wire.Listen | None = None
        self._up: StreamResampler | None = None
        self._down: StreamResampler | None = None
        self._pending_up = bytearray()
        self._outstanding: set[str] = set()
        self._clearing = False
        self._from = self._to = ""
        #: Every binary message heard, L16 at the playback rate, for bandwidth checks.
        self.heard_pcm = bytearray()
        #: Replaces the caller's audio: frame index → one 20 ms L16 frame at the stream's rate.
        self.uplink_source: Callable[[int], bytes] | None = None

    async def request_call(
        self, http: aiohttp.ClientSession, opts: CallOptions, report: CallReport
    ) -> Offer | None:
        verb = self.verb or listen_verb(opts.gateway, password=opts.auth_token, rate=self.rate)
        listen = wire.parse_listen(verb)
        if listen.sample_rate not in (8000, 16000) or listen.playback_rate != listen.sample_rate:
            raise TelephonyProtocolError("the simulated call streams 8 or 16 kHz, the same both ways")
        if not listen.streaming:
            raise TelephonyProtocolError(
                "the simulated call plays streamed audio: bidirectionalAudio.streaming"
            )
        self.listen, self.rate = listen, listen.sample_rate
        self._from, self._to = opts.from_, opts.to
        if self.rate != 8000:
            self._up, self._down = StreamResampler(8000, self.rate), StreamResampler(self.rate, 8000)
        report.call_sid = report.stream_sid = wire.new_sid()
        report.pacing = {"messages": 0, "min_message_ms": 0.0, "max_message_ms": 0.0}
        url = wire.rehost(listen.url, opts.gateway) if self.verb is not None else listen.url
        return Offer(url=url, headers=wire.upgrade_headers(listen), after=["hangup"])

    def opening(self, report: CallReport, offer: Offer) -> list[str]:
        assert self.listen is not None
        return [wire.metadata(self.listen, call_sid=report.call_sid, from_=self._from, to=self._to)]

    def media(self, report: CallReport, index: int, ulaw: bytes) -> bytes | None:
        size = wire.frame_bytes(self.rate)
        if self.uplink_source is not None:
            return self.uplink_source(index)
        pcm = ulaw_to_pcm16(ulaw)
        self._pending_up += self._up.process(pcm) if self._up is not None else pcm
        if len(self._pending_up) < size:
            return None if index == 0 else bytes(size)  # the resampler's start-up delay: silence
        frame = bytes(self._pending_up[:size])
        del self._pending_up[:size]
        return frame

    def dtmf(self, report: CallReport, digit: str) -> str:
        assert self.listen is not None
        if not self.listen.pass_dtmf:
            raise ValueError("passDtmf is off: jambonz would not send the key")
        return wire.dtmf(digit)

    def mark_played(self, report: CallReport, name: str) -> str:
        self._outstanding.discard(name)
        return wire.mark_event(name, cleared=self._clearing)

    def cleared(self, report: CallReport) -> str | None:
        self._clearing = False  # the pending marks have been answered "cleared"
        return None

    def stop(self, report: CallReport) -> str | None:
        return None  # the caller hangs up: the module closes the socket

    def receive(self, report: CallReport, text: str) -> Heard:
        assert self.listen is not None
        msg = wire.parse_gateway_text(text, streaming=self.listen.streaming)
        if isinstance(msg, wire.Mark):
            if len(self._outstanding) >= wire.MAX_MARKS:
                raise ValueError(f"more than {wire.MAX_MARKS} marks outstanding: jambonz discards this one")
            self._outstanding.add(msg.name)
            return Heard("mark", name=msg.name)
        if self._down is not None:
            self._down.reset()  # the dropped audio's filter state must not leak into the next reply
        self._clearing = True
        return Heard("clear")

    def receive_binary(self, report: CallReport, data: bytes) -> Heard:
        wire.check_audio(data)
        pacing, ms = report.pacing, len(data) * 1000 / (self.rate * 2)
        pacing["messages"] += 1
        pacing["min_message_ms"] = min(pacing["min_message_ms"] or ms, ms)
        pacing["max_message_ms"] = max(pacing["max_message_ms"], ms)
        if len(self.heard_pcm) < 120 * self.rate * 2:
            self.heard_pcm += data
        pcm = self._down.process(data) if self._down is not None else data
        return Heard("media", audio=pcm16_to_ulaw(pcm))
