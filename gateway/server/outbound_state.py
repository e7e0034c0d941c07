"""What the gateway keeps about outbound calls, and how a media stream learns its outbound plan.

Kept apart from :mod:`gateway.server.outbound` (the handlers) so that the Twilio media route
(gateway/server/twilio.py) can use :func:`stream_plan` without importing the handlers that import it.

The concurrency count is this process's: a call counts from the dial request until Twilio reports it
over (a terminal status callback), or until it could not possibly still be running. With several
replicas each counts its own dials (the callbacks come back through the load balancer, so a
terminal status may free a place on another replica only once its deadline passes).

What every provider's callbacks do alike lives here too: the record events of an outbound call (from
:data:`EVENT_SEQ` up, so a status reported twice is written once, whichever replica receives it), the
record of a call no stream ran for, the plan a callback's token names, and what a machine gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from gateway.bridge.call import CallBridge
from gateway.dialplan.model import Dialplan
from gateway.dialplan.outbound import OutboundRefusal, call_values, machine_message, plan_for_call
from gateway.errors import AuthError, ToolError
from gateway.log import CallLogger, call_logger
from gateway.records.model import CallClosed, CallOpened, EventAdded, EventRecord, Usage
from gateway.security.outbound_tokens import CALLBACK_TTL_S, STREAM_PARAMETER, OutboundClaims, OutboundTokens
from gateway.server.media import Refused, accept_call
from gateway.server.state import CALLS, DIALPLANS, LIMITS, OBSERVABILITY, STREAM_TOKENS
from gateway.settings import Settings
from gateway.telephony.events import CallStarted
from gateway.telephony.twilio_calls import NEVER_CONNECTED, STATUS_ORDER, TERMINAL

__all__ = [
    "AMD_SEQ",
    "EVENT_SEQ",
    "OUTBOUND",
    "Answered",
    "DialRefused",
    "DialRequest",
    "Dialer",
    "OutboundCalls",
    "admit_answer",
    "call_plan",
    "leave_or_hang_up",
    "missing_credentials",
    "not_running",
    "plan_from_token",
    "record_dial",
    "record_event",
    "record_status",
    "record_unrun",
    "stream_plan",
    "url_plan",
]

#: First record-event seq of outbound events: the dial request; then one per call status, then AMD.
EVENT_SEQ = 1_000_000
AMD_SEQ = EVENT_SEQ + 100
#: Who ended a call that never connected, by its status (the record's ``ended_by``).
_ENDED_BY = {"busy": "callee", "no-answer": "callee", "failed": "network", "canceled": "gateway"}
#: How long an AMD verdict waits for the call's media stream to start, when it comes first.
BRIDGE_WAIT_S = 5.0
#: A machine's greeting is over once its line has been quiet this long (Twilio's default
#: ``MachineDetectionSpeechEndThreshold``, 1200 ms), for providers that report no beep; the message is
#: left anyway after :data:`GREETING_MAX_S` (Twilio's default ``MachineDetectionTimeout``, 30 s).
GREETING_QUIET_S = 1.2
GREETING_MAX_S = 30.0

log = call_logger("gateway.outbound")


@dataclass(slots=True)
class OutboundCalls:
    """The outbound side of one gateway: its token issuer and the calls it has placed, per dialplan."""

    tokens: OutboundTokens
    clock: Callable[[], float] = time.monotonic
    #: call SID (or a placeholder while Twilio is asked) → (dialplan, when it stops counting).
    _placed: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: A placed call's token → (the id the provider answered the dial with, when it is forgotten).
    _dialled_as: dict[str, tuple[str, float]] = field(default_factory=dict)

    def active(self, dialplan: str) -> int:
        """Outbound calls of ``dialplan`` that may still be running."""
        self._prune()
        return sum(1 for plan, _ in self._placed.values() if plan == dialplan)

    def reserve(self, key: str, dialplan: str, limit: int | None, lifetime_s: float) -> bool:
        """Count a call about to be placed, unless ``dialplan`` already has ``limit`` of them."""
        if limit is not None and self.active(dialplan) >= limit:
            return False
        self._placed[key] = (dialplan, self.clock() + lifetime_s)
        return True

    def placed(self, key: str, call_sid: str, token: str = "") -> None:
        """The provider gave the call its id: its callbacks will name it by that. With ``token``, the
        callbacks that bring it back can tell which dial they are about (:meth:`dialled_as`)."""
        entry = self._placed.pop(key, None)
        if entry is not None:
            self._placed[call_sid] = entry
            if token:
                self._dialled_as[token] = (call_sid, entry[1])

    def dialled_as(self, token: str) -> str | None:
        """The id the provider answered this process's dial of ``token`` with (None: another replica
        dialled it, or it is over): Plivo's ``request_uuid``, whatever its callbacks carry."""
        self._prune()
        entry = self._dialled_as.get(token)
        return None if entry is None else entry[0]

    def release(self, key: str) -> None:
        """The call is over (or was never placed): it no longer counts."""
        self._placed.pop(key, None)

    def _prune(self) -> None:
        now = self.clock()
        for placed in (self._placed, self._dialled_as):
            for key in [k for k, (_, until) in placed.items() if until <= now]:
                del placed[key]


