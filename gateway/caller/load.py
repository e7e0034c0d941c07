"""Lean simulated callers for load tests: hundreds of calls in one process, and their analysis.

:func:`gateway.caller.call.place_call` is the full-featured caller (recording, transcripts, reports);
this is its lean counterpart for ``bench/load.py``. It speaks Twilio's protocol field for field:
signed voice-webhook POST → TwiML ``<Connect><Stream>`` with its ``<Parameter>`` values → signed
WebSocket upgrade → ``connected`` and ``start`` (custom parameters echoed) → one ``media`` message
every 20 ms → each ``mark`` echoed once the audio queued before it has played (at once after a
``clear``, as Twilio does) → ``stop`` → close 1000.

It is cheap because the load side (these callers and the lean Live server) must drive 500+ calls on
the one core the gateway does not use. The media socket is a bare ``asyncio.BufferedProtocol``
(:mod:`gateway.caller.leanws`): a frame is one ``transport.write`` of a message built from
pre-encoded parts (the payload is one of a few cached base64 strings), with no coroutine, future or
task per frame; of the gateway's messages only what the analysis needs is read: a ``media``
message's payload length (its frame count), a mark's name, a clear. All calls of a process share one
drift-free 20 ms schedule driven by ``loop.call_at``: every call sits on one of ten 2 ms phase
slots, so a process wakes 500 times a second, not 50 times per call.

Other providers (``run_calls(provider=...)``) run the same plan, schedule and socket, but their
messages are built and read by the provider's :class:`~gateway.caller.sides.CallerSide`
(:class:`SideCall`): the webhook exchange, signatures, opening, each frame in the stream's format
(a probe's μ-law frame converted as the side converts any audio: it survives the 8→16 kHz L16
conversion as it survives the gateway's own), mark echoes, clears and their acknowledgements.
Asterisk AudioSocket is plain TCP: its calls run on :class:`_TcpSocket`, the same lean protocol
cutting the byte stream into AudioSocket messages (kind, 16-bit length, payload). It has no marks and
no clear (the gateway paces in real time and drops its own queue on a barge-in), so such a call
echoes nothing and its playout replay restarts only at each new turn.

Measuring needs the same frame timed at both ends. Caller audio therefore carries *probes*: runs of
four 20 ms frames, each a constant level below any speech threshold, whose levels spell the call's
number and a sequence number. :class:`SessionProbe` (fed by the Live server with the PCM16 the
gateway forwards) finds them again, and because ``CLOCK_MONOTONIC`` is one clock for every process
on a Linux machine, send and receive times compare directly. The server side also records when
each model turn's first audio left it; :func:`analyse` joins both sides.
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import json
import math
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import aiohttp

from gateway.caller import leanws, wire
from gateway.caller.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.caller.sides import CallerSide, Heard, parse_twiml, ws_url as stream_ws_url
from gateway.errors import GatewayError, TelephonyProtocolError

if TYPE_CHECKING:
    from gateway.caller.call import CallOptions, CallReport

__all__ = [
    "PROBE_LEVELS",
    "CallPattern",
    "LoadCall",
    "SessionProbe",
    "SideCall",
    "analyse",
    "echo_rtt",
    "percentile",
    "probe_digit",
    "run_calls",
]

FRAME_S = 0.020
FRAME_BYTES = 160
#: Phase slots per 20 ms: each call sends on one, so a process's sends are spread over the period.
SLOTS = 10
SLOT_S = FRAME_S / SLOTS
PROBE_FRAMES = 4
MAX_CALL_NUMBER = 16**3 - 1
ACCOUNT_SID = "AC" + "0" * 32


def _ulaw_frame(samples: list[int]) -> bytes:
    return pcm16_to_ulaw(array.array("h", samples).tobytes())


def _probe_levels() -> tuple[int, ...]:
    """The 16 probe levels as the gateway will see them: μ-law has no exact 80, 100, …, so decode back."""
    levels = []
    for digit in range(16):
        frame = _ulaw_frame([80 + 20 * digit] * FRAME_BYTES)
        levels.append(array.array("h", ulaw_to_pcm16(frame))[0])
    return tuple(levels)


def _b64(frame: bytes) -> bytes:
    return base64.b64encode(frame)


#: PCM levels of probe digits 0..15; all below 400, far under a speech detector's threshold.
PROBE_LEVELS = _probe_levels()
_PROBE_PAYLOADS = tuple(_b64(_ulaw_frame([level] * FRAME_BYTES)) for level in PROBE_LEVELS)
_SILENCE_PAYLOAD = _b64(_ulaw_frame([0] * FRAME_BYTES))
#: Speech stand-in: a 400 Hz tone at about -21 dBFS RMS (whole periods per frame, so one payload).
_SPEECH_PAYLOAD = _b64(
    _ulaw_frame([round(4000 * math.sin(2 * math.pi * 400 * i / 8000)) for i in range(FRAME_BYTES)])
)
#: The μ-law frame behind each cached payload, for providers whose side encodes (or converts) it itself.
_ULAW_OF_PAYLOAD = {
    payload: base64.b64decode(payload) for payload in (*_PROBE_PAYLOADS, _SILENCE_PAYLOAD, _SPEECH_PAYLOAD)
}
#: A media message up to its payload; sequence number, chunk and timestamp are filled in per frame.
_MEDIA_HEAD = (
    b'{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d","timestamp":"%d",'
    b'"payload":"'
)
_MEDIA_OUT = b'{"event":"media"'
_PAYLOAD_KEY = b'"payload":"'
_MEDIA_OUT_TAIL = b'"}}'

# Frame kinds in a call's plan.
_SILENCE, _SPEECH, _PROBE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class CallPattern:
    """What a load caller says: speech bursts the Live server echoes back, so the bot talks about
    half the time, and every ``barge_every``-th cycle the caller talks over the bot's reply (a barge-in)."""

    lead_silence_s: float = 3.0
    speak_s: float = 1.0
    silence_s: float = 2.6
    barge_every: int = 4
    barge_silence_s: float = 1.3
    probe_every_s: float = 0.3

    def kinds(self) -> tuple[bytes, bytes]:
        """(lead-in, repeating cycle) as one byte per frame: silence, speech or a probe's first frame."""

        def silence(seconds: float) -> bytearray:
            n = round(seconds / FRAME_S)
            out = bytearray(n)
            step = max(PROBE_FRAMES + 1, round(self.probe_every_s / FRAME_S))
            # Probes only where the caller is silent, never touching speech (its filter tail).
            for start in range(5, n - PROBE_FRAMES - 5, step):
                out[start] = _PROBE
            return out

        lead = silence(self.lead_silence_s)
        cycle = bytearray()
        for index in range(max(1, self.barge_every)):
            cycle += bytes([_SPEECH]) * round(self.speak_s / FRAME_S)
            last = self.barge_every > 0 and index == self.barge_every - 1
            cycle += silence(self.barge_silence_s if last else self.silence_s)
        return bytes(lead), bytes(cycle)


