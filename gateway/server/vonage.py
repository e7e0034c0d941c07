"""Vonage Voice API: the answer webhook (an NCCO ``connect`` to our WebSocket), the event webhook, the
media route.

The media socket itself is handled by :mod:`gateway.server.media`, as every provider's is; this module
says what is Vonage's: the answer and event webhooks and their signature (a JWT, HS256 under
``VONAGE_SIGNATURE_SECRET``, with the body's SHA-256 in ``payload_hash``), the numbers Vonage writes
without ``+``, the codec (binary L16, 16 kHz by default), where the stream token travels, and the REST
client (hang-up, transfer).

The stream token: the NCCO's websocket endpoint carries it twice, as ``authorization`` of type
``custom`` (Vonage sends the value in the upgrade's ``Authorization`` header) and in ``headers``
(flattened into ``websocket:connected``). The upgrade's header is used when present, else the one in
``websocket:connected``; either way the token (signed, bound to the call's uuid, single-use) is
checked before any Gemini session opens, as for every provider.
"""

from __future__ import annotations

import functools
import json
import re
import time
from typing import Any, Final

from aiohttp import web

from gateway.errors import AuthError, ConfigError
from gateway.log import call_logger
from gateway.security.tokens import MAX_TOKEN_LENGTH
from gateway.server.access import local_operator
from gateway.server.media import Refused, StreamRoute, accept_call, media_stream_handler, public_base, ws_url
from gateway.server.outbound_state import url_plan
from gateway.server.state import HTTP_CLIENT, SETTINGS
from gateway.telephony.events import CallStarted
from gateway.telephony.vonage import (
    TOKEN_HEADER,
    VonageCodec,
    answer_ncco,
    application_jwt,
    talk_ncco,
    verify_vonage_signature,
)
from gateway.tools.vonage_rest import VonageRest

ANSWER_PATH = "/vonage/answer"
EVENT_PATH = "/vonage/event"
MEDIA_PATH = "/vonage/media"
UNSIGNED_REFUSAL = (
    "unsigned webhook refused: set VONAGE_SIGNATURE_SECRET (and turn on signed webhooks in the Vonage "
    "application); for local experiments listen on 127.0.0.1 (--host 127.0.0.1, as `make run` does) and "
    "call from this machine, or set GATEWAY_ALLOW_UNSIGNED=1"
)
#: A number as Vonage writes it: country code and digits, no ``+`` (E.164 allows at most 15 digits).
_VONAGE_NUMBER: Final = re.compile(r"[0-9]{6,15}")

log = call_logger("gateway.vonage")


def e164(number: str) -> str:
    """Vonage's ``447700900000`` → ``+447700900000`` (dialplans match E.164); anything else unchanged."""
    number = number.strip()
    return "+" + number if _VONAGE_NUMBER.fullmatch(number) else number


async def signed_params(request: web.Request, what: str) -> tuple[dict[str, str], bool]:
    """The webhook's parameters (a GET's query, a POST's JSON body) once Vonage's signature checks out;
    and whether it was signed.

    Raises:
        web.HTTPBadRequest: a POST body that is not a JSON object. web.HTTPForbidden: a bad or missing
            signature with VONAGE_SIGNATURE_SECRET set; without it, a request from other than the local
            operator (unless GATEWAY_ALLOW_UNSIGNED).
    """
    settings = request.app[SETTINGS]
    body = await request.read() if request.method == "POST" else b""
    if settings.vonage_signature_secret:
        try:
            verify_vonage_signature(
                settings.vonage_signature_secret,
                request.headers.get("Authorization", ""),
                body,
                now=time.time(),
                query=request.query if request.method == "GET" else None,
            )
        except AuthError as exc:
            log.warning(f"{what} rejected: {exc}", extra={"peer": request.remote})
            raise web.HTTPForbidden(text="invalid signature") from None
        signed = True
    elif not settings.allow_unsigned_webhooks and not local_operator(request):
        # No secret: anyone who can reach us could start sessions on the owner's bill. Only this machine
        # is trusted, and only while nothing else can relay to us (gateway/server/access.py).
        log.warning(f"{what} rejected: unsigned, not local operator", extra={"peer": request.remote})
        raise web.HTTPForbidden(text=UNSIGNED_REFUSAL)
    else:
        signed = False
    if request.method != "POST":
        return dict(request.query), signed
    if not body:
        return {}, signed
    try:
        parsed: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise web.HTTPBadRequest(text="the body is not JSON") from None
    if type(parsed) is not dict:
        raise web.HTTPBadRequest(text="the body is not a JSON object")
    return {k: v if isinstance(v, str) else str(v) for k, v in parsed.items() if v is not None}, signed


