"""Telnyx: one voice URL for both ways Telnyx hands us a call, and its media-stream route.

``POST /telnyx/voice`` takes either

* a **TeXML** request (a form, as a TeXML application's voice URL receives it), answered with
  ``<Connect><Stream bidirectionalMode="rtp">``; or
* a **Call Control** webhook (JSON, as a Voice API application's webhook URL receives it): for
  ``call.initiated`` the gateway sends the ``answer`` command with the stream parameters to Telnyx's
  API and answers the webhook itself with a bare 200; every other event is acknowledged and ignored.

Both are signed alike (Ed25519, ``telnyx-signature-ed25519`` over ``"{telnyx-timestamp}|{raw body}"``,
300 s replay window) and checked with ``TELNYX_PUBLIC_KEY``. Telnyx does not sign the media upgrade,
so the stream token travels in the stream URL's query (the ``answer`` command has no custom
parameters; see gateway/telephony/telnyx.py) and is the stream's only credential. The socket itself is
handled by :mod:`gateway.server.media`, as every provider's is.
"""

from __future__ import annotations

import functools
import re
import time
from typing import Final, Literal

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.errors import TelephonyProtocolError, ToolError
from gateway.log import call_logger
from gateway.server.access import local_operator
from gateway.server.media import Refused, StreamRoute, accept_call, media_stream_handler, public_base, ws_url
from gateway.server.outbound_state import url_plan
from gateway.server.state import HTTP_CLIENT, SETTINGS
from gateway.settings import Settings
from gateway.telephony.events import CallStarted
from gateway.telephony.telnyx import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    TOKEN_QUERY_PARAM,
    TelnyxCodec,
    connect_stream_texml,
    load_public_key,
    parse_call_control_event,
    verify_telnyx_signature,
)
from gateway.telephony.twiml import say_hangup_twiml
from gateway.tools.telnyx_rest import TelnyxCallControl

VOICE_PATH = "/telnyx/voice"
MEDIA_PATH = "/telnyx/media"
UNSIGNED_REFUSAL = (
    "unsigned webhook refused: set TELNYX_PUBLIC_KEY; for local experiments listen on 127.0.0.1 "
    "(--host 127.0.0.1, as `make run` does) and call from this machine, or set GATEWAY_ALLOW_UNSIGNED=1"
)
NO_API_KEY = "set TELNYX_API_KEY: Call Control calls are answered through Telnyx's API"
#: A national number Telnyx sent without its '+' (digits only, E.164 length): dialplans match E.164.
_BARE_NUMBER: Final = re.compile(r"[1-9][0-9]{7,14}")

log = call_logger("gateway.telnyx")


@functools.lru_cache(maxsize=4)
def _public_key(encoded: str) -> Ed25519PublicKey:
    return load_public_key(encoded)


def e164(number: str) -> str:
    number = number.strip()
    return "+" + number if _BARE_NUMBER.fullmatch(number) else number


def authenticated(request: web.Request, body: bytes) -> bool:
    """Whether Telnyx signed ``body`` (True), or an unsigned request may be served anyway (False).

    Raises:
        web.HTTPForbidden: a missing, forged or stale signature with a key configured; or an unsigned
            request from anyone but the local operator without one.
    """
    settings = request.app[SETTINGS]
    if settings.telnyx_public_key:
        signature = request.headers.get(SIGNATURE_HEADER, "")
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        key = _public_key(settings.telnyx_public_key)
        if not verify_telnyx_signature(key, body, signature, timestamp, now=time.time()):
            log.warning(
                "voice request rejected: bad telnyx-signature-ed25519", extra={"peer": request.remote}
            )
            raise web.HTTPForbidden(text="invalid signature")
        return True
    if not settings.allow_unsigned_webhooks and not local_operator(request):
        log.warning("voice request rejected: unsigned, not local operator", extra={"peer": request.remote})
        raise web.HTTPForbidden(text=UNSIGNED_REFUSAL)
    return False


async def voice_webhook(request: web.Request) -> web.Response:
    """A TeXML request (form) or a Call Control webhook (JSON): signature first, then the call."""
    body = await request.read()
    verified = authenticated(request, body)
    if request.content_type == "application/json":
        return await _call_control(request, body, verified)
    if request.content_type == "application/x-www-form-urlencoded":
        return await _texml(request, verified)
    raise web.HTTPUnsupportedMediaType(text="expected a TeXML form or a Call Control JSON webhook")


def _may_preconnect(settings: Settings, verified: bool) -> bool:
    return verified or not settings.telnyx_public_key


def _stream_url(request: web.Request) -> str:
    return ws_url(public_base(request) + MEDIA_PATH)