# --------------------------------------------------------------------------- the WebSocket


_RECV_BUFFER = bytearray(1 << 18)  # one per process: every read is parsed before the next one
_RECV_VIEW = memoryview(_RECV_BUFFER)


class _LeanSocket(asyncio.BufferedProtocol):
    """What the load caller's two media sockets share (a WebSocket, AudioSocket's TCP): read into the
    process's one buffer, the futures a call waits on, and a write only while the connection is open.

    :attr:`opened` resolves once the connection is usable (or fails with the reason), :attr:`closed`
    when it is gone; :attr:`close_code` is the code the server sent (WebSocket only) and :attr:`error`
    what was wrong with what it sent, if anything.
    """

    #: How :attr:`opened` fails when the connection is lost before it was usable.
    _lost_before_open = "connection lost"

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.close_code: int | None = None
        self.error = ""
        self.closing = False
        self.transport: asyncio.Transport | None = None

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RECV_VIEW

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"{self._lost_before_open}: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _open_transport(self) -> asyncio.Transport | None:
        """The transport to write to, or None once the connection is closing or gone."""
        transport = self.transport
        return None if self.closing or transport is None or transport.is_closing() else transport

    async def wait_closed(self, timeout: float) -> None:  # noqa: ASYNC109 - a bound, not a cancel scope
        """Wait for the connection to end; abort it after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()


class _ClientSocket(_LeanSocket):
    """The client end of one WebSocket: the upgrade, then each text message to ``on_text``.

    :attr:`opened` resolves once the server accepted the upgrade.
    """

    _lost_before_open = "connection lost during the upgrade"

    def __init__(
        self,
        request: bytes,
        key: str,
        on_text: Callable[[bytes], None],
        on_binary: Callable[[bytes], None] | None = None,
    ) -> None:
        super().__init__()
        self._request = request
        self._accept = leanws.accept_key(key).encode("ascii")
        self._head = b""
        self._reader: leanws.FrameReader | None = None
        self._on_text = on_text
        #: Binary messages (Vonage's audio); without a callback they are ignored.
        self._on_binary = on_binary

    # -- transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport subclass
        self.transport.write(self._request)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            if self._reader is not None:
                self._reader.feed(_RECV_VIEW[:nbytes])
            else:
                self._handshake(bytes(_RECV_VIEW[:nbytes]))
        except leanws.ProtocolViolation as exc:
            self.error = self.error or f"WebSocket protocol violation: {exc.reason}"
            self.close(exc.code, exc.reason)
        except (ValueError, KeyError, TypeError) as exc:  # a message the analysis cannot read
            self.error = self.error or f"unreadable message from the server: {exc!r:.200}"
            self.close(1007, "unreadable message")

    def eof_received(self) -> bool | None:
        return None

    # -- the upgrade and frames

    def _handshake(self, data: bytes) -> None:
        assert self.transport is not None
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            return
        head, rest = self._head[:end], self._head[end + 4 :]
        self._head = b""
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        accept = next(
            (
                v.strip()
                for k, _, v in (line.partition(b":") for line in lines[1:])
                if k.strip().lower() == b"sec-websocket-accept"
            ),
            b"",
        )
        if self.opened.done():  # the caller gave up waiting (its timeout cancelled the future)
            self.closing = True
            self.transport.abort()
            return
        if len(status) < 2 or status[1] != b"101" or accept != self._accept:
            reason = b" ".join(status[1:]).decode("latin-1")
            self.opened.set_exception(ConnectionError(f"WebSocket upgrade refused: HTTP {reason}"))
            self.closing = True
            self.transport.close()
            return
        self._reader = leanws.FrameReader(self._message, masked=False)
        self.opened.set_result(None)
        if rest:
            self._reader.feed(rest)

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode == leanws.TEXT:
            self._on_text(payload)
        elif opcode == leanws.BINARY and self._on_binary is not None:
            self._on_binary(payload)
        elif opcode == leanws.PING:
            self._send(leanws.PONG, payload)
        elif opcode == leanws.CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self.closing:
                self._send(leanws.CLOSE, payload[:2])  # echo the code
            self.closing = True
            assert self.transport is not None
            self.transport.close()

    def _send(self, opcode: int, payload: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(leanws.masked_frame(opcode, payload))

    # -- for the caller

    def send_text(self, data: bytes) -> bool:
        """Write one text message; False when the socket is closing or gone."""
        transport = self._open_transport()
        if transport is None:
            return False
        transport.write(leanws.masked_frame(leanws.TEXT, data))
        return True

    def send_binary(self, data: bytes) -> bool:
        """Write one binary message; False when the socket is closing or gone."""
        transport = self._open_transport()
        if transport is None:
            return False
        transport.write(leanws.masked_frame(leanws.BINARY, data))
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame; the server answers and drops the connection (see :meth:`wait_closed`)."""
        if not self.closing:
            self._send(leanws.CLOSE, leanws.close_payload(code, reason))
            self.closing = True


