"""Plivo: the Answer URL (``<Stream bidirectional keepCallAlive>``), the transfer document, the media route.

The media socket itself is handled by :mod:`gateway.server.media`, as every provider's is; this module
says what is Plivo's: the Answer URL and its ``X-Plivo-Signature-V3``, the numbers Plivo writes without
``+``, the codec, the stream token in the stream URL's query, and the REST client (hang-up, transfer).

Calls the gateway places through Plivo (gateway/server/outbound_plivo.py) use the same media route: their
stream URL also carries a token bound to the call, from which the route takes the call's rendered plan.

Plivo documents no signature on the media WebSocket's upgrade, so the stream token alone authenticates
it: an upgrade without one is refused before any WebSocket exists, and a wrong one at ``start``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aiohttp import web
from multidict import MultiDict

from gateway.errors import ConfigError
from gateway.log import call_logger
from gateway.security.tokens import TOKEN_PARAMETER
from gateway.server.access import local_operator
from gateway.server.media import Refused, StreamRoute, accept_call, media_stream_handler, public_base, ws_url
from gateway.server.outbound_state import url_plan
from gateway.server.state import HTTP_CLIENT, SETTINGS
from gateway.server.transfer import remember_base, transfer_url
from gateway.telephony.events import CallStarted
from gateway.telephony.plivo import PlivoCodec, dial_xml, hangup_xml, stream_xml, verify_plivo_signature_v3
from gateway.telephony.provider import AudioFormat
from gateway.tools.plivo_rest import PlivoRest

ANSWER_PATH = "/plivo/answer"
MEDIA_PATH = "/plivo/media"
#: Serves the ``<Dial>`` a transfer points the caller's leg at (Plivo's transfer API takes a URL).
TRANSFER_PATH = "/plivo/transfer"
UNSIGNED_REFUSAL = (
    "unsigned answer request refused: set PLIVO_AUTH_TOKEN; for local experiments listen on 127.0.0.1 "
    "(--host 127.0.0.1, as `make run` does) and call from this machine, or set GATEWAY_ALLOW_UNSIGNED=1"
)
#: ``<Stream contentType>`` (the setting's values) → the stream's audio.
AUDIO = {
    "audio/x-mulaw;rate=8000": AudioFormat("ulaw", 8000),
    "audio/x-l16;rate=8000": AudioFormat("l16", 8000),
    "audio/x-l16;rate=16000": AudioFormat("l16", 16000),
}
#: A number as Plivo writes it: country code and digits, no ``+`` (E.164 allows at most 15 digits).
_PLIVO_NUMBER = re.compile(r"[0-9]{6,15}")
#: Call states of a request that is not a new call: Plivo notifies the hangup URL, which defaults to the
#: answer URL when an application sets none (Plivo's Application API: ``hangup_url`` "defaults to
#: answer_url" [U: not re-read here]). Such a request must not reserve a place or issue a token.
_ENDED = frozenset({"completed", "busy", "failed", "timeout", "no-answer", "cancel"})

log = call_logger("gateway.plivo")


def e164(number: str) -> str:
    """Plivo's ``14155550100`` → ``+14155550100`` (dialplans match E.164); SIP URIs etc. unchanged."""
    number = number.strip()
    return "+" + number if _PLIVO_NUMBER.fullmatch(number) else number


async def signed_params(request: web.Request, what: str) -> MultiDict[str]:
    """The request's parameters, once Plivo's signature on them checks out (or unsigned use is allowed).

    Raises:
        web.HTTPBadRequest: a POST body that is not a form. web.HTTPForbidden: a bad or missing
            signature with PLIVO_AUTH_TOKEN set; without it, a request from other than the local operator.
    """
    settings = request.app[SETTINGS]
    if request.method == "POST":
        try:
            form = await request.post()
        except ValueError:  # includes UnicodeDecodeError: a body that is not a form
            raise web.HTTPBadRequest(text="the body is not a form") from None
        # Every value of repeated names, as Plivo signs them (a file part is no Plivo parameter).
        params: MultiDict[str] = MultiDict((k, v) for k, v in form.items() if isinstance(v, str))
        signed: Mapping[str, str] | MultiDict[str] = params
    else:
        params, signed = MultiDict(request.query), {}  # GET: the query is in the signed URL already
    if settings.plivo_auth_token:
        # The path and query exactly as sent (raw_path: still URL-encoded): the URL Plivo signed.
        url = public_base(request) + request.raw_path
        nonce = request.headers.get("X-Plivo-Signature-V3-Nonce", "")
        signature = request.headers.get("X-Plivo-Signature-V3", "")
        if not verify_plivo_signature_v3(
            settings.plivo_auth_token,
            method=request.method,
            url=url,
            nonce=nonce,
            signature=signature,
            params=signed,
        ):
            log.warning(f"{what} rejected: bad X-Plivo-Signature-V3", extra={"url": url})
            raise web.HTTPForbidden(text="invalid signature")
    elif not settings.allow_unsigned_webhooks and not local_operator(request):
        # No auth token: anyone who can reach us could start sessions on the owner's bill. Only this
        # machine is trusted, and only while nothing else can relay to us (gateway/server/access.py).
        log.warning(f"{what} rejected: unsigned, not local operator", extra={"peer": request.remote})
        raise web.HTTPForbidden(text=UNSIGNED_REFUSAL)
    return params


