"""One media-stream handler for every phone provider: authenticate the stream, admit the call, bridge it.

Each provider supplies a :class:`StreamRoute`: its path, how its upgrade is authenticated, its codec
(:class:`~gateway.telephony.provider.MediaCodec`, sans-I/O) and where the gateway's stream token travels.
Everything else is the same for all of them and lives here, once.

Security order on the media socket: the provider's upgrade check (a signature, where it has one), then
``start`` and the stream token the webhook issued (signed, bound to this call, short-lived,
single-use), and only then the dialplan and Gemini. A stream no webhook preceded (Exotel's static URL)
has no token: its upgrade's credential vouches for it and ``start`` says who the call is
(``StreamRoute.start_claims``), still one stream per call. A socket that fails any check is closed
with the codec's close code (1008 by default) and costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from aiohttp import WSMsgType, web

from gateway.bridge.call import CallBridge, CallInfo, DirectSend
from gateway.bridge.resilience import live_session_for_call, transcript_lines
from gateway.bridge.setup import session_config
from gateway.dialplan.model import Dialplan
from gateway.errors import AuthError, GatewayError, LiveSessionError, TelephonyProtocolError, ToolError
from gateway.gemini.messages import SessionConfig
from gateway.gemini.session import LiveSession
from gateway.log import CallLogger, bind_call_context, reset_call_context
from gateway.security.inputs import webhook_identity_problem
from gateway.security.tokens import StreamClaims
from gateway.server.access import source_address
from gateway.server.limits import DurationCap, MessageRate
from gateway.server.media_in import BinaryHandler, DirectHandler, MediaSocket, direct_failure
from gateway.server.media_out import MediaSender
from gateway.server.preconnect import await_session
from gateway.server.state import (
    CALLS,
    DIALPLANS,
    LIMITS,
    LIVE_ENDPOINT,
    MEDIA_SOCKETS,
    OBSERVABILITY,
    PRECONNECT,
    SETTINGS,
    STREAM_TOKENS,
)
from gateway.server.tools import declarations as tool_declarations, router_factory as tool_router
from gateway.telephony.events import CallerAudio, CallStarted, Connected, TelephonyEvent
from gateway.telephony.provider import BinaryMediaCodec, CallCommands, Frame, MediaCodec
from gateway.tools.call_rest import CallControlRest

__all__ = [
    "START_TIMEOUT_S",
    "Accepted",
    "CallLink",
    "MediaTransport",
    "Refused",
    "StreamRoute",
    "accept_call",
    "admit_and_run",
    "await_start",
    "close_reason",
    "live_config",
    "media_stream_handler",
    "public_base",
    "ws_url",
]

#: How long a media socket may take to show its stream token. Providers send their start message as
#: soon as the upgrade is answered, one round trip; more than this is not the provider.
START_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class StreamRoute:
    """What differs between providers' media streams; the handler does the rest."""

    #: ``twilio``, ``telnyx``…: names the handler's logger and metrics labels.
    provider: str
    #: The route the provider's media socket connects to.
    path: str
    #: A fresh codec per socket.
    codec: Callable[[], MediaCodec]
    #: The provider's own authentication of the upgrade (a signature); None: the stream token alone.
    #: Called before the WebSocket exists, so a refused upgrade costs nothing.
    upgrade_refusal: Callable[[web.Request], str | None]
    #: Where the gateway's stream token arrived: a ``<Parameter>`` in ``start``, or the URL's query.
    token: Callable[[CallStarted, web.Request], str]
    log: CallLogger
    #: The provider's REST client for hang-up and transfer, when its credentials are set.
    rest: Callable[[web.Application], CallControlRest | None] = lambda app: None
    #: For a stream with no per-call token because no webhook came first to issue one (Exotel's static
    #: stream URL), which ``upgrade_refusal`` authenticated by the upgrade alone (a configured secret):
    #: the call's identity, read from ``start``. None (the default; a stream that brought a token): the
    #: token decides. Raises TelephonyProtocolError or AuthError for an identity it cannot take.
    start_claims: Callable[[CallStarted, web.Request], StreamClaims | None] = lambda start, request: None
    #: The call's dialplan when the stream says which (an outbound call's signed plan, with its parameters
    #: rendered: gateway/server/outbound_state.py); None: the dialled number picks it, as for any call.
    #: Raises AuthError for a plan token it cannot take.
    plan: Callable[[CallStarted, web.Request], Dialplan | None] = lambda start, request: None
    #: WebSocket subprotocols the route answers with when the client offers one (Asterisk: ``media``;
    #: jambonz: ``audio.jambonz.org``); empty: none.
    protocols: tuple[str, ...] = ()