async def _ws_open(
    url: str,
    headers: dict[str, str],
    on_text: Callable[[bytes], None],
    on_binary: Callable[[bytes], None] | None = None,
) -> _ClientSocket:
    """Open ``ws://host[:port]/path`` with extra handshake ``headers`` (the Twilio signature)."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or parts.hostname is None:
        raise ConnectionError(f"the lean caller speaks ws:// only, not {url!r}")
    key = base64.b64encode(secrets.token_bytes(16)).decode("ascii")
    lines = [
        f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    loop = asyncio.get_running_loop()
    transport, sock = await loop.create_connection(
        lambda: _ClientSocket(request, key, on_text, on_binary), parts.hostname, parts.port or 80
    )
    try:
        await sock.opened
    except BaseException:  # refused, or the caller's timeout cancelled us: drop the connection
        transport.abort()
        raise
    return sock


async def echo_rtt(url: str, count: int = 200) -> float:
    """Median round trip of a bare WebSocket text message (a media-sized one) to ``url`` and back."""
    received: asyncio.Queue[bytes] = asyncio.Queue()
    sock = await _ws_open(url, {}, received.put_nowait)
    message = b'{"event":"media","payload":"' + b"A" * 216 + b'"}'
    rtts = []
    try:
        for _ in range(count):
            t = time.monotonic()
            sock.send_text(message)
            await received.get()
            rtts.append(time.monotonic() - t)
            await asyncio.sleep(0.002)
    finally:
        sock.close()
        await sock.wait_closed(2.0)
    return percentile(rtts, 50)


# --------------------------------------------------------------------------- AudioSocket's TCP

#: An AudioSocket message's header: kind, then the payload's length as a 16-bit big-endian integer
#: (asterisk/asterisk ``include/asterisk/res_audiosocket.h``, ``res/res_audiosocket.c``).
_AS_HEAD = 3


class _TcpSocket(_LeanSocket):
    """The load caller's end of an AudioSocket connection (plain TCP), with :class:`_ClientSocket`'s
    interface, so :class:`SideCall` drives it as it drives a WebSocket: each whole message (header
    included, as :meth:`~gateway.caller.side_audiosocket.AudioSocketSide.receive_binary` takes it) to
    ``on_binary`` from the read callback, each message out one ``transport.write``. The protocol has
    no text, no close code and no close handshake: either end hangs up by closing the connection."""

    def __init__(self, on_binary: Callable[[bytes], None]) -> None:
        super().__init__()  # close_code stays None: TCP carries none
        self._on_binary = on_binary
        #: The start of a message split across reads (rare: the gateway writes whole messages).
        self._partial = bytearray()

    # -- transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:  # 20 ms frames must not wait for Nagle
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened.set_result(None)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            if self._partial:
                self._partial += _RECV_VIEW[:nbytes]
                with memoryview(self._partial) as view:
                    used = self._messages(view, len(self._partial))
                del self._partial[:used]
            else:
                used = self._messages(_RECV_VIEW, nbytes)
                if used < nbytes:
                    self._partial += _RECV_VIEW[used:nbytes]
        except (ValueError, KeyError, TypeError) as exc:  # a message Asterisk would not take
            self.error = self.error or f"unreadable message from the gateway: {exc!s:.200}"
            self.close()

    def _messages(self, view: memoryview, end: int) -> int:
        """Hand each whole message in ``view[:end]`` to ``on_binary``; how many bytes they took."""
        at = 0
        on_binary = self._on_binary
        while end - at >= _AS_HEAD and not self.closing:
            stop = at + _AS_HEAD + (view[at + 1] << 8 | view[at + 2])
            if stop > end:
                break
            on_binary(bytes(view[at:stop]))
            at = stop
        return end if self.closing else at

    def eof_received(self) -> bool | None:
        self.closing = True
        return None  # close our end too: the gateway hung up

    def connection_lost(self, exc: Exception | None) -> None:
        if self._partial and not self.error:
            self.error = "the gateway closed the connection in the middle of a message"
        super().connection_lost(exc)

    # -- for the caller

    def send_text(self, data: bytes) -> bool:
        """AudioSocket has no text: noted as the call's error (a side that sends text is wrong)."""
        self.error = self.error or "a text message on an AudioSocket connection"
        return False

    def send_binary(self, data: bytes) -> bool:
        """Write one message (header included); False when the connection is closing or gone."""
        transport = self._open_transport()
        if transport is None:
            return False
        transport.write(data)
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Hang up as Asterisk does: close the connection (``code``, ``reason``: ignored, TCP has none)."""
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


async def _tcp_open(url: str, on_binary: Callable[[bytes], None]) -> _TcpSocket:
    """Connect to ``tcp://host:port`` (an AudioSocket listener)."""
    parts = urlsplit(url)
    if parts.scheme != "tcp" or parts.hostname is None or parts.port is None:
        raise ConnectionError(f"an AudioSocket address is tcp://HOST:PORT, not {url!r}")
    loop = asyncio.get_running_loop()
    _, sock = await loop.create_connection(lambda: _TcpSocket(on_binary), parts.hostname, parts.port)
    return sock


