"""Server limits: what one caller, one socket or one burst may cost before the gateway says no.

* **Concurrent calls**, globally and per dialplan (:class:`CallAdmission`). A call is counted from
  the moment its voice webhook is answered (a *reservation*, which expires if Twilio never opens the
  stream) until its media socket ends, so a burst of webhooks cannot over-commit Gemini sessions.
  Over the limit, the webhook answers with the plan's fallback message and hangs up; a stream that
  arrives without a reservation (another process answered its webhook) is admitted on the spot or
  closed with 1013 ("try again later").
* **Unauthenticated sockets** (:class:`Gate`): media sockets that have not yet shown a valid stream
  token are few and short-lived (Twilio sends ``start`` one round trip after the upgrade), capped
  globally and per source address. A new socket is never refused: it takes the place of the *oldest*
  waiting socket of its own source, or (globally full) of the source holding the most, so idle
  sockets churned by an attacker cannot crowd out a real call's stream, which shows its token first.
* **Connections** (:class:`ConnectionCap`): open HTTP connections, sized from the open-file limit
  (:class:`FileBudget`). Connections that are idle or still sending their request may use only part
  of it, the rest is headroom for live calls and health checks; past either limit the oldest such
  connection is closed to make room, and only when every connection is doing real work is a new one
  turned away.
* **Messages per second per socket** (:class:`MessageRate`): Twilio sends 50 media messages a
  second plus the odd mark or key press. A socket far above that is flooding; it is closed with
  1008 and only that call ends. The check costs one increment and one compare per message.
* **Maximum message size**: enforced by aiohttp (``max_msg_size``), closed with 1009.
* **Maximum call duration** (:class:`DurationCap`): a hard cap over every dialplan's own
  ``limits.max_duration_s``, so no stuck or abusive call runs on the owner's bill forever.

Everything here is synchronous bookkeeping except :class:`DurationCap`, the one asyncio piece; the
aiohttp side of the connection cap and the timeouts is in :mod:`gateway.server.connections`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from gateway.errors import TelephonyProtocolError
from gateway.process import cpu_allowance
from gateway.server.load import LoadMonitor
from gateway.settings import Settings

#: Largest WebSocket message a media socket accepts. A 20 ms media message is ~300 bytes and the
#: ``start`` message well under 4 KiB; anything near this is not Twilio.
MAX_MESSAGE_BYTES = 64 * 1024
#: The per-dialplan limit key that applies to plans not named explicitly.
ANY_PLAN = "*"
#: Open files the process keeps for itself (listening sockets, SQLite, logs, the dialplan watcher, DNS,
#: HTTP tools), outside the connection cap and the calls.
RESERVED_FILES = 64
#: Connections kept beyond live calls and pending streams, so health checks and the operator get in.
HEALTH_HEADROOM = 16
#: RLIMIT_NOFILE can be "unlimited"; nothing here needs to count past this.
MAX_FILES = 1 << 20

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """The limits in force, from :class:`~gateway.settings.Settings`. 0 means "no limit"."""

    max_calls: int = 200
    #: Dialplan name (or ``"*"``) → concurrent calls.
    max_calls_per_dialplan: Mapping[str, int] = field(default_factory=dict)
    max_messages_per_s: int = 100
    max_call_s: float = 7200.0
    max_pending_streams: int = 100
    max_pending_per_source: int = 20
    max_message_bytes: int = MAX_MESSAGE_BYTES

    @classmethod
    def from_settings(cls, settings: Settings, budget: FileBudget | None = None) -> ServerLimits:
        """``budget``: what the open-file limit allows; its call count caps ``max_calls``."""
        return cls(
            max_calls=budget.calls if budget is not None else settings.max_calls,
            max_calls_per_dialplan=dict(settings.max_calls_per_dialplan),
            max_messages_per_s=settings.max_stream_messages_per_s,
            max_call_s=settings.max_call_s,
            max_pending_streams=settings.max_pending_streams,
            max_pending_per_source=settings.max_pending_per_source,
        )


@dataclass(frozen=True, slots=True)
class FileBudget:
    """What an open-file limit leaves room for. A call holds two sockets (the caller's media stream
    and its Gemini session); every other inbound connection holds one."""

    #: The soft RLIMIT_NOFILE this was computed from.
    files: int
    #: Concurrent calls: ``GATEWAY_MAX_CALLS``, or fewer when the files cannot hold that many.
    calls: int
    #: Calls the files alone would allow (more than ``calls`` when GATEWAY_MAX_CALLS is lower).
    calls_by_files: int
    #: Inbound connections at once (every Gemini socket of ``calls`` stays outside this).
    connections: int
    #: Of those, connections idle or still sending their request; the rest is headroom.
    idle_connections: int

    @classmethod
    def compute(cls, settings: Settings, files: int) -> FileBudget:
        files = min(files, MAX_FILES) if files > 0 else MAX_FILES
        usable = max(files - RESERVED_FILES, 8)
        by_files = usable // 2
        calls = min(settings.max_calls, by_files) if settings.max_calls else by_files
        connections = settings.max_connections or max(usable - calls, 4)
        busy = calls + settings.max_pending_streams + HEALTH_HEADROOM
        idle = max(connections - busy, connections // 4, 1)
        return cls(files, calls, by_files, connections, idle)

    def describe(self) -> str:
        """One line for the start-up log and banner."""
        return (
            f"open-file limit {self.files}: room for {self.calls} concurrent calls"
            f"{f' (the limit allows {self.calls_by_files})' if self.calls_by_files > self.calls else ''}"
            f" and {self.connections} connections, {self.idle_connections} of them idle or slow"
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


def _no_pressure() -> str | None:
    return None


class Place(Protocol):
    """An admitted call's place (:class:`CallSlot`, or a Redis-leased one across replicas)."""

    @property
    def plan(self) -> str: ...

    def release(self) -> None:
        """Give the place back when the call ends; idempotent."""
        ...


