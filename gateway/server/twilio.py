"""Twilio: the voice webhook (TwiML with ``<Connect><Stream>``) and its media-stream route.

The media socket itself is handled by :mod:`gateway.server.media`, as every provider's is; this
module says what is Twilio's: the webhook, its ``X-Twilio-Signature`` (on the webhook and on the
stream's upgrade), the codec, and the stream token travelling in a ``<Parameter>``.
"""

from __future__ import annotations

from aiohttp import web
from multidict import MultiDict

from gateway.log import call_logger
from gateway.security.tokens import TOKEN_PARAMETER
from gateway.server.access import local_operator
from gateway.server.media import Refused, StreamRoute, accept_call, media_stream_handler, public_base, ws_url
from gateway.server.outbound_state import stream_plan
from gateway.server.state import HTTP_CLIENT, SETTINGS
from gateway.telephony.events import CallStarted
from gateway.telephony.signature import verify_twilio_signature
from gateway.telephony.twilio import TwilioCodec
from gateway.telephony.twiml import connect_stream_twiml, say_hangup_twiml
from gateway.tools.twilio_rest import TwilioRest

VOICE_PATH = "/twilio/voice"
MEDIA_PATH = "/twilio/media"
UNSIGNED_REFUSAL = (
    "unsigned webhook refused: set TWILIO_AUTH_TOKEN; for local experiments listen on 127.0.0.1 "
    "(--host 127.0.0.1, as `make run` does) and call from this machine, or set GATEWAY_ALLOW_UNSIGNED=1"
)

log = call_logger("gateway.twilio")


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
        url = public_base(request) + request.raw_path
        signature = request.headers.get("X-Twilio-Signature", "")
        if not verify_twilio_signature(settings.twilio_auth_token, url, signed_params, signature):
            log.warning("voice webhook rejected: bad X-Twilio-Signature", extra={"url": url})
            raise web.HTTPForbidden(text="invalid signature")
        verified = True
    elif not settings.allow_unsigned_webhooks and not local_operator(request):
        # No auth token: anyone who can reach us could start sessions on the owner's bill. Only this
        # machine is trusted, and only while nothing else can relay to us (gateway/server/access.py).
        log.warning("voice webhook rejected: unsigned, not local operator", extra={"peer": request.remote})
        raise web.HTTPForbidden(text=UNSIGNED_REFUSAL)
    call_sid, to, from_ = params.get("CallSid", ""), params.get("To", ""), params.get("From", "")
    accepted = await accept_call(
        request,
        log,
        call_sid=call_sid,
        to=to,
        from_=from_,
        may_preconnect=verified or not settings.twilio_auth_token,
    )
    if isinstance(accepted, Refused):
        return web.Response(text=say_hangup_twiml(accepted.message), content_type="text/xml")
    stream_url = ws_url(public_base(request) + MEDIA_PATH)
    twiml = connect_stream_twiml(stream_url, {TOKEN_PARAMETER: accepted.token, "from": from_, "to": to})
    log.info("voice webhook", extra={"call_sid": call_sid, "to": to, "from": from_, "verified": verified})
    return web.Response(text=twiml, content_type="text/xml")


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
    url = ws_url(public_base(request) + request.raw_path)
    return bool(signature) and verify_twilio_signature(auth_token, url, {}, signature)


def _upgrade_refusal(request: web.Request) -> str | None:
    """With an auth token, only Twilio may open a media socket: the upgrade must be signed."""
    auth_token = request.app[SETTINGS].twilio_auth_token
    if auth_token and not _upgrade_signed(request, auth_token):
        return "invalid signature: no valid X-Twilio-Signature on the media upgrade"
    return None


def _token(start: CallStarted, request: web.Request) -> str:
    return start.custom_parameters.get(TOKEN_PARAMETER, "")


def twilio_rest(app: web.Application) -> TwilioRest | None:
    """Transfers and REST hang-ups need ``TWILIO_ACCOUNT_SID`` and ``TWILIO_AUTH_TOKEN``; without them
    hang-up closes the media stream only (which ends the call: nothing follows ``<Connect>``)."""
    settings, http = app[SETTINGS], app.get(HTTP_CLIENT)
    if http is None or not (settings.twilio_account_sid and settings.twilio_auth_token):
        return None
    return TwilioRest(
        http,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token,
        base_url=settings.twilio_api_base,
    )


ROUTE = StreamRoute(
    provider="twilio",
    path=MEDIA_PATH,
    codec=TwilioCodec,
    upgrade_refusal=_upgrade_refusal,
    token=_token,
    log=log,
    rest=twilio_rest,
    plan=stream_plan,  # an outbound call's signed plan (gateway/server/outbound_twilio.py)
)
media_stream = media_stream_handler(ROUTE)

#: Twilio's routes, as the provider registry (gateway/server/providers.py) serves them.
ROUTES = (("POST", VOICE_PATH, voice_webhook), ("GET", MEDIA_PATH, media_stream))
