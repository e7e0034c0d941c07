"""Outbound calls: ``POST /admin/api/calls`` places one through Twilio; Twilio's callbacks run and record it.

Flow (Twilio's documents are cited in gateway/telephony/twilio_calls.py):

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
own (which count from 1): a status reported twice is written once, whichever replica receives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDict

from gateway.bridge.call import CallBridge
from gateway.dialplan.model import Dialplan
from gateway.dialplan.outbound import (
    OutboundRefusal,
    call_values,
    hours_refusal,
    machine_message,
    plan_for_call,
    zone,
)
from gateway.errors import AuthError, ToolError
from gateway.log import call_logger
from gateway.records.model import CallClosed, CallOpened, EventAdded, EventRecord, Usage
from gateway.security.inputs import webhook_identity_problem
from gateway.security.outbound_tokens import (
    CALLBACK_TTL_S,
    QUERY_PARAMETER,
    STREAM_PARAMETER,
    OutboundClaims,
    OutboundTokens,
)
from gateway.security.tokens import TOKEN_PARAMETER
from gateway.server.access import local_operator, require_admin
from gateway.server.media import Refused, accept_call, public_base, ws_url
from gateway.server.outbound_state import OUTBOUND, OutboundCalls
from gateway.server.state import CALLS, DIALPLANS, HTTP_CLIENT, LIMITS, OBSERVABILITY, SETTINGS, STREAM_TOKENS
from gateway.server.twilio import MEDIA_PATH, UNSIGNED_REFUSAL
from gateway.telephony.signature import verify_twilio_signature
from gateway.telephony.twilio_calls import (
    AMD_FAX,
    AMD_MACHINE,
    NEVER_CONNECTED,
    STATUS_ORDER,
    TERMINAL,
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
#: First record-event seq of outbound events: the dial request; then one per CallStatus, then AMD.
EVENT_SEQ = 1_000_000
_AMD_SEQ = EVENT_SEQ + 100
#: How long the AMD callback waits for the call's media stream to start, when it comes first.
BRIDGE_WAIT_S = 5.0
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
    rest = _rest(app)
    if rest is None:
        return _refuse(None, "placing calls needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN", 503)
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
    form = create_call_form(
        to=to,
        from_=from_,
        url=base + ANSWER_PATH + query,
        status_callback=base + STATUS_PATH + query,
        amd_callback=base + AMD_PATH + query if outbound.machine != "continue" else None,
        # To leave a message the verdict must wait for the beep; to hang up, the first guess will do.
        detect_message_end=outbound.machine == "message",
        timeout_s=outbound.ring_timeout_s,
    )
    try:
        reply = await rest.create_call(form)
    except RestRefused as exc:
        calls.release(key)
        field = next((_FIELD_OF_CODE[c] for c in exc.codes if c in _FIELD_OF_CODE), None)
        return _refuse(
            field, f"Twilio refused the call: {_twilio_detail(exc)}", 502, twilio_codes=list(exc.codes)
        )
    except ToolError:
        calls.release(key)
        return _refuse(None, "Twilio could not be reached; the call was not placed", 502)
    call_sid = str(reply.get("sid", ""))
    if webhook_identity_problem(call_sid, to, from_) is not None:
        calls.release(key)
        log.error(
            "Twilio answered the call request without a usable call SID", extra={"reply_keys": sorted(reply)}
        )
        return _refuse(None, "Twilio's answer had no call SID; the call may or may not have been placed", 502)
    calls.placed(key, call_sid)
    _event(app, call_sid, EVENT_SEQ, "outbound", {
        "to": to, "from": from_, "dialplan": plan.name, "params": dict(values), "timezone": tz_name,
        "machine": outbound.machine, "amd": outbound.machine != "continue",
    })  # fmt: skip
    log.info(
        "outbound call placed",
        extra={"call_sid": call_sid, "to": to, "from": from_, "dialplan": plan.name, "peer": request.remote},
    )
    doc = {"call_sid": call_sid, "status": reply.get("status", "queued"), "to": to, "from": from_,
           "dialplan": plan.name}  # fmt: skip
    return web.json_response(doc, status=201)


def _twilio_detail(exc: RestRefused) -> str:
    return f"HTTP {exc.status}" + (f", Twilio error {', '.join(exc.codes)}" if exc.codes else "")


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


def _plan(app: web.Application, claims: OutboundClaims) -> tuple[Dialplan, dict[str, str]] | None:
    """The call's plan rendered with its parameters, or None when the plan changed beyond running it."""
    plan = app[DIALPLANS].current.get(claims.dialplan)
    if plan is None or plan.outbound is None:
        return None
    try:
        values = call_values(plan.outbound, claims.params)
    except OutboundRefusal:
        return None
    return plan_for_call(plan, values), values


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
    found = _plan(app, claims)
    if found is None:
        clog.error(
            "outbound call answered but its dialplan can no longer run it",
            extra={"dialplan": claims.dialplan},
        )
        _unrun(app, call_sid, claims, "gateway", "refused: the dialplan can no longer run this call")
        return web.Response(text=say_hangup_twiml(), content_type="text/xml")
    plan, _ = found
    accepted = await accept_call(
        request, clog, call_sid=call_sid, to=to, from_=from_, may_preconnect=True, plan=plan
    )
    if isinstance(accepted, Refused):
        # Answered, but over capacity: the callee hears the fallback line; the record says why.
        reason = app[LIMITS].admission.refusal(plan.name) or "over capacity"
        _unrun(app, call_sid, claims, "gateway", f"refused when answered: {reason}")
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
    _event(app, call_sid, EVENT_SEQ + 1 + STATUS_ORDER.index(call_status), "call_status", detail)
    if call_status in NEVER_CONNECTED:
        by = {"busy": "callee", "no-answer": "callee", "failed": "network", "canceled": "gateway"}[
            call_status
        ]
        _unrun(app, call_sid, claims, by, f"not connected: {call_status}")
    if call_status in TERMINAL:
        app[OUTBOUND].release(call_sid)
    log.info("outbound call status", extra={"call_sid": call_sid, "status": call_status})
    return web.Response(status=204)