def public_base(request: web.Request) -> str:
    """The scheme://host the provider used to reach us: configured, else as the request (or proxy) says."""
    configured = request.app[SETTINGS].public_url
    if configured:
        return configured
    proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
    return f"{proto}://{host}"


def ws_url(http_url: str) -> str:
    parts = urlsplit(http_url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


def live_config(app: web.Application, plan: Dialplan) -> SessionConfig:
    """The call's Live setup: the dialplan's, plus the deployment's model default and uplink rate."""
    settings = app[SETTINGS]
    return session_config(
        plan,
        default_model=settings.gemini_model,
        tools=tool_declarations(app, plan),
        input_rate=settings.uplink_rate,
    )


@dataclass(frozen=True, slots=True)
class Accepted:
    """A call the gateway takes: the stream token to hand the provider, and the dialplan chosen."""

    token: str
    plan: Dialplan


@dataclass(frozen=True, slots=True)
class Refused:
    """A call over capacity: what the caller should hear before the provider hangs up."""

    message: str


async def accept_call(
    request: web.Request,
    log: CallLogger,
    *,
    call_sid: str,
    to: str,
    from_: str,
    may_preconnect: bool,
    plan: Dialplan | None = None,
) -> Accepted | Refused:
    """The provider-neutral half of a voice webhook (or answer request), once the provider's own
    signature check has passed: identity checked, dialplan chosen, a place reserved, a stream token
    issued, and Gemini preconnected when allowed.

    ``may_preconnect``: the request was authenticated (or explicit insecure development mode). Only the
    first webhook of a call preconnects: a replayed signed webhook must open nothing. ``plan``: the
    dialplan when the caller already knows it (an outbound call's answer); else the dialled number's.

    Raises:
        web.HTTPBadRequest: a missing or malformed call id or number.
    """
    if not call_sid or not to:
        raise web.HTTPBadRequest(text="the call id and the dialled number are required")
    if (problem := webhook_identity_problem(call_sid, to, from_)) is not None:
        raise web.HTTPBadRequest(text=problem)
    app, settings = request.app, request.app[SETTINGS]
    clog = log.bind(call_sid=call_sid)
    plan = plan or app[DIALPLANS].current.match(to, from_)
    admission = app[LIMITS].admission
    if not await admission.reserve_call(call_sid, plan.name):  # across replicas: a Redis round trip
        _refused(app, clog, plan.name)
        return Refused(plan.fallback.message)
    tokens, now = app[STREAM_TOKENS], time.time()
    token = tokens.issue(call_sid=call_sid, to=to, from_=from_, now=now)
    if settings.preconnect and may_preconnect and await tokens.first_webhook(call_sid, now):
        endpoint = app[LIVE_ENDPOINT]
        config = live_config(app, plan)
        # One attempt within the setup timeout, as every later attempt: a hung setup then leaves the
        # call's give-up budget for a retry (bridge/resilience.py) instead of spending all of it.
        setup_timeout_s = settings.live_setup_timeout_s
        app[PRECONNECT].start(
            call_sid,
            plan,
            lambda: LiveSession.connect(endpoint, config, logger=clog, setup_timeout_s=setup_timeout_s),
        )
    return Accepted(token, plan)


def _refused(app: web.Application, log: CallLogger, plan: str) -> None:
    """Log and count a call that admission turned away: over a limit, draining, or overloaded."""
    reason = app[LIMITS].admission.refusal(plan) or "over capacity"
    cause = "capacity"
    if reason.startswith("draining"):
        cause = "draining"
    elif reason.startswith("overloaded"):
        cause = "overload"
    app[OBSERVABILITY].metrics.calls_refused.labels(cause).inc()
    log.warning("call refused", extra={"reason": reason, "cause": cause})


def media_stream_handler(route: StreamRoute) -> Callable[[web.Request], Awaitable[web.WebSocketResponse]]:
    """The aiohttp handler of ``route``'s media socket."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        return await _media_stream(route, request)

    return handler


async def _media_stream(route: StreamRoute, request: web.Request) -> web.WebSocketResponse:
    """One call's media stream, for any provider."""
    app = request.app
    limits = app[LIMITS]
    # With the provider's credentials configured, only the provider may open a media socket at all: an
    # unsigned upgrade costs no WebSocket and no place among the pending sockets.
    refusal = route.upgrade_refusal(request)
    if refusal is not None:
        route.log.warning("media upgrade rejected", extra={"reason": refusal, "peer": request.remote})
        raise web.HTTPForbidden(text=refusal)
    # Sockets that have not shown a token yet are few (globally and per source) and short-lived; a new
    # one evicts the oldest waiting one rather than being refused (gateway/server/limits.py, Gate).
    ticket = limits.pending.enter(source_address(request))
    clog = route.log.bind(peer=request.remote)
    try:
        ws = MediaSocket(
            max_msg_size=limits.config.max_message_bytes,
            autoping=True,
            compress=False,
            protocols=route.protocols,
        )
        await ws.prepare(request)
        app[MEDIA_SOCKETS].add(ws)
        codec = route.codec()
        rate = MessageRate(limits.config.max_messages_per_s)
        events = _read_events(ws, codec, rate)
        try:
            # Showing a valid token, not just sending start, must happen in time (or before eviction).
            async with asyncio.timeout(START_TIMEOUT_S) as deadline:
                ticket.bind(lambda: deadline.reschedule(-1.0))
                try:
                    start = await await_start(events)
                    clog = clog.bind(call_sid=start.call_sid, stream_sid=start.stream_sid)
                    claims = await _claims(route, request, start)
                    chosen = route.plan(start, request)
                finally:
                    ticket.bind(None)  # the deadline ends with this block; a later eviction must not touch it
        except (TelephonyProtocolError, AuthError, TimeoutError) as exc:
            kind, code = type(exc).__name__, getattr(exc, "close_code", 1008)
            reason = str(exc)
            if ticket.evicted:
                kind, code, reason = "Evicted", 1013, "evicted: too many media streams waiting for start"
            elif isinstance(exc, TimeoutError):
                reason = "no start within timeout"
            clog.warning("media stream rejected", extra={"reason": reason})
            app[OBSERVABILITY].metrics.rejected_streams.labels(kind).inc()
            await ws.close(code=code, message=close_reason(reason))
            return ws
    finally:
        ticket.leave()

    sender = MediaSender(request, ws)
    link = CallLink(ws, sender, codec, rate, events, route.rest(app), direct=sender)
    await admit_and_run(app, link, start, claims, clog, chosen=chosen)
    return ws


class MediaTransport(Protocol):
    """What a call needs of its connection to the provider besides sending: the WebSocket
    (:class:`MediaSocket`) or AudioSocket's TCP stream (gateway/server/audiosocket.py)."""

    @property
    def closed(self) -> bool: ...

    def handle_directly(self, handler: DirectHandler | None, binary: BinaryHandler | None = None) -> bool:
        """Caller audio straight from the parser to the bridge (gateway/server/media_in.py)."""
        ...

    async def close(self, *, code: int = 1000, message: bytes = b"") -> object: ...


@dataclass(frozen=True, slots=True)
class CallLink:
    """One started stream, however it arrived: its connection, how frames go out (one write per
    wake-up), its codec, the flood check, the events still to read, and the provider's REST client."""

    transport: MediaTransport
    send: Callable[[Sequence[Frame]], Awaitable[None]]
    codec: MediaCodec
    rate: MessageRate
    events: AsyncIterator[TelephonyEvent]
    rest: CallControlRest | None = None
    #: The same sending, synchronously when the connection takes a write now: lets a reply's first audio
    #: leave from the Live socket's read callback (``CallBridge._audio_now``). None: always ``send``.
    direct: DirectSend | None = None


async def admit_and_run(
    app: web.Application,
    link: CallLink,
    start: CallStarted,
    claims: StreamClaims,
    clog: CallLogger,
    *,
    chosen: Dialplan | None = None,
) -> None:
    """A started, authenticated stream: its dialplan, a place under the limits (the same admission the
    graceful drain waits on), then the call until it ends. Refused: closed with 1013, nothing opened."""
    claimed = app[PRECONNECT].claim(start.call_sid)
    plan = claimed[1] if claimed else chosen or app[DIALPLANS].current.match(claims.to, claims.from_)
    slot = await app[LIMITS].admission.admit_call(start.call_sid, plan.name)
    if slot is None:
        _refused(app, clog, plan.name)
        if claimed:
            await _abandon(claimed[0])
        await link.transport.close(code=1013, message=b"try again later")
        return
    try:
        await _run_call(app, link, start, claims, claimed, plan, clog)
    finally:
        slot.release()


async def _claims(route: StreamRoute, request: web.Request, start: CallStarted) -> StreamClaims:
    """Who the call is: the stream token's claims, or ``start``'s where the upgrade vouched for the stream
    (then still one stream per call, as a token would allow)."""
    tokens, now = request.app[STREAM_TOKENS], time.time()
    claims = route.start_claims(start, request)
    if claims is None:
        return await tokens.verify(route.token(start, request), call_sid=start.call_sid, now=now)
    await tokens.claim_stream(start.call_sid, now)
    return claims


def _binary_codec(codec: MediaCodec) -> BinaryMediaCodec | None:
    """``codec`` when its caller audio comes in binary frames (``Capabilities.binary_audio``), else None.

    Raises:
        TypeError: a codec that declares binary audio without ``receive_binary`` (a programming error).
    """
    if not codec.capabilities.binary_audio:
        return None
    if not isinstance(codec, BinaryMediaCodec):
        raise TypeError(f"{type(codec).__name__} declares binary_audio but has no receive_binary")
    return codec


async def _read_events(
    ws: web.WebSocketResponse, codec: MediaCodec, rate: MessageRate
) -> AsyncIterator[TelephonyEvent]:
    """The socket's reader: the provider's frames → events, except the caller audio that
    :func:`_direct_uplink` takes once the call runs. Text frames go to ``receive_text``; binary frames
    to ``receive_binary`` where the codec has binary audio, else they are a protocol error (1003)."""
    tick = rate.tick
    binary = _binary_codec(codec)
    async for msg in ws:
        tick()  # flood check: one increment and compare per message
        if msg.type is WSMsgType.TEXT:
            event = codec.receive_text(msg.data)
            if event is not None:  # None: a frame that needs no action (an acknowledgement)
                yield event
        elif msg.type is WSMsgType.BINARY:
            if binary is None:
                raise TelephonyProtocolError("binary frame on a text media stream", close_code=1003)
            audio = binary.receive_binary(msg.data)
            if audio is not None:
                yield audio
        elif msg.type is WSMsgType.ERROR:
            if (failure := direct_failure(msg)) is not None:
                raise failure  # from the direct uplink (see _direct_uplink), in its place in the stream
            raise TelephonyProtocolError(f"media socket error: {ws.exception()}", close_code=1009)


def _direct_uplink(codec: MediaCodec, bridge: CallBridge, rate: MessageRate) -> DirectHandler:
    """Caller audio straight from the socket's parser into the bridge (gateway/server/media_in.py);
    every other message goes on to :func:`_read_events`. Errors raised here end the call there."""
    receive_media, caller_audio, tick = codec.receive_media, bridge.caller_audio, rate.tick

    def handle(text: str) -> bool:
        event = receive_media(text)
        if event is None:
            return False
        tick()  # flood check, as _read_events does for the messages it reads
        caller_audio(event)
        return True

    return handle


def _direct_binary_uplink(codec: MediaCodec, bridge: CallBridge, rate: MessageRate) -> BinaryHandler | None:
    """:func:`_direct_uplink` for the caller audio of a binary-frame provider (None: a text-only one)."""
    binary = _binary_codec(codec)
    if binary is None:
        return None
    receive_binary, caller_audio, tick = binary.receive_binary, bridge.caller_audio, rate.tick

    def handle(data: bytes) -> bool:
        event = receive_binary(data)
        if event is None:
            return False
        tick()
        caller_audio(event)
        return True

    return handle


async def await_start(events: AsyncIterator[TelephonyEvent]) -> CallStarted:
    """The stream's ``start`` (after any ``connected``); anything else first is a protocol error."""
    async for event in events:
        if isinstance(event, CallStarted):
            return event
        if not isinstance(event, Connected):
            raise TelephonyProtocolError(f"{type(event).__name__} before start")
    raise TelephonyProtocolError("stream closed before start")


def close_reason(text: str) -> bytes:
    """A close reason that fits the 123-byte limit of a close frame, without splitting a character."""
    return text.encode()[:120].decode("utf-8", "ignore").encode()


async def _abandon(task: asyncio.Task[LiveSession]) -> None:
    """Drop a preconnected session the call may not use after all."""
    task.cancel()
    try:
        session = await await_session(task)
    except LiveSessionError:
        return
    await session.close()


async def _run_call(
    app: web.Application,
    link: CallLink,
    start: CallStarted,
    claims: StreamClaims,
    claimed: tuple[asyncio.Task[LiveSession], Dialplan] | None,
    plan: Dialplan,
    clog: CallLogger,
) -> None:
    """An authenticated, admitted stream: open (or take over) its Gemini session and bridge the call."""
    transport, codec, rate = link.transport, link.codec, link.rate
    settings = app[SETTINGS]
    clog = clog.bind(dialplan=plan.name, dialplan_version=plan.version)
    # Connects (or takes over the preconnect) in the bridge's downlink, survives goAway and drops, and
    # raises there when Gemini stays unreachable: the bridge then plays the fallback (bridge/guard.py).
    session = live_session_for_call(
        app[LIVE_ENDPOINT],
        live_config(app, plan),
        log=clog,
        first=claimed[0] if claimed else None,
        setup_timeout_s=settings.live_setup_timeout_s,
        give_up_after_s=settings.live_give_up_s,
    )

    clog.info("call started", extra={"from": claims.from_, "to": claims.to, "preconnected": bool(claimed)})
    # Every log line of the call's tasks carries its ids, whichever logger writes it.
    log_context = bind_call_context(call_sid=start.call_sid, stream_sid=start.stream_sid, dialplan=plan.name)
    bridge = CallBridge(
        info=CallInfo(start.call_sid, start.stream_sid, claims.from_, claims.to),
        dialplan=plan,
        session=session,
        encoder=codec,
        send=link.send,
        log=clog,
        observer=app[OBSERVABILITY].observer(
            call_id=start.call_sid,
            stream_id=start.stream_sid,
            from_number=claims.from_,
            to_number=claims.to,
            plan=plan,
            audio_codec=codec.audio.codec,
            audio_rate=codec.audio.rate,
        ),
        tools=tool_router(app, plan, link.rest),
        uplink_rate=settings.uplink_rate,
        media_timeout_s=settings.media_timeout_s,
        audio=codec.audio,
        capabilities=codec.capabilities,
        direct_send=link.direct,
    )
    session.bind_history(lambda: transcript_lines(bridge.transcript.as_list()))
    app[CALLS].started(bridge)
    close_code, close_message = 1000, b""

    def cap_reached() -> None:
        # Before the bridge is cancelled, so its "call ended" line already says why.
        if not bridge.result.ended_by:
            bridge.result.ended_by, bridge.result.reason = "gateway", "maximum call duration"

    cap = DurationCap(app[LIMITS].config.max_call_s, cap_reached)
    transport.handle_directly(_direct_uplink(codec, bridge, rate), _direct_binary_uplink(codec, bridge, rate))
    commands = codec if codec.capabilities.hangup == "command" and isinstance(codec, CallCommands) else None
    try:
        if start.audio:  # the stream's first audio was its start (AudioSocket): heard before any later frame
            bridge.caller_audio(CallerAudio(start.audio))
        if commands is not None and (answer := commands.answer_frame()) is not None:
            await link.send([answer])  # admitted: a PBX waiting for our answer connects the caller now
        async with cap:
            result = await bridge.run(link.events)
    except TimeoutError:
        if not cap.reached:
            raise
        clog.warning("call hit the hard duration cap", extra={"max_call_s": cap.max_s})
        close_message = b"maximum call duration"
        result = bridge.result
    except TelephonyProtocolError as exc:
        clog.warning("media stream ended: protocol error", extra={"reason": str(exc)})
        close_code, close_message = exc.close_code, close_reason(str(exc))
        result = bridge.result
    except GatewayError as exc:
        clog.exception("call failed")
        close_code, close_message = 1011, close_reason(str(exc))
        result = bridge.result
    finally:
        transport.handle_directly(None)
        app[CALLS].finished(bridge, bridge.result)
        reset_call_context(log_context)
    if commands is not None and not transport.closed and result.ended_by != "caller":
        # The stream's own hang-up (Asterisk's HANGUP, AudioSocket's 0x00) before the socket closes.
        with contextlib.suppress(ConnectionError):
            await link.send([commands.hangup_frame()])
    if (
        link.rest is not None
        and codec.capabilities.hangup == "rest"
        and result.ended_by != "caller"
        and not result.released
        and not transport.closed
    ):
        # Where a call outlives its stream (Telnyx Call Control keeps a call whose socket closed), the
        # gateway's end of the call is the provider's too: hung up by REST, then the socket is closed.
        try:
            await link.rest.hang_up(start.call_sid)
        except ToolError as exc:
            clog.warning("REST hang-up at the end of the call failed", extra={"error": str(exc)})
    if not transport.closed:
        await transport.close(code=close_code, message=close_message)
    clog.info("transcript", extra={"turns": result.transcript})
