"""One Gemini Live session over a raw ``websockets`` client: the thin asyncio layer around LiveProtocol.

Design rules:

* **One reader task** turns every received frame (binary *and* text: Google sends binary frames of
  UTF-8 JSON) into events on a queue that :meth:`LiveSession.events` drains.
* **One writer task** owns ``ws.send``. Control messages (text, tool responses, client content) wait in
  their own queue, are sent first and are never dropped. Caller audio waits in a bounded queue: when the
  network stalls, the oldest audio is dropped (stale speech is worthless on a phone line) and counted,
  and :meth:`LiveSession.send_audio` never blocks the media path.
* Foreign exceptions (``websockets``, ``OSError``, timeouts) are translated into :mod:`gateway.errors`
  here, with ``raise … from exc``.
* Secrets stay out of logs: the URL is logged without its query string, and ``websockets``' own debug
  logging (which echoes handshake headers) is routed to a logger capped at INFO.

Resumption and ``goAway`` *policy* (reconnecting transparently) belongs to the caller; this module tracks
the resumable handle and reports closes as typed errors with ``retryable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence, Sized
from dataclasses import dataclass, field, replace
from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.frames import BINARY, TEXT, Frame
from websockets.protocol import State as WsState
from websockets.proxy import get_proxy

from gateway.errors import (
    AudioError,
    ConfigError,
    LiveConnectError,
    LiveProtocolError,
    LiveSessionClosed,
    LiveSessionError,
)
from gateway.gemini.auth import ApiKeyHeaders, CredentialSource, VertexCredentials
from gateway.gemini.messages import FunctionResponse, GoAway, ServerEvent, SessionConfig
from gateway.gemini.protocol import LiveProtocol, LiveState
from gateway.log import add_secrets
from gateway.wsframes import apply_mask, text_frame_header

__all__ = [
    "LiveEndpoint",
    "LiveSession",
    "SessionStats",
    "VertexTarget",
    "client_tls_context",
    "vertex_base_url",
]

_LOG = logging.getLogger("gateway.gemini")
# websockets logs the handshake request (URL with ?key=, x-goog-api-key header) at DEBUG. Its records go
# to this logger, which never goes below INFO, whatever the root level is.
_WIRE_LOG = logging.getLogger("gateway.gemini.wire")
_WIRE_LOG.setLevel(logging.INFO)

_PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.{method}"
_VERTEX_PATH = "/ws/google.cloud.aiplatform.{version}.LlmBidiService/BidiGenerateContent"
#: Vertex locations served from a multi-regional host (google-genai ``_MULTI_REGIONAL_LOCATIONS``).
_MULTI_REGIONAL = frozenset({"us", "eu"})
_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}

#: Far above websockets' 1 MiB default: a server message over the limit would close the call with 1009.
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024


class _TextFrames:
    """Masked client text frames for the media path, serialised without websockets' ``Frame`` objects.

    RFC 6455 §5.3 wants every client frame masked with a fresh, unpredictable key. websockets draws each
    key with its own ``getrandom()`` syscall and builds a ``Frame`` plus a ``BytesIO`` per message: at
    50 audio messages a second per call that was ~7 % of the gateway's CPU. Here keys come from the same
    OS source 1024 at a time, and a frame is one ``join`` of header, key and ``apply_mask`` (websockets'
    own C routine). Only data frames of an OPEN connection take this path; everything that changes the
    protocol's state (close, ping, fragments) still goes through websockets.
    """

    __slots__ = ("_at", "_keys")

    _POOL = 4096

    def __init__(self) -> None:
        self._keys = b""
        self._at = self._POOL

    def text(self, payload: bytes) -> bytes:
        at = self._at
        if at >= self._POOL:
            self._keys = os.urandom(self._POOL)
            at = 0
        key = self._keys[at : at + 4]
        self._at = at + 4
        return b"".join((text_frame_header(len(payload), masked=True), key, apply_mask(payload, key)))


#: One key pool for every session of the process (one event loop; the keys only need to be unpredictable).
_FRAMES = _TextFrames()


class _BufferedReads(asyncio.BufferedProtocol):
    """Feeds a websockets connection from the process's one receive buffer.

    Given a plain ``Protocol`` (websockets' connections are), the event loop's TLS transport (uvloop's,
    and asyncio's) reads with ``SSLObject.read(256 KiB)``: a fresh 256 KiB ``bytes`` per read, shrunk
    to what arrived. glibc serves it with ``mmap``, ``mremap`` and ``munmap`` (the fixed threshold of
    :func:`gateway.process.tune_malloc`) and a page fault per page touched: ~2 500 syscalls a second at
    100 calls (``strace -c`` under ``bench/load.py``). A ``BufferedProtocol`` is read into the buffer it
    lends instead; the transports only take that path for a protocol that is not also a ``Protocol``,
    hence this adapter rather than a subclass of the connection.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: ClientConnection) -> None:
        self._conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._conn.connection_made(transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RECV_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        # websockets keeps what it is given (its reader appends it): a copy, never the view.
        self._conn.data_received(_RECV_VIEW[:nbytes].tobytes())

    def eof_received(self) -> None:
        self._conn.eof_received()  # websockets closes the transport itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._conn.connection_lost(exc)

    def pause_writing(self) -> None:
        self._conn.pause_writing()

    def resume_writing(self) -> None:
        self._conn.resume_writing()


#: Shared by every Live connection of the process: each read is handed on before the next one starts.
_RECV_VIEW = memoryview(bytearray(256 * 1024))


class _LiveConnection(ClientConnection):
    """websockets' client connection, whose whole messages a session can take as they are parsed.

    websockets hands every message to the reading task: the read callback puts the frame in an
    assembler, resolves a future, and the task wakes up a turn of the event loop later, behind
    everything else the loop has ready, to take it. A Live session would then pass its events to
    the call's task: two wake-ups per server message, each one a wait behind a busy loop's work (the
    downlink p99 of ``bench/load.py`` at 100 calls, README, Performance). With :attr:`take` set,
    a whole (unfragmented) data message goes to it from the read callback itself: parsed, its events
    queued for the call, one wake-up. Only when nothing waits in the assembler, so order is kept; a
    fragmented message, everything before the session exists (the handshake, ``setupComplete``) and
    anything :attr:`take` declines go the usual way, to ``recv()``.

    ``process_event`` is websockets' own hook for what a frame means (its client overrides it for the
    handshake); ``websockets>=17`` is pinned, and a test asserts messages are taken with the installed
    version, so an upgrade that changes it fails loudly, not slowly.
    """

    #: Takes one whole data message's payload; False leaves it to ``recv()``.
    take: Callable[[bytes], bool] | None = None
    #: Messages :attr:`take` took (the tests read it).
    taken = 0

    def can_take(self) -> bool:
        """Whether :attr:`take` can keep order here: the assembler's frame queue is where websockets
        17 has it. If a later version moved it, messages simply keep going to ``recv()``."""
        return isinstance(getattr(self.recv_messages, "frames", None), Sized)

    def process_event(self, event: Any) -> None:
        take = self.take
        if (
            take is not None
            and type(event) is Frame
            and event.fin
            and (event.opcode is TEXT or event.opcode is BINARY)
            and not len(self.recv_messages.frames)
            and take(event.data if type(event.data) is bytes else bytes(event.data))
        ):
            self.taken += 1
            return
        super().process_event(event)


class _connect(ws_connect):
    """websockets' ``connect``, with a direct connection read through :class:`_BufferedReads`.

    Through a proxy (``HTTPS_PROXY``, websockets' own handling), or given a socket, it is unchanged.
    """

    async def open_tcp_connection(self) -> ClientConnection:
        kwargs = self.create_connection_kwargs.copy()
        proxy = self.proxy if self.proxy is not True else get_proxy(self.ws_uri)
        if proxy is not None or kwargs.get("sock") is not None or kwargs.get("unix", False):
            return await super().open_tcp_connection()
        if self.ws_uri.secure:
            kwargs.setdefault("ssl", True)
            kwargs.setdefault("server_hostname", self.ws_uri.host)
        kwargs.setdefault("host", self.ws_uri.host)
        kwargs.setdefault("port", self.ws_uri.port)
        connection = self.factory(self.ws_uri)
        await asyncio.get_running_loop().create_connection(lambda: _BufferedReads(connection), **kwargs)
        return connection


def client_tls_context() -> ssl.SSLContext:
    """A verifying TLS client context: the system trust store, as OpenSSL finds it.

    ``ssl.create_default_context`` loads OpenSSL's default verify paths, which honour ``SSL_CERT_FILE``
    and ``SSL_CERT_DIR``: a corporate CA (or the tests' own CA) is trusted without code changes.
    Certificate and host name are always verified; there is no switch to turn that off.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def vertex_base_url(location: str) -> str:
    """The Vertex AI host serving ``location``, picked as google-genai picks it (``_api_client.py``)."""
    if location == "global":
        return "wss://aiplatform.googleapis.com"
    if location in _MULTI_REGIONAL:
        return f"wss://aiplatform.{location}.rep.googleapis.com"
    return f"wss://{location}-aiplatform.googleapis.com"


@dataclass(frozen=True, slots=True)
class VertexTarget:
    """The Google Cloud project and location a Vertex AI Live session runs in."""

    project: str
    location: str

    def __post_init__(self) -> None:
        for name, value in (("project", self.project), ("location", self.location)):
            if not value or "/" in value or value.strip() != value:
                raise ConfigError(f"Vertex AI: bad {name} {value!r}")

    def model_resource(self, model: str) -> str:
        """The resource name Vertex expects in ``setup.model``, as google-genai builds it.

        ``projects/…`` is used verbatim; ``publishers/…`` gets the project and location in front; a
        bare id is a Google publisher model and ``pub/id`` another publisher's (``_transformers.t_model``).
        A Gemini API ``models/X`` spelling is taken as the publisher model X, so a dialplan written
        for the Gemini API keeps working (the SDK would send ``models/X`` on, which Vertex cannot serve).
        """
        if model.startswith("projects/"):
            return model
        model = model.removeprefix("models/")
        if not model.startswith("publishers/"):
            publisher, _, model_id = model.partition("/") if "/" in model else ("google", "", model)
            model = f"publishers/{publisher}/models/{model_id}"
        return f"projects/{self.project}/locations/{self.location}/{model}"


@dataclass(frozen=True)
class LiveEndpoint:
    """Where and how to reach the Live API, with at most one of ``api_key`` / ``ephemeral_token``.

    The key goes in the ``x-goog-api-key`` header (as the Python SDK sends it) unless ``key_in_query``;
    an ephemeral token uses the ``BidiGenerateContentConstrained`` method with ``?access_token=``.
    Secrets are excluded from ``repr`` so an endpoint can be logged.

    With ``vertex`` (build it with :meth:`for_vertex`) it is a Vertex AI endpoint: the
    ``LlmBidiService`` path, model ids expanded to ``projects/…/models/…`` resource names, and
    ``credentials`` (ADC bearer tokens) for the handshake headers.

    A ``wss://`` (or ``https://``) endpoint always verifies the server's certificate: with
    ``tls`` when given, else with :func:`client_tls_context` (built once per endpoint, so the trust
    store is read at start-up, not per call).
    """

    base_url: str = "wss://generativelanguage.googleapis.com"
    api_key: str = field(default="", repr=False)
    ephemeral_token: str = field(default="", repr=False)
    api_version: str = "v1beta"
    key_in_query: bool = False
    tls: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    vertex: VertexTarget | None = None
    #: Where handshake headers come from; defaults to the API key's ``x-goog-api-key``, if any.
    credentials: CredentialSource | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in _SCHEMES or not parts.netloc:
            raise ConfigError(
                f"Live endpoint: base_url must be a ws(s):// or http(s):// URL, not {self.base_url!r}"
            )
        if parts.query or parts.fragment:
            raise ConfigError("Live endpoint: base_url must not carry a query string or fragment")
        # Neither is allowed: a local emulator (or an authenticating proxy) needs no credential.
        if self.api_key and self.ephemeral_token:
            raise ConfigError("Live endpoint: set api_key or ephemeral_token, not both")
        if not self.api_version or "/" in self.api_version:
            raise ConfigError(f"Live endpoint: bad api_version {self.api_version!r}")
        if self.secure and self.tls is None:
            object.__setattr__(self, "tls", client_tls_context())
        if self.vertex is not None and (self.api_key or self.ephemeral_token or self.key_in_query):
            raise ConfigError("Live endpoint: Vertex AI takes OAuth2 bearer tokens, not an API key")
        if self.credentials is None and self.api_key and not self.key_in_query:
            object.__setattr__(self, "credentials", ApiKeyHeaders(self.api_key))

    @classmethod
    def for_vertex(
        cls,
        project: str,
        location: str,
        *,
        base_url: str = "",
        api_version: str = "v1beta1",
        credentials: CredentialSource | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> LiveEndpoint:
        """A Vertex AI endpoint: the location's host unless ``base_url`` overrides it, and Application
        Default Credentials unless ``credentials`` is given. ``v1beta1`` is google-genai's default."""
        return cls(
            base_url=base_url or vertex_base_url(location),
            api_version=api_version,
            tls=tls,
            vertex=VertexTarget(project, location),
            credentials=credentials if credentials is not None else VertexCredentials(),
        )

    @property
    def secure(self) -> bool:
        """True for ``wss://``: the socket is TLS and the server's certificate is verified."""
        return _SCHEMES[urlsplit(self.base_url).scheme] == "wss"

    def _base(self) -> str:
        parts = urlsplit(self.base_url)
        path = parts.path.rstrip("/")
        return urlunsplit((_SCHEMES[parts.scheme], parts.netloc, path, "", ""))

    def url(self) -> str:
        """The full WebSocket URL, including any credential in the query. Never log it."""
        if self.vertex is not None:
            return self._base() + _VERTEX_PATH.format(version=self.api_version)
        if self.ephemeral_token:
            path = _PATH.format(version=self.api_version, method="BidiGenerateContentConstrained")
            return f"{self._base()}{path}?access_token={quote(self.ephemeral_token, safe='')}"
        url = self._base() + _PATH.format(version=self.api_version, method="BidiGenerateContent")
        if self.key_in_query:
            url += f"?key={quote(self.api_key, safe='')}"
        return url

    def redacted_url(self) -> str:
        """The URL without its query string: safe for logs and error messages."""
        return self.url().split("?", 1)[0]

    def headers(self) -> dict[str, str]:
        """Handshake headers carrying the credential, if it does not travel in the URL."""
        if self.api_key and not self.key_in_query:
            return {"x-goog-api-key": self.api_key}
        return {}

    async def auth_headers(self) -> dict[str, str]:
        """The handshake's credential headers, awaited: a first Vertex token may still be on its way."""
        if self.credentials is None:
            return self.headers()
        return await self.credentials.headers()

    def model_name(self, model: str) -> str:
        """What ``setup.model`` says for ``model`` here: a full resource name on Vertex, else ``model``."""
        return self.vertex.model_resource(model) if self.vertex is not None else model

    async def start(self) -> None:
        """Before the first call: find the credentials (ConfigError when there are none) and start
        refreshing tokens in the background. Optional: the first connect does it otherwise."""
        if self.credentials is not None:
            await self.credentials.start()

    async def aclose(self) -> None:
        """Stop the credentials' background refresh, if any."""
        if self.credentials is not None:
            await self.credentials.aclose()


@dataclass(slots=True)
class SessionStats:
    """Counters for one session, reported at its end (nothing on the media path logs per frame)."""

    audio_sent: int = 0  # realtimeInput.audio messages written
    audio_bytes_sent: int = 0  # PCM bytes in them
    audio_dropped: int = 0  # caller chunks dropped because the audio queue was full
    drop_bursts: int = 0  # separate overflow episodes
    messages_sent: int = 0  # every frame written, setup included
    messages_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    setup_ms: float = 0.0  # from opening the socket to setupComplete


class _End:
    """Queue sentinel: the reader stopped."""


_END: Final = _End()


class LiveSession:
    """A connected Live session (past ``setupComplete``). Create it with :meth:`connect`.

    Sending is synchronous and never blocks; receiving is :meth:`events`, for one consumer.
    """

    def __init__(
        self,
        ws: ClientConnection,
        protocol: LiveProtocol,
        *,
        audio_queue_max: int,
        input_rate: int,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        stats: SessionStats,
    ) -> None:
        """Private: use :meth:`connect`."""
        self._ws = ws
        self._proto = protocol
        self._log = logger
        self.stats = stats
        self._rate = input_rate
        # Up to 100 ms of backlog is merged into one message (the Live API's recommended maximum).
        self._coalesce_bytes = input_rate * 2 // 10
        self._audio: deque[bytes] = deque(maxlen=audio_queue_max)
        self._audio_max = audio_queue_max
        self._control: deque[str] = deque()
        self._wake = asyncio.Event()
        # Unbounded on purpose: server events must never be lost, the server's output is finite, and
        # the consumer (the call's downlink task) does no blocking work per event.
        self._events: asyncio.Queue[ServerEvent | _End] = asyncio.Queue()
        self._error: LiveSessionError | None = None
        self._dropping = False
        self._burst_dropped = 0
        self._closing = False
        self._closed = False
        self._idle = False  # the writer task is parked on _wake with both queues empty
        self._next_direct = 0.0  # monotonic time before which audio goes through the queue (bursts)
        self._consuming = False
        self._end_logged = False
        self._done = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason: str = ""
        #: A synchronous taker of server events (the call's, through the resilient session): an event
        #: parsed in the read callback goes to it while the consumer waits and nothing is queued, so
        #: no task wakes at all; False leaves the event to :meth:`events`, as does every later one.
        self.direct: Callable[[ServerEvent], bool] | None = None
        self._reader = asyncio.create_task(self._read_loop(), name="live-reader")
        self._writer = asyncio.create_task(self._write_loop(), name="live-writer")
        if isinstance(ws, _LiveConnection) and ws.can_take():
            ws.take = self._take  # server messages parsed in the read callback (_LiveConnection)

    # ------------------------------------------------------------------ opening

    @classmethod
    async def connect(
        cls,
        endpoint: LiveEndpoint,
        config: SessionConfig,
        *,
        setup_timeout_s: float = 10.0,
        audio_queue_max: int = 50,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        input_rate: int | None = None,
        ping_interval_s: float | None = 30.0,
        ping_timeout_s: float | None = 60.0,
    ) -> LiveSession:
        """Open the socket, send ``setup`` and wait for ``setupComplete``.

        Keepalive: Gemini's pongs have been measured at 8–30 s, so websockets' 20 s default would kill
        healthy calls; a ping every 30 s with a 60 s timeout still detects a dead TCP path within ~90 s.
        Compression is off: base64 PCM barely deflates and deflating 50 frames/s per call costs CPU.

        Raises:
            LiveConnectError: the socket did not open, or closed before ``setupComplete`` (1007 bad key
                or config and 1008 unknown model are not retryable); ``LiveSessionNotFound`` when the
                resumption handle is unknown.
        """
        if audio_queue_max < 1:
            raise ConfigError(f"audio_queue_max must be >= 1, not {audio_queue_max}")
        if input_rate is None:
            input_rate = config.input_rate
        if not 8000 <= input_rate <= 48000:
            raise ConfigError(f"input_rate must be in [8000, 48000], not {input_rate}")
        log = logger if logger is not None else _LOG
        add_secrets([s for s in (endpoint.api_key, endpoint.ephemeral_token) if s])
        where = endpoint.redacted_url()
        if endpoint.vertex is not None:
            config = replace(config, model=endpoint.model_name(config.model))
        proto = LiveProtocol(config, vertex=endpoint.vertex is not None)
        stats = SessionStats()
        log.info("live session connecting", extra={"url": where, "model": config.model})
        started = time.monotonic()
        headers: dict[str, str] | None = None
        try:
            async with asyncio.timeout(setup_timeout_s):
                # Waits only for a first Vertex token; refreshes happen in the background.
                headers = await endpoint.auth_headers()
                ws = await _connect(
                    endpoint.url(),
                    create_connection=_LiveConnection,
                    additional_headers=headers,
                    # None is only allowed (and only given) for ws://; wss:// always verifies.
                    ssl=endpoint.tls if endpoint.secure else None,
                    compression=None,
                    max_size=MAX_MESSAGE_BYTES,
                    ping_interval=ping_interval_s,
                    ping_timeout=ping_timeout_s,
                    open_timeout=None,  # the enclosing timeout covers the whole setup
                    close_timeout=2.0,
                    logger=_WIRE_LOG,
                )
        except TimeoutError as exc:
            if headers is None:
                raise LiveConnectError(
                    f"no access token for {where} within {setup_timeout_s}s", retryable=True
                ) from exc
            raise LiveConnectError(
                f"Live socket to {where} did not open in {setup_timeout_s}s", retryable=True
            ) from exc
        except InvalidStatus as exc:
            status = exc.response.status_code
            retryable = status in (408, 429) or status >= 500
            raise LiveConnectError(
                f"Live upgrade to {where} refused: HTTP {status}", code=None, retryable=retryable
            ) from exc
        except InvalidURI as exc:
            raise ConfigError(f"Live endpoint URL is invalid: {where}") from exc
        except ssl.SSLCertVerificationError as exc:
            # Not retryable: a certificate that does not verify now will not verify in 200 ms.
            raise LiveConnectError(
                f"TLS certificate of {where} did not verify: {exc.verify_message or exc.reason}"
                " (a private CA? point SSL_CERT_FILE at its certificate)",
                retryable=False,
            ) from exc
        except ssl.SSLError as exc:
            raise LiveConnectError(
                f"TLS handshake with {where} failed: {exc.reason or exc}", retryable=True
            ) from exc
        except (WebSocketException, OSError) as exc:
            raise LiveConnectError(
                f"Live socket to {where} failed: {type(exc).__name__}: {exc}", retryable=True
            ) from exc

        first: list[ServerEvent] = []
        try:
            async with asyncio.timeout(max(0.0, setup_timeout_s - (time.monotonic() - started))):
                setup = proto.setup()
                await ws.send(setup)
                stats.messages_sent += 1
                stats.bytes_sent += len(setup)
                while proto.state is LiveState.SETUP_SENT:
                    data = await ws.recv()
                    stats.messages_received += 1
                    stats.bytes_received += len(data)
                    first = proto.receive(data)[1:]
        except ConnectionClosed as exc:
            code, reason = _close_info(exc)
            error = proto.closed(code, reason)
            log.warning("live setup rejected", extra={"code": code, "reason": reason, "url": where})
            raise error from exc
        except TimeoutError as exc:
            await _abandon(ws)
            raise LiveConnectError(
                f"no setupComplete from {where} within {setup_timeout_s}s", retryable=True
            ) from exc
        except LiveProtocolError as exc:
            await _abandon(ws, 1002)
            raise LiveConnectError(f"Live setup failed: {exc}", retryable=False) from exc
        except BaseException:
            await _abandon(ws)
            raise
        stats.setup_ms = (time.monotonic() - started) * 1000.0
        session = cls(
            ws, proto, audio_queue_max=audio_queue_max, input_rate=input_rate, logger=log, stats=stats
        )
        for event in first:
            session._events.put_nowait(event)
        log.info(
            "live session ready",
            extra={"setup_ms": round(stats.setup_ms, 1), "resumed": config.resumption_handle is not None},
        )
        return session

    # ------------------------------------------------------------------ state

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called or the server closed the socket."""
        return self._closed

    @property
    def resumption_handle(self) -> str | None:
        """The latest handle that came with ``resumable: true`` (or the one this session resumed with)."""
        return self._proto.resumption_handle

    # ------------------------------------------------------------------ sending

    def send_audio(self, pcm16k: bytes) -> None:
        """Queue caller audio (PCM16 mono at the session's input rate). Never blocks.

        When the queue is full the oldest chunk is dropped and counted; the first drop of a burst is
        logged, not every one. After the session closed, audio is silently discarded: the uplink may
        still be delivering a frame or two during teardown.
        """
        if self._closed:
            return
        if len(pcm16k) & 1:
            raise AudioError(f"PCM16 audio must have an even byte count, got {len(pcm16k)}")
        audio = self._audio
        if len(audio) == self._audio_max:
            self.stats.audio_dropped += 1
            self._burst_dropped += 1
            if not self._dropping:
                self._dropping = True
                self.stats.drop_bursts += 1
                self._log.warning(
                    "live audio queue full: dropping oldest audio", extra={"queue_max": self._audio_max}
                )
        elif not audio and self._idle and not self._control and self._write_now(pcm16k):
            return
        audio.append(pcm16k)
        self._wake.set()

    def _write_now(self, pcm16k: bytes) -> bool:
        """Send one audio chunk straight to the socket when that cannot block; False: queue it instead.

        Only while the writer is idle (nothing queued, so order is kept) and the socket is open and not
        paused: then ``ws.send`` would not suspend either, and its effect is exactly one frame written
        (:class:`_TextFrames`). Skipping the writer task's wake-up and the ``send`` coroutine's context
        manager saves a task switch per 20 ms frame on the hot path (README, Performance). Anything unusual
        (closing, back-pressure, a fragmented send) goes through the writer task as before, and so does
        a burst (chunks less than 5 ms apart), so a backlog is still coalesced and drops the oldest.
        """
        now = time.monotonic()
        if now < self._next_direct:
            return False
        if self._proto.state is not LiveState.READY or not self._writable():
            return False
        text = self._proto.audio(pcm16k, self._rate)
        self._ws.transport.write(_FRAMES.text(text.encode()))
        self._next_direct = now + 0.005
        stats = self.stats
        stats.audio_sent += 1
        stats.audio_bytes_sent += len(pcm16k)
        stats.messages_sent += 1
        stats.bytes_sent += len(text)
        return True

    def _writable(self) -> bool:
        """True when a data frame can be written now without waiting: open, not paused, not mid-message."""
        ws = self._ws
        return (
            ws.protocol.state is WsState.OPEN
            and not ws.paused
            and ws.send_in_progress is None
            and not ws.transport.is_closing()
        )

    @property
    def audio_queued(self) -> int:
        """Caller audio chunks queued and not yet written (metrics read it at scrape time)."""
        return len(self._audio)

    def take_unsent_audio(self) -> list[bytes]:
        """Remove and return caller audio queued but not yet written, oldest first.

        For a caller switching connections (``goAway``, a drop): these chunks never reached the
        server, so they belong on the replacement connection rather than being lost.
        """
        chunks = list(self._audio)
        self._audio.clear()
        return chunks

    def _send_control(self, text: str) -> None:
        self._control.append(text)
        self._wake.set()

    def _check_open(self) -> None:
        if self._closed:
            raise self._error if self._error is not None else LiveSessionError("Live session is closed")

    def send_text(self, text: str) -> None:
        """Send ``realtimeInput.text`` (treated like speech). Queued ahead of audio, never dropped."""
        self._check_open()
        self._send_control(self._proto.text(text))

    def send_client_content(self, turns: Sequence[tuple[str, str]], turn_complete: bool = True) -> None:
        """Append ``(role, text)`` turns to the conversation; ``turn_complete`` makes the model answer."""
        self._check_open()
        self._send_control(self._proto.client_content(turns, turn_complete))

    def send_tool_response(self, responses: Sequence[FunctionResponse]) -> None:
        """Answer tool calls (ids echoed). Raises ToolError if a response is not JSON-serialisable."""
        self._check_open()
        self._send_control(self._proto.tool_response(responses))

    def send_audio_stream_end(self) -> None:
        """Tell the server the caller's audio paused, so it flushes what it has."""
        self._check_open()
        self._send_control(self._proto.audio_stream_end())

    def send_activity_start(self) -> None:
        """``activityStart`` (manual activity detection): the caller's speech starts with the next audio."""
        self._check_open()
        self._send_in_order(self._proto.activity_start())

    def send_activity_end(self) -> None:
        """``activityEnd``: the caller's turn is over after the audio already sent; the model answers."""
        self._check_open()
        self._send_in_order(self._proto.activity_end())

    def send_audio_backlog(self, chunks: Iterable[bytes]) -> None:
        """Caller audio held while no connection carried the call (a slow setup, a reconnect), oldest
        first, ahead of any newer audio.

        Unlike :meth:`send_audio` nothing is dropped: what the caller said while Gemini was being
        reached is what the model must hear, and the hold that collected it is bounded already
        (``ResiliencePolicy.hold_max_chunks``). It goes out as ≤100 ms messages, before new audio.
        """
        self._check_open()
        audio, control, proto, stats, rate = self._audio, self._control, self._proto, self.stats, self._rate
        limit = self._coalesce_bytes
        parts: list[bytes] = []
        size = 0

        def flush() -> None:
            nonlocal size
            if parts:
                pcm = b"".join(parts)
                control.append(proto.audio(pcm, rate))
                stats.audio_sent += 1
                stats.audio_bytes_sent += len(pcm)
                parts.clear()
                size = 0

        for chunk in itertools.chain(list(audio), chunks):
            if len(chunk) & 1:
                raise AudioError(f"PCM16 audio must have an even byte count, got {len(chunk)}")
            if size + len(chunk) > limit:
                flush()
            parts.append(chunk)
            size += len(chunk)
        flush()
        audio.clear()
        self._wake.set()

    def _send_in_order(self, text: str) -> None:
        """Queue a marker that must keep its place in the audio stream.

        Control messages jump ahead of queued audio; an ``activityEnd`` that overtook the end of the
        speech would cut it off. So audio still queued (a network stall) moves to the control queue
        first, never dropped, and the marker follows it.
        """
        audio, control, proto, stats, rate = self._audio, self._control, self._proto, self.stats, self._rate
        while audio:
            pcm = audio.popleft()
            control.append(proto.audio(pcm, rate))
            stats.audio_sent += 1
            stats.audio_bytes_sent += len(pcm)
        self._send_control(text)

    # ------------------------------------------------------------------ receiving

    def events(self) -> AsyncIterator[ServerEvent]:
        """Server events in order, for a single consumer at a time.

        Ends normally after our own :meth:`close`. Raises :class:`LiveSessionClosed` (with ``code``,
        ``reason``, ``retryable``) after any close the server made, a clean 1000 included (retryable),
        1006 for a dropped connection and 1002 for a message we could not parse. The
        iterator can be dropped and re-created (no generator to finalise); two tasks reading at once
        get :class:`LiveSessionError`.
        """
        return _EventStream(self)

    # ------------------------------------------------------------------ closing

    async def close(self) -> None:
        """Close with 1000 and stop both tasks. Idempotent; safe to call from any task."""
        if self._closing:
            await self._done.wait()
            return
        self._closing = True
        self._closed = True
        try:
            self._writer.cancel()
            with contextlib.suppress(Exception):
                await self._ws.close(1000)
            # The reader sees the close and ends; do not wait for a stuck peer beyond close_timeout.
            if not self._reader.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._reader), timeout=1.0)
            self._reader.cancel()
            await asyncio.gather(self._reader, self._writer, return_exceptions=True)
            if self._proto.state is not LiveState.CLOSED:
                self._proto.closed(1000, "")
                self.close_code = 1000
            self._events.put_nowait(_END)
            self._log_end()
        finally:
            self._done.set()

    def _log_end(self) -> None:
        if self._end_logged:
            return
        self._end_logged = True
        s = self.stats
        self._log.info(
            "live session closed",
            extra={
                "code": self.close_code,
                "reason": self.close_reason,
                "audio_sent": s.audio_sent,
                "audio_dropped": s.audio_dropped,
                "messages_sent": s.messages_sent,
                "messages_received": s.messages_received,
            },
        )

    # ------------------------------------------------------------------ tasks

    def _take(self, data: bytes) -> bool:
        """One whole server message, from the socket's read callback (:class:`_LiveConnection`): its
        events go to the consumer at once. False leaves it to :meth:`_read_loop`, which then ends the
        session as it does for any message it cannot take (a malformed one: 1002)."""
        if self._closing:
            return False
        try:
            events = self._proto.receive(data)
        except Exception:
            # Taken no more: this message and every later one go to the reader, in order, and the
            # reader meets the same failure and reports it (logged once there, with the call's ids).
            self._ws.take = None  # type: ignore[attr-defined]  # only a _LiveConnection has take
            return False
        stats = self.stats
        stats.messages_received += 1
        stats.bytes_received += len(data)
        direct, queue = self.direct, self._events
        if direct is not None and self._consuming:
            for event in events:  # in order: once one is queued, the rest follow it (qsize)
                if queue.qsize() or not direct(event):
                    self._queue_events((event,))
        else:
            self._queue_events(events)
        return True

    def _queue_events(self, events: Iterable[ServerEvent]) -> None:
        put = self._events.put_nowait
        for event in events:
            if type(event) is GoAway:
                self._log.info("live goAway", extra={"time_left_s": event.time_left_s})
            put(event)

    async def _read_loop(self) -> None:
        """Messages the read callback left (see :meth:`_take`), and how the socket closed."""
        ws, proto, stats, put = self._ws, self._proto, self.stats, self._events.put_nowait
        try:
            while True:
                data = await ws.recv()
                stats.messages_received += 1
                stats.bytes_received += len(data)
                self._queue_events(proto.receive(data))
        except ConnectionClosed as exc:
            if self._closing:
                return
            code, reason = _close_info(exc)
            self.close_code, self.close_reason = (1006 if code is None else code), reason
            # Every close we did not ask for is an error, a clean 1000 included (retryable: the call
            # resumes or falls back); only our own close() ends events() without one.
            self._error = proto.closed(code, reason)
        except LiveProtocolError as exc:
            proto.closed(1002, "")
            self.close_code, self.close_reason = 1002, "protocol error"
            self._error = LiveSessionClosed(1002, f"protocol error: {exc}", retryable=True)
            self._error.__cause__ = exc
            self._log.warning("live protocol error; closing", extra={"error": str(exc)})
            with contextlib.suppress(Exception):
                await ws.close(1002, "protocol error")
        except Exception as exc:  # a reader that dies silently would hang the call; report it
            proto.closed(None, "")
            self._error = LiveSessionClosed(None, f"reader failed: {type(exc).__name__}", retryable=True)
            self._error.__cause__ = exc
            self._log.exception("live reader failed")
        if not self._closing:
            self._closed = True
            self._writer.cancel()
            put(_END)
            self._log_end()

    async def _write_loop(self) -> None:
        ws, proto, stats = self._ws, self._proto, self.stats
        control, audio, wake = self._control, self._audio, self._wake
        rate, coalesce = self._rate, self._coalesce_bytes
        try:
            while True:
                if control:
                    text = control.popleft()
                elif audio:
                    pcm = audio.popleft()
                    if audio and len(pcm) + len(audio[0]) <= coalesce:
                        parts = [pcm]
                        size = len(pcm)
                        while audio and size + len(audio[0]) <= coalesce:
                            nxt = audio.popleft()
                            parts.append(nxt)
                            size += len(nxt)
                        pcm = b"".join(parts)
                    text = proto.audio(pcm, rate)
                    stats.audio_sent += 1
                    stats.audio_bytes_sent += len(pcm)
                    if not audio and self._dropping:
                        self._log.info("live audio queue drained", extra={"dropped": self._burst_dropped})
                        self._dropping = False
                        self._burst_dropped = 0
                else:
                    wake.clear()
                    self._idle = True
                    try:
                        await wake.wait()
                    finally:
                        self._idle = False
                    continue
                if self._writable():
                    ws.transport.write(_FRAMES.text(text.encode()))
                else:
                    await ws.send(text)  # back-pressure or closing: websockets waits or raises
                stats.messages_sent += 1
                stats.bytes_sent += len(text)
        except (ConnectionClosed, LiveSessionError):
            return  # the socket or the protocol closed under us; the reader reports why


class _EventStream:
    """The iterator behind :meth:`LiveSession.events`: a plain object, cheap per event."""

    __slots__ = ("_session",)

    def __init__(self, session: LiveSession) -> None:
        self._session = session

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> ServerEvent:
        session = self._session
        if session._consuming:
            raise LiveSessionError("LiveSession.events() is already being read by another task")
        session._consuming = True
        try:
            event = await session._events.get()
        finally:
            session._consuming = False
        if isinstance(event, _End):
            session._events.put_nowait(event)  # every later read ends at once too
            if session._error is not None:
                raise session._error
            raise StopAsyncIteration
        return event


def _close_info(exc: ConnectionClosed) -> tuple[int | None, str]:
    """The server's close code and reason, or ``(None, "")`` if the connection just dropped."""
    if exc.rcvd is None:
        return None, ""
    return exc.rcvd.code, exc.rcvd.reason


async def _abandon(ws: ClientConnection, code: int = 1000) -> None:
    """Close a socket we give up on during setup, without waiting long for a peer that stopped answering."""
    try:
        async with asyncio.timeout(0.5):
            await ws.close(code)
    except Exception:
        pass
    finally:
        ws.transport.abort()  # no-op once the close completed; otherwise stop waiting for the peer