#: The media socket of a load call: a WebSocket, or AudioSocket's TCP connection.
_Socket = _ClientSocket | _TcpSocket


# --------------------------------------------------------------------------- one call


@dataclass(slots=True)
class LoadCall:
    """One simulated call: its plan, its socket and what it saw (times are ``time.monotonic()``)."""

    number: int
    start_at: float
    lead: bytes
    cycle: bytes
    call_sid: str = field(default_factory=lambda: wire.new_sid("CA"))
    stream_sid: str = field(default_factory=lambda: wire.new_sid("MZ"))
    sock: _Socket | None = None
    frame: int = 0
    seq: int = 0
    probe_seq: int = 0
    probe_left: int = 0
    t_webhook: float = 0.0
    t_media: float = 0.0
    t_stop: float = 0.0
    error: str = ""
    #: The gateway answered the webhook without a stream (over capacity, draining, overloaded): a
    #: polite refusal, not a failure.
    refused: bool = False
    play_end: float = 0.0
    marks_echoed: int = 0
    #: (sequence, send time, index of its first frame) per probe sent.
    probes: list[tuple[int, float, int]] = field(default_factory=list)
    sent: array.array[float] = field(default_factory=lambda: array.array("d"))
    arrivals: array.array[float] = field(default_factory=lambda: array.array("d"))
    clears: array.array[float] = field(default_factory=lambda: array.array("d"))
    marks: deque[tuple[float, str]] = field(default_factory=deque)
    #: The end of every media message of this call: the payload's closing quote and the stream SID.
    _tail: bytes = field(init=False, default=b"")

    def __post_init__(self) -> None:
        self._tail = b'"},"streamSid":"' + self.stream_sid.encode("ascii") + b'"}'

    def _kind(self, k: int) -> int:
        lead = self.lead
        return lead[k] if k < len(lead) else self.cycle[(k - len(lead)) % len(self.cycle)]

    def _payload(self, now: float) -> bytes:
        if self.probe_left:
            self.probe_left -= 1
            n, s = self.number, self.probe_seq - 1
            digit = (n >> 4 & 15, n & 15, s & 15)[2 - self.probe_left]
            return _PROBE_PAYLOADS[digit]
        kind = self._kind(self.frame)
        if kind == _SPEECH:
            return _SPEECH_PAYLOAD
        if kind == _PROBE:
            self.probes.append((self.probe_seq, now, self.frame))
            self.probe_seq += 1
            self.probe_left = PROBE_FRAMES - 1
            return _PROBE_PAYLOADS[self.number >> 8 & 15]
        return _SILENCE_PAYLOAD

    def media_message(self, now: float) -> bytes:
        """The next 20 ms ``media`` message (advances the frame and sequence counters)."""
        self.seq += 1
        frame = self.frame
        payload = self._payload(now)
        self.frame = frame + 1
        return _MEDIA_HEAD % (self.seq, frame + 1, frame * 20) + payload + self._tail

    def tick(self, now: float) -> bool:
        """Send this call's next 20 ms frame, then any mark whose audio has played by now.

        False when the socket can no longer send (the call leaves the schedule)."""
        sock = self.sock
        if sock is None or not sock.send_text(self.media_message(now)):
            return False
        self.sent.append(now)
        marks = self.marks
        while marks and marks[0][0] <= now:
            self._echo(marks.popleft()[1])
        return True

    def _echo(self, name: str) -> None:
        assert self.sock is not None
        self.seq += 1
        self.marks_echoed += 1
        self.sock.send_text(wire.mark(self.seq, stream_sid=self.stream_sid, name=name).encode())

    def on_text(self, data: bytes) -> None:
        """One message from the gateway: audio (counted, not decoded), a mark, a clear."""
        now = time.monotonic()
        if data.startswith(_MEDIA_OUT) and data.endswith(_MEDIA_OUT_TAIL):
            # The payload is the gateway's last field; one message may carry several 20 ms frames
            # (the gateway batches 40 ms), so its base64 length gives the frame count.
            at = data.rfind(_PAYLOAD_KEY)
            if at > 0:
                self._audio(now, (len(data) - at - len(_PAYLOAD_KEY) - len(_MEDIA_OUT_TAIL)) * 3 // 4)
                return
        obj = json.loads(data)
        event = obj.get("event")
        if event == "mark":
            self.marks.append((self.play_end, obj["mark"]["name"]))
        elif event == "clear":
            self.clears.append(now)
            self.play_end = now
            while self.marks:
                self._echo(self.marks.popleft()[1])
        elif event == "media":
            self._audio(now, len(base64.b64decode(obj["media"]["payload"])))

    def _audio(self, now: float, nbytes: int) -> None:
        frames = max(1, nbytes // FRAME_BYTES)
        arrivals = self.arrivals
        for _ in range(frames):
            arrivals.append(now)
        self.play_end = max(self.play_end, now) + FRAME_S * frames

    def result(self) -> dict[str, Any]:
        """What the analysis needs (arrays stay compact ``array('d')``)."""
        cutoff = self.t_stop - 0.5
        return {
            "number": self.number,
            "call_sid": self.call_sid,
            "error": self.error,
            "refused": self.refused,
            "t_webhook": self.t_webhook,
            "t_media": self.t_media,
            "t_stop": self.t_stop,
            "frames_sent": self.frame,
            "frames_before_cutoff": sum(1 for t in self.sent if t <= cutoff),
            "marks_echoed": self.marks_echoed,
            "probes": self.probes,
            "arrivals": self.arrivals,
            "clears": self.clears,
        }


@dataclass(slots=True, kw_only=True)
class SideCall(LoadCall):
    """A load call over another provider's protocol (``run_calls(provider=...)``): the same plan, frames,
    probes and mark timing as :class:`LoadCall`, but every message built and read by the provider's
    :class:`~gateway.caller.sides.CallerSide` (the tested description of its wire), so the gateway
    sees exactly what that provider sends. Costlier per frame than Twilio's pre-encoded messages (a
    side formats, and may convert, each frame and decodes what it hears), which only the load side pays.
    """

    side: CallerSide
    report: CallReport
    #: Probes before this index in :attr:`probes` have left in a message (see :meth:`tick`).
    stamped: int = 0

    def tick(self, now: float) -> bool:
        sock = self.sock
        if sock is None:
            return False
        frame = self.frame
        ulaw = _ULAW_OF_PAYLOAD[self._payload(now)]
        self.frame = frame + 1
        text = self.side.media(self.report, frame, ulaw)
        if text is not None:
            if not (sock.send_text(text.encode()) if isinstance(text, str) else sock.send_binary(text)):
                return False
            probes = self.probes
            # A side may carry several frames in one message (Exotel: 100 ms): a probe leaves with it.
            for i in range(self.stamped, len(probes)):
                probes[i] = (probes[i][0], now, probes[i][2])
            self.stamped = len(probes)
        elif sock.closing:
            return False
        self.sent.append(now)
        marks = self.marks
        while marks and marks[0][0] <= now:
            self._echo(marks.popleft()[1])
        return True

    def _echo(self, name: str) -> None:
        assert self.sock is not None
        self.marks_echoed += 1
        self.sock.send_text(self.side.mark_played(self.report, name).encode())

    def on_text(self, data: bytes) -> None:
        """One message from the gateway, parsed and checked by the side (a ValueError: what the provider
        would reject; the socket closes with it as the call's error)."""
        self._heard(time.monotonic(), self.side.receive(self.report, data.decode()))

    def on_binary(self, data: bytes) -> None:
        """One binary message (Vonage's audio), checked by the side as :meth:`on_text`."""
        self._heard(time.monotonic(), self.side.receive_binary(self.report, data))

    def _heard(self, now: float, heard: Heard) -> None:
        if heard.kind == "media":
            # μ-law 8 kHz by now; a side's resampler may leave a frame a few samples short: round.
            self._audio(now, len(heard.audio) + FRAME_BYTES // 2)
        elif heard.kind == "mark":
            self.marks.append((self.play_end, heard.name))
        elif heard.kind == "control":  # call control the side noted (ANSWER, AudioSocket's 0x00): no clear
            return
        else:
            self.clears.append(now)
            self.play_end = now
            if self.side.clear_echoes_marks:
                while self.marks:
                    self._echo(self.marks.popleft()[1])
            else:  # Plivo: cleared checkpoints are never answered
                self.marks.clear()
            ack = self.side.cleared(self.report)
            if ack is not None and self.sock is not None:
                self.sock.send_text(ack.encode())


class _Ticker:
    """The process's one 20 ms schedule: slot ``k % SLOTS`` is due at ``base + k * SLOT_S``, always
    computed from ``k`` so lateness never accumulates; lateness is recorded, not hidden.

    A ``loop.call_at`` callback, not a task: uvloop's timers have 1 ms resolution, so a slot may fire
    up to 1 ms early; it is then served at once (its frames carry their real send time)."""

    def __init__(self) -> None:
        self.slots: list[list[LoadCall]] = [[] for _ in range(SLOTS)]
        self.lag: array.array[float] = array.array("d")
        self._k = 0
        self._base = 0.0
        self._handle: asyncio.TimerHandle | asyncio.Handle | None = None

    def add(self, call: LoadCall) -> None:
        self.slots[call.number % SLOTS].append(call)

    def remove(self, call: LoadCall) -> None:
        slot = self.slots[call.number % SLOTS]
        if call in slot:
            slot.remove(call)

    def start(self) -> None:
        self._base = time.monotonic()
        self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        delay = self._base + self._k * SLOT_S - time.monotonic()
        self._handle = asyncio.get_running_loop().call_later(max(0.0, delay), self._fire)

    def _fire(self) -> None:
        now = time.monotonic()
        due = self._base + self._k * SLOT_S
        if now < due - 0.001:  # far too early: wait again
            self._arm()
            return
        self.lag.append(max(0.0, now - due))
        slot = self.slots[self._k % SLOTS]
        gone = [call for call in slot if not call.tick(now)]
        for call in gone:  # its socket closed under it: the call's own task says why
            slot.remove(call)
        self._k += 1
        self._arm()


async def _one_call(
    http: aiohttp.ClientSession,
    call: LoadCall,
    ticker: _Ticker,
    *,
    gateway: str,
    auth_token: str,
    until: float,
) -> None:
    await asyncio.sleep(max(0.0, call.start_at - time.monotonic()))
    webhook_url = gateway.rstrip("/") + "/twilio/voice"
    form = wire.voice_webhook_form(
        call_sid=call.call_sid, account_sid=ACCOUNT_SID, from_="+15550000000", to="+15551230000"
    )
    headers = {"X-Twilio-Signature": wire.sign(auth_token, webhook_url, form)} if auth_token else {}
    call.t_webhook = time.monotonic()
    sock: _ClientSocket | None = None
    try:
        async with http.post(webhook_url, data=form, headers=headers) as resp:
            body = await resp.text()
            if resp.status != 200:
                call.error = f"webhook HTTP {resp.status}"
                return
        stream = parse_twiml(body, webhook_url)
        if stream is None:
            if "<Hangup" in body:  # the gateway's refusal: its fallback line, then hang-up
                call.refused = True
            else:
                call.error = "no <Stream> in the TwiML"
            return
        ws_url, _ = stream_ws_url(stream.url, keep_query=False)
        ws_headers = {"User-Agent": "Twilio.TmeWs/1.0"}
        if auth_token:
            ws_headers["X-Twilio-Signature"] = wire.sign(auth_token, ws_url, {})
        async with asyncio.timeout(30):
            call.sock = sock = await _ws_open(ws_url, ws_headers, call.on_text)
        sock.send_text(wire.connected().encode())
        call.seq = 1
        start = wire.start(
            call.seq,
            stream_sid=call.stream_sid,
            call_sid=call.call_sid,
            account_sid=ACCOUNT_SID,
            parameters=stream.parameters,
        )
        sock.send_text(start.encode())
        call.t_media = time.monotonic()
        ticker.add(call)
        done, _ = await asyncio.wait({sock.closed}, timeout=max(0.0, until - time.monotonic()))
        ticker.remove(call)
        call.t_stop = time.monotonic()
        if not done and not sock.closing:
            call.seq += 1
            stop = wire.stop(
                call.seq, stream_sid=call.stream_sid, call_sid=call.call_sid, account_sid=ACCOUNT_SID
            )
            sock.send_text(stop.encode())
            sock.close(1000)
            await sock.wait_closed(10.0)
        elif sock.error:
            call.error = call.error or sock.error
        else:
            call.error = call.error or f"gateway closed the stream early (code {sock.close_code})"
    except (aiohttp.ClientError, OSError, TimeoutError, TelephonyProtocolError) as exc:
        call.error = call.error or f"{type(exc).__name__}: {exc}"
    finally:
        ticker.remove(call)
        if not call.t_stop:
            call.t_stop = time.monotonic()
        if sock is not None and not sock.closed.done() and sock.transport is not None:
            sock.transport.abort()


async def _one_side_call(
    http: aiohttp.ClientSession,
    call: SideCall,
    ticker: _Ticker,
    *,
    opts: CallOptions,
    until: float,
) -> None:
    """:func:`_one_call` for any provider: the side's webhook exchange, upgrade headers, opening, stream
    status notifications (Telnyx Call Control's webhooks) and hang-up, on the lean socket."""
    await asyncio.sleep(max(0.0, call.start_at - time.monotonic()))
    side, report = call.side, call.report
    call.t_webhook = time.monotonic()
    sock: _Socket | None = None
    try:
        offer = await side.request_call(http, opts, report)
        call.call_sid = report.call_sid
        if offer is None:
            call.error = f"the gateway answered without a stream (then {report.after_stream})"
            return
        report.stream_url = offer.url.split("?", 1)[0]
        async with asyncio.timeout(30):
            if offer.url.startswith("tcp://"):  # AudioSocket: the side's address, plain TCP
                call.sock = sock = await _tcp_open(offer.url, call.on_binary)
            else:
                call.sock = sock = await _ws_open(offer.url, offer.headers, call.on_text, call.on_binary)
        await side.stream_status(http, offer, opts, report, "stream-started")
        for message in side.opening(report, offer):
            sock.send_text(message.encode()) if isinstance(message, str) else sock.send_binary(message)
        call.t_media = time.monotonic()
        ticker.add(call)
        done, _ = await asyncio.wait({sock.closed}, timeout=max(0.0, until - time.monotonic()))
        ticker.remove(call)
        call.t_stop = time.monotonic()
        if not done and not sock.closing:
            stop = side.stop(report)
            if stop is not None:
                sock.send_text(stop.encode()) if isinstance(stop, str) else sock.send_binary(stop)
            sock.close(1000)
            await sock.wait_closed(10.0)
        elif sock.error:
            call.error = call.error or sock.error
        else:
            call.error = call.error or f"gateway closed the stream early (code {sock.close_code})"
        await side.stream_status(http, offer, opts, report, "stream-stopped")
        if report.protocol_errors:
            call.error = call.error or f"{side.name}: {report.protocol_errors[0]}"
    except (aiohttp.ClientError, OSError, TimeoutError, GatewayError, ValueError) as exc:
        call.error = call.error or f"{type(exc).__name__}: {exc}"
    finally:
        ticker.remove(call)
        if not call.t_stop:
            call.t_stop = time.monotonic()
        if sock is not None and not sock.closed.done() and sock.transport is not None:
            sock.transport.abort()


async def run_calls(
    gateway: str,
    numbers: list[int],
    *,
    start_at: float,
    ramp_s: float,
    until: float,
    auth_token: str = "",
    pattern: CallPattern | None = None,
    provider: str = "twilio",
    provider_api: str = "",
) -> tuple[list[dict[str, Any]], array.array[float]]:
    """Place one call per number, started evenly over ``ramp_s`` from ``start_at``, all hung up at
    ``until`` (monotonic times). Returns each call's :meth:`LoadCall.result` and the schedule's lag.

    ``provider``: whose protocol the calls speak (a name of :data:`gateway.caller.registry.SIDES`);
    Twilio's is this module's own pre-encoded path, the others go through their side
    (:class:`SideCall`). ``provider_api``: where this process serves the provider's API for the
    gateway's commands (Telnyx Call Control is answered there: the gateway's ``TELNYX_API_BASE``).

    Raises:
        ConfigError: an unknown provider, or an API address that cannot be served.
    """
    if any(not 0 <= n <= MAX_CALL_NUMBER for n in numbers):
        raise ValueError(f"call numbers must be in 0..{MAX_CALL_NUMBER}")
    lead, cycle = (pattern or CallPattern()).kinds()
    count = max(1, len(numbers))
    ticker = _Ticker()
    timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_read=None)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout)
        )
        calls: list[LoadCall]
        if provider == "twilio":
            calls = [
                LoadCall(number=n, start_at=start_at + ramp_s * i / count, lead=lead, cycle=cycle)
                for i, n in enumerate(numbers)
            ]
            runs = [
                _one_call(http, c, ticker, gateway=gateway, auth_token=auth_token, until=until) for c in calls
            ]
        else:
            # Imported here: the sides pull in numpy, soxr and cryptography, which the Live server
            # process (importing this module for SessionProbe) and the Twilio path do without.
            from gateway.caller.call import CallOptions, CallReport
            from gateway.caller.registry import side_for
            from gateway.caller.telnyx_api import serving

            opts = CallOptions(
                to="+15551230000",
                from_="+15550000000",
                gateway=gateway,
                auth_token=auth_token,
                provider=provider,
                provider_api=provider_api,
            )
            if provider_api and provider.startswith("telnyx"):
                await stack.enter_async_context(serving(provider_api))  # one API for every call
            side_calls = [
                SideCall(
                    number=n,
                    start_at=start_at + ramp_s * i / count,
                    lead=lead,
                    cycle=cycle,
                    side=side_for(provider),
                    report=CallReport(call_sid=wire.new_sid("CA"), account_sid=ACCOUNT_SID),
                )
                for i, n in enumerate(numbers)
            ]
            calls = list(side_calls)
            runs = [_one_side_call(http, c, ticker, opts=opts, until=until) for c in side_calls]
        ticker.start()
        try:
            await asyncio.gather(*runs)
        finally:
            ticker.stop()
    return [c.result() for c in calls], ticker.lag


