"""Twilio routes: the voice webhook (TwiML) and the media-stream WebSocket.

Security order on the media socket: read ``connected`` and ``start``, verify the stream token the
webhook issued (signed, bound to this call SID, short-lived, single-use), and only then look up the
dialplan and touch Gemini. A socket that fails any check is closed with 1008 and costs nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

from aiohttp import WSMsgType, web
from multidict import MultiDict

from gateway.bridge.call import CallBridge, CallInfo
from gateway.bridge.resilience import live_session_for_call, transcript_lines
from gateway.bridge.setup import session_config
from gateway.dialplan.model import Dialplan
from gateway.errors import AuthError, GatewayError, LiveSessionError, TelephonyProtocolError
from gateway.gemini.messages import SessionConfig
from gateway.gemini.session import LiveSession
from gateway.log import CallLogger, bind_call_context, call_logger, reset_call_context
from gateway.security.access import local_operator, source_address
from gateway.security.inputs import webhook_identity_problem
from gateway.security.tokens import TOKEN_PARAMETER, StreamClaims
from gateway.server.limits import DurationCap, MessageRate
from gateway.server.media_in import DirectHandler, MediaSocket, direct_failure
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
from gateway.telephony.events import CallStarted, Connected, TelephonyEvent
from gateway.telephony.signature import verify_twilio_signature
from gateway.telephony.twilio import TwilioCodec
from gateway.telephony.twiml import connect_stream_twiml, say_hangup_twiml

VOICE_PATH = "/twilio/voice"
MEDIA_PATH = "/twilio/media"
#: A 20 ms media message is ~300 bytes; anything near this limit is not Twilio (see server/limits.py).
MAX_MEDIA_MESSAGE = 64 * 1024
UNSIGNED_REFUSAL = (
    "unsigned webhook refused: set TWILIO_AUTH_TOKEN; for local experiments listen on 127.0.0.1 "
    "(--host 127.0.0.1, as `make run` does) and call from this machine, or set GATEWAY_ALLOW_UNSIGNED=1"
)
#: How long a media socket may take to show its stream token. Twilio sends ``connected`` and ``start``
#: as soon as the upgrade is answered, one round trip; more than this is not Twilio.
START_TIMEOUT_S = 3.0

log = call_logger("gateway.twilio")


def _public_base(request: web.Request) -> str:
    """The scheme://host Twilio used to reach us: configured, else as the request (or proxy) says."""
    configured = request.app[SETTINGS].public_url
    if configured:
        return configured
    proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
    return f"{proto}://{host}"


