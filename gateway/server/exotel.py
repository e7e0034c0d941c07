"""Exotel's Voicebot applet: the dynamic URL (``GET /exotel/voicebot`` → ``{"url": …}``) and the stream.

The applet's URL is either an HTTPS endpoint that answers with the stream URL (the dynamic form: here a
per-call stream token travels in that URL's query, as with every other provider), or the stream URL
itself (the static form, ``wss://exotel:SECRET@host/exotel/media``). The static form has no request
before the stream, so no token: ``EXOTEL_STREAM_SECRET`` on the upgrade (Basic-auth password or
``?secret=``) authenticates the socket and ``start`` says who the call is (``StreamRoute.start_claims``).

Exotel signs nothing. With the secret set, the dynamic URL's request must carry it too (configure the
URL as ``https://host/exotel/voicebot?secret=SECRET``); without it, loopback clients are served unsigned
exactly as Twilio's path does. There is no REST call control: the bot hangs up by closing the stream
(the flow moves on to its next applet) and cannot transfer.
"""

from __future__ import annotations

from aiohttp import web

from gateway.errors import TelephonyProtocolError
from gateway.log import call_logger
from gateway.security.inputs import webhook_identity_problem
from gateway.security.tokens import TOKEN_PARAMETER, StreamClaims
from gateway.server.access import local_operator
from gateway.server.media import Refused, StreamRoute, accept_call, media_stream_handler, public_base, ws_url
from gateway.server.state import SETTINGS
from gateway.telephony.events import CallStarted
from gateway.telephony.exotel import (
    ExotelCodec,
    exotel_call,
    exotel_number,
    verify_exotel_secret,
    voicebot_answer,
)
from gateway.telephony.jsonmsg import CLOSE_POLICY_VIOLATION

VOICEBOT_PATH = "/exotel/voicebot"
MEDIA_PATH = "/exotel/media"
UNSIGNED_REFUSAL = (
    "unauthenticated request refused: set EXOTEL_STREAM_SECRET and put it in the applet's URL; for local "
    "experiments listen on 127.0.0.1 (--host 127.0.0.1, as `make run` does) and call from this machine, "
    "or set GATEWAY_ALLOW_UNSIGNED=1"
)

log = call_logger("gateway.exotel")


def _has_secret(request: web.Request, secret: str) -> bool:
    return verify_exotel_secret(
        secret, authorization=request.headers.get("Authorization"), query_secret=request.query.get("secret")
    )


def _unauthenticated(request: web.Request) -> str | None:
    """Why ``request`` (the dynamic URL's, or a static stream's upgrade) is not Exotel's, or None."""
    settings = request.app[SETTINGS]
    if settings.exotel_stream_secret:
        return None if _has_secret(request, settings.exotel_stream_secret) else "no valid Exotel secret"
    if settings.allow_unsigned_webhooks or local_operator(request):
        return None
    return UNSIGNED_REFUSAL


async def voicebot(request: web.Request) -> web.Response:
    """The applet's dynamic URL: admit the call and answer ``{"url": "wss://…/exotel/media?token=…"}``."""
    settings = request.app[SETTINGS]
    refusal = _unauthenticated(request)
    if refusal is not None:
        log.warning("voicebot request rejected", extra={"reason": refusal[:40], "peer": request.remote})
        raise web.HTTPForbidden(text=refusal)
    try:
        call = exotel_call(request.query)
    except TelephonyProtocolError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    country = settings.exotel_country_code
    to, from_ = exotel_number(call.to, country), exotel_number(call.from_, country)
    # Exotel signs nothing: the secret is what vouches for the request (or explicit insecure mode).
    accepted = await accept_call(
        request, log, call_sid=call.call_sid, to=to, from_=from_, may_preconnect=True
    )
    if isinstance(accepted, Refused):
        # The applet cannot speak a line without a stream: fail its request; the flow goes on as the
        # operator configured it.
        raise web.HTTPServiceUnavailable(text="over capacity")
    stream_url = ws_url(public_base(request) + MEDIA_PATH)
    body = voicebot_answer(stream_url, accepted.token, sample_rate=settings.exotel_sample_rate)
    log.info("voicebot request", extra={"call_sid": call.call_sid, "to": to, "from": from_})
    return web.Response(text=body, content_type="application/json")


def _token(start: CallStarted, request: web.Request) -> str:
    """The dynamic answer's token: in the URL Exotel connected to, and copied to ``custom_parameters``."""
    return request.query.get(TOKEN_PARAMETER) or start.custom_parameters.get(TOKEN_PARAMETER, "")


def _upgrade_refusal(request: web.Request) -> str | None:
    """A stream with a token (the dynamic form) is decided by the token at ``start``; one without is the
    static form, which only the configured secret (or unsigned loopback) may open."""
    if TOKEN_PARAMETER in request.query:
        return None
    return _unauthenticated(request)


def _start_claims(start: CallStarted, request: web.Request) -> StreamClaims | None:
    """The static form's call, from ``start`` (its upgrade passed :func:`_upgrade_refusal` without a
    token). A token that turns up only in ``custom_parameters`` still decides, as a token."""
    if TOKEN_PARAMETER in request.query or TOKEN_PARAMETER in start.custom_parameters:
        return None
    country = request.app[SETTINGS].exotel_country_code
    to, from_ = exotel_number(start.to, country), exotel_number(start.from_, country)
    if (problem := webhook_identity_problem(start.call_sid, to, from_)) is not None:
        raise TelephonyProtocolError(f"start: {problem}", close_code=CLOSE_POLICY_VIOLATION)
    return StreamClaims(call_sid=start.call_sid, to=to, from_=from_, expires_at=0.0, nonce="")


ROUTE = StreamRoute(
    provider="exotel",
    path=MEDIA_PATH,
    codec=ExotelCodec,  # 8 kHz until start.media_format says otherwise (the URL's sample-rate)
    upgrade_refusal=_upgrade_refusal,
    token=_token,
    log=log,
    start_claims=_start_claims,
)
media_stream = media_stream_handler(ROUTE)

#: Exotel's routes, as the provider registry (gateway/server/providers.py) serves them.
ROUTES = (("GET", VOICEBOT_PATH, voicebot), ("GET", MEDIA_PATH, media_stream))