class Admission(Protocol):
    """What the media handlers ask of admission: :class:`CallAdmission` in one process, or
    :class:`gateway.server.cluster_admission.RedisAdmission` across replicas (awaited: a round trip)."""

    #: Why this instance takes no new calls (draining, overloaded), or None; asked first, for new places.
    pressure: Callable[[], str | None]

    @property
    def max_calls(self) -> int: ...

    @property
    def total(self) -> int:
        """Calls this instance counts now (reserved + active)."""
        ...

    @property
    def refused(self) -> int: ...

    def in_use(self, plan: str | None = None) -> int: ...

    def refusal(self, plan: str) -> str | None: ...

    async def reserve_call(self, call_sid: str, plan: str) -> bool:
        """:meth:`CallAdmission.reserve`."""
        ...

    async def admit_call(self, call_sid: str, plan: str) -> Place | None:
        """:meth:`CallAdmission.admit`."""
        ...


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
        #: Why this instance takes no new calls at all right now (draining, overloaded), or None. Asked
        #: before the counts, and only for new places: a call whose webhook was answered keeps its place.
        self.pressure: Callable[[], str | None] = _no_pressure

    def plan_limit(self, plan: str) -> int:
        return self._per_plan.get(plan, self._per_plan.get(ANY_PLAN, 0))

    def in_use(self, plan: str | None = None) -> int:
        """Calls counted now (reserved + active), for ``plan`` or in total."""
        self._expire()
        return self.total if plan is None else self._by_plan.get(plan, 0)

    def refusal(self, plan: str) -> str | None:
        """Why a new call for ``plan`` would be refused now, or None. Meant for logs, not callers."""
        self._expire()
        if (why := self.pressure()) is not None:
            return why
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

    async def reserve_call(self, call_sid: str, plan: str) -> bool:
        """:meth:`reserve`, as the :class:`Admission` interface awaits it."""
        return self.reserve(call_sid, plan)

    async def admit_call(self, call_sid: str, plan: str) -> CallSlot | None:
        """:meth:`admit`, as the :class:`Admission` interface awaits it."""
        return self.admit(call_sid, plan)

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


class PendingTicket:
    """One unauthenticated socket's place in a :class:`Gate`. :meth:`bind` what to do when it is
    evicted (end the wait for ``start``); :meth:`leave` once the socket authenticated or closed."""

    __slots__ = ("_gate", "_on_evict", "evicted", "seq", "source")

    def __init__(self, gate: Gate, source: str, seq: int) -> None:
        self._gate = gate
        self._on_evict: Callable[[], None] | None = None
        self.source = source
        self.seq = seq
        self.evicted = False

    def bind(self, on_evict: Callable[[], None] | None) -> None:
        """Call ``on_evict`` on eviction (at once if already evicted); None unbinds."""
        self._on_evict = on_evict
        if self.evicted and on_evict is not None:
            on_evict()

    def leave(self) -> None:
        """Give the place back; idempotent, and a no-op after eviction."""
        self._on_evict = None
        self._gate._remove(self)

    def _evict(self) -> None:
        self.evicted = True
        if self._on_evict is not None:
            self._on_evict()


