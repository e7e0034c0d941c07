"""Asterisk AudioSocket: an opt-in TCP listener whose calls run exactly as the WebSocket providers' do.

Asterisk's ``AudioSocket(<uuid>,<host>:<port>)`` application (or ``Dial(AudioSocket/<host>:<port>/<uuid>)``)
connects to ``GATEWAY_AUDIOSOCKET_HOST:GATEWAY_AUDIOSOCKET_PORT`` (off unless the port is set) and
speaks the framing of gateway/telephony/audiosocket.py. The protocol has no authentication and carries
no dialled number, so:

* the listener binds loopback by default, and a peer outside ``GATEWAY_AUDIOSOCKET_ALLOW`` (loopback by
  default) is closed before a byte is read, and counted (``gateway_media_streams_rejected{reason=
  "NotAllowed"}``);
* the call's number is ``GATEWAY_AUDIOSOCKET_TO``, or the number of the longest UUID prefix in
  ``GATEWAY_AUDIOSOCKET_ROUTES`` (the dialplan picks the UUID, e.g. ``10000000-${UUID():9}``), and the
  UUID is served once (the replay guard's ``claim_stream``), as a PBX WebSocket's call id is.

Past that, a connection is a :class:`~gateway.server.media.MediaTransport` and the shared handler runs
the call: the same admission (so the graceful drain waits for these calls too), claims, Live session,
bridge, records and call registry (:func:`~gateway.server.media.admit_and_run`). The transport seam is
small: caller audio goes from ``data_received`` straight to the bridge as the WebSocket's parser hands
it (no task switch per frame), frames out are one ``transport.write`` per playout wake-up, and closing
is closing the TCP connection (after the 0x00 hang-up message when the gateway ends the call).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import cast

from aiohttp import web

from gateway.errors import AuthError, TelephonyProtocolError
from gateway.log import CallLogger, call_logger
from gateway.security.tokens import StreamClaims
from gateway.server.limits import MessageRate
from gateway.server.media import START_TIMEOUT_S, CallLink, admit_and_run, await_start
from gateway.server.media_in import BinaryHandler, DirectHandler
from gateway.server.state import LIMITS, OBSERVABILITY, SETTINGS, STREAM_TOKENS
from gateway.settings import Settings
from gateway.telephony.audiosocket import AudioSocketCodec, FrameReader
from gateway.telephony.events import TelephonyEvent
from gateway.telephony.provider import Frame

__all__ = ["AUDIOSOCKET", "AudioSocketListener", "audiosocket_listener", "dialled_number", "peer_allowed"]

log = call_logger("gateway.audiosocket")

#: Messages held for the reading task before the socket stops reading (the call's start, its DTMF…).
_INBOX_HIGH = 500
_INBOX_LOW = 100
#: On shutdown, how long the listener waits for its calls to end after closing their connections.
_CLOSE_WAIT_S = 5.0


def peer_allowed(host: str, networks: Sequence[str]) -> bool:
    """Whether ``host`` (a peer address) lies in one of ``networks`` (CIDR strings, as settings keep them)."""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack listener's view of an IPv4 peer
    return any(address in ipaddress.ip_network(net) for net in networks)


def dialled_number(settings: Settings, call_uuid: str) -> str:
    """The number an AudioSocket call counts as dialled: its UUID's longest configured prefix, else
    ``GATEWAY_AUDIOSOCKET_TO``."""
    lowered = call_uuid.lower()
    for prefix, number in settings.audiosocket_routes:  # longest first (settings sorts them)
        if lowered.startswith(prefix):
            return number
    return settings.audiosocket_to


class AudioSocketConnection(asyncio.Protocol):
    """One TCP connection from Asterisk: frames in (to the bridge directly, or to the reading task), frames
    out, and the :class:`~gateway.server.media.MediaTransport` the shared call handler drives."""

    def __init__(self, listener: AudioSocketListener) -> None:
        self._listener = listener
        self._transport: asyncio.Transport | None = None
        self._reader = FrameReader()
        self._inbox: deque[bytes] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._failure: Exception | None = None
        self._eof = False
        self._binary: BinaryHandler | None = None
        self._paused_reading = False
        self._drain: asyncio.Future[None] | None = None
        self.peer = ""

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though uvloop's are not asyncio.Transport subclasses (no isinstance check).
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not peer_allowed(self.peer, self._listener.settings.audiosocket_allow):
            self._listener.refuse(self)
            transport.abort()  # before anything is read: nothing reaches a parser, nothing is opened
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._listener.accept(self)

    def data_received(self, data: bytes) -> None:
        if self._failure is not None:
            return
        try:
            frames = self._reader.feed(data)
        except TelephonyProtocolError as exc:
            self._fail(exc)
            return
        binary, inbox = self._binary, self._inbox
        for frame in frames:
            if binary is not None and not inbox:
                try:
                    if binary(frame):
                        continue
                except Exception as exc:  # the reading task raises it, after what came before
                    self._fail(exc)
                    return
            inbox.append(frame)
        if inbox:
            if len(inbox) >= _INBOX_HIGH and not self._paused_reading and self._transport is not None:
                self._paused_reading = True
                self._transport.pause_reading()
            self._notify()

    def eof_received(self) -> bool:
        self._eof = True
        self._notify()
        return False  # close our end too: Asterisk has hung up

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._binary = None
        self._notify()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("AudioSocket connection lost"))
        self._listener.connections.discard(self)

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _fail(self, exc: Exception) -> None:
        self._failure, self._binary = exc, None
        self._notify()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    # --- reading -------------------------------------------------------------------------------

    async def frames(self) -> AsyncIterator[bytes]:
        """Whole messages the direct handler did not take, in order; raises what broke the stream."""
        inbox = self._inbox
        while True:
            while inbox:
                frame = inbox.popleft()
                if self._paused_reading and len(inbox) <= _INBOX_LOW and self._transport is not None:
                    self._paused_reading = False
                    self._transport.resume_reading()
                yield frame
            if self._failure is not None:
                raise self._failure
            if self._eof:
                if self._reader.pending:
                    raise TelephonyProtocolError("the connection closed in the middle of a message")
                return
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake

    # --- MediaTransport ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        transport = self._transport
        return transport is None or transport.is_closing()

    def handle_directly(self, handler: DirectHandler | None, binary: BinaryHandler | None = None) -> bool:
        """Audio messages to ``binary`` from now on (None: stop); AudioSocket has no text."""
        self._binary = binary if self._failure is None else None
        return True

    async def close(self, *, code: int = 1000, message: bytes = b"") -> None:
        """Close the connection (TCP has no close code: Asterisk sees the end of the stream)."""
        if self._transport is not None:
            self._transport.close()

    async def send(self, frames: Sequence[Frame]) -> None:
        """Write messages in order, in one ``write``; waits while the peer is not reading."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("AudioSocket connection closed")
        if self._drain is not None and not self._drain.done():
            await self._drain
        self.write(frames)

    # --- DirectSend (gateway/bridge/call.py): a reply's first audio, from the Live socket's callback ---

    def writable(self) -> bool:
        """True when :meth:`write` can take messages now: open, and the peer reading."""
        transport = self._transport
        return (
            transport is not None
            and not transport.is_closing()
            and (self._drain is None or self._drain.done())
        )

    def write(self, frames: Sequence[Frame]) -> None:
        """``frames`` in one ``transport.write``; only when :meth:`writable` (or :meth:`send` waited)."""
        transport = self._transport
        if transport is None:
            raise ConnectionResetError("AudioSocket connection closed")
        if len(frames) == 1 and isinstance(first := frames[0], bytes):
            transport.write(first)  # the paced stream's usual wake-up: one 20 ms frame
            return
        parts = [f for f in frames if isinstance(f, bytes)]
        if len(parts) != len(frames):
            raise TypeError("AudioSocket sends binary messages only")
        transport.write(b"".join(parts))


