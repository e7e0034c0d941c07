#!/usr/bin/env python3
"""The I/O floor: the least a Python process must do to carry the gateway's traffic, in the gateway's place.

``bench/load.py --floor`` runs this instead of ``gateway serve``, with the same callers, the same Live
server over verified ``wss://`` and the same pinning, so its CPU and memory per call are the floor of
*that* run; ``--compare-floor`` alternates the two and quotes the gateway's CPU per call as a ratio to
it. What the floor does per call is exactly the gateway's I/O and nothing else:

* the Twilio voice webhook (TwiML with a ``<Stream>``; the signature is not checked — once per call,
  not per frame) and the media WebSocket (plain ``ws://``, as behind a TLS-terminating proxy);
* one Live connection over TLS with certificate verification (the run's CA through ``SSL_CERT_FILE``),
  the same ``setup`` as the gateway's (:func:`gateway.gemini.messages.setup_message`) and the greeting
  turn, so the Live server streams the same replies;
* per caller ``media`` message: the payload found by position (no JSON parse), G.711 μ-law → PCM16
  and 8 → 16 kHz in C (``audioop``: without them the Live server would hear noise and answer
  differently), one masked ``realtimeInput.audio`` text frame; per Live audio message: the base64
  found by position, 24 → 8 kHz and μ-law in C, one ``media`` message of the whole chunk (the
  gateway's 80 ms batch) with no pacing; ``interrupted`` → ``clear``; ``turnComplete`` → ``mark``.

No JSON parsing of the audio messages, no transcripts, no pacing clock, no records, metrics or logs,
no tasks per call: bare ``asyncio`` protocols on uvloop, parsed in the read callback and answered with
one ``transport.write`` (:mod:`gateway.caller.leanws`, the load peers' framing). The gateway does more
by design — a paced playout (marks at playout time, barge-in within one frame), a proper resampler
(``bench/audio.py``), transcripts, records, metrics, timers, resumption — so the ratio is the price of
all that over what the kernel, TLS and framing cost anyway.

**The ladder.** ``--with`` puts the gateway's own components back into the floor one at a time, so
``bench/load.py --ladder`` can say what each costs per call (the rest of the gap is the frameworks —
aiohttp's media socket, websockets' Live client, a task and a queue per direction — and the bridge's
bookkeeping: transcripts, records, metrics, timers, resumption):

* ``codec``: every caller message through the gateway's :class:`~gateway.telephony.TwilioCodec`
  (``receive_media`` first, as the gateway's direct uplink does, else ``receive_text``: a full JSON
  parse and every check), and every message to the caller from its ``encode``;
* ``audio``: the gateway's :class:`~gateway.audio.transcode.Uplink` and ``Downlink`` (its resampler,
  20 ms frames) in place of ``audioop.ratecv``;
* ``pacing``: the gateway's :class:`~gateway.bridge.playout.Playout` (120 ms lead, 80 ms messages, a
  mark every 200 ms and at each reply's end, echoes counted, ``clear`` on barge-in) on one timer per call;
* ``live``: every Live message through :func:`~gateway.gemini.messages.parse_server_message` (a full
  JSON parse into events) and every caller frame through ``encode_realtime_audio`` and the session's
  masked framing.

    python bench/load.py --compare-floor --calls 100 --seconds 15 --repeat 3
    python bench/load.py --floor --calls 100 --json
    python bench/load.py --ladder --calls 100 --seconds 15 --repeat 3
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import secrets
import ssl
import sys
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # audioop: the gateway's own codecs use it too
    import audioop

from gateway.audio.transcode import Downlink, Uplink  # noqa: E402
from gateway.bridge.playout import MarkOut, Playout  # noqa: E402
from gateway.caller import leanws  # noqa: E402
from gateway.emulator.server import LIVE_PATH  # noqa: E402
from gateway.gemini.messages import (  # noqa: E402
    GenerationComplete,
    Interrupted,
    ModelAudio,
    SessionConfig,
    SetupComplete,
    TurnComplete,
    VadConfig,
    encode_client_content,
    encode_realtime_audio,
    parse_server_message,
    setup_message,
)
from gateway.gemini.session import _FRAMES  # noqa: E402
from gateway.settings import DEFAULT_MODEL  # noqa: E402
from gateway.telephony import (  # noqa: E402
    CallerAudio,
    CallStarted,
    CallStopped,
    ClearPlayback,
    MarkReached,
    PlayAudio,
    SetMark,
    TwilioCodec,
)

#: The steps of the ladder, in the order ``bench/load.py --ladder`` adds them.
FEATURES = ("codec", "audio", "pacing", "live")

_MEDIA = b'{"event":"media"'
_PAYLOAD = b'"payload":"'
_DATA = b'"data":"'
_AUDIO_HEAD = b'{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=%d","data":"'
_AUDIO_TAIL = b'"}}}'
_a2b = binascii.a2b_base64
_b2a = binascii.b2a_base64
_ulaw2lin, _lin2ulaw, _ratecv = audioop.ulaw2lin, audioop.lin2ulaw, audioop.ratecv
_masked_frame, _TEXT = leanws.masked_frame, leanws.TEXT
_READ = bytearray(1 << 18)  # one per process: every read is parsed before the next one
_READ_VIEW = memoryview(_READ)


class _Settings:
    """What the floor needs of the gateway's environment (bench/load.py sets it)."""

    def __init__(self, features: frozenset[str] = frozenset()) -> None:
        self.features = features
        base = urlsplit(os.environ["GEMINI_BASE_URL"])
        self.host = base.hostname or "127.0.0.1"
        self.port = base.port or (443 if base.scheme == "https" else 80)
        self.tls: ssl.SSLContext | None = None
        if base.scheme in ("https", "wss"):
            self.tls = ssl.create_default_context()  # SSL_CERT_FILE: the run's CA, verified
        self.key = os.environ["GEMINI_API_KEY"]
        self.public = os.environ["GATEWAY_PUBLIC_URL"].rstrip("/")
        self.rate = int(os.environ.get("GATEWAY_UPLINK_RATE") or 16000)
        config = SessionConfig(
            model=DEFAULT_MODEL,
            voice="Puck",
            language="en-US",
            system_instruction="You are a helpful phone assistant.",
            vad=VadConfig(silence_duration_ms=300),
            input_rate=self.rate,
        )
        self.setup = leanws.masked_frame(leanws.TEXT, json.dumps(setup_message(config)).encode())
        self.greeting = encode_client_content([("user", "Greet the caller.")]).encode()
        self.audio_head = _AUDIO_HEAD % self.rate