OUTBOUND = web.AppKey("outbound", OutboundCalls)


@dataclass(frozen=True, slots=True)
class DialRequest:
    """A call the admin API has checked and counted, for a provider to place."""

    plan: Dialplan
    to: str
    from_: str
    #: The gateway's public ``scheme://host``, which the provider's callbacks reach.
    base: str
    #: ``?t=TOKEN``: the call's signed token, on every callback URL.
    query: str


class DialRefused(Exception):
    """The provider did not place the call: ``field`` names what to fix when the provider said."""

    def __init__(self, field: str | None, message: str, **extra: Any) -> None:
        self.field, self.message, self.extra = field, message, extra
        super().__init__(message)


def missing_credentials(settings: Settings, provider: str, *variables: str) -> str | None:
    """What a :meth:`Dialer.unavailable` says: None when each variable is set (the setting of the same
    name, lower-case), else the sentence naming them all."""
    if all(getattr(settings, variable.lower()) for variable in variables):
        return None
    return f"placing calls through {provider} needs {' and '.join(variables)}"


def not_running(provider: str) -> DialRefused:
    """A dial while the provider's REST client is not there (the gateway starting or stopping)."""
    return DialRefused(None, f"{provider}'s REST client is not running (the gateway is starting or stopping)")


class Dialer(Protocol):
    """One provider's way of placing calls (``[outbound] provider`` picks it)."""

    def unavailable(self, settings: Settings) -> str | None:
        """Why these settings cannot place calls through the provider (the credentials they lack), or
        None. Asked by the admin API, and at start-up for each plan that places calls."""
        ...

    async def dial(self, app: web.Application, call: DialRequest) -> tuple[str, str]:
        """Place ``call``; its id at the provider (the record's call id) and its first status.

        Raises:
            DialRefused: the provider refused it or could not be reached.
        """
        ...


def stream_plan(start: CallStarted, request: web.Request) -> Dialplan | None:
    """The plan of an outbound call's stream, rendered with its parameters; None for any other stream.

    The answer webhook put a token bound to the call SID in the stream's ``<Parameter>``s; ``start`` brings
    it back (gateway/security/outbound_tokens.py).

    Raises:
        AuthError: a token that does not verify for this call, or whose plan can no longer run it.
    """
    token = start.custom_parameters.get(STREAM_PARAMETER)
    return None if token is None else plan_from_token(request.app, token, start.call_sid)


