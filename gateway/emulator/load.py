"""A lean Live API server for load tests: the echo persona's shape at a fraction of the CPU.

``bench/load.py`` needs a Gemini Live peer for hundreds of concurrent calls on the one core the
gateway does not use. The full emulator (:mod:`gateway.emulator.server`) stays what users and tests
run: it parses every message into dicts, records frames, runs an energy VAD with numpy, resamples
and re-encodes each echo, and costs an aiohttp coroutine per message. At 100 calls it used ~35 % of
a core, so 500 calls would have needed more than a whole core for it alone. This server keeps the
wire protocol and drops the rest (~10 % of a core at 100 calls; 22 % at 500 and 30 % at 700 calls'
worth of traffic, ``bench/ws_peers.py --server live``):

* the real paths, the API-key check (``x-goog-api-key`` or ``?key=``; a bad key completes the
  upgrade and closes 1007 after ``setup``, as Google does), ``setup`` first → ``setupComplete``,
  1007/1008 for a bad first message, model or resumption handle, 1007 for a second ``setup``;
* server messages are binary frames of camelCase JSON (``wire.encode``, the emulator's encoder):
  ``serverContent.modelTurn.parts[].inlineData`` (``audio/pcm;rate=24000``, base64) in 80 ms chunks
  sent at 4× real time, input and output transcriptions, ``generationComplete``, ``turnComplete``
  with ``usageMetadata`` once the audio would have played, ``interrupted`` on barge-in, and a
  ``sessionResumptionUpdate`` after each turn when ``setup`` asked for resumption;
* the echo persona's timing: a spoken turn ends after the setup's ``silenceDurationMs``, the reply
  starts 250 ms later and lasts as long as the full emulator's (a 0.36 s chime plus the caller's
  speech, in whole 20 ms frames), a text turn (the dialplan's greeting) gets a greeting as long as
  the full emulator would speak it, and 100 ms of caller speech during a reply interrupts it.

Not here (the full emulator has them): scripted rules and tool calls, ``goAway`` and injected
closes, manual activity detection, recording, real echoed audio (every reply is a 300 Hz tone).

What makes it cheap: a bare ``asyncio.BufferedProtocol`` per connection
(:mod:`gateway.caller.leanws`, no task or future per message); the audio messages the gateway
writes (``gateway.gemini.messages.encode_realtime_audio``) are recognised by their fixed head and
tail, and of the base64 between only a 3 ms window per 20 ms frame is decoded (a probe candidate
is then decoded whole; at 8 kHz, ``GATEWAY_UPLINK_RATE=8000``, the half-size message is decoded
whole); anything else takes the emulator's own full parser. Speech is a
peak-to-peak level over that window rather than an RMS; every reply chunk is one cached frame, the
same bytes object written for every call; replies are timed with ``loop.call_at``, not a task.

**TLS.** Given an ``ssl_context`` it serves ``wss://`` as Google does (the gateway verifies it
against a test CA, :mod:`gateway.emulator.pki`): asyncio's and uvloop's SSL transports both feed a
``BufferedProtocol`` (the decrypted bytes land in :meth:`get_buffer`'s view), so nothing here
changes but the listener. It then also listens on a plain port (:attr:`LoadLiveServer.plain_port`)
serving the same, where the load bench times its bare loopback round trip (:attr:`echo_url`): the
callers' leg to the gateway is plain, so a plain echo is the round trip to subtract.

For the load analysis each session keeps a :class:`~gateway.caller.load.SessionProbe`: it finds the
callers' probe frames in the audio the gateway forwards (the uplink's receive time) and notes when
each reply's first audio left this server (the downlink's start), as the bench's hook on the full
emulator did.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import math
import secrets
import ssl
import struct
import time
from functools import lru_cache
from typing import Any, Final, cast
from urllib.parse import parse_qs

from gateway.caller import leanws
from gateway.caller.load import SessionProbe, probe_digit
from gateway.emulator import voice
from gateway.emulator.server import _PATH, KNOWN_MODELS, RETIRED_MODELS
from gateway.emulator.wire import (
    BAD_API_KEY,
    INTERNAL_ERROR,
    INVALID_ARGUMENT,
    SESSION_NOT_FOUND,
    CloseRequest,
    b64decode,
    encode,
    parse_client_message,
    pcm_rate,
)

__all__ = ["ECHO_PATH", "LoadLiveServer"]

log = logging.getLogger("gateway.emulator.load")

#: A plain echo WebSocket on the same port: the load bench times a bare loopback round trip with it.
ECHO_PATH: Final = "/echo"

OUT_RATE: Final = voice.OUT_RATE
#: The full emulator's chime before each echo: (0.12 + 0.18 + 0.06) s at 24 kHz.
CHIME_SAMPLES: Final = 8640
#: Replies are whole 20 ms frames at 24 kHz.
_FRAME_SAMPLES: Final = 480
AUDIO_TOKENS_PER_S: Final = 25
_MAX_HANDLES: Final = 100_000
_MAX_HEAD: Final = 16 * 1024

# What encode_realtime_audio writes at 16 kHz: everything but the base64 is fixed.
_AUDIO_HEAD: Final = b'{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=16000","data":"'
_AUDIO_TAIL: Final = b'"}}}'
#: The same at 8 kHz (GATEWAY_UPLINK_RATE=8000): small enough to decode whole.
_AUDIO_HEAD_8K: Final = b'{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=8000","data":"'
_HEAD_LEN: Final = len(_AUDIO_HEAD)
#: PCM bytes of one forwarded 20 ms frame at 16 kHz.
_FRAME_BYTES: Final = 640
#: Where a frame's window starts (bytes into it): 96 bytes, samples ~192..240 (3 ms, a whole period
#: of anything above 333 Hz), shifted by frame index mod 3 so it starts on a 3-byte base64 group and
#: its 128 characters decode alone.
_WINDOW_SHIFT: Final = (384, 386, 388)
#: The window of a silent frame (all samples 0): what the gateway forwards while the caller is quiet.
_SILENT_WINDOW: Final = b"A" * 128
#: Every 3rd sample of the window: 16 points, 0.19 ms apart (struct is far cheaper than memoryview).
_POINTS: Final = struct.Struct("<" + "h4x" * 16)
_a2b = binascii.a2b_base64

_RECV_BUFFER = bytearray(1 << 18)  # one per process: every read is parsed before the next one
_RECV_VIEW = memoryview(_RECV_BUFFER)


def _server_frame(message: dict[str, Any]) -> bytes:
    """One whole binary WebSocket frame carrying ``message``, as the full emulator encodes it."""
    return leanws.frame(leanws.BINARY, encode(message))


_SETUP_COMPLETE: Final = _server_frame({"setupComplete": {}})
_INTERRUPTED: Final = _server_frame({"serverContent": {"interrupted": True}})
_GENERATION_COMPLETE: Final = _server_frame({"serverContent": {"generationComplete": True}})


@lru_cache(maxsize=8)
def _audio_frame(samples: int) -> bytes:
    """A model audio message of ``samples`` at 24 kHz: a 300 Hz tone, whole periods per 20 ms, so
    any run of chunks is continuous. Cached: every call's every chunk of a size is this one object."""
    pcm = bytearray()
    for i in range(samples):
        value = round(6000 * math.sin(2 * math.pi * 300 * i / OUT_RATE))
        pcm += value.to_bytes(2, "little", signed=True)
    data = binascii.b2a_base64(bytes(pcm), newline=False).decode("ascii")
    return _server_frame(
        {
            "serverContent": {
                "modelTurn": {"parts": [{"inlineData": {"mimeType": voice.OUT_MIME, "data": data}}]}
            }
        }
    )