async def answer(request: web.Request) -> web.Response:
    """Answer Vonage's answer webhook with the NCCO connecting the call to our WebSocket."""
    settings = request.app[SETTINGS]
    params, _ = await signed_params(request, "answer request")
    call_uuid = params.get("uuid", "")
    to, from_ = e164(params.get("to", "")), e164(params.get("from", ""))
    accepted = await accept_call(
        request,
        log,
        call_sid=call_uuid,
        to=to,
        from_=from_,
        may_preconnect=True,  # signed, or unsigned by the operator's choice (loopback, ALLOW_UNSIGNED)
    )
    if isinstance(accepted, Refused):
        return web.json_response(talk_ncco(accepted.message))
    base = public_base(request)
    ncco = answer_ncco(
        ws_url(base + MEDIA_PATH),
        accepted.token,
        call_uuid=call_uuid,
        from_=from_,
        to=to,
        rate=settings.vonage_sample_rate,
        event_url=base + EVENT_PATH,
    )
    log.info(
        "answer request",
        extra={"call_sid": call_uuid, "to": to, "from": from_, "rate": settings.vonage_sample_rate},
    )
    return web.json_response(ncco)


async def event(request: web.Request) -> web.Response:
    """Vonage's event webhook (call and websocket status): logged; an empty answer lets the NCCO go on."""
    params, _ = await signed_params(request, "event")
    log.info(
        "call event",
        extra={"call_sid": params.get("uuid", ""), "status": params.get("status", "")[:40]},
    )
    return web.Response(status=204)


def _upgrade_refusal(request: web.Request) -> str | None:
    """An over-long ``Authorization`` is no token of ours; refused before a WebSocket exists."""
    if len(request.headers.get("Authorization", "")) > MAX_TOKEN_LENGTH + 16:
        return "the Authorization header is not a stream token"
    return None


def _token(start: CallStarted, request: web.Request) -> str:
    """The token from the upgrade's ``Authorization`` (the endpoint's custom authorization), else from
    ``websocket:connected``'s headers. A ``Bearer`` prefix is tolerated."""
    header = request.headers.get("Authorization", "").strip()
    scheme, _, rest = header.partition(" ")
    if rest and scheme.lower() == "bearer":
        header = rest.strip()
    return header or start.custom_parameters.get(TOKEN_HEADER, "")


@functools.lru_cache(maxsize=4)
def _checked_key(application_id: str, private_key: str) -> bool:
    """Whether the key signs (once per key: a bad one is logged once per process, not per call)."""
    try:
        application_jwt(application_id, private_key)
    except ConfigError as exc:
        log.error("Vonage REST disabled", extra={"reason": str(exc)})
        return False
    return True


def vonage_rest(app: web.Application) -> VonageRest | None:
    """Hang-up and transfer need ``VONAGE_APPLICATION_ID`` and ``VONAGE_PRIVATE_KEY``; without them
    hang-up closes the socket (the call then ends: nothing follows our ``connect``)."""
    settings, http = app[SETTINGS], app.get(HTTP_CLIENT)
    if http is None or not (settings.vonage_application_id and settings.vonage_private_key):
        return None
    if not _checked_key(settings.vonage_application_id, settings.vonage_private_key):
        return None
    return VonageRest(
        http,
        application_id=settings.vonage_application_id,
        private_key=settings.vonage_private_key,
        base_url=settings.vonage_api_base,
    )


def _codec() -> VonageCodec:
    return VonageCodec()


ROUTE = StreamRoute(
    provider="vonage",
    path=MEDIA_PATH,
    codec=_codec,
    upgrade_refusal=_upgrade_refusal,
    token=_token,
    log=log,
    rest=vonage_rest,
    plan=url_plan,  # an outbound call's signed plan, in the stream URL (gateway/server/outbound_state.py)
)
media_stream = media_stream_handler(ROUTE)

#: Vonage's routes, as the provider registry (gateway/server/providers.py) serves them. The answer URL
#: takes GET (Vonage's default) and POST (``answer_method``); the event URL likewise.
ROUTES = (
    ("GET", ANSWER_PATH, answer),
    ("POST", ANSWER_PATH, answer),
    ("GET", EVENT_PATH, event),
    ("POST", EVENT_PATH, event),
    ("GET", MEDIA_PATH, media_stream),
)