# --------------------------------------------------------------------------- the emulator's side


class SessionProbe:
    """What one Live session saw, for the load analysis: probes in the caller audio the gateway
    forwarded, frames received, and when each model turn's first audio left the emulator."""

    __slots__ = ("_digits", "_first_t", "_frames_at", "frames_in", "number", "probes", "turn_open", "turns")

    def __init__(self) -> None:
        self.frames_in = 0
        self.number = -1
        #: (sequence, receive time, frames received before it) per probe found.
        self.probes: list[tuple[int, float, int]] = []
        #: [first audio time, audio bytes, interrupted] per model turn.
        self.turns: list[list[Any]] = []
        self.turn_open = False
        self._digits: list[int] = []
        self._first_t = 0.0
        self._frames_at = 0

    def audio_in(self, pcm: bytes, t: float, rate: int = 16000) -> None:
        """Caller audio forwarded by the gateway (PCM16 at 16 or 8 kHz, whole 20 ms frames)."""
        samples = memoryview(pcm).cast("h") if len(pcm) % 2 == 0 else memoryview(pcm[:-1]).cast("h")
        per_frame = rate // 50
        for start in range(0, len(samples) - per_frame + 1, per_frame):
            self.frame_in(probe_digit(samples, start, rate), t)

    def frame_in(self, digit: int, t: float) -> None:
        """One forwarded 20 ms frame, received at ``t``: the probe digit it carries, or -1 (see
        :func:`probe_digit`). For a server that tells probe frames apart more cheaply itself."""
        if digit >= 0:
            if not self._digits:
                self._first_t, self._frames_at = t, self.frames_in
            self._digits.append(digit)
            if len(self._digits) == PROBE_FRAMES:
                a, b, c, s = self._digits
                self.number = a << 8 | b << 4 | c
                self.probes.append((s, self._first_t, self._frames_at))
                self._digits = []
        elif self._digits:
            self._digits = []  # a broken run (lost frames) is no probe
        self.frames_in += 1

    def model_audio(self, nbytes: int, t: float) -> None:
        if not self.turn_open:
            self.turn_open = True
            self.turns.append([t, 0, False])
        self.turns[-1][1] += nbytes

    def turn_end(self, interrupted: bool) -> None:
        if self.turn_open and interrupted:
            self.turns[-1][2] = True
        self.turn_open = False

    def result(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "frames_in": self.frames_in,
            "probes": self.probes,
            "turns": self.turns,
        }


