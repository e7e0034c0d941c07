"""Outbound calls: ``POST /admin/api/calls`` checks a call against its dialplan's ``[outbound]`` table
(parameters, caller id, calling hours in the callee's time zone, concurrent calls), signs it into a
token (gateway/security/outbound_tokens.py) and has the plan's provider place it: a :class:`Dialer`
each, whose module also serves that provider's callbacks (gateway/server/outbound_twilio.py,
outbound_telnyx.py, outbound_vonage.py, outbound_plivo.py). Every answered call then runs as an
inbound one does.

Record events of outbound calls use sequence numbers from :data:`EVENT_SEQ` up, apart from the call's
own (which count from 1): a status reported twice is written once, whichever replica receives it
(gateway/server/outbound_state.py).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from gateway.dialplan.model import Dialplan
from gateway.dialplan.outbound import OutboundRefusal, call_values, hours_refusal, zone
from gateway.log import call_logger
from gateway.security.outbound_tokens import QUERY_PARAMETER, OutboundTokens
from gateway.server import outbound_plivo, outbound_telnyx, outbound_twilio, outbound_vonage
from gateway.server.access import require_admin
from gateway.server.media import public_base
from gateway.server.outbound_state import (
    OUTBOUND,
    Dialer,
    DialRefused,
    DialRequest,
    OutboundCalls,
    record_dial,
)
from gateway.server.state import DIALPLANS, OBSERVABILITY, SETTINGS

__all__ = ["API_PATH", "DIALERS", "setup_outbound"]

API_PATH = "/admin/api/calls"
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_API_KEYS = frozenset({"to", "from", "dialplan", "params", "timezone"})

log = call_logger("gateway.outbound")


def setup_outbound(app: web.Application, secret: bytes) -> None:
    """Serve the outbound routes; tokens are signed with a key derived from ``secret``."""
    app[OUTBOUND] = OutboundCalls(OutboundTokens(secret))
    app.router.add_post(API_PATH, place_call)
    routes = (
        *outbound_twilio.ROUTES,
        *outbound_telnyx.ROUTES,
        *outbound_vonage.ROUTES,
        *outbound_plivo.ROUTES,
    )
    for path, handler in routes:
        app.router.add_post(path, handler)


# --- the admin API ---------------------------------------------------------------------------------


def _refuse(field: str | None, message: str, status: int = 400, **extra: Any) -> web.Response:
    log.info("outbound call refused", extra={"field": field, "reason": message})
    return web.json_response({"error": message, "field": field, **extra}, status=status)


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
    calls.placed(key, call_sid, token)
    record_dial(app, call_sid, plan, to=to, from_=from_, params=values, timezone=tz_name)
    log.info(
        "outbound call placed",
        extra={"call_sid": call_sid, "to": to, "from": from_, "dialplan": plan.name, "peer": request.remote},
    )
    doc = {"call_sid": call_sid, "status": call_status, "to": to, "from": from_, "dialplan": plan.name,
           "provider": outbound.provider}  # fmt: skip
    return web.json_response(doc, status=201)


#: ``[outbound] provider`` → how its calls are placed.
DIALERS: dict[str, Dialer] = {
    "twilio": outbound_twilio.TwilioDialer(),
    "telnyx": outbound_telnyx.TelnyxDialer(),
    "vonage": outbound_vonage.VonageDialer(),
    "plivo": outbound_plivo.PlivoDialer(),
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
