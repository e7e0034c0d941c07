"""Outbound calls through Twilio: the ``Calls`` request, and Twilio's answer, status and AMD callbacks.

Flow (Twilio's documents are cited in gateway/telephony/twilio_calls.py):

1. The admin API (gateway/server/outbound.py) has checked, counted and signed the call;
   :class:`TwilioDialer` asks Twilio's ``Calls`` resource to dial, with ``Url``,
   ``StatusCallback`` and (when the plan cares about machines) ``AsyncAmdStatusCallback`` pointing back
   here, each carrying the token.
2. When the callee answers, Twilio fetches ``Url`` (:data:`ANSWER_PATH`): ``X-Twilio-Signature`` and the
   token are checked, the token is used once, and the call is accepted exactly as an inbound one
   (:func:`gateway.server.media.accept_call`) with the plan rendered with its parameters. The TwiML's
   ``<Connect><Stream>`` carries, besides the stream token, a token bound to the call SID, from which
   the media socket takes the same rendered plan (:func:`gateway.server.outbound_state.stream_plan`).
3. Status callbacks (:data:`STATUS_PATH`) and the AMD verdict (:data:`AMD_PATH`), signed and with the
   token, land in the call record as events; a call that never connected (busy, no answer, failed,
   canceled) gets a record of its own saying so. For a machine the plan decides: leave its message
   once the greeting ended (the model says it, then the call hangs up), hang up, or carry on.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from aiohttp import web
from multidict import MultiDict

from gateway.errors import AuthError, ToolError
from gateway.log import call_logger
from gateway.security.inputs import webhook_identity_problem
from gateway.security.outbound_tokens import CALLBACK_TTL_S, QUERY_PARAMETER, STREAM_PARAMETER, OutboundClaims
from gateway.security.tokens import TOKEN_PARAMETER
from gateway.server.access import local_operator
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
    not_running,
    record_event,
    record_status,
)
from gateway.server.state import SETTINGS
from gateway.server.twilio import MEDIA_PATH, UNSIGNED_REFUSAL, twilio_rest
from gateway.settings import Settings
from gateway.telephony.signature import verify_twilio_signature
from gateway.telephony.twilio_calls import AMD_FAX, AMD_MACHINE, STATUS_ORDER, create_call_form
from gateway.telephony.twiml import connect_stream_twiml, say_hangup_twiml
from gateway.tools.rest_call import RestRefused

__all__ = ["AMD_PATH", "ANSWER_PATH", "ROUTES", "STATUS_PATH", "TwilioDialer"]

ANSWER_PATH = "/twilio/outbound"
STATUS_PATH = "/twilio/outbound/status"
AMD_PATH = "/twilio/outbound/amd"
#: Every ``AnsweredBy`` Twilio documents.
ANSWERED_BY = frozenset(
    {
        "human",
        "machine_start",
        "machine_end_beep",
        "machine_end_silence",
        "machine_end_other",
        "fax",
        "unknown",
    }
)
#: Twilio error codes that are about one field of the request (Twilio's error dictionary).
_FIELD_OF_CODE = {"21201": "to", "21211": "to", "21214": "to", "21215": "to", "21217": "to",
                  "21210": "from", "21212": "from", "21213": "from"}  # fmt: skip

log = call_logger("gateway.outbound")


class TwilioDialer:
    """Twilio's ``Calls`` resource: ``Url`` (the answer), ``StatusCallback`` and async AMD point back here."""

    def unavailable(self, settings: Settings) -> str | None:
        return missing_credentials(settings, "Twilio", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")

    async def dial(self, app: web.Application, call: DialRequest) -> tuple[str, str]:
        rest, outbound = twilio_rest(app), call.plan.outbound
        assert outbound is not None
        if rest is None:
            raise not_running("Twilio")
        form = create_call_form(
            to=call.to,
            from_=call.from_,
            url=call.base + ANSWER_PATH + call.query,
            status_callback=call.base + STATUS_PATH + call.query,
            amd_callback=call.base + AMD_PATH + call.query if outbound.machine != "continue" else None,
            # To leave a message the verdict must wait for the beep; to hang up, the first guess will do.
            detect_message_end=outbound.machine == "message",
            timeout_s=outbound.ring_timeout_s,
        )
        try:
            reply = await rest.create_call(form)
        except RestRefused as exc:
            field = next((_FIELD_OF_CODE[c] for c in exc.codes if c in _FIELD_OF_CODE), None)
            detail = f"HTTP {exc.status}" + (f", Twilio error {', '.join(exc.codes)}" if exc.codes else "")
            raise DialRefused(
                field, f"Twilio refused the call: {detail}", twilio_codes=list(exc.codes)
            ) from None
        except ToolError:
            raise DialRefused(None, "Twilio could not be reached; the call was not placed") from None
        call_sid = str(reply.get("sid", ""))
        if webhook_identity_problem(call_sid, call.to, call.from_) is not None:
            log.error(
                "Twilio answered the call request without a usable call SID",
                extra={"reply_keys": sorted(reply)},
            )
            raise DialRefused(
                None, "Twilio's answer had no call SID; the call may or may not have been placed"
            )
        return call_sid, str(reply.get("status", "queued"))


# --- Twilio's requests -------------------------------------------------------------------------------


async def _twilio_request(
    request: web.Request, *, max_age_s: float | None
) -> tuple[dict[str, str], OutboundClaims]:
    """A Twilio request about an outbound call: its form, once its signature and token verified.

    Raises:
        web.HTTPForbidden: a bad signature or token. web.HTTPBadRequest: not a form.
    """
    settings = request.app[SETTINGS]
    try:
        form = await request.post()
    except ValueError:
        raise web.HTTPBadRequest(text="the body is not a form") from None
    if settings.twilio_auth_token:
        # The URL as Twilio requested it, query included and still encoded: what Twilio signed.
        url = public_base(request) + request.raw_path
        signed = MultiDict((k, str(v)) for k, v in form.items())
        if not verify_twilio_signature(
            settings.twilio_auth_token, url, signed, request.headers.get("X-Twilio-Signature", "")
        ):
            log.warning("outbound callback rejected: bad X-Twilio-Signature", extra={"path": request.path})
            raise web.HTTPForbidden(text="invalid signature")
    elif not settings.allow_unsigned_webhooks and not local_operator(request):
        log.warning(
            "outbound callback rejected: unsigned, not local operator", extra={"peer": request.remote}
        )
        raise web.HTTPForbidden(text=UNSIGNED_REFUSAL)
    outbound = request.app[OUTBOUND]
    try:
        claims = outbound.tokens.check(
            request.query.get(QUERY_PARAMETER, ""), now=time.time(), max_age_s=max_age_s
        )
    except AuthError as exc:
        log.warning("outbound callback rejected", extra={"path": request.path, "reason": str(exc)})
        raise web.HTTPForbidden(text=str(exc)) from None
    return {k: str(v) for k, v in form.items()}, claims


async def answer(request: web.Request) -> web.Response:
    """Twilio fetches the call's ``Url``: the callee answered. Same admission and media path as inbound."""
    form, claims = await _twilio_request(request, max_age_s=None)
    call_sid, to, from_ = form.get("CallSid", ""), form.get("To", ""), form.get("From", "")
    clog = log.bind(call_sid=call_sid)
    if to != claims.to or from_ != claims.from_:
        clog.warning("outbound answer rejected: numbers differ from the dial request")
        raise web.HTTPForbidden(text="this answer URL was issued for another call")
    admitted = await admit_answer(request, clog, claims, call_sid, may_preconnect=True)
    if admitted is None:
        clog.warning("outbound answer rejected: the answer URL was already used")
        raise web.HTTPForbidden(text="this answer URL was already used")
    if isinstance(admitted, Refused):
        return web.Response(text=say_hangup_twiml(admitted.message or None), content_type="text/xml")
    stream_url = ws_url(public_base(request) + MEDIA_PATH)
    parameters = {TOKEN_PARAMETER: admitted.token, "from": from_, "to": to, STREAM_PARAMETER: admitted.bound}
    return web.Response(text=connect_stream_twiml(stream_url, parameters), content_type="text/xml")


async def status(request: web.Request) -> web.Response:
    """A call-progress status callback: an event in the record; a record of its own for a call that never
    connected; the end of a call frees its place among the plan's concurrent calls."""
    form, claims = await _twilio_request(request, max_age_s=CALLBACK_TTL_S)
    app = request.app
    call_sid, call_status = form.get("CallSid", ""), form.get("CallStatus", "")
    if (
        webhook_identity_problem(call_sid, claims.to, claims.from_) is not None
        or call_status not in STATUS_ORDER
    ):
        raise web.HTTPBadRequest(text="CallSid and a CallStatus Twilio documents are required")
    detail: dict[str, Any] = {"status": call_status}
    for name, key in (
        ("CallDuration", "duration_s"),
        ("SequenceNumber", "sequence"),
        ("AnsweredBy", "answered_by"),
    ):
        if form.get(name):
            detail[key] = form[name][:64]
    record_status(app, call_sid, claims, detail)
    return web.Response(status=204)


async def amd(request: web.Request) -> web.Response:
    """The answering-machine verdict (async AMD): recorded; for a machine, the plan's choice is made."""
    form, claims = await _twilio_request(request, max_age_s=CALLBACK_TTL_S)
    app = request.app
    call_sid, answered_by = form.get("CallSid", ""), form.get("AnsweredBy", "")
    if (
        webhook_identity_problem(call_sid, claims.to, claims.from_) is not None
        or answered_by not in ANSWERED_BY
    ):
        raise web.HTTPBadRequest(text="CallSid and an AnsweredBy Twilio documents are required")
    detail: dict[str, Any] = {"answered_by": answered_by}
    if form.get("MachineDetectionDuration", "").isdigit():
        detail["detection_ms"] = int(form["MachineDetectionDuration"][:9])
    found = call_plan(app, claims)
    action = "continue"
    if (
        found is not None
        and found[0].outbound is not None
        and (answered_by in AMD_MACHINE or answered_by == AMD_FAX)
    ):
        rest = twilio_rest(app)
        action = await leave_or_hang_up(
            app,
            call_sid,
            claims,
            verdict=answered_by,
            action="hangup" if answered_by == AMD_FAX else found[0].outbound.machine,
            hang_up=None if rest is None else functools.partial(rest.hang_up, call_sid),
        )
    detail["action"] = action
    record_event(app, call_sid, AMD_SEQ, "answered_by", detail)
    log.info("answering machine detection", extra={"call_sid": call_sid, **detail})
    return web.Response(status=204)


#: Twilio's callbacks about the calls the gateway placed (gateway/server/outbound.py serves them).
ROUTES = ((ANSWER_PATH, answer), (STATUS_PATH, status), (AMD_PATH, amd))
