"""SignalWire: the cXML voice webhook (``<Connect><Stream>``), the transfer document, the media route.

The media socket itself is handled by :mod:`gateway.server.media`, as every provider's is; this module
says what is SignalWire's: the webhooks and their ``X-SignalWire-Signature`` (HMAC with the project's
Signing Key), the codec (μ-law 8 kHz, or wideband L16 at 16/24 kHz by ``GATEWAY_SIGNALWIRE_CODEC``),
the stream token in a ``<Parameter>`` (SignalWire's stream URLs take no query string), the upgrade's
bearer token, and the Compatibility REST client (hang-up, transfer).

SignalWire does not sign the media upgrade, but sends the ``<Stream authBearerToken>`` we give it as
``Authorization: Bearer …`` on it (the Stream page, "WebSocket connection", signalwire/docs ``01670d0``).
With a Signing Key the cXML carries a bearer derived from it, and an upgrade without that bearer is
refused before any WebSocket exists; only SignalWire sees the cXML, since only signed webhooks get one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl

from aiohttp import web

from gateway.errors import ConfigError
from gateway.log import call_logger
from gateway.security.tokens import TOKEN_PARAMETER
from gateway.server.access import bearer_matches, local_operator
from gateway.server.media import Refused, StreamRoute, accept_call, media_stream_handler, public_base, ws_url
from gateway.server.state import HTTP_CLIENT, SETTINGS
from gateway.server.transfer import remember_base, transfer_url
from gateway.telephony.events import CallStarted
from gateway.telephony.signalwire import (
    COMPAT_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    SignalWireCodec,
    connect_stream_cxml,
    verify_signalwire_signature,
)
from gateway.telephony.twiml import dial_twiml, say_hangup_twiml
from gateway.tools.signalwire_rest import SignalWireCallControl

VOICE_PATH = "/signalwire/voice"
MEDIA_PATH = "/signalwire/media"
#: Serves the ``<Dial>`` a transfer redirects the call to (SignalWire's call update takes a URL).
TRANSFER_PATH = "/signalwire/transfer"
UNSIGNED_REFUSAL = (
    "unsigned webhook refused: set SIGNALWIRE_SIGNING_KEY; for local experiments listen on 127.0.0.1 "
    "(--host 127.0.0.1, as `make run` does) and call from this machine, or set GATEWAY_ALLOW_UNSIGNED=1"
)

log = call_logger("gateway.signalwire")


async def _webhook_form(request: web.Request, what: str) -> tuple[dict[str, str], bool]:
    """A SignalWire webhook's form once its signature passed: (form, whether it was signed and verified).

    Without a Signing Key only the local operator is served (or anyone, with GATEWAY_ALLOW_UNSIGNED=1).
    The signature covers the raw body and the URL exactly as sent (raw_path: still URL-encoded).
    """
    settings = request.app[SETTINGS]
    body = await request.read()
    try:
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="the body is not a form") from None
    key = settings.signalwire_signing_key
    if key:
        url = public_base(request) + request.raw_path
        # X-Twilio-Signature is SignalWire's compatibility alias of the same value.
        headers = request.headers
        signature = headers.get(SIGNATURE_HEADER, "") or headers.get(COMPAT_SIGNATURE_HEADER, "")
        if not verify_signalwire_signature(key, url, body, signature):
            log.warning(f"{what} rejected: bad {SIGNATURE_HEADER}", extra={"url": url})
            raise web.HTTPForbidden(text="invalid signature")
        return form, True
    if not settings.allow_unsigned_webhooks and not local_operator(request):
        log.warning(f"{what} rejected: unsigned, not local operator", extra={"peer": request.remote})
        raise web.HTTPForbidden(text=UNSIGNED_REFUSAL)
    return form, False


async def voice_webhook(request: web.Request) -> web.Response:
    """Answer SignalWire's voice webhook with ``<Connect><Stream>`` and a stream token."""
    settings = request.app[SETTINGS]
    form, verified = await _webhook_form(request, "voice webhook")
    call_sid, to, from_ = form.get("CallSid", ""), form.get("To", ""), form.get("From", "")
    accepted = await accept_call(
        request,
        log,
        call_sid=call_sid,
        to=to,
        from_=from_,
        may_preconnect=verified or not settings.signalwire_signing_key,
    )
    if isinstance(accepted, Refused):
        return web.Response(text=say_hangup_twiml(accepted.message), content_type="text/xml")
    base = remember_base(request, "signalwire")
    key = settings.signalwire_signing_key
    cxml = connect_stream_cxml(
        ws_url(base + MEDIA_PATH),
        {TOKEN_PARAMETER: accepted.token, "from": from_, "to": to},
        codec=settings.signalwire_codec,
        auth_bearer_token=upgrade_bearer(key) if key else None,
    )
    codec = settings.signalwire_codec
    log.info(
        "voice webhook",
        extra={"call_sid": call_sid, "to": to, "from": from_, "verified": verified, "codec": codec},
    )
    return web.Response(text=cxml, content_type="text/xml")


