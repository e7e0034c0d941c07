"""Outbound calls through Plivo's Voice API: Make Call, and the call's answer, ring, hangup and machine
detection URLs.

Flow (Plivo's documents: "Make an outbound call", ``POST /v1/Account/{auth_id}/Call/``; the parameters
Plivo sends to answer and hangup URLs ("XML request", the Application API); "Asynchronous machine
detection"; signature V3, as gateway/server/plivo.py checks it for inbound calls):

1. The admin API (gateway/server/outbound.py) has checked and counted the call; :class:`PlivoDialer`
   places it with ``answer_url`` = ``/plivo/outbound/answer?t=TOKEN``, ``ring_url`` and ``hangup_url``
   = ``/plivo/outbound/status?t=TOKEN``, ``ring_timeout`` and, when the plan cares about machines,
   asynchronous machine detection (``machine_detection_url`` = ``/plivo/outbound/machine?t=TOKEN``).
2. Plivo answers with a ``request_uuid`` only: the call's own ``CallUUID`` (the stream's ``callId``,
   what a hang-up names) comes with its first callback, with the request's id beside it
   (``RequestUUID``, or ``ALegRequestUUID`` on the answer and hangup URLs; the replica that dialled knows
   it from the callback's token anyway). The admin API returns the request id, so the first callback
   makes it another name of the call in the record
   (:data:`gateway.records.store.ALIAS_EVENT`; ``GET /admin/calls/{request_uuid}`` and ``gateway dial
   --wait`` follow it) and renames the call's place among the plan's concurrent calls.
3. The callee answers; Plivo requests the answer URL: signature and token checked, the token used once,
   the call admitted exactly as an inbound one with the plan rendered with its parameters, and the
   answer is the inbound ``<Stream>``, whose URL also carries a token bound to the ``CallUUID``, from
   which the media route takes the rendered plan. Refused (over capacity): ``<Speak>`` the fallback
   line, ``<Hangup/>``.
4. ``ring_url`` and ``hangup_url`` put the call's statuses in the record in Twilio's words (``timeout``
   → ``no-answer``, ``cancel`` → ``canceled``), the hangup cause kept; a call never answered gets a
   record of its own. The machine detection verdict (``Machine=true``) carries out the plan's choice.
   Plivo detects no beep, so a ``message`` waits for the machine's line to go quiet (its greeting and
   beep over: gateway/server/outbound_state.py ``GREETING_QUIET_S``), as a voicemail records only
   after its beep.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Final

from aiohttp import web

from gateway.errors import AuthError, ConfigError, ToolError
from gateway.log import call_logger
from gateway.records.store import ALIAS_EVENT
from gateway.security.inputs import webhook_identity_problem
from gateway.security.outbound_tokens import CALLBACK_TTL_S, QUERY_PARAMETER, OutboundClaims
from gateway.server.media import Refused, public_base, ws_url
from gateway.server.outbound_state import (
    AMD_SEQ,
    EVENT_SEQ,
    OUTBOUND,
    DialRefused,
    DialRequest,
    admit_answer,
    call_plan,
    leave_or_hang_up,
    missing_credentials,
    not_running,
    record_dial,
    record_event,
    record_status,
)
from gateway.server.plivo import AUDIO, MEDIA_PATH, e164, plivo_rest, signed_params
from gateway.server.state import DIALPLANS, SETTINGS
from gateway.settings import Settings
from gateway.telephony.plivo import hangup_xml, stream_xml
from gateway.tools.rest_call import RestRefused

__all__ = ["ANSWER_PATH", "MACHINE_PATH", "ROUTES", "STATUS_PATH", "PlivoDialer"]

ANSWER_PATH = "/plivo/outbound/answer"
STATUS_PATH = "/plivo/outbound/status"
MACHINE_PATH = "/plivo/outbound/machine"
#: Plivo's ``CallStatus`` (the "XML request" page: ``ringing``, ``in-progress``, ``completed``, and for
#: outbound calls ``busy``, ``failed``, ``timeout``, ``no-answer``; ``cancel`` for a request cancelled
#: while ringing) → the record's status (Twilio's words, as every outbound record has them).
_STATUS: Final = {
    "ringing": "ringing",
    "in-progress": "in-progress",
    "completed": "completed",
    "busy": "busy",
    "failed": "failed",
    "timeout": "no-answer",
    "no-answer": "no-answer",
    "cancel": "canceled",
}
#: The alias event's seq among the call's outbound events (written once, whichever callback brings it).
_ALIAS_SEQ: Final = EVENT_SEQ + 50

log = call_logger("gateway.outbound")


class PlivoDialer:
    """Plivo's Make Call (gateway/server/outbound.py picks it for ``provider = "plivo"``)."""

    def unavailable(self, settings: Settings) -> str | None:
        return missing_credentials(settings, "Plivo", "PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN")

    async def dial(self, app: web.Application, call: DialRequest) -> tuple[str, str]:
        rest, outbound = plivo_rest(app), call.plan.outbound
        assert outbound is not None
        if rest is None:
            raise not_running("Plivo")
        status_url = call.base + STATUS_PATH + call.query
        try:
            request_uuid = await rest.make_call(
                to=call.to,
                from_=call.from_,
                answer_url=call.base + ANSWER_PATH + call.query,
                hangup_url=status_url,
                ring_url=status_url,
                ring_timeout_s=outbound.ring_timeout_s,
                machine_detection_url=(
                    None if outbound.machine == "continue" else call.base + MACHINE_PATH + call.query
                ),
            )
        except ConfigError as exc:
            raise DialRefused(None, f"Plivo cannot dial that: {exc}") from None
        except RestRefused as exc:
            raise DialRefused(None, f"Plivo refused the call: HTTP {exc.status}") from None
        except ToolError:
            raise DialRefused(None, "Plivo could not be reached; the call was not placed") from None
        return request_uuid, "queued"