def _unrun(app: web.Application, call_sid: str, claims: OutboundClaims, by: str, reason: str) -> None:
    """A record for a call no media stream ran for (unanswered, or refused): whom it was for, and why."""
    writer = app[OBSERVABILITY].writer
    if writer is None:
        return
    plan = app[DIALPLANS].current.get(claims.dialplan)
    writer.submit(
        CallOpened(
            call_id=call_sid,
            stream_id="",
            from_number=claims.from_,
            to_number=claims.to,
            dialplan=claims.dialplan,
            dialplan_version=plan.version if plan is not None else "",
            started_at=claims.issued_at,
            instance=writer.instance,
        )
    )
    writer.submit(
        CallClosed(
            call_id=call_sid,
            ended_at=time.time(),
            ended_by=by,
            end_reason=reason,
            usage=Usage(),
            stats={"outbound": True, "connected": False},
        )
    )


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
    clog = log.bind(call_sid=call_sid)
    detail: dict[str, Any] = {"answered_by": answered_by}
    if form.get("MachineDetectionDuration", "").isdigit():
        detail["detection_ms"] = int(form["MachineDetectionDuration"][:9])
    found = _plan(app, claims)
    action = "continue"
    if found is not None and (answered_by in AMD_MACHINE or answered_by == AMD_FAX):
        plan, values = found
        assert plan.outbound is not None
        action = "hangup" if answered_by == AMD_FAX else plan.outbound.machine
        if action != "continue":
            bridge = await _bridge(app, call_sid)
            if bridge is None:
                clog.warning(
                    "answering machine detected, but the call is not running here", extra={"action": action}
                )
                action = "none: call not running here"
            elif action == "message":
                text = machine_message(plan, values) or ""
                if not bridge.wind_down(text, f"answering machine ({answered_by}): message left"):
                    action = "none: call already ending"
            else:
                rest = _rest(app)
                if rest is not None:
                    try:
                        await rest.hang_up(call_sid)
                    except ToolError as exc:
                        clog.warning("REST hang-up failed; closing the stream", extra={"error": str(exc)})
                bridge.hang_up("gateway", f"answered by {answered_by}: hung up")
    detail["action"] = action
    _event(app, call_sid, _AMD_SEQ, "answered_by", detail)
    clog.info("answering machine detection", extra=detail)
    return web.Response(status=204)


async def _bridge(app: web.Application, call_sid: str) -> CallBridge | None:
    """The call's bridge, waiting a little for its media stream when the verdict came first."""
    calls = app[CALLS]
    if (bridge := calls.active.get(call_sid)) is not None:
        return bridge
    started = asyncio.Event()

    def watch(bridge: CallBridge, running: bool) -> None:
        if running and bridge.info.call_sid == call_sid:
            started.set()

    calls.watchers.append(watch)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(BRIDGE_WAIT_S):
                await started.wait()
    finally:
        calls.watchers.remove(watch)
    return calls.active.get(call_sid)


def _event(app: web.Application, call_id: str, seq: int, kind: str, detail: Mapping[str, Any]) -> None:
    writer = app[OBSERVABILITY].writer
    if writer is not None:
        writer.submit(EventAdded(call_id, EventRecord(seq, time.time(), kind, dict(detail))))
