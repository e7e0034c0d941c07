"""FreeSWITCH's side of a simulated call: mod_audio_stream plus the event script that plays its files.

No webhook: the dialplan runs ``uuid_audio_stream <uuid> start <url> mono 16k <metadata>`` and the
module opens the socket (``wss://…/freeswitch/media?token=SECRET&to=…&from=…``), sends the metadata
as its first text frame, then one binary 20 ms L16 frame every 20 ms. What the gateway sends back is
checked as the module checks it (``streamAudio`` JSON, base64, a raw rate it has a file type for) and
played in order as the event script's queued ``uuid_broadcast`` files would be; ``killAudio`` breaks
playback (``uuid_break <uuid> all``). DTMF goes over the socket as the event script forwards it. The
caller hangs up by closing the socket (the module's cleanup on hang-up). The caller's μ-law 8 kHz
frames are converted here; ``command`` replays a dialplan's own command (the example's test).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import aiohttp

from gateway.audio.resample import StreamResampler
from gateway.caller import wire_freeswitch as wire
from gateway.caller.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.caller.sides import CallerSide, Heard, Offer
from gateway.errors import TelephonyProtocolError

if TYPE_CHECKING:
    from gateway.caller.call import CallOptions, CallReport

__all__ = ["FreeSwitchSide", "media_url"]

MEDIA_PATH = "/freeswitch/media"


def media_url(gateway: str, *, token: str = "", to: str = "", from_: str = "") -> str:
    """The socket URL a dialplan writes: the gateway as ws(s)://, ``?token=&to=&from=``."""
    base = gateway.rstrip("/").replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    query = urlencode([(k, v) for k, v in (("token", token), ("to", to), ("from", from_)) if v])
    return base + MEDIA_PATH + ("?" + query if query else "")


class FreeSwitchSide(CallerSide):
    """FreeSWITCH mod_audio_stream: metadata text, binary L16 up, ``streamAudio`` files down."""

    name = "freeswitch"
    credential_env = "GATEWAY_PBX_SECRET"
    binary = True
    #: No marks at all on this socket.
    clear_echoes_marks = False

    def __init__(self, rate: int = 16000) -> None:
        self.rate = rate
        #: The expanded API command to replay instead of the default one (its uuid becomes the call's).
        self.command: str | None = None
        self.start: wire.StartCommand | None = None
        self._up: StreamResampler | None = None
        self._down: StreamResampler | None = None
        self._pending_up = bytearray()
        #: Every file heard, raw L16 at the stream's rate, for bandwidth checks.
        self.heard_pcm = bytearray()
        #: Replaces the caller's audio: frame index → one 20 ms L16 frame at the stream's rate.
        self.uplink_source: Callable[[int], bytes] | None = None
        #: Durations (ms) of the files the gateway sent.
        self.file_ms: list[float] = []

    async def request_call(
        self, http: aiohttp.ClientSession, opts: CallOptions, report: CallReport
    ) -> Offer | None:
        command = self.command
        if command is None:
            uuid = wire.new_uuid()
            metadata = json.dumps({"uuid": uuid, "sampleRate": self.rate}, separators=(",", ":"))
            url = media_url(opts.gateway, token=opts.auth_token, to=opts.to, from_=opts.from_)
            command = wire.start_command(uuid=uuid, url=url, rate=self.rate, metadata=metadata)
        start = wire.parse_start(command)
        if start.mix != "mono":
            raise TelephonyProtocolError(f"the simulated channel streams mono, not {start.mix}")
        if start.rate not in (8000, 16000):
            raise TelephonyProtocolError(f"the simulated channel streams 8k or 16k, not {start.rate}")
        self.start, self.rate = start, start.rate
        if self.rate != 8000:
            self._up, self._down = StreamResampler(8000, self.rate), StreamResampler(self.rate, 8000)
        report.call_sid = report.stream_sid = start.uuid
        report.pacing = {"files": 0, "min_file_ms": 0.0, "max_file_ms": 0.0}
        return Offer(url=start.url, headers={"User-Agent": "libwsc"})

    def opening(self, report: CallReport, offer: Offer) -> list[str]:
        assert self.start is not None
        return [self.start.metadata] if self.start.metadata else []

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
        return wire.dtmf(digit)

    def mark_played(self, report: CallReport, name: str) -> str:
        raise ValueError("mod_audio_stream has no marks")  # never asked: receive() returns none

    def stop(self, report: CallReport) -> str | None:
        return None  # the channel hangs up: the media bug closes, the module closes the socket

    def receive(self, report: CallReport, text: str) -> Heard:
        msg = wire.parse_gateway_text(text)
        if isinstance(msg, wire.KillAudio):
            if self._down is not None:
                self._down.reset()
            return Heard("clear")
        if msg.audio_type != "raw":
            raise ValueError(f"{msg.audio_type} files: the gateway sends raw L16")
        if msg.rate != self.rate:
            raise ValueError(
                f"a {msg.rate} Hz file on a {self.rate} Hz channel (FreeSWITCH would resample it)"
            )
        if not msg.audio or len(msg.audio) % wire.frame_bytes(self.rate):
            raise ValueError(f"a file of {len(msg.audio)} bytes is not whole 20 ms frames")
        ms = len(msg.audio) * 1000 / (self.rate * 2)
        self.file_ms.append(ms)
        pacing = report.pacing
        pacing["files"] = len(self.file_ms)
        pacing["min_file_ms"] = min(self.file_ms)
        pacing["max_file_ms"] = max(self.file_ms)
        if len(self.heard_pcm) < 120 * self.rate * 2:
            self.heard_pcm += msg.audio
        pcm = self._down.process(msg.audio) if self._down is not None else msg.audio
        return Heard("media", audio=pcm16_to_ulaw(pcm))

    def receive_binary(self, report: CallReport, data: bytes) -> Heard:
        raise ValueError("binary frame: the community mod_audio_stream plays no binary audio")
