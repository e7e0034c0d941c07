"""Server limits: what one caller, one socket or one burst may cost before the gateway says no.

* **Concurrent calls**, globally and per dialplan (:class:`CallAdmission`). A call is counted from
  the moment its voice webhook is answered (a *reservation*, which expires if Twilio never opens the
  stream) until its media socket ends, so a burst of webhooks cannot over-commit Gemini sessions.
  Over the limit, the webhook answers with the plan's fallback message and hangs up; a stream that
  arrives without a reservation (another process answered its webhook) is admitted on the spot or
  closed with 1013 ("try again later").
* **Unauthenticated sockets** (:class:`Gate`): media sockets that have not yet shown a valid stream
  token are few and short-lived; beyond the limit the upgrade is refused with 503 before it costs
  a WebSocket.
* **Messages per second per socket** (:class:`MessageRate`): Twilio sends 50 media messages a
  second plus the odd mark or key press. A socket far above that is flooding; it is closed with
  1008 and only that call ends. The check costs one increment and one compare per message.
* **Maximum message size**: enforced by aiohttp (``max_msg_size``), closed with 1009.
* **Maximum call duration** (:class:`DurationCap`): a hard cap over every dialplan's own
  ``limits.max_duration_s``, so no stuck or abusive call runs on the owner's bill forever.

Everything here is synchronous bookkeeping except :class:`DurationCap`, the one asyncio piece.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

from gateway.errors import TelephonyProtocolError
from gateway.settings import Settings

#: Largest WebSocket message a media socket accepts. A 20 ms media message is ~300 bytes and the
#: ``start`` message well under 4 KiB; anything near this is not Twilio.
MAX_MESSAGE_BYTES = 64 * 1024
#: The per-dialplan limit key that applies to plans not named explicitly.
ANY_PLAN = "*"


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """The limits in force, from :class:`~gateway.settings.Settings`. 0 means "no limit"."""

    max_calls: int = 200
    #: Dialplan name (or ``"*"``) → concurrent calls.
    max_calls_per_dialplan: Mapping[str, int] = field(default_factory=dict)
    max_messages_per_s: int = 100
    max_call_s: float = 7200.0
    max_pending_streams: int = 100
    max_message_bytes: int = MAX_MESSAGE_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerLimits:
        return cls(
            max_calls=settings.max_calls,
            max_calls_per_dialplan=dict(settings.max_calls_per_dialplan),
            max_messages_per_s=settings.max_stream_messages_per_s,
            max_call_s=settings.max_call_s,
            max_pending_streams=settings.max_pending_streams,
        )


class CallSlot:
    """One admitted call's place in :class:`CallAdmission`; release it exactly when the call ends."""

    __slots__ = ("_admission", "plan", "released")

    def __init__(self, admission: CallAdmission, plan: str) -> None:
        self._admission = admission
        self.plan = plan
        self.released = False

    def release(self) -> None:
        """Give the place back; idempotent."""
        if not self.released:
            self.released = True
            self._admission._remove(self.plan)


