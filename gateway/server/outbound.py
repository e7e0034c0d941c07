"""Outbound calls: ``POST /admin/api/calls`` places one through the plan's provider; Twilio's callbacks.

The admin API is the same whoever places the call (``[outbound] provider``: a :class:`Dialer` each);
Telnyx's and Vonage's sides of the flow are gateway/server/outbound_telnyx.py and outbound_vonage.py.
Twilio's flow (its documents are cited in gateway/telephony/twilio_calls.py):

1. The admin API checks the request against the dialplan's ``[outbound]`` table (parameters, caller id,
   calling hours in the callee's time zone, concurrent calls), signs it into a token
   (gateway/security/outbound_tokens.py) and asks Twilio's ``Calls`` resource to dial, with ``Url``,
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

Record events of outbound calls use sequence numbers from :data:`EVENT_SEQ` up, apart from the call's
own (which count from 1): a status reported twice is written once, whichever replica receives it
(gateway/server/outbound_state.py).
"""

from __future__ import annotations

import functools
import re
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDict

from gateway.dialplan.model import Dialplan
from gateway.dialplan.outbound import OutboundRefusal, call_values, hours_refusal, zone
from gateway.errors import AuthError, ToolError
from gateway.log import call_logger
from gateway.security.inputs import webhook_identity_problem
from gateway.security.outbound_tokens import (
    CALLBACK_TTL_S,
    QUERY_PARAMETER,
    STREAM_PARAMETER,
    OutboundClaims,
    OutboundTokens,
)
from gateway.security.tokens import TOKEN_PARAMETER
from gateway.server import outbound_telnyx, outbound_vonage
from gateway.server.access import local_operator, require_admin
from gateway.server.media import Refused, accept_call, public_base, ws_url
from gateway.server.outbound_state import (
    AMD_SEQ,
    EVENT_SEQ,
    OUTBOUND,
    Dialer,
    DialRefused,
    DialRequest,
    OutboundCalls,
    call_plan,
    leave_or_hang_up,
    record_event,
    record_status,
    record_unrun,
)
from gateway.server.state import DIALPLANS, HTTP_CLIENT, LIMITS, OBSERVABILITY, SETTINGS, STREAM_TOKENS
from gateway.server.twilio import MEDIA_PATH, UNSIGNED_REFUSAL
from gateway.settings import Settings
from gateway.telephony.signature import verify_twilio_signature
from gateway.telephony.twilio_calls import (
    AMD_FAX,
    AMD_MACHINE,
    STATUS_ORDER,
    create_call_form,
)
from gateway.telephony.twiml import connect_stream_twiml, say_hangup_twiml
from gateway.tools.rest_call import RestRefused
from gateway.tools.twilio_rest import TwilioRest

__all__ = ["AMD_PATH", "ANSWER_PATH", "API_PATH", "EVENT_SEQ", "STATUS_PATH", "setup_outbound"]

API_PATH = "/admin/api/calls"
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
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_API_KEYS = frozenset({"to", "from", "dialplan", "params", "timezone"})

log = call_logger("gateway.outbound")


def setup_outbound(app: web.Application, secret: bytes) -> None:
    """Serve the outbound routes; tokens are signed with a key derived from ``secret``."""
    app[OUTBOUND] = OutboundCalls(OutboundTokens(secret))
    app.router.add_post(API_PATH, place_call)
    app.router.add_post(ANSWER_PATH, answer)
    app.router.add_post(STATUS_PATH, status)
    app.router.add_post(AMD_PATH, amd)
    app.router.add_post(outbound_telnyx.WEBHOOK_PATH, outbound_telnyx.webhook)
    app.router.add_post(outbound_vonage.ANSWER_PATH, outbound_vonage.answer)
    app.router.add_post(outbound_vonage.EVENT_PATH_OUT, outbound_vonage.event)


# --- the admin API ---------------------------------------------------------------------------------


def _refuse(field: str | None, message: str, status: int = 400, **extra: Any) -> web.Response:
    log.info("outbound call refused", extra={"field": field, "reason": message})
    return web.json_response({"error": message, "field": field, **extra}, status=status)


def _rest(app: web.Application) -> TwilioRest | None:
    settings, http = app[SETTINGS], app.get(HTTP_CLIENT)
    if http is None or not (settings.twilio_account_sid and settings.twilio_auth_token):
        return None
    return TwilioRest(
        http,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token,
        base_url=settings.twilio_api_base,
    )