async def _callback(
    request: web.Request, what: str, *, max_age_s: float | None
) -> tuple[dict[str, str], OutboundClaims, str]:
    """A signed Plivo callback about an outbound call: its parameters, the call's claims and CallUUID,
    the request's id made another name of the call.

    Raises:
        web.HTTPForbidden: a bad signature or token, or numbers other than the call's.
    """
    params = dict(await signed_params(request, f"outbound {what}"))
    app = request.app
    try:
        claims = app[OUTBOUND].tokens.check(
            request.query.get(QUERY_PARAMETER, ""), now=time.time(), max_age_s=max_age_s
        )
    except AuthError as exc:
        log.warning(f"Plivo outbound {what} rejected", extra={"reason": str(exc)})
        raise web.HTTPForbidden(text=str(exc)) from None
    call_uuid = params.get("CallUUID", "")
    to, from_ = e164(params.get("To", "")), e164(params.get("From", ""))
    if (
        webhook_identity_problem(call_uuid, claims.to, claims.from_) is not None
        or (to and to != claims.to)
        or (from_ and from_ != claims.from_)
    ):
        log.warning(f"Plivo outbound {what} rejected: not the call this URL was issued for")
        raise web.HTTPForbidden(text="this URL was issued for another call")
    # The dial's own answer when this process placed the call, else what the callback says (Plivo's
    # pages list ``ALegRequestUUID`` for the answer and hangup URLs, ``RequestUUID`` for machine detection).
    request_uuid = (
        app[OUTBOUND].dialled_as(request.query.get(QUERY_PARAMETER, ""))
        or params.get("RequestUUID")
        or params.get("ALegRequestUUID")
        or ""
    )
    if request_uuid != call_uuid and webhook_identity_problem(request_uuid, claims.to, claims.from_) is None:
        _alias(app, request_uuid, call_uuid, claims)
    return params, claims, call_uuid


def _alias(app: web.Application, request_uuid: str, call_uuid: str, claims: OutboundClaims) -> None:
    """The request id the admin API returned becomes another name of the call, whose record starts with
    the dial request; the call's place among the plan's concurrent calls is now named by its CallUUID."""
    record_event(app, request_uuid, _ALIAS_SEQ, ALIAS_EVENT, {"call_id": call_uuid})
    plan = app[DIALPLANS].current.get(claims.dialplan)
    if plan is not None and plan.outbound is not None:
        record_dial(
            app,
            call_uuid,
            plan,
            to=claims.to,
            from_=claims.from_,
            params=claims.params,
            timezone=claims.timezone,
        )
    app[OUTBOUND].placed(request_uuid, call_uuid)