class Gate:
    """Unauthenticated media sockets: at most ``limit`` at once and ``per_source`` from one source
    (0: unlimited). Full, a new socket evicts the oldest of its own source, or, when its source has
    room but the gate is full, the oldest of the source holding the most: a real stream shows its
    token within a round trip, so it is almost never the oldest, and one busy source cannot push out
    the few sockets of another (Twilio's media servers are a handful of addresses).
    """

    __slots__ = ("_by_source", "_seq", "evicted", "limit", "per_source")

    def __init__(self, limit: int, per_source: int = 0) -> None:
        self.limit = limit
        self.per_source = per_source
        #: source → its tickets, oldest first (a dict used as an ordered set).
        self._by_source: dict[str, dict[PendingTicket, None]] = {}
        self._seq = 0
        self.evicted = 0

    @property
    def inside(self) -> int:
        return sum(len(tickets) for tickets in self._by_source.values())

    def holding(self, source: str) -> int:
        return len(self._by_source.get(source, ()))

    def enter(self, source: str) -> PendingTicket:
        """A new socket from ``source`` waits for its token; room is made by eviction if needed."""
        mine = self._by_source.get(source)
        if self.per_source and mine and len(mine) >= self.per_source:
            self._evict(next(iter(mine)))
        elif self.limit and self.inside >= self.limit:
            heaviest = max(self._by_source.values(), key=lambda t: (len(t), -next(iter(t)).seq))
            self._evict(next(iter(heaviest)))
        self._seq += 1
        ticket = PendingTicket(self, source, self._seq)
        self._by_source.setdefault(source, {})[ticket] = None
        return ticket

    def _evict(self, ticket: PendingTicket) -> None:
        self._remove(ticket)
        self.evicted += 1
        ticket._evict()

    def _remove(self, ticket: PendingTicket) -> None:
        tickets = self._by_source.get(ticket.source)
        if tickets is None or ticket not in tickets:
            return
        del tickets[ticket]
        if not tickets:
            del self._by_source[ticket.source]


class ConnectionCap(Generic[K]):
    """Open connections: at most ``limit``, of which at most ``idle_limit`` idle (0: unlimited).

    *Idle* means not yet doing work: waiting for a request, still sending one, or between keep-alive
    requests. Such a connection costs a file and proves nothing, so when a new connection would pass
    either limit the *oldest* idle one is closed to make room (:meth:`opened` returns it). A connection
    is *busy* while a handler runs (a webhook, a health check, a call's media socket): never evicted.
    Only when every connection is busy is a new one turned away.
    """

    __slots__ = ("_busy", "_idle", "evicted", "idle_limit", "limit", "refused")

    def __init__(self, limit: int, idle_limit: int = 0) -> None:
        self.limit = limit
        self.idle_limit = idle_limit
        self._idle: dict[K, None] = {}  # oldest first
        self._busy: set[K] = set()
        self.evicted = 0
        self.refused = 0

    @property
    def total(self) -> int:
        return len(self._idle) + len(self._busy)

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def opened(self, conn: K) -> tuple[list[K], bool]:
        """A connection arrived: (older idle connections to close now, whether to keep this one)."""
        victims: list[K] = []
        while self._idle and (self._idle_full() or self._full()):
            victim = next(iter(self._idle))
            del self._idle[victim]
            victims.append(victim)
        self.evicted += len(victims)
        if self._full():
            self.refused += 1
            return victims, False
        self._idle[conn] = None
        return victims, True

    def _full(self) -> bool:
        return bool(self.limit) and self.total >= self.limit

    def _idle_full(self) -> bool:
        return bool(self.idle_limit) and len(self._idle) >= self.idle_limit

    def busy(self, conn: K) -> None:
        """A handler started on ``conn``; an unknown (evicted or refused) connection stays unknown."""
        if conn in self._idle:
            del self._idle[conn]
            self._busy.add(conn)

    def idle(self, conn: K) -> None:
        """The handler finished: ``conn`` waits for its next request, as the newest idle one."""
        if conn in self._busy:
            self._busy.discard(conn)
            self._idle[conn] = None

    def closed(self, conn: K) -> None:
        self._idle.pop(conn, None)
        self._busy.discard(conn)


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
    #: CallAdmission; across replicas the cluster's (gateway/server/cluster.py swaps it in).
    admission: Admission
    pending: Gate
    budget: FileBudget
    connections: ConnectionCap[Hashable]
    #: CPU and event-loop lag, asked before a new call is counted (gateway/server/load.py).
    load: LoadMonitor

    @classmethod
    def from_settings(cls, settings: Settings, *, reserve_s: float = 30.0, files: int = 0) -> LimitState:
        """``reserve_s`` should be the stream-token lifetime: a webhook's place lasts as long as its token.
        ``files``: the process's open-file limit (0: unlimited), which bounds calls and connections."""
        budget = FileBudget.compute(settings, files)
        config = ServerLimits.from_settings(settings, budget)
        return cls(
            config=config,
            admission=CallAdmission(
                max_calls=config.max_calls, per_plan=config.max_calls_per_dialplan, reserve_s=reserve_s
            ),
            pending=Gate(config.max_pending_streams, config.max_pending_per_source),
            budget=budget,
            connections=ConnectionCap(budget.connections, budget.idle_connections),
            load=LoadMonitor(
                max_cpu=settings.max_cpu_percent / 100,
                max_lag_s=settings.max_loop_lag_ms / 1000,
                cpu_allowance=cpu_allowance(),
            ),
        )