def url_plan(start: CallStarted, request: web.Request) -> Dialplan | None:
    """:func:`stream_plan` for a stream that brings the token in its URL's query (Telnyx's ``start`` has no
    parameters the gateway can set; Vonage's endpoint headers hold 512 bytes: :meth:`Answered.stream_url`)."""
    token = request.query.get(STREAM_PARAMETER)
    return None if token is None else plan_from_token(request.app, token, start.call_sid)


def plan_from_token(app: web.Application, token: str, call_sid: str) -> Dialplan:
    """The rendered plan a stream token bound to ``call_sid`` names (however the stream brought it).

    Raises:
        AuthError: a token that does not verify for this call, or whose plan can no longer run it.
    """
    outbound = app.get(OUTBOUND)
    if outbound is None:
        raise AuthError("outbound stream token on a gateway that places no calls")
    claims = outbound.tokens.check_stream(token, call_sid=call_sid, now=time.time())
    plan = app[DIALPLANS].current.get(claims.dialplan)
    if plan is None or plan.outbound is None:
        raise AuthError(f"the call's dialplan {claims.dialplan!r} no longer places calls")
    try:
        return plan_for_call(plan, call_values(plan.outbound, claims.params))
    except OutboundRefusal as exc:
        raise AuthError(f"the call's parameters no longer fit its dialplan: {exc}") from None


@dataclass(frozen=True, slots=True)
class Answered:
    """An answered outbound call the gateway takes: its rendered plan, the stream token to hand the
    provider, and the token bound to the call from which the media socket takes the plan again."""

    plan: Dialplan
    token: str
    bound: str

    def stream_url(self, url: str) -> str:
        """``url`` (the provider's media route) carrying the bound token in its query, for providers whose
        stream brings no parameter the gateway can set (Telnyx) or too few bytes of them (Vonage)."""
        return f"{url}?{STREAM_PARAMETER}={self.bound}"


async def admit_answer(
    request: web.Request, clog: CallLogger, claims: OutboundClaims, call_sid: str, *, may_preconnect: bool
) -> Answered | Refused | None:
    """The callee answered: the call's token used once, its plan rendered, and the call admitted exactly
    as an inbound one. None: the answer was already used (a repeat, or a replay). :class:`Refused`: the
    call may not run (its plan changed beyond running it: an empty message, the provider's own goodbye;
    or over capacity), already in the record."""
    app = request.app
    if not await app[STREAM_TOKENS].guard.claim(
        "outbound:" + claims.nonce, claims.issued_at + CALLBACK_TTL_S, time.time()
    ):
        return None
    found = call_plan(app, claims)
    if found is None:
        clog.error(
            "outbound call answered but its dialplan can no longer run it",
            extra={"dialplan": claims.dialplan},
        )
        record_unrun(app, call_sid, claims, "gateway", "refused: the dialplan can no longer run this call")
        return Refused("")
    plan, _ = found
    accepted = await accept_call(
        request,
        clog,
        call_sid=call_sid,
        to=claims.to,
        from_=claims.from_,
        may_preconnect=may_preconnect,
        plan=plan,
    )
    if isinstance(accepted, Refused):
        # Answered, but over capacity: the callee hears the fallback line where the provider can say one.
        reason = app[LIMITS].admission.refusal(plan.name) or "over capacity"
        record_unrun(app, call_sid, claims, "gateway", f"refused when answered: {reason}")
        return accepted
    clog.info("outbound call answered", extra={"to": claims.to, "dialplan": plan.name})
    return Answered(plan, accepted.token, app[OUTBOUND].tokens.bind(claims, call_sid))


def call_plan(app: web.Application, claims: OutboundClaims) -> tuple[Dialplan, dict[str, str]] | None:
    """The call's plan rendered with its parameters, or None when the plan changed beyond running it."""
    plan = app[DIALPLANS].current.get(claims.dialplan)
    if plan is None or plan.outbound is None:
        return None
    try:
        values = call_values(plan.outbound, claims.params)
    except OutboundRefusal:
        return None
    return plan_for_call(plan, values), values


