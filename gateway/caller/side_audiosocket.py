"""Asterisk AudioSocket's side of a simulated call, over TCP, written independently of the gateway's codec.

What ``AudioSocket(<uuid>,<host>:<port>)`` does (asterisk/asterisk ``apps/app_audiosocket.c`` and
``res/res_audiosocket.c``): connect, send the UUID message (kind 0x01, 16 bytes), then each voice frame of
the channel as slin 8 kHz (kind 0x10; the ``AudioSocket/…/c(slin16)`` channel sends its codec's kind,
0x12 for slin16) and each key as kind 0x03; every message is kind, 16-bit big-endian length, payload.
What comes back is written to the channel as it arrives (no buffering), so the gateway must pace:
the lead of its audio over the clock is measured into ``CallReport.pacing``. A 0x00 message (or the
connection closing) ends the application; Asterisk hangs up by closing the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

import aiohttp

from gateway.audio.resample import StreamResampler
from gateway.caller.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.caller.sides import CallerSide, Heard, Offer
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.caller.call import CallOptions, CallReport

__all__ = ["AUDIO_KINDS", "AudioSocketSide", "TcpStream", "message"]

#: Kinds from include/asterisk/res_audiosocket.h.
HANGUP, UUID, DTMF, ERROR = 0x00, 0x01, 0x03, 0xFF
AUDIO_KINDS = {8000: 0x10, 12000: 0x11, 16000: 0x12, 24000: 0x13, 32000: 0x14, 44100: 0x15, 48000: 0x16}
#: Audio received ahead of the clock beyond this: AudioSocket plays at once, the gateway did not pace.
PACING_LIMIT_MS = 150.0


def message(kind: int, payload: bytes = b"") -> bytes:
    """One AudioSocket message: kind, big-endian 16-bit length, payload."""
    return bytes([kind]) + len(payload).to_bytes(2, "big") + payload


class TcpStream:
    """A TCP connection dressed as the caller's WebSocket: binary "messages" are whole AudioSocket
    messages, cut from the byte stream by their length header."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self.close_code: int | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> TcpStream:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    @property
    def closed(self) -> bool:
        return self._writer.is_closing()

    async def send_bytes(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionResetError("AudioSocket connection closed")
        self._writer.write(data)
        await self._writer.drain()

    async def send_str(self, data: str) -> None:
        raise ConnectionError("AudioSocket carries no text")

    async def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()

    def __aiter__(self) -> AsyncIterator[aiohttp.WSMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[aiohttp.WSMessage]:
        try:
            while True:
                head = await self._reader.readexactly(3)
                payload = await self._reader.readexactly(int.from_bytes(head[1:], "big"))
                yield aiohttp.WSMessage(aiohttp.WSMsgType.BINARY, head + payload, None)
        except (asyncio.IncompleteReadError, ConnectionError):
            return


class AudioSocketSide(CallerSide):
    """AudioSocket: a TCP connection from Asterisk, slin at 8 kHz (the application) or 16 kHz."""

    name = "audiosocket"
    binary = True
    clear_echoes_marks = False

    def __init__(self, rate: int = 8000, *, uuid_prefix: str = "") -> None:
        if rate not in AUDIO_KINDS:
            raise ValueError(f"AudioSocket has no slin kind at {rate} Hz")
        self.rate, self.kind = rate, AUDIO_KINDS[rate]
        self.frame = rate // 50 * 2
        #: The UUID's start: the dialplan picks it to select the gateway's GATEWAY_AUDIOSOCKET_ROUTES entry.
        self.uuid_prefix = uuid_prefix.lower()
        self.call_uuid = ""
        self.hangup_received = False
        self.heard_pcm = bytearray()
        self._up = StreamResampler(8000, rate) if rate != 8000 else None
        self._down = StreamResampler(rate, 8000) if rate != 8000 else None
        self._pending_up = bytearray()
        self._last_at: float | None = None
        self._ahead_s = 0.0
        self._noted = False

    async def request_call(
        self, http: aiohttp.ClientSession, opts: CallOptions, report: CallReport
    ) -> Offer | None:
        # No request: the dialplan runs AudioSocket() with a UUID it chose.
        text = str(uuid.uuid4())
        self.call_uuid = self.uuid_prefix + text[len(self.uuid_prefix) :]
        uuid.UUID(self.call_uuid)  # a prefix that breaks the UUID's shape is the test's mistake
        report.call_sid = report.stream_sid = self.call_uuid
        report.pacing = {"messages": 0, "bad_sizes": 0, "max_ahead_ms": 0.0}
        return Offer(url=self._address(opts.gateway))

    @staticmethod
    def _address(gateway: str) -> str:
        """``tcp://host:port``: the gateway URL when it is one, else its host and GATEWAY_AUDIOSOCKET_PORT."""
        parts = urlsplit(gateway)
        if parts.scheme == "tcp" and parts.hostname and parts.port:
            return f"tcp://{parts.hostname}:{parts.port}"
        port = os.environ.get("GATEWAY_AUDIOSOCKET_PORT", "").strip()
        if not parts.hostname or not port.isdigit():
            raise ConfigError(
                "AudioSocket is TCP: give --gateway tcp://HOST:PORT (or set GATEWAY_AUDIOSOCKET_PORT)"
            )
        return f"tcp://{parts.hostname}:{port}"

    async def connect(self, http: aiohttp.ClientSession, offer: Offer) -> aiohttp.ClientWebSocketResponse:
        parts = urlsplit(offer.url)
        assert parts.hostname is not None
        assert parts.port is not None
        try:
            stream = await TcpStream.open(parts.hostname, parts.port)
        except OSError as exc:
            raise ConfigError(f"cannot reach the AudioSocket listener {offer.url}: {exc}") from exc
        return cast(aiohttp.ClientWebSocketResponse, stream)  # the same duck type the caller drives

    def opening(self, report: CallReport, offer: Offer) -> list[bytes]:
        return [message(UUID, uuid.UUID(self.call_uuid).bytes)]

    def media(self, report: CallReport, index: int, ulaw: bytes) -> bytes | None:
        pcm = ulaw_to_pcm16(ulaw)
        if self._up is None:
            return message(self.kind, pcm)
        self._pending_up += self._up.process(pcm)
        if len(self._pending_up) < self.frame:
            return None if index == 0 else message(self.kind, bytes(self.frame))
        frame = bytes(self._pending_up[: self.frame])
        del self._pending_up[: self.frame]
        return message(self.kind, frame)

    def dtmf(self, report: CallReport, digit: str) -> bytes:
        return message(DTMF, digit.encode("ascii"))

    def mark_played(self, report: CallReport, name: str) -> str:
        raise AssertionError("AudioSocket has no marks")

    def stop(self, report: CallReport) -> None:
        return None  # Asterisk closes the connection

    def receive(self, report: CallReport, text: str) -> Heard:
        raise ValueError("text on an AudioSocket connection")

    def receive_binary(self, report: CallReport, data: bytes) -> Heard:
        kind, payload = data[0], data[3:]
        if kind == HANGUP:
            self.hangup_received = True
            return Heard("control")
        if kind != self.kind:
            raise ValueError(
                f"message kind {kind:#04x}: the stream is {self.kind:#04x} (slin {self.rate} Hz)"
            )
        if len(payload) & 1 or not payload:
            raise ValueError(f"audio of {len(payload)} bytes is not 16-bit samples")
        self._pace(report, time.monotonic(), len(payload))
        if len(self.heard_pcm) < 120 * self.rate * 2:
            self.heard_pcm += payload
        pcm = self._down.process(payload) if self._down is not None else payload
        return Heard("media", audio=pcm16_to_ulaw(pcm))

    def _pace(self, report: CallReport, now: float, size: int) -> None:
        """What the channel has been given ahead of the clock: AudioSocket writes every frame at once."""
        pacing = report.pacing
        pacing["messages"] += 1
        if size != self.frame:
            pacing["bad_sizes"] += 1
        if self._last_at is not None:
            self._ahead_s = max(0.0, self._ahead_s - (now - self._last_at))
        self._ahead_s += size / (self.rate * 2)
        self._last_at = now
        ahead_ms = round(self._ahead_s * 1000, 1)
        pacing["max_ahead_ms"] = max(pacing["max_ahead_ms"], ahead_ms)
        if ahead_ms > PACING_LIMIT_MS and not self._noted:
            self._noted = True
            raise ValueError(f"audio {ahead_ms:.0f} ms ahead of real time: AudioSocket does not buffer")
