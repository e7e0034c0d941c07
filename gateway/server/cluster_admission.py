"""Cluster-wide call admission: :class:`~gateway.server.limits.CallAdmission`'s rules, counted in Redis.

Several replicas behind one load balancer share ``GATEWAY_MAX_CALLS`` and the per-dialplan limits. A
call's place lives in Redis from its voice webhook (on any replica) until its media stream ends (on any
replica, often another):

* one sorted set of every place (``…admission:places``) and one per dialplan (``…admission:plan:NAME``),
  whose members are call ids scored by when their lease runs out (Redis' own clock, milliseconds, so
  replicas with skewed clocks agree), and a hash call id → dialplan;
* one Lua script reserves or admits atomically: drop expired places, keep a place the call already
  holds (a retried webhook; a stream turning its reservation into a slot), else check the counts and
  add it. Many replicas admitting at once can never pass a limit;
* a reservation lives as long as its stream token; a running call's lease is renewed by the replica
  that carries it on every heartbeat (:meth:`RedisAdmission.renew`), so the places of a replica killed
  with SIGKILL free themselves within ``GATEWAY_CLUSTER_LEASE_S``; release is a removal.

What is local stays local and is asked first: ``pressure`` (draining, overloaded) and the process's own
file budget, for new places only, as in :class:`CallAdmission`. Redis unreachable: new calls are refused
(fail closed, one log line per outage); calls in progress never notice (their renewals fail quietly
until Redis is back, and a release that fails is left to the lease).

One round trip per webhook, per stream start and per call end, one per heartbeat: nothing per frame.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.server.limits import ANY_PLAN

_LOG = logging.getLogger("gateway.cluster")

#: What a Redis call can raise when the server is away or slow.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

# KEYS[1] places (zset), KEYS[2] call -> plan (hash). ARGV: [1] plan zset prefix, [2] call id, [3] plan,
# [4] global limit (0: none), [5] plan limit (0: none), [6] lease of the place in ms, [7] "1" when a new
# place may be taken (this replica is not draining or overloaded). Returns {status, detail}: held (the
# call already had a place; detail its plan), new (detail the plan), pressure, full or plan-full.
# Plan sets are named from the hash (one per dialplan), so the script needs one Redis, not a Cluster.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, call in ipairs(gone) do
  local plan = redis.call('HGET', KEYS[2], call)
  if plan then redis.call('ZREM', ARGV[1] .. plan, call) end
  redis.call('HDEL', KEYS[2], call)
  redis.call('ZREM', KEYS[1], call)
end
local untill = now + tonumber(ARGV[6])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  local plan = redis.call('HGET', KEYS[2], ARGV[2]) or ARGV[3]
  redis.call('ZADD', KEYS[1], untill, ARGV[2])
  redis.call('ZADD', ARGV[1] .. plan, untill, ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[2], plan)
  return {'held', plan}
end
if ARGV[7] ~= '1' then return {'pressure', ''} end
if ARGV[4] ~= '0' and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return {'full', ARGV[4]} end
local plan_key = ARGV[1] .. ARGV[3]
if ARGV[5] ~= '0' and redis.call('ZCARD', plan_key) >= tonumber(ARGV[5]) then
  return {'plan-full', ARGV[5]}
end
redis.call('ZADD', KEYS[1], untill, ARGV[2])
redis.call('ZADD', plan_key, untill, ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return {'new', ARGV[3]}
"""

# Extend the leases of running calls that still hold a place (XX: a place released or expired meanwhile
# is never brought back). KEYS as above; ARGV: [1] plan prefix, [2] lease ms, [3..] call ids.
_RENEW = """
local t = redis.call('TIME')
local untill = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
local kept = 0
for i = 3, #ARGV do
  local call = ARGV[i]
  if redis.call('ZADD', KEYS[1], 'XX', 'CH', untill, call) == 1 then
    kept = kept + 1
    local plan = redis.call('HGET', KEYS[2], call)
    if plan then redis.call('ZADD', ARGV[1] .. plan, 'XX', untill, call) end
  end
end
return kept
"""

# KEYS as above; ARGV: [1] plan prefix, [2] call id.
_RELEASE = """
local plan = redis.call('HGET', KEYS[2], ARGV[2])
if plan then redis.call('ZREM', ARGV[1] .. plan, ARGV[2]) end
redis.call('HDEL', KEYS[2], ARGV[2])
return redis.call('ZREM', KEYS[1], ARGV[2])
"""