def record_event(app: web.Application, call_id: str, seq: int, kind: str, detail: Mapping[str, Any]) -> None:
    """An event in the call's record (``seq`` from :data:`EVENT_SEQ` up: written once, however often)."""
    writer = app[OBSERVABILITY].writer
    if writer is not None:
        writer.submit(EventAdded(call_id, EventRecord(seq, time.time(), kind, dict(detail))))


def record_dial(
    app: web.Application,
    call_id: str,
    plan: Dialplan,
    *,
    to: str,
    from_: str,
    params: Mapping[str, str],
    timezone: str | None,
) -> None:
    """The dial request in the call's record (the first of its outbound events)."""
    outbound = plan.outbound
    assert outbound is not None  # only plans with [outbound] place calls
    record_event(app, call_id, EVENT_SEQ, "outbound", {
        "to": to, "from": from_, "dialplan": plan.name, "params": dict(params), "timezone": timezone,
        "machine": outbound.machine, "amd": outbound.machine != "continue", "provider": outbound.provider,
    })  # fmt: skip


def record_status(
    app: web.Application, call_sid: str, claims: OutboundClaims, detail: Mapping[str, Any], *, why: str = ""
) -> None:
    """A call status (``detail["status"]``, one of Twilio's words, which every provider's are mapped to)
    in the record; a record of its own for a call that never connected (``why``: the provider's own
    word for it); the end of the call frees its place among the plan's concurrent calls."""
    status = detail["status"]
    record_event(app, call_sid, EVENT_SEQ + 1 + STATUS_ORDER.index(status), "call_status", detail)
    if status in NEVER_CONNECTED:
        reason = f"not connected: {status}" + (f" ({why})" if why else "")
        record_unrun(app, call_sid, claims, _ENDED_BY[status], reason)
    if status in TERMINAL:
        app[OUTBOUND].release(call_sid)
    log.info("outbound call status", extra={"call_sid": call_sid, **detail})


def record_unrun(app: web.Application, call_sid: str, claims: OutboundClaims, by: str, reason: str) -> None:
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


async def leave_or_hang_up(
    app: web.Application,
    call_sid: str,
    claims: OutboundClaims,
    *,
    verdict: str,
    action: str,
    hang_up: Callable[[], Awaitable[None]] | None,
    greeting_over: bool = True,
) -> str:
    """Carry out what the plan wants for a machine (``message``: say it, then end; ``hangup``), on the
    call's running bridge; what was done, as the record's ``action``. ``hang_up`` ends the call at the
    provider (None: no credentials, so only the stream closes). ``greeting_over``: the verdict comes
    once the machine's greeting has ended (its beep); when the provider reports no such thing (Plivo),
    the message waits for the machine's line to go quiet (:data:`GREETING_QUIET_S`), so that it is
    recorded rather than said over the greeting."""
    found = call_plan(app, claims)
    if found is None or action == "continue":
        return "continue"
    plan, values = found
    clog = log.bind(call_sid=call_sid)
    bridge = await _running_bridge(app, call_sid)
    if bridge is None:
        clog.warning("answering machine detected, but the call is not running here", extra={"action": action})
        return "none: call not running here"
    if action == "message":
        text = machine_message(plan, values) or ""
        quiet = (0.0, 0.0) if greeting_over else (GREETING_QUIET_S, GREETING_MAX_S)
        reason = f"answering machine ({verdict}): message left"
        if not bridge.wind_down(text, reason, quiet_s=quiet[0], within_s=quiet[1]):
            return "none: call already ending"
        return "message" if greeting_over else "message once the line is quiet"
    if hang_up is not None:
        try:
            await hang_up()
            bridge.result.released = True
        except ToolError as exc:
            clog.warning("REST hang-up failed; closing the stream", extra={"error": str(exc)})
    bridge.hang_up("gateway", f"answered by {verdict}: hung up")
    return "hangup"


async def _running_bridge(app: web.Application, call_sid: str) -> CallBridge | None:
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