@lru_cache(maxsize=256)
def _transcript_frames(text: str, chunks: int) -> tuple[bytes | None, ...]:
    """``outputTranscription`` frames to send before each audio chunk (None: none before it), the
    words spread over the chunks as the full emulator does."""
    words = text.split()
    out: list[bytes | None] = []
    separator = ""
    for index in range(chunks):
        group = words[index * len(words) // chunks : (index + 1) * len(words) // chunks]
        if not group:
            out.append(None)
            continue
        out.append(
            _server_frame({"serverContent": {"outputTranscription": {"text": separator + " ".join(group)}}})
        )
        separator = " "
    return tuple(out)


def model_ok(model: str) -> bool:
    """The full emulator's default model rule (``Emulator.model_ok`` without a model list)."""
    if not model.startswith("models/"):
        return False
    model_id = model.removeprefix("models/")
    if model_id in RETIRED_MODELS:
        return False
    if model_id in KNOWN_MODELS:
        return True
    return model_id.startswith("gemini-") and ("live" in model_id or "native-audio" in model_id)


class LoadLiveServer:
    """Serve the Live API on ``host:port`` for load tests; see the module docstring.

    ``api_key=None`` accepts any key. :attr:`probes` maps each session's index to what it saw.
    ``ssl_context`` (a server context): serve ``wss://``, and plain ``ws://`` on :attr:`plain_port`.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        greeting: str = "Hello, how can I help?",
        first_audio_delay_s: float = 0.25,
        chunk_ms: int = 80,
        speed: float = 4.0,
        playback_wait: bool = True,
        silence_duration_ms: int = 500,
        vad_threshold_rms: float = 500.0,
        barge_in_ms: int = 100,
        min_speech_ms: int = 80,
        max_echo_s: float = 15.0,
    ) -> None:
        self.api_key = api_key
        self.ssl_context = ssl_context
        self.greeting = greeting
        #: The greeting's length in the full emulator's voice, in whole 20 ms frames.
        self.greeting_samples = _whole_frames(len(voice.speak(greeting)) // 2)
        self.first_audio_delay_s = first_audio_delay_s
        self.chunk_samples = OUT_RATE * chunk_ms // 1000
        self.chunk_interval_s = chunk_ms / 1000 / speed if speed > 0 else 0.0
        self.playback_wait = playback_wait
        self.silence_duration_ms = silence_duration_ms
        # A sine at the threshold RMS has this peak-to-peak level.
        self.loud_p2p = 2 * math.sqrt(2) * vad_threshold_rms
        self.barge_in_ms = barge_in_ms
        self.min_speech_ms = min_speech_ms
        self.max_echo_s = max_echo_s
        self.probes: dict[int, SessionProbe] = {}
        self.sessions = 0
        #: Client data messages received (every session): what the server's CPU is spent on.
        self.messages_in = 0
        self._handles: dict[str, None] = {}
        self._open: set[_LiveConnection] = set()
        self._servers: list[asyncio.Server] = []
        self._host = "127.0.0.1"
        self._port = 0
        self._plain_port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0: an ephemeral port, see :attr:`port`); with TLS, also plain on an
        ephemeral :attr:`plain_port`."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _LiveConnection(self), host, port, ssl=self.ssl_context)
        self._servers.append(server)
        self._host, self._port = host, int(server.sockets[0].getsockname()[1])
        self._plain_port = self._port
        if self.ssl_context is not None:
            plain = await loop.create_server(lambda: _LiveConnection(self), host, 0)
            self._servers.append(plain)
            self._plain_port = int(plain.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Close every session (1001) and stop listening."""
        for conn in list(self._open):
            conn.close(1001, "The server is shutting down.")
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()

    async def __aenter__(self) -> LoadLiveServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def plain_port(self) -> int:
        """The plain ``ws://`` port: :attr:`port` itself unless serving TLS."""
        return self._plain_port

    @property
    def base_url(self) -> str:
        """The Live API base URL (``wss://host:port`` with TLS, else ``ws://``), as for the full emulator."""
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{self._host}:{self._port}"

    @property
    def echo_url(self) -> str:
        """The bare echo WebSocket, always plain ``ws://`` (see the module docstring)."""
        return f"ws://{self._host}:{self._plain_port}{ECHO_PATH}"

    def results(self) -> list[dict[str, Any]]:
        """Every session's :meth:`SessionProbe.result`, for :func:`gateway.caller.load.analyse`."""
        return [p.result() for p in self.probes.values()]

    # ------------------------------------------------------------------ for connections

    def credential_ok(self, headers: dict[str, str], query: dict[str, list[str]], constrained: bool) -> bool:
        if self.api_key is None:
            return True
        key = headers.get("x-goog-api-key")
        if constrained:
            auth = headers.get("authorization", "")
            token = query.get("access_token", [""])[0] or (auth[6:] if auth.startswith("Token ") else "")
            key = token or key
        else:
            key = key or query.get("key", [""])[0]
        return key is not None and key != "" and secrets.compare_digest(key.encode(), self.api_key.encode())

    def new_handle(self) -> str:
        handle = secrets.token_urlsafe(24)
        if len(self._handles) >= _MAX_HANDLES:
            del self._handles[next(iter(self._handles))]
        self._handles[handle] = None
        return handle

    def knows_handle(self, handle: str) -> bool:
        return handle in self._handles

    def opened(self, conn: _LiveConnection) -> None:
        self._open.add(conn)

    def closed(self, conn: _LiveConnection) -> None:
        self._open.discard(conn)


def _frame_samples(view: memoryview, chars: int, index: int) -> memoryview:
    """Frame ``index`` of an audio message's base64 (``chars`` long, after the fixed head), decoded:
    the whole 3-byte groups around it, then the frame's 320 samples."""
    start = _FRAME_BYTES * index
    first = start - start % 3
    last = min((start + _FRAME_BYTES + 2) // 3 * 4, chars)
    pcm = _a2b(view[_HEAD_LEN + first // 3 * 4 : _HEAD_LEN + last], strict_mode=True)
    return memoryview(pcm)[start - first : start - first + _FRAME_BYTES].cast("h")


def _whole_frames(samples: int) -> int:
    """``samples`` rounded up to whole 20 ms frames at 24 kHz."""
    return -(-samples // _FRAME_SAMPLES) * _FRAME_SAMPLES


# Connection states.
_HANDSHAKE, _AWAIT_SETUP, _READY, _ECHO, _CLOSING, _CLOSED = range(6)


class _LiveConnection(asyncio.BufferedProtocol):
    """One connection: the HTTP upgrade, then frames, then the session's state machine."""

    def __init__(self, server: LoadLiveServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.state = _HANDSHAKE
        self.head = b""
        self.reader: leanws.FrameReader | None = None
        self.credential_ok = True
        self.loop = asyncio.get_running_loop()
        self.probe: SessionProbe | None = None
        self.resumption = False
        self.input_tx = False
        self.output_tx = False
        self.close_timer: asyncio.TimerHandle | None = None
        #: When the read being parsed arrived (its messages arrived together).
        self.now = 0.0
        # VAD, clocked by the samples received (as the full emulator's SpeechDetector).
        self.rate = 16000
        self.silence_ms = server.silence_duration_ms
        self.silence_samples_needed = 0
        self.confirm_samples = 0
        self.min_speech_samples = 0
        self.active = False
        self.confirmed = False
        self.loud = 0
        self.quiet = 0
        self.spoken = 0
        self.end_mark = 0
        self.audio_in_samples = 0
        # The model's turn.
        self.turn_open = False
        self.turn_id = 0
        self.timer: asyncio.TimerHandle | None = None
        self.reply_left = 0
        self.reply_sent = 0
        self.reply_chunks = 0
        self.reply_texts: tuple[bytes | None, ...] = ()
        self.reply_start = 0.0
        self.playback_end = 0.0
        self.audio_out_samples = 0
        self.turn_samples = 0

    # ------------------------------------------------------------------ transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport subclass
        self.server.opened(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RECV_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        if self.state >= _CLOSED:
            return
        try:
            if self.reader is not None:
                self.now = time.monotonic()  # every message of this read arrived together
                self.reader.feed(_RECV_VIEW[:nbytes])
            else:
                self._handshake(bytes(_RECV_VIEW[:nbytes]))
        except leanws.ProtocolViolation as exc:
            self.close(exc.code, exc.reason)
        except CloseRequest as request:
            self.close(request.code, request.reason)
        except Exception:  # a bug here must not take the server down, nor leave the client waiting
            log.exception("load-test Live session failed")
            self.close(1011, INTERNAL_ERROR)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = _CLOSED
        self._cancel_timers()
        self.server.closed(self)

    def _cancel_timers(self) -> None:
        for timer in (self.timer, self.close_timer):
            if timer is not None:
                timer.cancel()
        self.timer = self.close_timer = None

    def _write(self, data: bytes) -> None:
        if self.state < _CLOSING and self.transport is not None:
            self.transport.write(data)

    def close(self, code: int, reason: str = "") -> None:
        """Start the close handshake; the TCP connection goes when the client answers (or in 2 s)."""
        if self.state >= _CLOSING or self.transport is None:
            return
        if self.state == _HANDSHAKE:
            self.transport.abort()
            return
        self.transport.write(leanws.frame(leanws.CLOSE, leanws.close_payload(code, reason)))
        self.state = _CLOSING
        self._cancel_timers()
        self.close_timer = self.loop.call_later(2.0, self.transport.abort)

    # ------------------------------------------------------------------ the HTTP upgrade

    def _handshake(self, data: bytes) -> None:
        assert self.transport is not None
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > _MAX_HEAD:
                self._http_error(431, "Request Header Fields Too Large")
            return
        lines = self.head[:end].decode("latin-1").split("\r\n")
        rest = self.head[end + 4 :]
        self.head = b""
        method, _, target = lines[0].partition(" ")
        target = target.rsplit(" ", 1)[0]
        path, _, query_text = target.partition("?")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        echo = path == ECHO_PATH
        match = None if echo else _PATH.fullmatch(path)
        if method != "GET" or (match is None and not echo):
            self._http_error(404, "Not Found")
            return
        key = headers.get("sec-websocket-key", "")
        upgrade = "websocket" in headers.get("upgrade", "").lower()
        if not upgrade or not key or headers.get("sec-websocket-version") != "13":
            self._http_error(400, "Bad Request")
            return
        if match is not None:
            constrained = match["method"].endswith("Constrained")
            self.credential_ok = self.server.credential_ok(headers, parse_qs(query_text), constrained)
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + leanws.accept_key(key).encode("ascii") + b"\r\n\r\n"
        )
        self.state = _ECHO if echo else _AWAIT_SETUP
        self.reader = leanws.FrameReader(self._message, masked=True)
        if rest:
            self.now = time.monotonic()
            self.reader.feed(rest)

    def _http_error(self, status: int, text: str) -> None:
        assert self.transport is not None
        body = f"{text}\n".encode()
        self.transport.write(
            f"HTTP/1.1 {status} {text}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        self.state = _CLOSED
        self.transport.close()

    # ------------------------------------------------------------------ frames

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode == leanws.TEXT or opcode == leanws.BINARY:
            self.server.messages_in += 1
            if self.state == _READY:
                # The gateway's audio message: fixed head and tail, base64 between (strict: a stray
                # quote or anything else is not base64, and goes the full way).
                if payload.startswith(_AUDIO_HEAD) and payload.endswith(_AUDIO_TAIL):
                    chars = len(payload) - _HEAD_LEN - 4
                    try:
                        if chars == 856:  # one frame: the usual message
                            self._frames(payload, chars, 1)
                            return
                        pad = (payload[-5] == 61) + (payload[-6] == 61)  # "=" padding
                        nbytes = chars // 4 * 3 - pad
                        if chars % 4 == 0 and nbytes and nbytes % _FRAME_BYTES == 0:
                            self._frames(payload, chars, nbytes // _FRAME_BYTES)
                        else:
                            self._audio(_a2b(memoryview(payload)[_HEAD_LEN:-4], strict_mode=True), 16000)
                        return
                    except binascii.Error:
                        pass
                elif payload.startswith(_AUDIO_HEAD_8K) and payload.endswith(_AUDIO_TAIL):
                    try:
                        self._audio(
                            _a2b(memoryview(payload)[len(_AUDIO_HEAD_8K) : -4], strict_mode=True), 8000
                        )
                        return
                    except binascii.Error:
                        pass
                self._client_message(payload)
            elif self.state == _AWAIT_SETUP:
                self._setup(payload)
            elif self.state == _ECHO:
                self._write(leanws.frame(opcode, payload))
        elif opcode == leanws.PING:
            self._write(leanws.frame(leanws.PONG, payload))
        elif opcode == leanws.CLOSE:
            self._on_close(payload)

    def _on_close(self, payload: bytes) -> None:
        assert self.transport is not None
        if self.state < _CLOSING:
            # Echo the client's code (none given: an empty close), then end the connection.
            self.transport.write(leanws.frame(leanws.CLOSE, payload[:2]))
        self.state = _CLOSED
        self._cancel_timers()
        self.transport.close()

    # ------------------------------------------------------------------ setup

    def _setup(self, payload: bytes) -> None:
        kind, body, _ = parse_client_message(payload)
        if kind != "setup":
            raise CloseRequest(1007, BAD_API_KEY if not self.credential_ok else INVALID_ARGUMENT)
        if not self.credential_ok:
            raise CloseRequest(1007, BAD_API_KEY)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise CloseRequest(1007, INVALID_ARGUMENT)
        if not model_ok(model):
            raise CloseRequest(
                1008,
                f"{model} is not found for API version v1beta, or is not supported for "
                "bidiGenerateContent. Call ListModels to see the list of available models and their "
                "supported methods.",
            )
        resumption = body.get("sessionResumption")
        handle = resumption.get("handle") if isinstance(resumption, dict) else None
        if handle and not self.server.knows_handle(str(handle)):
            raise CloseRequest(1008, SESSION_NOT_FOUND)
        ric = body.get("realtimeInputConfig")
        aad = ric.get("automaticActivityDetection") if isinstance(ric, dict) else None
        aad = aad if isinstance(aad, dict) else {}
        try:
            silence_ms = int(aad.get("silenceDurationMs", self.server.silence_duration_ms))
        except (TypeError, ValueError) as exc:
            raise CloseRequest(1007, INVALID_ARGUMENT) from exc
        self._set_rate(16000, silence_ms if silence_ms > 0 else self.server.silence_duration_ms)
        self.resumption = isinstance(resumption, dict)
        self.input_tx = isinstance(body.get("inputAudioTranscription"), dict)
        self.output_tx = isinstance(body.get("outputAudioTranscription"), dict)
        index = self.server.sessions
        self.server.sessions += 1
        self.probe = self.server.probes[index] = SessionProbe()
        self.state = _READY
        self._write(_SETUP_COMPLETE)

    def _set_rate(self, rate: int, silence_ms: int | None = None) -> None:
        if silence_ms is not None:
            self.silence_ms = silence_ms
        self.rate = rate
        self.silence_samples_needed = rate * self.silence_ms // 1000
        self.confirm_samples = rate * self.server.barge_in_ms // 1000
        self.min_speech_samples = rate * self.server.min_speech_ms // 1000

    # ------------------------------------------------------------------ client messages

    def _client_message(self, payload: bytes) -> None:
        """Anything but the gateway's usual audio message: the emulator's own full parser."""
        kind, body, _ = parse_client_message(payload)
        if kind == "realtimeInput":
            for name, blob in (("audio", body.get("audio")), ("mediaChunks", body.get("mediaChunks"))):
                if name == "mediaChunks":  # deprecated list: only its first element counts
                    blob = blob[0] if isinstance(blob, list) and blob else None
                if isinstance(blob, dict):
                    mime = blob.get("mimeType")
                    if not isinstance(mime, str) or not mime.startswith("audio/"):
                        raise CloseRequest(1007, f"Unsupported mime type {mime!r} for realtime audio")
                    data = blob.get("data", "")
                    if not isinstance(data, str):
                        raise CloseRequest(1007, "Invalid value at 'realtime_input.audio' (TYPE_BYTES)")
                    pcm = b64decode(data, "realtime_input.audio.data")
                    rate = pcm_rate(mime)
                    if rate is not None:
                        self._audio(pcm, rate)
            if body.get("audioStreamEnd") and self.active:
                self._utterance_end()
            text = body.get("text")
            if isinstance(text, str) and text.strip():
                self._user_turn(self.server.greeting_samples, None)
        elif kind == "clientContent":
            if body.get("turnComplete"):
                self._user_turn(self.server.greeting_samples, None)
        elif kind == "setup":
            raise CloseRequest(1007, INVALID_ARGUMENT)  # a second setup
        # toolResponse, contextUpdate and the empty message are accepted and ignored.

    # ------------------------------------------------------------------ caller audio

    def _frames(self, payload: bytes, chars: int, count: int) -> None:
        """``count`` 20 ms frames at 16 kHz (one, unless the gateway coalesced a backlog), each looked
        at through a 3 ms window in its middle: an all-"A" window is silence (nothing decoded), a
        flat, quiet one may be a probe (then that frame is decoded and checked), a loud one is speech.
        Only the windows' base64 is decoded (and validated); the rest of it is not read at all."""
        probe = self.probe
        assert probe is not None
        if self.rate != 16000:
            if self.active:
                self._utterance_end()
            self._set_rate(16000)
        view = memoryview(payload)
        now, loud_p2p = self.now, self.server.loud_p2p
        for index in range(count):
            at = _HEAD_LEN + (_FRAME_BYTES * index + _WINDOW_SHIFT[index % 3]) // 3 * 4
            if payload.startswith(_SILENT_WINDOW, at):
                probe.frame_in(-1, now)
                loud = False
            else:
                points = sorted(_POINTS.unpack(_a2b(view[at : at + 128], strict_mode=True)))
                low, high = points[0], points[-1]
                digit = -1
                if high - low <= 4 and low >= 60 and high <= 420:
                    digit = probe_digit(_frame_samples(view, chars, index))
                probe.frame_in(digit, now)
                loud = high - low >= loud_p2p
            if loud or self.active:
                self._vad(320, loud)
            else:
                self.audio_in_samples += 320

    def _audio(self, pcm: bytes, rate: int) -> None:
        probe = self.probe
        assert probe is not None
        if rate in (8000, 16000):
            probe.audio_in(pcm, self.now, rate)
        n = len(pcm) >> 1
        if n == 0:
            return
        if rate != self.rate:
            if self.active:
                self._utterance_end()
            self._set_rate(rate)
        samples = memoryview(pcm)[: 2 * n].cast("h")
        step = max(1, n // 24)  # ~24 points: a 20 ms frame every 0.8 ms
        sub = samples[::step]
        self._vad(n, max(sub) - min(sub) >= self.server.loud_p2p)

    def _vad(self, n: int, loud: bool) -> None:
        """The full emulator's speech detector, on ``n`` samples that were loud or not."""
        self.audio_in_samples += n
        if not self.active:
            if not loud:
                return
            self.active = True
            self.confirmed = False
            self.loud = self.quiet = self.spoken = self.end_mark = 0
        self.spoken += n
        if loud:
            self.loud += n
            self.quiet = 0
            self.end_mark = self.spoken
            if not self.confirmed and self.loud >= self.confirm_samples:
                self.confirmed = True
                if self.turn_open:
                    self._interrupt()
            return
        self.quiet += n
        if self.quiet >= self.silence_samples_needed:
            self._utterance_end()

    def _utterance_end(self) -> None:
        self.active = False
        if self.loud < self.min_speech_samples:
            return  # a click or a cough: not an utterance
        seconds = min(self.end_mark / self.rate, self.server.max_echo_s)
        reply = _whole_frames(CHIME_SAMPLES + round(seconds * OUT_RATE))
        self._user_turn(reply, f"{seconds:.1f}")

    # ------------------------------------------------------------------ the model's turn

    def _user_turn(self, reply_samples: int, spoken: str | None) -> None:
        if self.turn_open:
            self._interrupt()
        if spoken is not None:
            text = f"You said something {spoken} seconds long; here it is back."
            if self.input_tx:
                self._write(
                    _server_frame(
                        {"serverContent": {"inputTranscription": {"text": f" [speech {spoken} s]"}}}
                    )
                )
        else:
            text = self.server.greeting
        size = self.server.chunk_samples
        self.turn_open = True
        self.turn_id += 1
        self.turn_samples = 0
        self.reply_left = reply_samples
        self.reply_sent = 0
        self.reply_chunks = -(-reply_samples // size)
        self.reply_texts = _transcript_frames(text, self.reply_chunks) if self.output_tx else ()
        self.reply_start = time.monotonic() + self.server.first_audio_delay_s
        self.timer = self.loop.call_later(self.server.first_audio_delay_s, self._chunk)

    def _chunk(self) -> None:
        """Send the reply's next chunk and schedule the one after (or the turn's end)."""
        self.timer = None
        server = self.server
        if self.reply_left <= 0:
            self._generation_complete()
            return
        samples = min(server.chunk_samples, self.reply_left)
        index = self.reply_sent
        if index < len(self.reply_texts):
            text = self.reply_texts[index]
            if text is not None:
                self._write(text)
        frame = _audio_frame(samples)
        t = time.monotonic()
        self._write(frame)
        probe = self.probe
        assert probe is not None
        probe.model_audio(2 * samples, t)
        self.reply_left -= samples
        self.reply_sent = index + 1
        self.turn_samples += samples
        self.audio_out_samples += samples
        self.playback_end = max(self.playback_end, t) + samples / OUT_RATE
        due = self.reply_start + self.reply_sent * server.chunk_interval_s
        self.timer = self.loop.call_later(max(0.0, due - time.monotonic()), self._chunk)

    def _generation_complete(self) -> None:
        self._write(_GENERATION_COMPLETE)
        remaining = self.playback_end - time.monotonic() if self.server.playback_wait else 0.0
        self.timer = self.loop.call_later(max(0.0, remaining), self._turn_complete)

    def _turn_complete(self) -> None:
        self.timer = None
        self.turn_open = False
        self._write(self._turn_complete_frame())
        probe = self.probe
        assert probe is not None
        probe.turn_end(False)
        self._after_turn()

    def _interrupt(self) -> None:
        """Barge-in: stop the reply, ``interrupted``, then ``turnComplete`` (no generationComplete)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.turn_open = False
        self.playback_end = time.monotonic()
        self._write(_INTERRUPTED)
        probe = self.probe
        assert probe is not None
        probe.turn_end(True)
        self._write(self._turn_complete_frame())
        self._after_turn()

    def _turn_complete_frame(self) -> bytes:
        audio_in = self.audio_in_samples * AUDIO_TOKENS_PER_S // self.rate
        response = self.turn_samples * AUDIO_TOKENS_PER_S // OUT_RATE
        prompt = audio_in + (self.audio_out_samples - self.turn_samples) * AUDIO_TOKENS_PER_S // OUT_RATE
        usage: dict[str, Any] = {}
        if prompt > 0:
            usage["promptTokenCount"] = prompt
        if response > 0:
            usage["responseTokenCount"] = response
        if prompt + response > 0:
            usage["totalTokenCount"] = prompt + response
        message: dict[str, Any] = {"serverContent": {"turnComplete": True}}
        if usage:
            message["usageMetadata"] = usage
        return _server_frame(message)

    def _after_turn(self) -> None:
        if self.resumption:
            handle = self.server.new_handle()
            self._write(_server_frame({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}}))