async def _read_events(
    conn: AudioSocketConnection, codec: AudioSocketCodec, rate: MessageRate
) -> AsyncIterator[TelephonyEvent]:
    """The connection's messages → events, except the caller audio the bridge takes directly."""
    tick = rate.tick
    async for frame in conn.frames():
        tick()
        event = codec.receive_frame(frame)
        if event is not None:
            yield event


class AudioSocketListener:
    """The listener's connections and what they share (settings, the app)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.settings: Settings = app[SETTINGS]
        self.connections: set[AudioSocketConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.refused = 0

    def refuse(self, conn: AudioSocketConnection) -> None:
        self.refused += 1
        self.app[OBSERVABILITY].metrics.rejected_streams.labels("NotAllowed").inc()
        log.warning(
            "AudioSocket connection refused: source not in GATEWAY_AUDIOSOCKET_ALLOW",
            extra={"peer": conn.peer},
        )

    def accept(self, conn: AudioSocketConnection) -> None:
        self.connections.add(conn)
        task = asyncio.create_task(self._serve(conn), name=f"audiosocket:{conn.peer}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(self, conn: AudioSocketConnection) -> None:
        clog = log.bind(peer=conn.peer)
        try:
            await self._call(conn, clog)
        except Exception:  # no silent failure: once, with the call's ids
            clog.exception("AudioSocket connection failed")
        finally:
            await conn.close()

    async def _call(self, conn: AudioSocketConnection, clog: CallLogger) -> None:
        app, limits = self.app, self.app[LIMITS]
        codec = AudioSocketCodec()
        rate = MessageRate(limits.config.max_messages_per_s)
        events = _read_events(conn, codec, rate)
        # Until the UUID and the first audio came, a connection waits among the unauthenticated sockets.
        ticket = limits.pending.enter(conn.peer)
        try:
            async with asyncio.timeout(START_TIMEOUT_S) as deadline:
                ticket.bind(lambda: deadline.reschedule(-1.0))
                try:
                    start = await await_start(events)
                    clog = clog.bind(call_sid=start.call_sid, stream_sid=start.stream_sid)
                    to = dialled_number(self.settings, start.call_sid)
                    await app[STREAM_TOKENS].claim_stream(start.call_sid, time.time())
                finally:
                    ticket.bind(None)
        except (TelephonyProtocolError, AuthError, TimeoutError) as exc:
            kind, reason = type(exc).__name__, str(exc)
            if ticket.evicted:
                kind, reason = "Evicted", "evicted: too many media streams waiting for start"
            elif isinstance(exc, TimeoutError):
                reason = "no UUID and audio within timeout"
            clog.warning("AudioSocket stream rejected", extra={"reason": reason})
            app[OBSERVABILITY].metrics.rejected_streams.labels(kind).inc()
            return
        finally:
            ticket.leave()
        claims = StreamClaims(call_sid=start.call_sid, to=to, from_="", expires_at=0.0, nonce="")
        link = CallLink(conn, conn.send, codec, rate, events, direct=conn)
        await admit_and_run(app, link, start, claims, clog)

    async def close(self) -> None:
        """Shutdown: end every call (its connection closes, the bridge tears down), then wait for them."""
        for conn in list(self.connections):
            await conn.close()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=_CLOSE_WAIT_S)


#: The running listener (present while GATEWAY_AUDIOSOCKET_PORT is set and the app runs).
AUDIOSOCKET = web.AppKey("audiosocket", AudioSocketListener)


async def audiosocket_listener(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: listen while the app runs, when GATEWAY_AUDIOSOCKET_PORT is set."""
    settings = app[SETTINGS]
    if not settings.audiosocket_port:
        yield
        return
    listener = AudioSocketListener(app)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: AudioSocketConnection(listener), settings.audiosocket_host, settings.audiosocket_port
    )
    app[AUDIOSOCKET] = listener
    log.info(
        "AudioSocket listening",
        extra={
            "host": settings.audiosocket_host,
            "port": settings.audiosocket_port,
            "allow": ",".join(settings.audiosocket_allow),
        },
    )
    try:
        yield
    finally:
        server.close()
        await listener.close()
        await server.wait_closed()