async def transfer_document(request: web.Request) -> web.Response:
    """The ``<Dial>`` a transfer redirects the call to: SignalWire fetches it (signed) and runs it."""
    form, _ = await _webhook_form(request, "transfer request")
    # The target is in our own URL's query, which the signature covers.
    try:
        document = dial_twiml(request.query.get("to", ""))
    except ConfigError:
        raise web.HTTPBadRequest(text="no number to transfer to") from None
    log.info("transfer document served", extra={"call_sid": form.get("CallSid", "")})
    return web.Response(text=document, content_type="text/xml")


def upgrade_bearer(signing_key: str) -> str:
    """The ``authBearerToken`` our cXML hands SignalWire: derived from the Signing Key, so it needs no
    setting of its own and changes when the key is rotated, and the key itself never leaves the gateway."""
    mac = hmac.new(signing_key.encode(), b"gateway signalwire media upgrade", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def _upgrade_refusal(request: web.Request) -> str | None:
    """With a Signing Key, only SignalWire (which read our cXML) may open a media socket."""
    key = request.app[SETTINGS].signalwire_signing_key
    if key and not bearer_matches(request, upgrade_bearer(key)):
        return "no valid bearer token on the media upgrade"
    return None


def _token(start: CallStarted, request: web.Request) -> str:
    return start.custom_parameters.get(TOKEN_PARAMETER, "")


def _rest(app: web.Application) -> SignalWireCallControl | None:
    """Hang-up and transfer need ``SIGNALWIRE_PROJECT_ID``, ``SIGNALWIRE_API_TOKEN`` and
    ``SIGNALWIRE_SPACE_URL``; without them hang-up closes the stream only (which ends the call: nothing
    follows ``<Connect>`` in our cXML) and transfers are refused."""
    settings, http = app[SETTINGS], app.get(HTTP_CLIENT)
    if http is None or not (
        settings.signalwire_project_id and settings.signalwire_api_token and settings.signalwire_space_url
    ):
        return None
    return SignalWireCallControl(
        http,
        space_url=settings.signalwire_space_url,
        project_id=settings.signalwire_project_id,
        api_token=settings.signalwire_api_token,
        transfer_url=transfer_url(app, "signalwire", TRANSFER_PATH),
    )


ROUTE = StreamRoute(
    provider="signalwire",
    path=MEDIA_PATH,
    codec=SignalWireCodec,
    upgrade_refusal=_upgrade_refusal,
    token=_token,
    log=log,
    rest=_rest,
)
media_stream = media_stream_handler(ROUTE)

#: SignalWire's routes, as the provider registry (gateway/server/providers.py) serves them.
ROUTES = (
    ("POST", VOICE_PATH, voice_webhook),
    ("POST", TRANSFER_PATH, transfer_document),
    ("GET", MEDIA_PATH, media_stream),
)