async def answer(request: web.Request) -> web.Response:
    """Plivo requests the answer URL: the callee answered. Same admission and media path as inbound."""
    params, claims, call_uuid = await _callback(request, "answer request", max_age_s=None)
    app = request.app
    if params.get("CallStatus", "in-progress").lower() != "in-progress":
        # A hangup notification sent to the answer URL (an account default); this call sets hangup_url.
        _status(app, params, claims, call_uuid)
        return web.Response(text=hangup_xml(), content_type="application/xml")
    clog = log.bind(call_sid=call_uuid)
    admitted = await admit_answer(request, clog, claims, call_uuid, may_preconnect=True)
    if admitted is None:
        clog.warning("outbound answer rejected: the answer URL was already used")
        raise web.HTTPForbidden(text="this answer URL was already used")
    record_status(app, call_uuid, claims, {"status": "in-progress"})
    if isinstance(admitted, Refused):
        return web.Response(text=hangup_xml(admitted.message or None), content_type="application/xml")
    audio = AUDIO[app[SETTINGS].plivo_content_type]
    stream_url = admitted.stream_url(ws_url(public_base(request) + MEDIA_PATH))
    document = stream_xml(stream_url, admitted.token, audio=audio)
    return web.Response(text=document, content_type="application/xml")


async def status(request: web.Request) -> web.Response:
    """``ring_url`` and ``hangup_url``: the call's status in the record (a record of its own for a call
    never answered); the end frees the call's place."""
    params, claims, call_uuid = await _callback(request, "status", max_age_s=CALLBACK_TTL_S)
    _status(request.app, params, claims, call_uuid)
    return web.Response(status=204)


def _status(app: web.Application, params: dict[str, str], claims: OutboundClaims, call_uuid: str) -> None:
    plivo_status = params.get("CallStatus", "").lower()
    call_status = _STATUS.get(plivo_status)
    if call_status is None:
        log.debug("Plivo outbound status", extra={"call_sid": call_uuid, "status": plivo_status[:40]})
        return
    detail: dict[str, Any] = {"status": call_status}
    cause = params.get("HangupCauseName") or params.get("HangupCause") or ""
    for name, key in (("HangupCause", "hangup_cause"), ("HangupSource", "hangup_source")):
        if params.get(name):
            detail[key] = params[name][:64]
    if params.get("Duration", "").isdigit():
        detail["duration_s"] = int(params["Duration"][:9])
    record_status(app, call_uuid, claims, detail, why=cause[:64])


async def machine(request: web.Request) -> web.Response:
    """The machine detection verdict (``Machine`` ``true``/``false``): recorded; for a machine the plan's
    choice is made (Plivo reports no beep: the message waits for the machine's line to go quiet)."""
    params, claims, call_uuid = await _callback(request, "machine detection", max_age_s=CALLBACK_TTL_S)
    app = request.app
    is_machine = params.get("Machine", "").lower() == "true"
    found = call_plan(app, claims)
    wanted = found[0].outbound.machine if found is not None and found[0].outbound is not None else "continue"
    action = "continue"
    if is_machine and wanted in ("hangup", "message"):
        rest = plivo_rest(app)
        action = await leave_or_hang_up(
            app,
            call_uuid,
            claims,
            verdict="machine",
            action=wanted,
            hang_up=None if rest is None else functools.partial(rest.hang_up, call_uuid),
            greeting_over=False,  # Plivo reports no beep: the message waits for the line to go quiet
        )
    detail = {"answered_by": "machine" if is_machine else "human", "action": action}
    record_event(app, call_uuid, AMD_SEQ, "answered_by", detail)
    log.info("answering machine detection", extra={"call_sid": call_uuid, **detail})
    return web.Response(status=204)


#: Plivo's callbacks about the calls the gateway placed (gateway/server/outbound.py serves them).
ROUTES = ((ANSWER_PATH, answer), (STATUS_PATH, status), (MACHINE_PATH, machine))
