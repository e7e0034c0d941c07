"""Outbound calls through the Vonage Voice API: the create-call request, its answer and event webhooks.

Flow (Vonage's documents: "Create an outbound call", ``POST /v1/calls``, vonage-python-sdk
``voice/models/requests.py`` and ``common.py``; the event webhook reference; "Voicemail Detection
(Automatic Machine Detection)"; signed webhooks, as gateway/server/vonage.py checks them):

1. The admin API (gateway/server/outbound.py) has checked and counted the call; :class:`VonageDialer`
   creates it with the application's JWT, ``answer_url`` = ``/vonage/outbound/answer?t=TOKEN`` and
   ``event_url`` = ``/vonage/outbound/event?t=TOKEN`` (both POSTed JSON), ``ringing_timer`` and, when
   the plan cares about machines, advanced machine detection in its asynchronous mode. The call's
   uuid is known at once: it is the record's call id.
2. The callee answers; Vonage fetches the answer URL: signature and token checked, the token used
   once, the call admitted exactly as an inbound one (:func:`gateway.server.media.accept_call`) with
   the plan rendered with its parameters, and the NCCO connects it to our WebSocket (the inbound
   NCCO: stream token as the endpoint's authorization); the stream URL also carries a token bound to
   the call's uuid, from which the media socket takes the rendered plan (the endpoint's headers hold
   512 bytes, too few for parameters). Refused (over capacity): a ``talk`` NCCO says the fallback line.
3. Events: the call's statuses land in the record in Twilio's words (``started`` → ``initiated``,
   ``timeout``/``unanswered`` → ``no-answer``, ``rejected`` → ``failed``, ``cancelled`` →
   ``canceled``); a call never answered gets a record of its own. ``machine`` (the verdict) hangs up
   for the plan's ``hangup``; ``machine`` with ``sub_state`` ``beep_start`` (or ``beep_timeout``: the
   greeting is over without one) leaves the plan's message.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Final

from aiohttp import web

from gateway.errors import AuthError, ConfigError, ToolError
from gateway.log import call_logger
from gateway.security.inputs import webhook_identity_problem
from gateway.security.outbound_tokens import CALLBACK_TTL_S, QUERY_PARAMETER, OutboundClaims
from gateway.server.media import Refused, public_base, ws_url
from gateway.server.outbound_state import (
    AMD_SEQ,
    OUTBOUND,
    DialRefused,
    DialRequest,
    admit_answer,
    call_plan,
    leave_or_hang_up,
    missing_credentials,
    record_event,
    record_status,
)
from gateway.server.state import SETTINGS
from gateway.server.vonage import EVENT_PATH, MEDIA_PATH, e164, signed_params, vonage_rest
from gateway.settings import Settings
from gateway.telephony.vonage import answer_ncco, talk_ncco
from gateway.tools.rest_call import RestRefused

__all__ = ["ANSWER_PATH", "EVENT_PATH_OUT", "ROUTES", "VonageDialer", "answer", "event"]

ANSWER_PATH = "/vonage/outbound/answer"
EVENT_PATH_OUT = "/vonage/outbound/event"
#: Vonage's call statuses (vonage-python-sdk ``CallState``; the event webhook reference) → the record's.
_STATUS: Final = {
    "started": "initiated",
    "ringing": "ringing",
    "answered": "in-progress",
    "completed": "completed",
    "busy": "busy",
    "timeout": "no-answer",
    "unanswered": "no-answer",
    "failed": "failed",
    "rejected": "failed",
    "cancelled": "canceled",
}
#: A machine's greeting is over: its beep was heard, or none came in time.
_GREETING_OVER: Final = frozenset({"beep_start", "beep_timeout"})
#: What the callee hears when the plan that placed the call can no longer run it (an NCCO must act).
_CANNOT_RUN: Final = "Sorry, this call cannot continue. Goodbye."

log = call_logger("gateway.outbound")


class VonageDialer:
    """Vonage's create-call request (gateway/server/outbound.py picks it for ``provider = "vonage"``)."""

    def unavailable(self, settings: Settings) -> str | None:
        return missing_credentials(settings, "Vonage", "VONAGE_APPLICATION_ID", "VONAGE_PRIVATE_KEY")

    async def dial(self, app: web.Application, call: DialRequest) -> tuple[str, str]:
        rest, outbound = vonage_rest(app), call.plan.outbound
        assert outbound is not None
        if rest is None:  # a key that cannot sign was logged once, at its first use
            raise DialRefused(
                None, "Vonage's REST client is not available: VONAGE_PRIVATE_KEY cannot sign (see the log)"
            )
        try:
            uuid = await rest.create_call(
                to=call.to,
                from_=call.from_,
                answer_url=call.base + ANSWER_PATH + call.query,
                event_url=call.base + EVENT_PATH_OUT + call.query,
                ringing_s=outbound.ring_timeout_s,
                machine_detection=outbound.machine != "continue",
            )
        except ConfigError as exc:
            raise DialRefused(None, f"Vonage cannot dial that: {exc}") from None
        except RestRefused as exc:
            raise DialRefused(None, f"Vonage refused the call: HTTP {exc.status}") from None
        except ToolError:
            raise DialRefused(None, "Vonage could not be reached; the call was not placed") from None
        return uuid, "started"