#: Samples of a forwarded frame that must sit at the probe level, per rate: inside the frame, past the
#: resampler's edge ringing at 16 kHz (at 8 kHz the gateway forwards the decoded μ-law as it is).
_PROBE_POINTS = {16000: (190, (100, 145, 190, 235, 280)), 8000: (95, (50, 72, 95, 117, 140))}
#: Forwarded sample level → the probe digit whose level is nearest, for levels within 6 of one.
_LEVEL_DIGIT = {
    level: digit
    for level in range(60, 421)
    for digit in [min(range(16), key=lambda d: abs(PROBE_LEVELS[d] - level))]
    if abs(PROBE_LEVELS[digit] - level) <= 6
}


def probe_digit(samples: memoryview, start: int = 0, rate: int = 16000) -> int:
    """The probe digit the forwarded 20 ms frame at ``samples[start:]`` (PCM16 at ``rate``: 16 or
    8 kHz) carries, or -1. A probe frame is flat (past the resampler's edge ringing) at one of
    :data:`PROBE_LEVELS`; speech and silence never are."""
    middle, points = _PROBE_POINTS[rate]
    level = samples[start + middle]
    digit = _LEVEL_DIGIT.get(level, -1)  # speech and silence fail here, at once
    if digit < 0:
        return -1
    for point in points:
        if abs(samples[start + point] - level) > 2:
            return -1
    return digit