def _ws_url(http_url: str) -> str:
    parts = urlsplit(http_url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


async def voice_webhook(request: web.Request) -> web.Response:
    """Answer Twilio's voice webhook with ``<Connect><Stream>`` and a stream token."""
    settings = request.app[SETTINGS]
    try:
        form = await request.post()
    except ValueError:  # includes UnicodeDecodeError: a body that is not a form
        raise web.HTTPBadRequest(text="the body is not a form") from None
    # Every value of repeated names, as Twilio signs them; the path and query exactly as sent
    # (raw_path: still URL-encoded), since that is the string Twilio signed.
    signed_params = MultiDict((k, str(v)) for k, v in form.items())
    params = {k: str(v) for k, v in form.items()}
    verified = False
    if settings.twilio_auth_token:
        url = _public_base(request) + request.raw_path
        signature = request.headers.get("X-Twilio-Signature", "")
        if not verify_twilio_signature(settings.twilio_auth_token, url, signed_params, signature):
            log.warning("voice webhook rejected: bad X-Twilio-Signature", extra={"url": url})
            raise web.HTTPForbidden(text="invalid signature")
        verified = True
    elif not settings.allow_unsigned_webhooks and not local_operator(request):
        # No auth token: anyone who can reach us could start sessions on the owner's bill. Only this
        # machine is trusted, and only while nothing else can relay to us (gateway/security/access.py).
        log.warning("voice webhook rejected: unsigned, not local operator", extra={"peer": request.remote})
        raise web.HTTPForbidden(text=UNSIGNED_REFUSAL)
    call_sid, to, from_ = params.get("CallSid", ""), params.get("To", ""), params.get("From", "")
    if not call_sid or not to:
        raise web.HTTPBadRequest(text="CallSid and To are required")
    if (problem := webhook_identity_problem(call_sid, to, from_)) is not None:
        raise web.HTTPBadRequest(text=problem)
    clog = log.bind(call_sid=call_sid)
    plan = request.app[DIALPLANS].current.match(to, from_)
    admission = request.app[LIMITS].admission
    if not admission.reserve(call_sid, plan.name):
        clog.warning("call refused: over capacity", extra={"reason": admission.refusal(plan.name)})
        return web.Response(text=say_hangup_twiml(plan.fallback.message), content_type="text/xml")
    tokens, now = request.app[STREAM_TOKENS], time.time()
    token = tokens.issue(call_sid=call_sid, to=to, from_=from_, now=now)
    stream_url = _ws_url(_public_base(request) + MEDIA_PATH)
    twiml = connect_stream_twiml(stream_url, {TOKEN_PARAMETER: token, "from": from_, "to": to})
    # Preconnect only for a request we could authenticate (or in explicit insecure development mode),
    # and only the first time this call is seen: a replayed signed webhook must open nothing.
    if (
        settings.preconnect
        and (verified or not settings.twilio_auth_token)
        and await tokens.first_webhook(call_sid, now)
    ):
        endpoint = request.app[LIVE_ENDPOINT]
        config = _session_config(request.app, plan)
        # One attempt within the setup timeout, as every later attempt: a hung setup then leaves the
        # call's give-up budget for a retry (bridge/resilience.py) instead of spending all of it.
        setup_timeout_s = settings.live_setup_timeout_s
        request.app[PRECONNECT].start(
            call_sid,
            plan,
            lambda: LiveSession.connect(endpoint, config, logger=clog, setup_timeout_s=setup_timeout_s),
        )
    clog.info("voice webhook", extra={"to": to, "from": from_, "verified": verified})
    return web.Response(text=twiml, content_type="text/xml")


def _session_config(app: web.Application, plan: Dialplan) -> SessionConfig:
    """The call's Live setup: the dialplan's, plus the deployment's model default and uplink rate."""
    settings = app[SETTINGS]
    return session_config(
        plan,
        default_model=settings.gemini_model,
        tools=tool_declarations(app, plan),
        input_rate=settings.uplink_rate,
    )


async def _read_events(
    ws: web.WebSocketResponse, codec: TwilioCodec, rate: MessageRate
) -> AsyncIterator[TelephonyEvent]:
    """The socket's reader: Twilio JSON text frames → events, except the caller audio that
    :func:`_direct_uplink` takes once the call runs. Anything but text is a protocol error."""
    tick = rate.tick
    async for msg in ws:
        tick()  # flood check: one increment and compare per message
        if msg.type is WSMsgType.TEXT:
            yield codec.receive_text(msg.data)
        elif msg.type is WSMsgType.BINARY:
            raise TelephonyProtocolError("binary frame on a Twilio media stream", close_code=1003)
        elif msg.type is WSMsgType.ERROR:
            if (failure := direct_failure(msg)) is not None:
                raise failure  # from the direct uplink (see _direct_uplink), in its place in the stream
            raise TelephonyProtocolError(f"media socket error: {ws.exception()}", close_code=1009)


def _direct_uplink(codec: TwilioCodec, bridge: CallBridge, rate: MessageRate) -> DirectHandler:
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


async def _await_start(events: AsyncIterator[TelephonyEvent]) -> CallStarted:
    async for event in events:
        if isinstance(event, CallStarted):
            return event
        if not isinstance(event, Connected):
            raise TelephonyProtocolError(f"{type(event).__name__} before start")
    raise TelephonyProtocolError("stream closed before start")


def _upgrade_signed(request: web.Request, auth_token: str) -> bool:
    """Twilio signs the media WebSocket upgrade as it signs a webhook: ``X-Twilio-Signature``, HMAC-SHA1
    keyed by the auth token, over the ``wss://`` URL it connected to, with no parameters (a ``<Stream>``
    URL has no query string; Twilio rejects one). Relied on: Twilio's "Media Streams Configuration" page
    (validate X-Twilio-Signature on the stream), the ConversationRelay onboarding guide ("the same
    verification mechanism used for standard Twilio webhooks", on the handshake request), and Twilio's
    own twilio-agent-connect-python (server/signature_validation.py: wss URL, query as params, https ->
    wss behind a proxy). The signature has no timestamp, so it proves the URL, not freshness: the stream
    token in ``start`` still decides (and the pending-socket gate bounds a replayed upgrade)."""
    signature = request.headers.get("X-Twilio-Signature", "")
    url = _ws_url(_public_base(request) + request.raw_path)
    return bool(signature) and verify_twilio_signature(auth_token, url, {}, signature)


def _close_reason(text: str) -> bytes:
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


async def media_stream(request: web.Request) -> web.WebSocketResponse:
    """Twilio's bidirectional media stream for one call."""
    app = request.app
    settings = app[SETTINGS]
    limits = app[LIMITS]
    # With an auth token, only Twilio may open a media socket at all: an unsigned upgrade costs no
    # WebSocket and no place among the pending sockets.
    if settings.twilio_auth_token and not _upgrade_signed(request, settings.twilio_auth_token):
        log.warning("media upgrade rejected: no valid X-Twilio-Signature", extra={"peer": request.remote})
        raise web.HTTPForbidden(text="invalid signature")
    # Sockets that have not shown a token yet are few (globally and per source) and short-lived; a new
    # one evicts the oldest waiting one rather than being refused (gateway/server/limits.py, Gate).
    ticket = limits.pending.enter(source_address(request))
    clog = log.bind(peer=request.remote)
    try:
        ws = MediaSocket(max_msg_size=limits.config.max_message_bytes, autoping=True, compress=False)
        await ws.prepare(request)
        app[MEDIA_SOCKETS].add(ws)
        codec = TwilioCodec()
        rate = MessageRate(limits.config.max_messages_per_s)
        events = _read_events(ws, codec, rate)
        try:
            # Showing a valid token, not just sending start, must happen in time (or before eviction).
            async with asyncio.timeout(START_TIMEOUT_S) as deadline:
                ticket.bind(lambda: deadline.reschedule(-1.0))
                try:
                    start = await _await_start(events)
                    clog = clog.bind(call_sid=start.call_sid, stream_sid=start.stream_sid)
                    token = start.custom_parameters.get(TOKEN_PARAMETER, "")
                    claims = await app[STREAM_TOKENS].verify(token, call_sid=start.call_sid, now=time.time())
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
            await ws.close(code=code, message=_close_reason(reason))
            return ws
    finally:
        ticket.leave()

    claimed = app[PRECONNECT].claim(start.call_sid)
    plan = claimed[1] if claimed else app[DIALPLANS].current.match(claims.to, claims.from_)
    slot = limits.admission.admit(start.call_sid, plan.name)
    if slot is None:
        clog.warning("call refused: over capacity", extra={"reason": limits.admission.refusal(plan.name)})
        if claimed:
            await _abandon(claimed[0])
        await ws.close(code=1013, message=b"try again later")
        return ws
    try:
        return await _run_call(request, ws, codec, rate, events, start, claims, claimed, plan, clog)
    finally:
        slot.release()


async def _run_call(
    request: web.Request,
    ws: MediaSocket,
    codec: TwilioCodec,
    rate: MessageRate,
    events: AsyncIterator[TelephonyEvent],
    start: CallStarted,
    claims: StreamClaims,
    claimed: tuple[asyncio.Task[LiveSession], Dialplan] | None,
    plan: Dialplan,
    clog: CallLogger,
) -> web.WebSocketResponse:
    """An authenticated, admitted stream: open (or take over) its Gemini session and bridge the call."""
    app = request.app
    settings = app[SETTINGS]
    clog = clog.bind(dialplan=plan.name, dialplan_version=plan.version)
    # Connects (or takes over the preconnect) in the bridge's downlink, survives goAway and drops, and
    # raises there when Gemini stays unreachable: the bridge then plays the fallback (bridge/guard.py).
    session = live_session_for_call(
        app[LIVE_ENDPOINT],
        _session_config(app, plan),
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
        send=MediaSender(request, ws),
        log=clog,
        observer=app[OBSERVABILITY].observer(
            call_id=start.call_sid,
            stream_id=start.stream_sid,
            from_number=claims.from_,
            to_number=claims.to,
            plan=plan,
        ),
        tools=tool_router(app, plan),
        uplink_rate=settings.uplink_rate,
        media_timeout_s=settings.media_timeout_s,
    )
    session.bind_history(lambda: transcript_lines(bridge.transcript.as_list()))
    app[CALLS].started(bridge)
    close_code, close_reason = 1000, b""

    def cap_reached() -> None:
        # Before the bridge is cancelled, so its "call ended" line already says why.
        if not bridge.result.ended_by:
            bridge.result.ended_by, bridge.result.reason = "gateway", "maximum call duration"

    cap = DurationCap(app[LIMITS].config.max_call_s, cap_reached)
    ws.handle_directly(_direct_uplink(codec, bridge, rate))
    try:
        async with cap:
            result = await bridge.run(events)
    except TimeoutError:
        if not cap.reached:
            raise
        clog.warning("call hit the hard duration cap", extra={"max_call_s": cap.max_s})
        close_reason = b"maximum call duration"
        result = bridge.result
    except TelephonyProtocolError as exc:
        clog.warning("media stream ended: protocol error", extra={"reason": str(exc)})
        close_code, close_reason = exc.close_code, _close_reason(str(exc))
        result = bridge.result
    except GatewayError as exc:
        clog.exception("call failed")
        close_code, close_reason = 1011, _close_reason(str(exc))
        result = bridge.result
    finally:
        ws.handle_directly(None)
        app[CALLS].finished(bridge, bridge.result)
        reset_call_context(log_context)
    if not ws.closed:
        await ws.close(code=close_code, message=close_reason)
    clog.info("transcript", extra={"turns": result.transcript})
    return ws
