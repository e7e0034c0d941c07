"""What the gateway keeps about outbound calls, and how a media stream learns its outbound plan.

Kept apart from :mod:`gateway.server.outbound` (the handlers) so that the Twilio media route
(gateway/server/twilio.py) can use :func:`stream_plan` without importing the handlers that import it.

The concurrency count is this process's: a call counts from the dial request until Twilio reports it
over (a terminal status callback), or until it could not possibly still be running. With several
replicas each counts its own dials (the callbacks come back through the load balancer, so a
terminal status may free a place on another replica only once its deadline passes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from gateway.dialplan.model import Dialplan
from gateway.dialplan.outbound import OutboundRefusal, call_values, plan_for_call
from gateway.errors import AuthError
from gateway.security.outbound_tokens import STREAM_PARAMETER, OutboundTokens
from gateway.server.state import DIALPLANS
from gateway.telephony.events import CallStarted

__all__ = ["OUTBOUND", "OutboundCalls", "stream_plan"]


@dataclass(slots=True)
class OutboundCalls:
    """The outbound side of one gateway: its token issuer and the calls it has placed, per dialplan."""

    tokens: OutboundTokens
    clock: Callable[[], float] = time.monotonic
    #: call SID (or a placeholder while Twilio is asked) → (dialplan, when it stops counting).
    _placed: dict[str, tuple[str, float]] = field(default_factory=dict)

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

    def placed(self, key: str, call_sid: str) -> None:
        """Twilio gave the call its SID: its status callbacks will name it by that."""
        entry = self._placed.pop(key, None)
        if entry is not None:
            self._placed[call_sid] = entry

    def release(self, key: str) -> None:
        """The call is over (or was never placed): it no longer counts."""
        self._placed.pop(key, None)

    def _prune(self) -> None:
        now = self.clock()
        for key in [k for k, (_, until) in self._placed.items() if until <= now]:
            del self._placed[key]


OUTBOUND = web.AppKey("outbound", OutboundCalls)


def stream_plan(start: CallStarted, request: web.Request) -> Dialplan | None:
    """The plan of an outbound call's stream, rendered with its parameters; None for any other stream.

    The answer webhook put a token bound to the call SID in the stream's ``<Parameter>``s; ``start`` brings
    it back (gateway/security/outbound_tokens.py).

    Raises:
        AuthError: a token that does not verify for this call, or whose plan can no longer run it.
    """
    token = start.custom_parameters.get(STREAM_PARAMETER)
    if token is None:
        return None
    outbound = request.app.get(OUTBOUND)
    if outbound is None:
        raise AuthError("outbound stream token on a gateway that places no calls")
    claims = outbound.tokens.check_stream(token, call_sid=start.call_sid, now=time.time())
    plan = request.app[DIALPLANS].current.get(claims.dialplan)
    if plan is None or plan.outbound is None:
        raise AuthError(f"the call's dialplan {claims.dialplan!r} no longer places calls")
    try:
        return plan_for_call(plan, call_values(plan.outbound, claims.params))
    except OutboundRefusal as exc:
        raise AuthError(f"the call's parameters no longer fit its dialplan: {exc}") from None