# --------------------------------------------------------------------------- analysis


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(slots=True)
class Analysis:
    uplink_s: list[float] = field(default_factory=list)
    downlink_s: list[float] = field(default_factory=list)
    greeting_s: list[float] = field(default_factory=list)
    frames_lost_up: int = 0
    frames_lost_down: int = 0
    frames_late: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    probes_sent: int = 0
    probes_found: int = 0
    turns: int = 0
    barge_ins: int = 0
    failed: list[str] = field(default_factory=list)
    #: Calls the gateway refused politely at the webhook (admission: a limit, draining, overload).
    refused: int = 0


def analyse(
    calls: list[dict[str, Any]],
    sessions: list[dict[str, Any]],
    window: tuple[float, float] = (-math.inf, math.inf),
) -> Analysis:
    """Join what the callers and the emulator saw: per-probe uplink times, per-turn downlink times,
    frames lost (uplink: counted up to each call's last probe, so the hang-up's in-flight frames do
    not count; downlink: a finished turn delivered short) and frames late (the caller's playout ran
    dry mid-turn, i.e. a frame arrived after the moment it should have started playing). Latency and
    lateness count inside ``window`` (monotonic from, to): the steady state, without the ramp-up."""
    out = Analysis()
    by_number = {s["number"]: s for s in sessions if s["number"] >= 0}
    for call in calls:
        if call.get("refused"):
            out.refused += 1
            continue
        if call["error"]:
            out.failed.append(f"call {call['number']}: {call['error']}")
        out.frames_sent += call["frames_sent"]
        arrivals = list(call["arrivals"])
        out.frames_received += len(arrivals)
        out.probes_sent += len(call["probes"])
        if arrivals and call["t_webhook"]:
            out.greeting_s.append(arrivals[0] - call["t_webhook"])
        session = by_number.get(call["number"])
        if session is None:
            continue
        sent = {seq_: (t, index) for seq_, t, index in call["probes"]}
        last_probe = None
        seen: set[int] = set()
        for s, t_recv, frames_before in session["probes"]:
            # Sequence digits wrap at 16: pair each found probe with the earliest unmatched send.
            match = next(
                (
                    q
                    for q, (t_sent, _) in sorted(sent.items())
                    if q % 16 == s and q not in seen and t_sent <= t_recv
                ),
                None,
            )
            if match is None:
                continue
            seen.add(match)
            out.probes_found += 1
            t_sent, index = sent[match]
            if window[0] <= t_sent <= window[1]:
                out.uplink_s.append(t_recv - t_sent)
            last_probe = (index, frames_before)
        if last_probe is not None:
            out.frames_lost_up += max(0, last_probe[0] - last_probe[1])
        _downlink(out, arrivals, sorted(call["clears"]), session["turns"], window)
    return out