# Places held now: KEYS[1] a places zset.
_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _no_pressure() -> str | None:
    return None


class RedisSlot:
    """A call's place while its stream runs here; :meth:`release` exactly once when it ends."""

    __slots__ = ("_admission", "call_sid", "plan", "released")

    def __init__(self, admission: RedisAdmission, call_sid: str, plan: str) -> None:
        self._admission = admission
        self.call_sid = call_sid
        self.plan = plan
        self.released = False

    def release(self) -> None:
        """Give the place back (in the background: a failure leaves it to the lease); idempotent."""
        if not self.released:
            self.released = True
            self._admission._release(self.call_sid)


class RedisAdmission:
    """:class:`~gateway.server.limits.CallAdmission` across replicas (module docstring)."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str,
        max_calls: int = 0,
        per_plan: Mapping[str, int] | None = None,
        reserve_s: float = 30.0,
        lease_s: float = 15.0,
        local_cap: int = 0,
        streamed_channel: str = "",
        instance: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._places = prefix + "admission:places"
        self._plan_of = prefix + "admission:plan-of"
        self._plan_prefix = prefix + "admission:plan:"
        self.max_calls = max_calls
        self._per_plan = dict(per_plan or {})
        self._reserve_ms = max(1, round(reserve_s * 1000))
        self._reserve_s = reserve_s
        self._lease_ms = max(1, round(lease_s * 1000))
        #: Calls this process can hold at once (its open-file budget), whatever the cluster allows.
        self.local_cap = local_cap
        self._streamed_channel = streamed_channel
        self._instance = instance
        self._clock = clock
        self._take = client.register_script(_TAKE)
        self._renew = client.register_script(_RENEW)
        self._release_script = client.register_script(_RELEASE)
        self._count = client.register_script(_COUNT)
        #: Reservations made here (their stream may land on another replica), oldest first.
        self._reserved: OrderedDict[str, tuple[str, float]] = OrderedDict()
        #: Calls whose stream runs here → their plan; renewed on every heartbeat.
        self._active: dict[str, str] = {}
        self._releasing: set[asyncio.Task[None]] = set()
        self.refused = 0
        self._last_refusal = ""
        self._redis_down = False
        #: As :attr:`CallAdmission.pressure`: why this replica takes no new call now, or None.
        self.pressure: Callable[[], str | None] = _no_pressure

    # --- the interface CallAdmission shares ------------------------------------------------------
    @property
    def total(self) -> int:
        """Calls counted *here*: reservations made here and streams running here."""
        self._expire()
        return len(self._reserved) + len(self._active)

    def in_use(self, plan: str | None = None) -> int:
        """As :attr:`total`, for ``plan`` or in total (the cluster's count: :meth:`cluster_in_use`)."""
        self._expire()
        if plan is None:
            return len(self._reserved) + len(self._active)
        return sum(1 for p, _ in self._reserved.values() if p == plan) + sum(
            1 for p in self._active.values() if p == plan
        )

    def plan_limit(self, plan: str) -> int:
        return self._per_plan.get(plan, self._per_plan.get(ANY_PLAN, 0))

    def refusal(self, plan: str) -> str | None:
        """Why a new call would be refused: this replica's pressure, else why the last one was."""
        return self.pressure() or self._last_refusal or None

    async def reserve_call(self, call_sid: str, plan: str) -> bool:
        """The webhook accepted ``call_sid``: hold a place cluster-wide until its stream arrives."""
        self._expire()
        if call_sid in self._reserved:  # Twilio retried the webhook here: the place is already held
            return True
        result = await self._take_place(call_sid, plan, self._reserve_ms, publish=False)
        if result is None:
            return False
        self._reserved[call_sid] = (result, self._clock() + self._reserve_s)
        return True

    async def admit_call(self, call_sid: str, plan: str) -> RedisSlot | None:
        """``call_sid``'s stream is authenticated here: turn its reservation (made on any replica) into
        a slot leased by this replica, or take a fresh place. When the webhook was answered elsewhere,
        that replica is told (``streamed_channel``), so it closes its preconnected session now."""
        self._expire()
        local = self._reserved.pop(call_sid, None)
        result = await self._take_place(call_sid, plan, self._lease_ms, publish=local is None)
        if result is None:
            return None
        self._active[call_sid] = result
        return RedisSlot(self, call_sid, result)

    # --- cluster duties ----------------------------------------------------------------------------
    async def renew(self) -> int:
        """Extend the leases of the calls running here (the heartbeat). Raises what Redis raises."""
        if not self._active:
            return 0
        keys = [self._places, self._plan_of]
        kept = await self._renew(keys=keys, args=[self._plan_prefix, self._lease_ms, *self._active])
        return int(kept)

    def forget_reservation(self, call_sid: str) -> None:
        """``call_sid``'s stream started on another replica: its place no longer counts here."""
        self._reserved.pop(call_sid, None)

    async def cluster_in_use(self, plan: str | None = None) -> int:
        """Places held across the cluster now (reservations and calls), for ``plan`` or in total."""
        key = self._places if plan is None else self._plan_prefix + plan
        return int(await self._count(keys=[key]))

    async def close(self) -> None:
        """Wait for releases in flight (a clean shutdown should not leave places to the lease)."""
        if self._releasing:
            await asyncio.wait(set(self._releasing), timeout=2.0)

    # --- internals -----------------------------------------------------------------------------------
    def _local_refusal(self) -> str | None:
        if (why := self.pressure()) is not None:
            return why
        if self.local_cap and len(self._reserved) + len(self._active) >= self.local_cap:
            return f"this replica at its limit of {self.local_cap} concurrent calls (open files)"
        return None

    async def _take_place(self, call_sid: str, plan: str, lease_ms: int, *, publish: bool) -> str | None:
        """The place's plan once held (kept or new), or None after counting and noting the refusal."""
        local_refusal = self._local_refusal()
        keys = [self._places, self._plan_of]
        args: list[str | int] = [
            self._plan_prefix,
            call_sid,
            plan,
            self.max_calls,
            self.plan_limit(plan),
            lease_ms,
            "0" if local_refusal else "1",
        ]
        try:
            if publish and self._streamed_channel:
                async with self._client.pipeline(transaction=False) as pipe:
                    await self._take(keys=keys, args=args, client=pipe)
                    news = json.dumps({"call_sid": call_sid, "instance": self._instance})
                    pipe.publish(self._streamed_channel, news)
                    status, detail = (await pipe.execute())[0]
            else:
                status, detail = await self._take(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            self._note_down(exc)
            self._refuse(f"cluster admission unavailable: Redis did not answer ({type(exc).__name__})")
            return None
        self._note_up()
        status, detail = _text(status), _text(detail)
        if status in ("held", "new"):
            return detail
        if status == "pressure":
            self._refuse(local_refusal or "this replica takes no new calls")
        elif status == "full":
            self._refuse(f"gateway cluster at its limit of {detail} concurrent calls")
        else:
            self._refuse(f"dialplan at its limit of {detail} concurrent calls across the cluster")
        return None

    def _refuse(self, reason: str) -> None:
        self.refused += 1
        self._last_refusal = reason

    def _note_down(self, exc: BaseException) -> None:
        if not self._redis_down:
            self._redis_down = True
            _LOG.error(
                "cluster admission: Redis unreachable, new calls are refused until it answers "
                "(calls in progress continue)",
                extra={"error": f"{type(exc).__name__}: {exc}"},
            )

    def _note_up(self) -> None:
        if self._redis_down:
            self._redis_down = False
            _LOG.warning("cluster admission: Redis answers again, new calls are admitted")

    def _release(self, call_sid: str) -> None:
        self._active.pop(call_sid, None)
        task = asyncio.get_running_loop().create_task(self._release_now(call_sid), name=f"release:{call_sid}")
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _release_now(self, call_sid: str) -> None:
        try:
            await self._release_script(keys=[self._places, self._plan_of], args=[self._plan_prefix, call_sid])
        except REDIS_ERRORS as exc:
            _LOG.warning(
                "cluster admission: could not release a call's place; its lease frees it",
                extra={"call_sid": call_sid, "error": f"{type(exc).__name__}: {exc}"},
            )

    def _expire(self) -> None:
        """Forget local reservations whose stream never came (Redis expires its copy by itself)."""
        if not self._reserved:
            return
        now = self._clock()
        while self._reserved:
            sid, (_, expires_at) = next(iter(self._reserved.items()))
            if expires_at > now:
                break
            del self._reserved[sid]