async def place_call(request: web.Request) -> web.Response:
    """``POST /admin/api/calls`` ``{"to", "dialplan", "from"?, "params"?, "timezone"?}``: 201 with the call
    SID once Twilio has taken the call; 4xx naming the field to fix; 502/503 when Twilio cannot."""
    require_admin(request)
    if request.content_type != "application/json":
        # A cross-site HTML form cannot send JSON without a CORS preflight we never answer.
        raise web.HTTPUnsupportedMediaType(text="send Content-Type: application/json")
    try:
        body = await request.json()
    except ValueError:
        return _refuse(None, "the body is not JSON")
    if not isinstance(body, dict):
        return _refuse(None, "the body must be a JSON object with to, dialplan and params")
    app = request.app
    try:
        plan, to, from_, values, tz_name = _check_request(app, body)
    except OutboundRefusal as exc:
        return _refuse(exc.field, exc.message, exc.status)
    outbound = plan.outbound
    assert outbound is not None  # _check_request refused plans without [outbound]
    dialer = DIALERS[outbound.provider]
    if (unavailable := dialer.unavailable(app[SETTINGS])) is not None:
        return _refuse(None, unavailable, 503)
    if app[OBSERVABILITY].draining:
        return _refuse(None, "the gateway is shutting down and places no new calls", 503)
    calls = app[OUTBOUND]
    key = "pending:" + secrets.token_hex(8)
    # A placed call counts until Twilio says it ended, or past its longest possible life.
    lifetime = (
        outbound.ring_timeout_s + 300.0 + (plan.limits.max_duration_s or app[SETTINGS].max_call_s or 7200.0)
    )
    if not calls.reserve(key, plan.name, outbound.max_concurrent, lifetime):
        return _refuse(
            "max_concurrent",
            f"dialplan {plan.name!r} already has {outbound.max_concurrent} outbound call(s) in progress "
            "(outbound.max_concurrent); try again when one ends",
            429,
        )
    now = time.time()
    token = calls.tokens.issue(
        dialplan=plan.name,
        to=to,
        from_=from_,
        params=values,
        now=now,
        ring_timeout_s=outbound.ring_timeout_s,
        timezone=tz_name,
    )
    base = app[SETTINGS].public_url or public_base(request)
    query = f"?{QUERY_PARAMETER}={quote(token, safe='')}"
    try:
        call_sid, call_status = await dialer.dial(app, DialRequest(plan, to, from_, base, query))
    except DialRefused as exc:
        calls.release(key)
        return _refuse(exc.field, exc.message, 502, **exc.extra)
    calls.placed(key, call_sid)
    record_event(app, call_sid, EVENT_SEQ, "outbound", {
        "to": to, "from": from_, "dialplan": plan.name, "params": dict(values), "timezone": tz_name,
        "machine": outbound.machine, "amd": outbound.machine != "continue", "provider": outbound.provider,
    })  # fmt: skip
    log.info(
        "outbound call placed",
        extra={"call_sid": call_sid, "to": to, "from": from_, "dialplan": plan.name, "peer": request.remote},
    )
    doc = {"call_sid": call_sid, "status": call_status, "to": to, "from": from_, "dialplan": plan.name,
           "provider": outbound.provider}  # fmt: skip
    return web.json_response(doc, status=201)


class _TwilioDialer:
    """Twilio's ``Calls`` resource: ``Url`` (the answer), ``StatusCallback`` and async AMD point back here."""

    def unavailable(self, settings: Settings) -> str | None:
        if settings.twilio_account_sid and settings.twilio_auth_token:
            return None
        return "placing calls through Twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"

    async def dial(self, app: web.Application, call: DialRequest) -> tuple[str, str]:
        rest, outbound = _rest(app), call.plan.outbound
        assert outbound is not None
        if rest is None:
            raise DialRefused(
                None, "Twilio's REST client is not running (the gateway is starting or stopping)"
            )
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


#: ``[outbound] provider`` → how its calls are placed.
DIALERS: dict[str, Dialer] = {
    "twilio": _TwilioDialer(),
    "telnyx": outbound_telnyx.TelnyxDialer(),
    "vonage": outbound_vonage.VonageDialer(),
}


