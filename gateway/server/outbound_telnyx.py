"""Outbound calls through Telnyx Call Control: the Dial command, and the call's webhooks.

Flow (Telnyx's documents: the Voice API's "Dial" command, ``POST /v2/calls``, telnyx-python
``types/call_dial_params.py``; "Answering Machine Detection"; the ``call.*`` webhook types,
``types/call_answered.py``, ``call_hangup.py``, ``call_machine_detection_ended.py``,
``call_machine_greeting_ended.py`` and their premium variants):

1. The admin API (gateway/server/outbound.py) has checked and counted the call; :class:`TelnyxDialer`
   dials it with ``connection_id`` (``TELNYX_CONNECTION_ID``), ``timeout_secs``, the AMD mode the plan
   needs, and ``webhook_url`` = ``/telnyx/outbound?t=TOKEN``: every webhook of this call comes here,
   whatever the application's own URL, carrying the call's signed token.
2. ``call.answered``: signature (Ed25519, as every Telnyx request: gateway/server/telnyx.py) and token
   checked, the token used once, the call admitted exactly as an inbound one
   (:func:`gateway.server.media.accept_call`) with the plan rendered with its parameters; then
   ``streaming_start`` opens the media stream, whose URL carries the stream token and a token bound to
   the call_control_id, from which the media socket takes the same rendered plan. Admission happens
   at the answer, not at the dial, so a call that rings for 30 s holds no place meanwhile.
3. ``call.initiated`` and ``call.hangup`` land in the record as Twilio's statuses would (the
   ``hangup_cause`` kept); a call never answered gets a record of its own. AMD: ``call.machine.
   detection.ended`` (``machine``: the plan's ``hangup`` is carried out at once) and, for ``message``
   (mode ``greeting_end``), ``call.machine.greeting.ended`` (``beep_detected``/``ended``: the message
   is said, then the call ends).

Telnyx delivers a webhook again when it is not answered 2xx, so a repeated ``call.answered`` is
acknowledged and ignored, and a failure to start the stream hangs the call up instead of asking for
another delivery.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Final

from aiohttp import web

from gateway.errors import AuthError, TelephonyProtocolError, ToolError
from gateway.log import CallLogger, call_logger
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
    not_running,
    record_event,
    record_status,
)
from gateway.server.state import SETTINGS
from gateway.server.telnyx import MEDIA_PATH, authenticated, call_control_codec, e164, telnyx_rest
from gateway.settings import Settings
from gateway.telephony.telnyx import AmdMode, CallControlEvent, parse_call_control_event
from gateway.tools.rest_call import RestRefused
from gateway.tools.telnyx_rest import TelnyxCallControl

__all__ = ["ROUTES", "WEBHOOK_PATH", "TelnyxDialer", "webhook"]

WEBHOOK_PATH = "/telnyx/outbound"
#: ``hangup_cause`` (telnyx-python ``types/call_hangup.py``) → the call status the record uses
#: (Twilio's words, as every outbound record has them). Only the causes that mean the phone never
#: answered (busy, no answer, rejected, no such number, cancelled while ringing) make a call "never
#: connected"; anything else, ``unspecified`` and causes Telnyx may add included, is a call that ended.
_STATUS_OF_CAUSE: Final = {
    "user_busy": "busy",
    "timeout": "no-answer",
    "no_answer": "no-answer",
    "call_rejected": "failed",
    "not_found": "failed",
    "originator_cancel": "canceled",
}
#: Who a never-connected call's record says ended it.
_DETECTION: Final = ("call.machine.detection.ended", "call.machine.premium.detection.ended")
_GREETING: Final = ("call.machine.greeting.ended", "call.machine.premium.greeting.ended")
#: Verdicts meaning a machine (standard and premium AMD), and a fax (hung up on, whatever the plan).
_MACHINE: Final = frozenset({"machine"})
_FAX: Final = "fax_detected"
#: A machine's greeting is over: time to leave the message.
_GREETING_OVER: Final = frozenset({"beep_detected", "ended", "no_beep_detected"})

log = call_logger("gateway.outbound")


class TelnyxDialer:
    """Telnyx Call Control's Dial (gateway/server/outbound.py picks it for ``provider = "telnyx"``)."""

    def unavailable(self, settings: Settings) -> str | None:
        return missing_credentials(settings, "Telnyx", "TELNYX_API_KEY", "TELNYX_CONNECTION_ID")

    async def dial(self, app: web.Application, call: DialRequest) -> tuple[str, str]:
        rest, outbound = telnyx_rest(app), call.plan.outbound
        assert outbound is not None
        if rest is None:
            raise not_running("Telnyx")
        # To leave a message the greeting's end is needed; to hang up on a machine, the verdict alone.
        mode: AmdMode = "disabled"
        if outbound.machine == "message":
            mode = "greeting_end"
        elif outbound.machine == "hangup":
            mode = "detect"
        try:
            call_control_id = await rest.dial(
                connection_id=app[SETTINGS].telnyx_connection_id,
                to=call.to,
                from_=call.from_,
                webhook_url=call.base + WEBHOOK_PATH + call.query,
                timeout_s=outbound.ring_timeout_s,
                machine_detection=mode,
            )
        except RestRefused as exc:
            detail = f"HTTP {exc.status}" + (f", Telnyx error {', '.join(exc.codes)}" if exc.codes else "")
            raise DialRefused(
                None, f"Telnyx refused the call: {detail}", telnyx_codes=list(exc.codes)
            ) from None
        except ToolError:
            raise DialRefused(None, "Telnyx could not be reached; the call was not placed") from None
        return call_control_id, "queued"


