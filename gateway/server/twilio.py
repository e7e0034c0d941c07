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

from gateway.bridge.call import CallBridge, CallInfo
from gateway.bridge.setup import session_config
from gateway.errors import AuthError, GatewayError, LiveSessionError, TelephonyProtocolError
from gateway.gemini.session import LiveSession
from gateway.log import call_logger
from gateway.security.tokens import TOKEN_PARAMETER
from gateway.server.preconnect import await_session
from gateway.server.state import (
    CALLS,
    DIALPLANS,
    LIVE_ENDPOINT,
    MEDIA_SOCKETS,
    PRECONNECT,
    SETTINGS,
    STREAM_TOKENS,
)
from gateway.telephony.events import CallStarted, Connected, TelephonyEvent
from gateway.telephony.signature import verify_twilio_signature
from gateway.telephony.twilio import TwilioCodec
from gateway.telephony.twiml import connect_stream_twiml

VOICE_PATH = "/twilio/voice"
MEDIA_PATH = "/twilio/media"
#: A 20 ms media message is ~300 bytes; anything near this limit is not Twilio.
MAX_MEDIA_MESSAGE = 64 * 1024
START_TIMEOUT_S = 10.0

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
    form = await request.post()
    params = {k: str(v) for k, v in form.items()}
    verified = False
    if settings.twilio_auth_token:
        url = _public_base(request) + request.path_qs
        signature = request.headers.get("X-Twilio-Signature", "")
        if not verify_twilio_signature(settings.twilio_auth_token, url, params, signature):
            log.warning("voice webhook rejected: bad X-Twilio-Signature", extra={"url": url})
            raise web.HTTPForbidden(text="invalid signature")
        verified = True
    call_sid, to, from_ = params.get("CallSid", ""), params.get("To", ""), params.get("From", "")
    if not call_sid or not to:
        raise web.HTTPBadRequest(text="CallSid and To are required")
    token = request.app[STREAM_TOKENS].issue(call_sid=call_sid, to=to, from_=from_, now=time.time())
    stream_url = _ws_url(_public_base(request) + MEDIA_PATH)
    twiml = connect_stream_twiml(stream_url, {TOKEN_PARAMETER: token, "from": from_, "to": to})
    clog = log.bind(call_sid=call_sid)
    # Preconnect only for a request we could authenticate, or in explicit insecure development mode.
    if settings.preconnect and (verified or not settings.twilio_auth_token):
        plan = request.app[DIALPLANS].current.match(to, from_)
        endpoint = request.app[LIVE_ENDPOINT]
        config = session_config(plan, default_model=settings.gemini_model)
        request.app[PRECONNECT].start(
            call_sid, plan, lambda: LiveSession.connect(endpoint, config, logger=clog)
        )
    clog.info("voice webhook", extra={"to": to, "from": from_, "verified": verified})
    return web.Response(text=twiml, content_type="text/xml")


async def _read_events(ws: web.WebSocketResponse, codec: TwilioCodec) -> AsyncIterator[TelephonyEvent]:
    """The socket's only reader: Twilio JSON text frames → events. Anything else is a protocol error."""
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            yield codec.receive_text(msg.data)
        elif msg.type is WSMsgType.BINARY:
            raise TelephonyProtocolError("binary frame on a Twilio media stream", close_code=1003)
        elif msg.type is WSMsgType.ERROR:
            raise TelephonyProtocolError(f"media socket error: {ws.exception()}", close_code=1009)


async def _await_start(events: AsyncIterator[TelephonyEvent]) -> CallStarted:
    async with asyncio.timeout(START_TIMEOUT_S):
        async for event in events:
            if isinstance(event, CallStarted):
                return event
            if not isinstance(event, Connected):
                raise TelephonyProtocolError(f"{type(event).__name__} before start")
    raise TelephonyProtocolError("stream closed before start")


async def media_stream(request: web.Request) -> web.WebSocketResponse:
    """Twilio's bidirectional media stream for one call."""
    app = request.app
    settings = app[SETTINGS]
    if settings.twilio_auth_token and "X-Twilio-Signature" in request.headers:
        url = _ws_url(_public_base(request) + request.path_qs)
        if not verify_twilio_signature(
            settings.twilio_auth_token, url, {}, request.headers["X-Twilio-Signature"]
        ):
            log.warning("media upgrade rejected: bad X-Twilio-Signature")
            raise web.HTTPForbidden(text="invalid signature")
    ws = web.WebSocketResponse(max_msg_size=MAX_MEDIA_MESSAGE, autoping=True)
    await ws.prepare(request)
    app[MEDIA_SOCKETS].add(ws)
    codec = TwilioCodec()
    events = _read_events(ws, codec)
    clog = log.bind(peer=request.remote)
    try:
        start = await _await_start(events)
        clog = clog.bind(call_sid=start.call_sid, stream_sid=start.stream_sid)
        claims = app[STREAM_TOKENS].verify(
            start.custom_parameters.get(TOKEN_PARAMETER, ""), call_sid=start.call_sid, now=time.time()
        )
    except (TelephonyProtocolError, AuthError, TimeoutError) as exc:
        reason = "no start within timeout" if isinstance(exc, TimeoutError) else str(exc)
        clog.warning("media stream rejected", extra={"reason": reason})
        await ws.close(code=getattr(exc, "close_code", 1008), message=reason[:120].encode())
        return ws

    claimed = app[PRECONNECT].claim(start.call_sid)
    plan = claimed[1] if claimed else app[DIALPLANS].current.match(claims.to, claims.from_)
    clog = clog.bind(dialplan=plan.name, dialplan_version=plan.version)
    try:
        if claimed:
            session = await await_session(claimed[0])
        else:
            config = session_config(plan, default_model=settings.gemini_model)
            session = await LiveSession.connect(app[LIVE_ENDPOINT], config, logger=clog)
    except LiveSessionError as exc:
        clog.error("gemini unavailable; ending call", extra={"error": str(exc)})
        await ws.close(code=1011, message=b"model unavailable")
        return ws

    clog.info("call started", extra={"from": claims.from_, "to": claims.to, "preconnected": bool(claimed)})
    bridge = CallBridge(
        info=CallInfo(start.call_sid, start.stream_sid, claims.from_, claims.to),
        dialplan=plan,
        session=session,
        encoder=codec,
        send=ws.send_str,
        log=clog,
    )
    app[CALLS].started(bridge)
    close_code, close_reason = 1000, b""
    try:
        result = await bridge.run(events)
    except TelephonyProtocolError as exc:
        clog.warning("media stream ended: protocol error", extra={"reason": str(exc)})
        close_code, close_reason = exc.close_code, str(exc)[:120].encode()
        result = bridge.result
    except GatewayError as exc:
        clog.exception("call failed")
        close_code, close_reason = 1011, str(exc)[:120].encode()
        result = bridge.result
    finally:
        app[CALLS].finished(bridge, bridge.result)
    if not ws.closed:
        await ws.close(code=close_code, message=close_reason)
    clog.info("transcript", extra={"turns": result.transcript})
    return ws