async def answer(request: web.Request) -> web.Response:
    """Answer Plivo's Answer URL request with a bidirectional ``<Stream>`` carrying the stream token."""
    settings = request.app[SETTINGS]
    params = await signed_params(request, "answer request")
    call_uuid = params.get("CallUUID", "")
    status, event = params.get("CallStatus", "").lower(), params.get("Event", "")
    if status in _ENDED or event == "Hangup":
        log.info("call ended (hangup notification)", extra={"call_sid": call_uuid, "status": status})
        return web.Response(text=hangup_xml(), content_type="application/xml")
    to, from_ = e164(params.get("To", "")), e164(params.get("From", ""))
    accepted = await accept_call(
        request,
        log,
        call_sid=call_uuid,
        to=to,
        from_=from_,
        may_preconnect=True,  # signed, or unsigned by the operator's choice (loopback, ALLOW_UNSIGNED)
    )
    if isinstance(accepted, Refused):
        return web.Response(text=hangup_xml(accepted.message), content_type="application/xml")
    base = remember_base(request, "plivo")
    audio = AUDIO[settings.plivo_content_type]
    document = stream_xml(ws_url(base + MEDIA_PATH), accepted.token, audio=audio)
    log.info("answer request", extra={"call_sid": call_uuid, "to": to, "from": from_, "audio": audio.codec})
    return web.Response(text=document, content_type="application/xml")


async def transfer_document(request: web.Request) -> web.Response:
    """The ``<Dial>`` a transfer's ``aleg_url`` names: Plivo fetches it (signed) and runs it."""
    params = await signed_params(request, "transfer request")
    # The target is in our own URL's query (signed with it); a POST body holds Plivo's call parameters.
    target = request.query.get("to", "") or params.get("to", "")
    try:
        document = dial_xml(target)
    except ConfigError:
        raise web.HTTPBadRequest(text="no number to transfer to") from None
    log.info("transfer document served", extra={"call_sid": params.get("CallUUID", "")})
    return web.Response(text=document, content_type="application/xml")


def _upgrade_refusal(request: web.Request) -> str | None:
    """No token in the URL: not a stream we answered; refused before a WebSocket exists."""
    return None if request.query.get(TOKEN_PARAMETER) else "no stream token in the media URL"


def _token(start: CallStarted, request: web.Request) -> str:
    """Plivo keeps the ``<Stream>`` URL's query on the upgrade (see gateway/telephony/plivo.py)."""
    return request.query.get(TOKEN_PARAMETER, "")


def plivo_rest(app: web.Application) -> PlivoRest | None:
    """Hang-up and transfer need ``PLIVO_AUTH_ID`` and ``PLIVO_AUTH_TOKEN``; without them hang-up closes
    the stream only (which ends the call: nothing follows our ``<Stream keepCallAlive>``)."""
    settings, http = app[SETTINGS], app.get(HTTP_CLIENT)
    if http is None or not (settings.plivo_auth_id and settings.plivo_auth_token):
        return None
    return PlivoRest(
        http,
        auth_id=settings.plivo_auth_id,
        auth_token=settings.plivo_auth_token,
        base_url=settings.plivo_api_base,
        transfer_url=transfer_url(app, "plivo", TRANSFER_PATH),
    )


ROUTE = StreamRoute(
    provider="plivo",
    path=MEDIA_PATH,
    codec=PlivoCodec,
    upgrade_refusal=_upgrade_refusal,
    token=_token,
    log=log,
    rest=plivo_rest,
    plan=url_plan,  # an outbound call's signed plan, in the stream URL (gateway/server/outbound_state.py)
)
media_stream = media_stream_handler(ROUTE)

#: Plivo's routes, as the provider registry (gateway/server/providers.py) serves them. The Answer and
#: transfer URLs take GET too: a Plivo application may be set to request them with either method.
ROUTES = (
    ("POST", ANSWER_PATH, answer),
    ("GET", ANSWER_PATH, answer),
    ("POST", TRANSFER_PATH, transfer_document),
    ("GET", TRANSFER_PATH, transfer_document),
    ("GET", MEDIA_PATH, media_stream),
)