async def _claims(
    request: web.Request, what: str, *, max_age_s: float | None
) -> tuple[dict[str, str], OutboundClaims, bool]:
    """A signed Vonage webhook about an outbound call: its parameters, the call's claims, whether signed.

    Raises:
        web.HTTPForbidden: a bad signature or token, or numbers other than the call's.
    """
    params, signed = await signed_params(request, what)
    try:
        claims = request.app[OUTBOUND].tokens.check(
            request.query.get(QUERY_PARAMETER, ""), now=time.time(), max_age_s=max_age_s
        )
    except AuthError as exc:
        log.warning(f"Vonage outbound {what} rejected", extra={"reason": str(exc)})
        raise web.HTTPForbidden(text=str(exc)) from None
    to, from_ = e164(params.get("to", "")), e164(params.get("from", ""))
    if (
        webhook_identity_problem(params.get("uuid", ""), claims.to, claims.from_) is not None
        or (to and to != claims.to)
        or (from_ and from_ != claims.from_)
    ):
        log.warning(f"Vonage outbound {what} rejected: not the call this URL was issued for")
        raise web.HTTPForbidden(text="this URL was issued for another call")
    return params, claims, signed


async def answer(request: web.Request) -> web.Response:
    """Vonage fetches the answer URL: the callee answered. Same admission and media path as inbound."""
    params, claims, signed = await _claims(request, "answer request", max_age_s=None)
    app, call_uuid = request.app, params["uuid"]
    clog = log.bind(call_sid=call_uuid)
    may_preconnect = signed or not app[SETTINGS].vonage_signature_secret
    admitted = await admit_answer(request, clog, claims, call_uuid, may_preconnect=may_preconnect)
    if admitted is None:
        clog.warning("outbound answer rejected: the answer URL was already used")
        raise web.HTTPForbidden(text="this answer URL was already used")
    if isinstance(admitted, Refused):
        return web.json_response(talk_ncco(admitted.message or _CANNOT_RUN))
    base = public_base(request)
    ncco = answer_ncco(
        admitted.stream_url(ws_url(base + MEDIA_PATH)),
        admitted.token,
        call_uuid=call_uuid,
        from_=claims.from_,
        to=claims.to,
        rate=app[SETTINGS].vonage_sample_rate,
        event_url=base + EVENT_PATH,  # the WebSocket leg's own events: logged, not this call's record
    )
    return web.json_response(ncco)


async def event(request: web.Request) -> web.Response:
    """A call event: its status in the record (a record of its own for a call never answered), the end
    freeing the call's place; machine detection's verdicts carried out."""
    params, claims, _ = await _claims(request, "event", max_age_s=CALLBACK_TTL_S)
    app, call_uuid, state = request.app, params["uuid"], params.get("status", "")
    if state in ("human", "machine"):
        await _machine(app, call_uuid, claims, state, params.get("sub_state", "")[:32])
        return web.Response(status=204)
    status = _STATUS.get(state)
    if status is None:
        log.debug("Vonage outbound event", extra={"call_sid": call_uuid, "status": state[:40]})
        return web.Response(status=204)
    detail: dict[str, Any] = {"status": status}
    if params.get("duration", "").isdigit():
        detail["duration_s"] = int(params["duration"][:9])
    record_status(app, call_uuid, claims, detail, why=state)
    return web.Response(status=204)


async def _machine(
    app: web.Application, call_uuid: str, claims: OutboundClaims, state: str, sub_state: str
) -> None:
    """``human`` / ``machine`` (and a machine's ``beep_start`` / ``beep_timeout``): recorded; the plan's
    choice for a machine made."""
    found = call_plan(app, claims)
    wanted = found[0].outbound.machine if found is not None and found[0].outbound is not None else "continue"
    action = "continue"
    if state == "machine" and not sub_state:
        action = "hangup" if wanted == "hangup" else "await beep" if wanted == "message" else "continue"
    elif state == "machine" and sub_state in _GREETING_OVER and wanted == "message":
        action = "message"
    if action in ("hangup", "message"):
        rest = vonage_rest(app)
        action = await leave_or_hang_up(
            app,
            call_uuid,
            claims,
            verdict=f"{state} {sub_state}".strip(),
            action=action,
            hang_up=None if rest is None else functools.partial(rest.hang_up, call_uuid),
        )
    detail = {"answered_by": state, "sub_state": sub_state, "action": action}
    record_event(app, call_uuid, AMD_SEQ + (1 if sub_state else 0), "answered_by", detail)
    log.info("answering machine detection", extra={"call_sid": call_uuid, **detail})


#: Vonage's webhooks about the calls the gateway placed (gateway/server/outbound.py serves them).
ROUTES = ((ANSWER_PATH, answer), (EVENT_PATH_OUT, event))