async def webhook(request: web.Request) -> web.Response:
    """Every webhook of a call the gateway dialled through Telnyx (``webhook_url`` of the Dial)."""
    body = await request.read()
    verified = authenticated(request, body)
    try:
        event = parse_call_control_event(body)
    except TelephonyProtocolError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    # An answered call may have rung for up to ring_timeout_s: the answer's token has no age limit
    # (it is used once); every other event is checked for age as Twilio's callbacks are.
    max_age = None if event.event_type == "call.answered" else CALLBACK_TTL_S
    try:
        claims = request.app[OUTBOUND].tokens.check(
            request.query.get(QUERY_PARAMETER, ""), now=time.time(), max_age_s=max_age
        )
    except AuthError as exc:
        log.warning("Telnyx outbound webhook rejected", extra={"reason": str(exc), "event": event.event_type})
        raise web.HTTPForbidden(text=str(exc)) from None
    call_sid = event.call_control_id
    to, from_ = e164(event.callee), e164(event.caller)
    if (
        webhook_identity_problem(call_sid, claims.to, claims.from_) is not None
        or (to and to != claims.to)
        or (from_ and from_ != claims.from_)
    ):
        log.warning("Telnyx outbound webhook rejected: not the call this URL was issued for")
        raise web.HTTPForbidden(text="this webhook URL was issued for another call")
    if event.event_type == "call.answered":
        await _answered(request, event, claims, verified)
    elif event.event_type in ("call.initiated", "call.hangup"):
        _status(request.app, event, claims)
    elif event.event_type in _DETECTION or event.event_type in _GREETING:
        await _machine(request.app, event, claims)
    else:
        log.debug("Telnyx outbound event", extra={"event": event.event_type, "call_sid": call_sid})
    return web.Response(status=200)


async def _answered(
    request: web.Request, event: CallControlEvent, claims: OutboundClaims, verified: bool
) -> None:
    """The callee answered: admit the call as an inbound one, then start its stream."""
    app, call_sid = request.app, event.call_control_id
    clog = log.bind(call_sid=call_sid)
    rest = telnyx_rest(app)
    may_preconnect = verified or not app[SETTINGS].telnyx_public_key
    admitted = await admit_answer(request, clog, claims, call_sid, may_preconnect=may_preconnect)
    if admitted is None:
        clog.info("call.answered delivered again: already handled")
        return
    record_status(app, call_sid, claims, {"status": "in-progress"})
    if isinstance(admitted, Refused):
        # Nothing can be said without a stream (Call Control has no TwiML): the callee hears the line end.
        await _end(rest, call_sid, clog)
        return
    codec = call_control_codec(app[SETTINGS])
    stream_url = admitted.stream_url(ws_url(public_base(request) + MEDIA_PATH))
    try:
        assert rest is not None  # the call was dialled through it
        await rest.streaming_start(call_sid, stream_url, admitted.token, codec=codec)
    except ToolError as exc:
        clog.error("outbound call answered but its stream could not be started", extra={"error": str(exc)})
        await _end(rest, call_sid, clog)
        return
    clog.info("outbound stream started", extra={"codec": codec})


def _status(app: web.Application, event: CallControlEvent, claims: OutboundClaims) -> None:
    """``call.initiated`` / ``call.hangup`` as the record's call statuses; the end frees the call's place."""
    call_sid = event.call_control_id
    if event.event_type == "call.initiated":
        status = "initiated"
    else:
        status = _STATUS_OF_CAUSE.get(event.hangup_cause, "completed")
    detail: dict[str, Any] = {"status": status}
    if event.hangup_cause:
        detail |= {"hangup_cause": event.hangup_cause, "hangup_source": event.hangup_source}
    record_status(app, call_sid, claims, detail, why=event.hangup_cause)


async def _machine(app: web.Application, event: CallControlEvent, claims: OutboundClaims) -> None:
    """An AMD verdict (or a machine's greeting ending): recorded; the plan's choice for a machine made."""
    call_sid, result = event.call_control_id, event.result
    greeting = event.event_type in _GREETING
    found = call_plan(app, claims)
    wanted = found[0].outbound.machine if found is not None and found[0].outbound is not None else "continue"
    action = "continue"
    if result == _FAX or (not greeting and result in _MACHINE and wanted == "hangup"):
        action = "hangup"
    elif result in _MACHINE and wanted == "message":
        action = "await greeting end"
    elif greeting and result in _GREETING_OVER and wanted == "message":
        action = "message"
    if action in ("hangup", "message"):
        rest = telnyx_rest(app)
        action = await leave_or_hang_up(
            app,
            call_sid,
            claims,
            verdict=result,
            action=action,
            hang_up=None if rest is None else functools.partial(rest.hang_up, call_sid),
        )
    detail = {
        "answered_by" if not greeting else "greeting": result,
        "event": event.event_type,
        "action": action,
    }
    record_event(app, call_sid, AMD_SEQ + (1 if greeting else 0), "answered_by", detail)
    log.info("answering machine detection", extra={"call_sid": call_sid, **detail})


async def _end(rest: TelnyxCallControl | None, call_sid: str, clog: CallLogger) -> None:
    """Hang up a call the gateway will not run (best effort: Telnyx ends it at ``timeout`` otherwise)."""
    if rest is None:
        return
    try:
        await rest.hang_up(call_sid)
    except ToolError as exc:
        clog.warning("REST hang-up failed", extra={"error": str(exc)})


#: Telnyx's webhooks about the calls the gateway placed (gateway/server/outbound.py serves them).
ROUTES = ((WEBHOOK_PATH, webhook),)