class _Live(asyncio.Protocol):
    """One call's Live connection: handshake, setup, then server messages → the caller."""

    def __init__(self, call: _Call) -> None:
        self.call = call
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.reader: leanws.FrameReader | None = None
        self.ready = False
        self.state: Any = None  # ratecv state, 24 → 8 kHz

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport
        s = self.call.settings
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        transport.write(
            f"GET {LIVE_PATH} HTTP/1.1\r\nHost: {s.host}:{s.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"x-goog-api-key: {s.key}\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        if reader is not None:
            reader.feed(data)
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return
        if not self.head.startswith(b"HTTP/1.1 101"):
            self.call.close()
            return
        rest, self.head = self.head[end + 4 :], b""
        self.reader = leanws.FrameReader(self._message, masked=False)
        assert self.transport is not None
        self.transport.write(self.call.settings.setup)
        if rest:
            self.reader.feed(rest)

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode > leanws.BINARY:
            if opcode == leanws.CLOSE:
                self.call.close()
            return
        call = self.call
        if call.parse_live:  # ladder step "live": the gateway's parser, every message into events
            for event in parse_server_message(payload):
                if isinstance(event, ModelAudio):
                    call.model_audio(event.pcm)
                elif isinstance(event, Interrupted):
                    call.interrupted()
                elif isinstance(event, GenerationComplete):
                    call.generation_complete()
                elif isinstance(event, TurnComplete):
                    call.turn_complete()
                elif isinstance(event, SetupComplete) and not self.ready:
                    self.ready = True
                    self.send(call.settings.greeting)
            return
        at = payload.find(_DATA)
        if at > 0 and b'"inlineData"' in payload:
            start = at + len(_DATA)
            call.model_audio(_a2b(memoryview(payload)[start : payload.index(b'"', start)]))
        elif b'"interrupted"' in payload:
            call.interrupted()
        elif b'"generationComplete"' in payload:
            call.generation_complete()
        elif b'"turnComplete"' in payload:
            call.turn_complete()
        elif not self.ready and b'"setupComplete"' in payload:
            self.ready = True
            self.send(call.settings.greeting)

    def send(self, text: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_masked_frame(_TEXT, text))

    def write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.call.close()


class _Call:
    """One media stream: the caller's socket (a :class:`_Conn`) and its Live connection."""

    def __init__(self, conn: _Conn, settings: _Settings, stream_sid: str) -> None:
        self.conn, self.settings = conn, settings
        features = settings.features
        sid = stream_sid.encode()
        self.media_head = b'{"event":"media","streamSid":"' + sid + b'","media":{"payload":"'
        self.media_tail = b'"}}'
        self.clear = b'{"event":"clear","streamSid":"' + sid + b'"}'
        self.mark_head = b'{"event":"mark","streamSid":"' + sid + b'","mark":{"name":"'
        self.live = _Live(self)
        self.state: Any = None  # ratecv state, 8 → 16 kHz
        self.down_state: Any = None  # ratecv state, 24 → 8 kHz
        self.audio_head = settings.audio_head
        self.closed = False
        # The ladder's steps (module doc); None: the floor's own lean way.
        self.codec = conn.codec
        self.uplink = Uplink("ulaw", 8000, settings.rate) if "audio" in features else None
        self.downlink = Downlink("ulaw", 24000, 8000) if "audio" in features else None
        self.playout = Playout(lead_s=0.12) if "pacing" in features else None
        self.parse_live = "live" in features
        self.timer: asyncio.TimerHandle | None = None
        self.flushed = True  # the reply's tail went out (at generationComplete or turnComplete)
        loop = self.loop = asyncio.get_running_loop()
        self.connecting = loop.create_task(self._connect(loop))

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        s = self.settings
        try:
            await loop.create_connection(
                lambda: self.live, s.host, s.port, ssl=s.tls, server_hostname=s.host if s.tls else None
            )
        except OSError:
            self.close()

    # --- caller → Live ------------------------------------------------------------------------------
    def media(self, payload: bytes) -> None:
        """A caller ``media`` message, its payload found by position (the floor's way)."""
        if self.live.ready:
            at = payload.find(_PAYLOAD) + len(_PAYLOAD)
            self.caller_audio(_a2b(memoryview(payload)[at : payload.index(b'"', at)]))

    def caller_audio(self, ulaw: bytes) -> None:
        live = self.live
        if not live.ready:
            return
        if self.uplink is not None:
            pcm = self.uplink.process(ulaw)
        else:
            pcm = _ulaw2lin(ulaw, 2)
            if self.settings.rate != 8000:
                pcm, self.state = _ratecv(pcm, 2, 1, 8000, self.settings.rate, self.state)
        if self.parse_live:
            live.write(_FRAMES.text(encode_realtime_audio(pcm, self.settings.rate).encode()))
        else:
            live.send(self.audio_head + _b2a(pcm, newline=False) + _AUDIO_TAIL)

    # --- Live → caller ------------------------------------------------------------------------------
    def model_audio(self, pcm: bytes) -> None:
        self.flushed = False
        if self.downlink is not None:
            frames = self.downlink.process(pcm)
        else:
            pcm, self.down_state = _ratecv(pcm, 2, 1, 24000, 8000, self.down_state)
            frames = [_lin2ulaw(pcm, 2)]
        playout = self.playout
        if playout is None:
            if frames:
                self.send_all([self._media(b"".join(frames))])
            return
        if self.downlink is None:  # pacing needs 20 ms frames
            chunk = frames[0]
            frames = [chunk[i : i + 160] for i in range(0, len(chunk), 160)]
        playout.enqueue(frames)
        self._schedule()

    def interrupted(self) -> None:
        self.flushed = True
        if self.downlink is not None:
            self.downlink.reset()
        if self.playout is not None:
            self.playout.clear(time.monotonic())
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
        self.send_all([self.codec.encode(ClearPlayback()).encode() if self.codec is not None else self.clear])

    def generation_complete(self) -> None:
        """The reply's audio is all here: its tail goes out now, as the gateway's ``_flush_turn``."""
        if self.flushed:
            return
        self.flushed = True
        frames = self.downlink.flush() if self.downlink is not None else []
        if self.playout is None:
            if frames:
                self.send_all([self._media(b"".join(frames))])
            return
        if frames:
            self.playout.enqueue(frames)
        self.playout.end_turn()
        self._schedule()

    def turn_complete(self) -> None:
        self.generation_complete()
        if self.playout is None:
            self.send_all([self._mark("turn")])

    def mark_echoed(self, name: str) -> None:
        if self.playout is not None:
            self.playout.mark_echoed(name)

    def _schedule(self) -> None:
        """One timer per call: the playout's next wake-up (ladder step "pacing")."""
        assert self.playout is not None
        if self.timer is not None or self.closed:
            return
        now = time.monotonic()
        at = self.playout.next_wakeup(now)
        if at is None:
            return
        if at <= now:
            self._pump()
        else:
            self.timer = self.loop.call_at(self.loop.time() + (at - now), self._pump)

    def _pump(self) -> None:
        """What the playout says is due: runs of frames as one media message each, marks between."""
        assert self.playout is not None
        self.timer = None
        out: list[bytes] = []
        run: list[bytes] = []
        for item in self.playout.due(time.monotonic()):
            if isinstance(item, MarkOut):
                if run:
                    out.append(self._media(b"".join(run)))
                    run = []
                out.append(self._mark(item.name))
            else:
                run.append(item)
        if run:
            out.append(self._media(b"".join(run)))
        if out:
            self.send_all(out)
        self._schedule()

    def _media(self, ulaw: bytes) -> bytes:
        if self.codec is not None:
            return self.codec.encode(PlayAudio(ulaw)).encode()
        return self.media_head + _b2a(ulaw, newline=False) + self.media_tail

    def _mark(self, name: str) -> bytes:
        if self.codec is not None:
            return self.codec.encode(SetMark(name)).encode()
        return self.mark_head + name.encode() + b'"}}'

    def send_all(self, texts: list[bytes]) -> None:
        """Every message due at once in one write, as the gateway's MediaSender does."""
        transport = self.conn.transport
        if transport is not None and not transport.is_closing() and texts:
            transport.write(b"".join([leanws.frame(_TEXT, text) for text in texts]))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.live.transport is not None:
            self.live.transport.close()
        self.conn.close()


class _Conn(asyncio.BufferedProtocol):
    """A caller-side connection: HTTP (the webhook, /healthz), then maybe the media WebSocket."""

    def __init__(self, settings: _Settings) -> None:
        self.settings = settings
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.reader: leanws.FrameReader | None = None
        self.call: _Call | None = None
        #: Ladder step "codec": the gateway's Twilio codec reads every caller message.
        self.codec: TwilioCodec | None = TwilioCodec() if "codec" in settings.features else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        reader = self.reader
        if reader is not None:
            try:
                reader.feed(_READ_VIEW[:nbytes])
            except leanws.ProtocolViolation:
                self.close()
            return
        self.head += _READ[:nbytes]
        while self.reader is None and self._request():
            pass

    def _request(self) -> bool:
        """Serve one whole HTTP request from ``head``; False until one has arrived."""
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = self.head[:end].decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        if len(self.head) < end + 4 + length:
            return False
        rest = self.head[end + 4 + length :]
        self.head = b""
        method, target, _ = lines[0].split(" ", 2)
        path = target.split("?", 1)[0]
        assert self.transport is not None
        if method == "GET" and path == "/twilio/stream" and "sec-websocket-key" in headers:
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: "
                + leanws.accept_key(headers["sec-websocket-key"]).encode()
                + b"\r\n\r\n"
            )
            self.reader = leanws.FrameReader(self._message, masked=True)
            if rest:
                self.reader.feed(rest)
            return True
        if method == "POST" and path == "/twilio/voice":
            stream = self.settings.public.replace("http", "ws", 1) + "/twilio/stream"
            body = f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{stream}"/></Connect></Response>'
            self._respond(200, "text/xml", body.encode())
        elif path in ("/healthz", "/readyz"):
            self._respond(200, "text/plain", b"ok")
        else:
            self._respond(404, "text/plain", b"not found")
        self.head = rest
        return bool(rest)

    def _respond(self, status: int, kind: str, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Not Found'}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    def _message(self, opcode: int, payload: bytes) -> None:
        call = self.call
        if opcode == _TEXT and self.codec is not None:
            self._decoded(self.codec, payload.decode())
        elif opcode == _TEXT:
            if call is not None and payload.startswith(_MEDIA):
                call.media(payload)
                return
            message = json.loads(payload)  # the rare others: connected, start, mark, stop
            event = message.get("event")
            if event == "start" and call is None:
                self.call = _Call(self, self.settings, message["streamSid"])
            elif event == "media" and call is not None:
                call.media(payload)
            elif event == "mark" and call is not None:
                call.mark_echoed(message["mark"]["name"])
            elif event == "stop" and call is not None:
                call.close()
        elif opcode == leanws.CLOSE:
            self.close()
        elif opcode == leanws.PING and self.transport is not None:
            self.transport.write(leanws.frame(leanws.PONG, payload))

    def _decoded(self, codec: TwilioCodec, text: str) -> None:
        """A caller message through the gateway's codec: ``receive_media`` first, as its direct uplink."""
        call = self.call
        audio = codec.receive_media(text) if call is not None else None
        if audio is not None:
            assert call is not None
            call.caller_audio(audio.payload)
            return
        event = codec.receive_text(text)
        if isinstance(event, CallStarted) and call is None:
            self.call = _Call(self, self.settings, event.stream_sid)
        elif isinstance(event, CallerAudio) and call is not None:
            call.caller_audio(event.payload)
        elif isinstance(event, MarkReached) and call is not None:
            call.mark_echoed(event.name)
        elif isinstance(event, CallStopped):
            self.close()

    def close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if self.reader is not None:
                transport.write(leanws.frame(leanws.CLOSE, leanws.close_payload(1000)))
            transport.close()
        if self.call is not None:
            self.call.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.call is not None:
            self.call.close()


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--with",
        dest="features",
        default="",
        metavar="LIST",
        help=f"comma-separated ladder steps to put back (module doc): {', '.join(FEATURES)}",
    )
    args = parser.parse_args()
    features = frozenset(f for f in args.features.split(",") if f)
    if unknown := features - set(FEATURES):
        parser.error(f"--with: unknown step(s) {', '.join(sorted(unknown))}; known: {', '.join(FEATURES)}")
    try:
        import uvloop
    except ImportError:  # the floor is measured on uvloop, as the gateway runs with [fast]
        uvloop = None

    async def serve() -> None:
        settings = _Settings(features)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Conn(settings), args.host, args.port, backlog=4096)
        async with server:
            await server.serve_forever()

    try:
        if uvloop is not None:
            uvloop.run(serve())
        else:
            asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