class CallAdmission:
    """Counts calls (reserved at the webhook, then active) against the global and per-plan limits."""

    def __init__(
        self,
        *,
        max_calls: int = 0,
        per_plan: Mapping[str, int] | None = None,
        reserve_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_calls = max_calls
        self._per_plan = dict(per_plan or {})
        self._reserve_s = reserve_s
        self._clock = clock
        #: call SID → (plan, expires_at), oldest first (every reservation lives equally long).
        self._reserved: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.total = 0
        self._by_plan: dict[str, int] = {}
        self.refused = 0

    def plan_limit(self, plan: str) -> int:
        return self._per_plan.get(plan, self._per_plan.get(ANY_PLAN, 0))

    def in_use(self, plan: str | None = None) -> int:
        """Calls counted now (reserved + active), for ``plan`` or in total."""
        self._expire()
        return self.total if plan is None else self._by_plan.get(plan, 0)

    def refusal(self, plan: str) -> str | None:
        """Why a new call for ``plan`` would be refused now, or None. Meant for logs, not callers."""
        self._expire()
        if self.max_calls and self.total >= self.max_calls:
            return f"gateway at its limit of {self.max_calls} concurrent calls"
        limit = self.plan_limit(plan)
        if limit and self._by_plan.get(plan, 0) >= limit:
            return f"dialplan at its limit of {limit} concurrent calls"
        return None

    def reserve(self, call_sid: str, plan: str) -> bool:
        """The webhook accepted ``call_sid``: hold a place until its stream arrives. False when full.

        A repeated webhook for a call already holding a place (Twilio retries) keeps that place.
        """
        if call_sid in self._reserved:
            return True
        if self.refusal(plan) is not None:
            self.refused += 1
            return False
        self._add(plan)
        self._reserved[call_sid] = (plan, self._clock() + self._reserve_s)
        return True

    def admit(self, call_sid: str, plan: str) -> CallSlot | None:
        """``call_sid``'s stream is authenticated: turn its reservation into a slot, or take a fresh one."""
        self._expire()
        reserved = self._reserved.pop(call_sid, None)
        if reserved is not None:
            return CallSlot(self, reserved[0])
        if self.refusal(plan) is not None:
            self.refused += 1
            return None
        self._add(plan)
        return CallSlot(self, plan)

    def _add(self, plan: str) -> None:
        self.total += 1
        self._by_plan[plan] = self._by_plan.get(plan, 0) + 1

    def _remove(self, plan: str) -> None:
        self.total -= 1
        left = self._by_plan.get(plan, 0) - 1
        if left > 0:
            self._by_plan[plan] = left
        else:
            self._by_plan.pop(plan, None)

    def _expire(self) -> None:
        """Drop reservations whose stream never came (the webhook's TwiML was not followed)."""
        if not self._reserved:
            return
        now = self._clock()
        while self._reserved:
            sid, (plan, expires_at) = next(iter(self._reserved.items()))
            if expires_at > now:
                break
            del self._reserved[sid]
            self._remove(plan)


class Gate:
    """At most ``limit`` holders at once (0: unlimited); a non-blocking counting semaphore."""

    __slots__ = ("inside", "limit", "refused")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inside = 0
        self.refused = 0

    def enter(self) -> bool:
        if self.limit and self.inside >= self.limit:
            self.refused += 1
            return False
        self.inside += 1
        return True

    def leave(self) -> None:
        self.inside -= 1


class MessageRate:
    """Flood detector for one socket: more than ``per_s`` messages a second, averaged over ``window_s``.

    :meth:`tick` is on the media path, so it only counts; the clock is read once every ``budget``
    messages. A flood is caught within at most two budgets of messages; an ordinary stream
    (50 messages/s against a limit of 100/s) never reaches the budget inside a window.
    """

    __slots__ = ("_clock", "_n", "_start", "budget", "per_s", "window_s")

    def __init__(self, per_s: float, *, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.per_s = per_s
        self.window_s = window_s
        self.budget = max(1, int(per_s * window_s)) if per_s > 0 else 0
        self._clock = clock
        self._n = 0
        self._start = clock()

    def tick(self) -> None:
        """Count one message. Raises TelephonyProtocolError (close 1008) on a flood."""
        self._n += 1
        if self._n > self.budget and self.budget:
            self._roll()

    def _roll(self) -> None:
        now = self._clock()
        if now - self._start < self.window_s:
            raise TelephonyProtocolError(
                f"media stream flood: more than {self.per_s:g} messages/s", close_code=1008
            )
        self._start = now
        self._n = 1


class DurationCap:
    """``async with DurationCap(max_s, on_reached):`` cancels the body after ``max_s`` seconds.

    ``on_reached`` runs first, so whatever the cancelled code logs on its way out already says why
    (e.g. the bridge's "call ended" line). Leaves with :class:`TimeoutError` when the cap was reached;
    ``max_s <= 0`` disables the cap.
    """

    def __init__(self, max_s: float, on_reached: Callable[[], None]) -> None:
        self.max_s = max_s
        self.reached = False
        self._on_reached = on_reached
        self._timeout = asyncio.timeout(None)
        self._handle: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> DurationCap:
        await self._timeout.__aenter__()
        if self.max_s > 0:
            self._handle = asyncio.get_running_loop().call_later(self.max_s, self._fire)
        return self

    def _fire(self) -> None:
        self.reached = True
        self._on_reached()
        self._timeout.reschedule(asyncio.get_running_loop().time())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        await self._timeout.__aexit__(exc_type, exc, tb)


@dataclass(slots=True)
class LimitState:
    """A running gateway's limits and their counters (one per application)."""

    config: ServerLimits
    admission: CallAdmission
    pending: Gate

    @classmethod
    def from_settings(cls, settings: Settings, *, reserve_s: float = 30.0) -> LimitState:
        """``reserve_s`` should be the stream-token lifetime: a webhook's place lasts as long as its token."""
        config = ServerLimits.from_settings(settings)
        return cls(
            config=config,
            admission=CallAdmission(
                max_calls=config.max_calls, per_plan=config.max_calls_per_dialplan, reserve_s=reserve_s
            ),
            pending=Gate(config.max_pending_streams),
        )