def _downlink(
    out: Analysis,
    arrivals: list[float],
    clears: list[float],
    turns: list[list[Any]],
    window: tuple[float, float] = (-math.inf, math.inf),
) -> None:
    starts = [t for t, _, _ in turns]
    out.turns += len(turns)
    out.barge_ins += sum(1 for _, _, interrupted in turns if interrupted)
    # Latency: each turn's first audio out of the emulator → the first frame the caller got after it.
    j = 0
    for i, (t_start, nbytes, interrupted) in enumerate(turns):
        t_next = starts[i + 1] if i + 1 < len(starts) else math.inf
        while j < len(arrivals) and arrivals[j] < t_start:
            j += 1
        first = j
        while j < len(arrivals) and arrivals[j] < t_next:
            j += 1
        if first < len(arrivals) and arrivals[first] < t_next and window[0] <= t_start <= window[1]:
            out.downlink_s.append(arrivals[first] - t_start)
        # A finished turn of N bytes at 24 kHz is ceil(N / 960) frames at 8 kHz, +/- one for the filter.
        if not interrupted and t_next != math.inf:
            expected = math.ceil(nbytes / 960)
            out.frames_lost_down += max(0, expected - (j - first) - 1)
    # Lateness: replay the caller's playout; a new turn or a clear restarts it.
    play_end = -math.inf
    prev = -math.inf
    k = c = 0
    for t in arrivals:
        new_turn = False
        while k < len(starts) and starts[k] <= t:
            new_turn = new_turn or starts[k] > prev
            k += 1
        while c < len(clears) and clears[c] <= t:
            new_turn = True
            c += 1
        if not new_turn and t > play_end + 1e-4 and window[0] <= t <= window[1]:
            out.frames_late += 1
        play_end = max(play_end, t) + FRAME_S
        prev = t