def _check_request(
    app: web.Application, body: Mapping[str, Any]
) -> tuple[Dialplan, str, str, dict[str, str], str | None]:
    """The plan, callee, caller id, parameter values and callee time zone of a valid request.

    Raises:
        OutboundRefusal: the first field that is wrong (unknown fields first, then in request order).
    """
    for key in body:
        if key not in _API_KEYS:
            raise OutboundRefusal(str(key), f"unknown field; the fields are {', '.join(sorted(_API_KEYS))}")
    to = body.get("to")
    if not isinstance(to, str) or not _E164.fullmatch(to.strip()):
        raise OutboundRefusal("to", "must be an E.164 number like '+15551234567'")
    to = to.strip()
    name = body.get("dialplan")
    if not isinstance(name, str) or not name:
        raise OutboundRefusal("dialplan", "required: the name of the dialplan that runs the call")
    plan = app[DIALPLANS].current.get(name)
    if plan is None:
        known = ", ".join(p.name for p in app[DIALPLANS].current.plans if p.outbound is not None) or "none"
        raise OutboundRefusal(
            "dialplan", f"no dialplan named {name!r} (plans that place calls: {known})", status=404
        )
    outbound = plan.outbound
    if outbound is None:
        raise OutboundRefusal("dialplan", f"{name!r} has no [outbound] table, so it places no calls")
    from_ = body.get("from") or outbound.caller_id
    if from_ is None:
        raise OutboundRefusal("from", f"required: {name!r} sets no outbound.caller_id")
    if not isinstance(from_, str) or not _E164.fullmatch(from_.strip()):
        raise OutboundRefusal("from", "must be an E.164 number like '+15550100100' (a number of the account)")
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise OutboundRefusal("params", 'must be an object like {"customer_name": "Ada"}')
    values = call_values(outbound, params)
    tz_name = body.get("timezone")
    if tz_name is not None:
        if not isinstance(tz_name, str):
            raise OutboundRefusal("timezone", "must be an IANA time zone like 'America/New_York'")
        try:
            zone(tz_name)
        except ValueError as exc:
            raise OutboundRefusal("timezone", str(exc)) from None
    refusal = hours_refusal(outbound, datetime.now(UTC), tz_name)
    if refusal is not None:
        raise OutboundRefusal("hours", refusal, status=409)
    return plan, to, from_.strip(), values, tz_name


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
    app = request.app
    call_sid, to, from_ = form.get("CallSid", ""), form.get("To", ""), form.get("From", "")
    clog = log.bind(call_sid=call_sid)
    if to != claims.to or from_ != claims.from_:
        clog.warning("outbound answer rejected: numbers differ from the dial request")
        raise web.HTTPForbidden(text="this answer URL was issued for another call")
    now = time.time()
    guard = app[STREAM_TOKENS].guard
    if not await guard.claim("outbound:" + claims.nonce, claims.issued_at + CALLBACK_TTL_S, now):
        clog.warning("outbound answer rejected: the answer URL was already used")
        raise web.HTTPForbidden(text="this answer URL was already used")
    found = call_plan(app, claims)
    if found is None:
        clog.error(
            "outbound call answered but its dialplan can no longer run it",
            extra={"dialplan": claims.dialplan},
        )
        record_unrun(app, call_sid, claims, "gateway", "refused: the dialplan can no longer run this call")
        return web.Response(text=say_hangup_twiml(), content_type="text/xml")
    plan, _ = found
    accepted = await accept_call(
        request, clog, call_sid=call_sid, to=to, from_=from_, may_preconnect=True, plan=plan
    )
    if isinstance(accepted, Refused):
        # Answered, but over capacity: the callee hears the fallback line; the record says why.
        reason = app[LIMITS].admission.refusal(plan.name) or "over capacity"
        record_unrun(app, call_sid, claims, "gateway", f"refused when answered: {reason}")
        return web.Response(text=say_hangup_twiml(accepted.message), content_type="text/xml")
    bound = app[OUTBOUND].tokens.bind(claims, call_sid)
    stream_url = ws_url(public_base(request) + MEDIA_PATH)
    parameters = {TOKEN_PARAMETER: accepted.token, "from": from_, "to": to, STREAM_PARAMETER: bound}
    clog.info(
        "outbound call answered",
        extra={"to": to, "dialplan": plan.name, "answered_by": form.get("AnsweredBy")},
    )
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
        rest = _rest(app)
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