async def _texml(request: web.Request, verified: bool) -> web.Response:
    """Answer a TeXML application's voice request with ``<Connect><Stream>`` (token in the URL)."""
    settings = request.app[SETTINGS]
    try:
        form = await request.post()
    except ValueError:  # includes UnicodeDecodeError: a body that is not a form
        raise web.HTTPBadRequest(text="the body is not a form") from None
    params = {k: str(v) for k, v in form.items()}
    # A TeXML call's CallSid is its call_control_id (Telnyx's TeXML callbacks show ``v3:…`` for it), which
    # the stream's ``start`` carries: the token is bound to it.
    call_sid = params.get("CallSid", "")
    to, from_ = e164(params.get("To", "")), e164(params.get("From", ""))
    accepted = await accept_call(
        request,
        log,
        call_sid=call_sid,
        to=to,
        from_=from_,
        may_preconnect=_may_preconnect(settings, verified),
    )
    if isinstance(accepted, Refused):
        # TeXML takes TwiML's <Say> and <Hangup> as they are.
        return web.Response(text=say_hangup_twiml(accepted.message), content_type="text/xml")
    # L16 is for Call Control streams only (TEXML_CODECS): TeXML streams run G.711 whatever the setting.
    codec: Literal["PCMU", "PCMA"] = "PCMA" if settings.telnyx_codec == "PCMA" else "PCMU"
    texml = connect_stream_texml(_stream_url(request), accepted.token, codec=codec)
    log.info(
        "TeXML voice request", extra={"call_sid": call_sid, "to": to, "from": from_, "verified": verified}
    )
    return web.Response(text=texml, content_type="text/xml")


async def _call_control(request: web.Request, body: bytes, verified: bool) -> web.Response:
    """``call.initiated`` (inbound): answer through the API with the stream; other events: just 200."""
    app, settings = request.app, request.app[SETTINGS]
    try:
        event = parse_call_control_event(body)
    except TelephonyProtocolError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    if event.event_type != "call.initiated" or event.direction != "incoming":
        log.debug("Call Control event", extra={"event": event.event_type, "call_sid": event.call_control_id})
        return web.Response(status=200)
    rest = telnyx_rest(app)
    if rest is None:
        log.error(
            "Call Control call not answered: no TELNYX_API_KEY", extra={"call_sid": event.call_control_id}
        )
        raise web.HTTPServiceUnavailable(text=NO_API_KEY)
    to, from_ = e164(event.callee), e164(event.caller)
    call_sid = event.call_control_id
    accepted = await accept_call(
        request,
        log,
        call_sid=call_sid,
        to=to,
        from_=from_,
        may_preconnect=_may_preconnect(settings, verified),
    )
    clog = log.bind(call_sid=call_sid)
    try:
        if isinstance(accepted, Refused):
            await rest.reject(call_sid)  # the caller hears busy: nothing can be said before answering
            return web.Response(status=200)
        codec = call_control_codec(settings)
        await rest.answer(call_sid, _stream_url(request), accepted.token, codec=codec)
    except ToolError as exc:
        # A 5xx makes Telnyx deliver the webhook again: a failed answer gets another try.
        clog.warning("Call Control command failed", extra={"error": str(exc)})
        raise web.HTTPBadGateway(text="Telnyx's API did not take the command") from None
    clog.info(
        "Call Control call answered", extra={"to": to, "from": from_, "verified": verified, "codec": codec}
    )
    return web.Response(status=200)


def call_control_codec(settings: Settings) -> Literal["PCMU", "PCMA", "L16"]:
    """The codec of a Call Control stream, both ways (``GATEWAY_TELNYX_CODEC``)."""
    return "L16" if settings.telnyx_codec == "L16" else "PCMA" if settings.telnyx_codec == "PCMA" else "PCMU"


def _upgrade_refusal(request: web.Request) -> str | None:
    """Telnyx does not sign its media upgrade (``stream_auth_token`` exists only on ``streaming_start``
    and ``dial``), so the token in the URL is the stream's credential: without one, no WebSocket."""
    if not request.query.get(TOKEN_QUERY_PARAM):
        return "no stream token in the stream URL"
    return None


def _token(start: CallStarted, request: web.Request) -> str:
    return request.query.get(TOKEN_QUERY_PARAM, "")


def telnyx_rest(app: web.Application) -> TelnyxCallControl | None:
    """Call Control needs ``TELNYX_API_KEY`` (to answer at all); TeXML calls use it to hang up and
    transfer. Without it a TeXML call ends when the stream closes (nothing follows ``<Connect>``)."""
    settings, http = app[SETTINGS], app.get(HTTP_CLIENT)
    if http is None or not settings.telnyx_api_key:
        return None
    return TelnyxCallControl(http, api_key=settings.telnyx_api_key, base_url=settings.telnyx_api_base)


ROUTE = StreamRoute(
    provider="telnyx",
    path=MEDIA_PATH,
    codec=TelnyxCodec,
    upgrade_refusal=_upgrade_refusal,
    token=_token,
    log=log,
    rest=telnyx_rest,
    plan=url_plan,  # an outbound call's signed plan, in the stream URL (gateway/server/outbound_state.py)
)
media_stream = media_stream_handler(ROUTE)

#: Telnyx's routes, as the provider registry (gateway/server/providers.py) serves them.
ROUTES = (("POST", VOICE_PATH, voice_webhook), ("GET", MEDIA_PATH, media_stream))
