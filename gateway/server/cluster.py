"""Several gateway replicas behind one load balancer, sharing Redis (``GATEWAY_REDIS_URL``).

A call's voice webhook may reach one replica and its media stream another. What they share:

* **stream tokens**: signed with the same ``GATEWAY_SECRET`` (required, start-up says so) and single-use
  through the Redis replay guard (:mod:`gateway.security.replay`);
* **admission**: global and per-dialplan limits counted in Redis (:mod:`gateway.server.cluster_admission`);
* **the preconnected Gemini session**: opened at the webhook, used when the stream lands on the same
  replica; otherwise the replica that admits the stream publishes the call id on ``…streamed`` and the
  webhook's replica closes its session on receipt (instead of at its 15 s timer);
* **the admin API**: every replica announces itself with a key that expires unless its heartbeat
  (every third of ``GATEWAY_CLUSTER_LEASE_S``) refreshes it, and keeps a hash of its active calls with
  the same lease; ``/admin/calls`` on any replica lists every live replica's calls, and a hang-up for a
  call elsewhere is sent on its owner's control channel (``…control:INSTANCE``), which answers on a
  short-lived reply list. A replica killed with SIGKILL drops out within the lease.

Every key and channel starts with ``GATEWAY_REDIS_PREFIX``. Redis is used per call (webhook, stream
start, end) and per heartbeat, never per media frame. Without ``GATEWAY_REDIS_URL`` none of this runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.typing import EncodableT, FieldT

from gateway.bridge.call import CallBridge
from gateway.errors import ConfigError
from gateway.server.calls import CallRegistry
from gateway.server.cluster_admission import REDIS_ERRORS, RedisAdmission
from gateway.server.preconnect import Preconnector
from gateway.settings import Settings

_LOG = logging.getLogger("gateway.cluster")

#: Transcript lines of a call kept in its shared summary (the replica carrying it has them all).
SUMMARY_TURNS = 50
#: How long a hang-up waits for the owning replica to answer.
HANGUP_REPLY_S = 3.0
#: Redis calls that are not blocking reads give up after this.
REDIS_TIMEOUT_S = 1.0

HangUp = Literal["taken", "ending", "absent", "unreachable"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def open_redis(url: str, *, timeout_s: float | None = REDIS_TIMEOUT_S) -> Redis:
    """A client for ``url`` (connects on first use). ``timeout_s`` None: for blocking reads (pub/sub).

    Raises:
        ConfigError: the URL is not a Redis URL (the message never repeats it: it may hold a password).
    """
    try:
        return Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=REDIS_TIMEOUT_S)
    except ValueError as exc:
        raise ConfigError(f"GATEWAY_REDIS_URL is not a Redis URL: {exc.__class__.__name__}") from None


class Cluster:
    """This replica's part in the cluster: heartbeat, shared call registry, control channel."""

    def __init__(
        self,
        client: Redis,
        listener: Redis,
        *,
        instance: str,
        prefix: str,
        lease_s: float,
        calls: CallRegistry,
        preconnect: Preconnector,
        admission: RedisAdmission,
    ) -> None:
        self._client = client
        #: A second client without a read timeout, for the subscription and the hang-up reply's BLPOP.
        self._listener = listener
        self.instance = instance
        self._prefix = prefix
        self.lease_s = lease_s
        self._lease_ms = max(1, round(lease_s * 1000))
        self._calls = calls
        self._preconnect = preconnect
        self.admission = admission
        self._instances = prefix + "instances"
        self._control = self._control_channel(instance)
        self.streamed_channel = prefix + "streamed"
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._pubsub: PubSub | None = None
        self._subscribed = asyncio.Event()
        self._redis_down = False
        self.started_at = time.time()
        calls.watchers.append(self._call_changed)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        instance: str,
        calls: CallRegistry,
        preconnect: Preconnector,
        local_cap: int,
        reserve_s: float,
    ) -> Cluster:
        """The cluster link for ``settings`` (GATEWAY_REDIS_URL set). ``local_cap``: the calls this
        process's open files allow; ``reserve_s``: the stream tokens' lifetime (a reservation's)."""
        if (problem := settings.cluster_problem()) is not None:
            raise ConfigError(problem)
        client = open_redis(settings.redis_url)
        prefix = settings.redis_prefix
        admission = RedisAdmission(
            client,
            prefix=prefix,
            max_calls=settings.max_calls,
            per_plan=dict(settings.max_calls_per_dialplan),
            reserve_s=reserve_s,
            lease_s=settings.cluster_lease_s,
            local_cap=local_cap,
            streamed_channel=prefix + "streamed",
            instance=instance,
        )
        return cls(
            client,
            open_redis(settings.redis_url, timeout_s=None),
            instance=instance,
            prefix=prefix,
            lease_s=settings.cluster_lease_s,
            calls=calls,
            preconnect=preconnect,
            admission=admission,
        )

    def _control_channel(self, instance: str) -> str:
        return f"{self._prefix}control:{instance}"

    def _calls_key(self, instance: str) -> str:
        return f"{self._prefix}calls:{instance}"

    def _instance_key(self, instance: str) -> str:
        return f"{self._prefix}instance:{instance}"

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Announce this replica and subscribe to its channels; Redis down is logged, not fatal (new
        calls are refused until it answers; both loops keep trying)."""
        await self.heartbeat()
        self._loops = [
            asyncio.create_task(self._heartbeat_loop(), name="cluster-heartbeat"),
            asyncio.create_task(self._listen_loop(), name="cluster-listener"),
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REDIS_TIMEOUT_S * 2):
                await self._subscribed.wait()
        _LOG.info(
            "cluster: this replica joined",
            extra={"instance": self.instance, "prefix": self._prefix, "lease_s": self.lease_s},
        )

    async def stop(self) -> None:
        """Leave: stop the loops, wait for releases in flight, remove this replica's keys, disconnect."""
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)
        await self.admission.close()
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(self._instance_key(self.instance), self._calls_key(self.instance))
                pipe.srem(self._instances, self.instance)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            _LOG.warning(
                "cluster: could not remove this replica's keys; they expire", extra={"error": str(exc)}
            )
        await self._client.aclose()
        await self._listener.aclose()

    # --- heartbeat --------------------------------------------------------------------------------
    async def heartbeat(self) -> bool:
        """Refresh this replica's presence, its call list and its calls' leases. False: Redis failed."""
        about = json.dumps(
            {"instance": self.instance, "started_at": self.started_at, "calls": len(self._calls.active)}
        )
        summaries: dict[FieldT, EncodableT] = {
            sid: self._summary(bridge) for sid, bridge in list(self._calls.active.items())
        }
        calls_key = self._calls_key(self.instance)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._instance_key(self.instance), about, px=self._lease_ms)
                pipe.sadd(self._instances, self.instance)
                # Replaced whole: a call that ended since the last beat cannot linger.
                pipe.delete(calls_key)
                if summaries:
                    pipe.hset(calls_key, mapping=summaries)
                    pipe.pexpire(calls_key, self._lease_ms)
                await pipe.execute()
            await self.admission.renew()
        except REDIS_ERRORS as exc:
            self._note_down("heartbeat", exc)
            return False
        self._note_up()
        return True

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.heartbeat()
            except Exception:  # a bug must not stop the heartbeat: this replica's calls would drop out
                _LOG.exception("cluster heartbeat failed unexpectedly")

    def _note_down(self, what: str, exc: BaseException) -> None:
        if not self._redis_down:
            self._redis_down = True
            _LOG.error(
                f"cluster: Redis unreachable ({what}); calls in progress continue, new calls are refused, "
                "and other replicas stop listing this one's calls after the lease",
                extra={"error": f"{type(exc).__name__}: {exc}", "lease_s": self.lease_s},
            )

    def _note_up(self) -> None:
        if self._redis_down:
            self._redis_down = False
            _LOG.warning("cluster: Redis answers again")

    # --- the shared call registry ---------------------------------------------------------------
    def _summary(self, bridge: CallBridge) -> str:
        snapshot = bridge.snapshot()
        snapshot["transcript"] = snapshot.get("transcript", [])[-SUMMARY_TURNS:]
        snapshot["instance"] = self.instance
        return json.dumps(snapshot, default=str)

    def _call_changed(self, bridge: CallBridge, running: bool) -> None:
        """A call started or ended here: tell the shared registry now (the heartbeat repeats it)."""
        sid, key = bridge.info.call_sid, self._calls_key(self.instance)
        if running:
            summary = self._summary(bridge)

            async def write() -> None:
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.hset(key, sid, summary)
                    pipe.pexpire(key, self._lease_ms)
                    await pipe.execute()

            self._spawn(write(), f"cluster-call-started:{sid}")
        else:

            async def remove() -> None:
                await self._client.hdel(key, sid)

            self._spawn(remove(), f"cluster-call-ended:{sid}")

    def _spawn(self, work: Any, name: str) -> None:
        async def run() -> None:
            try:
                await work
            except REDIS_ERRORS as exc:
                self._note_down("call registry", exc)
            except Exception:
                _LOG.exception("cluster update failed unexpectedly", extra={"task": name})

        task = asyncio.get_running_loop().create_task(run(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def live_instances(self) -> list[str]:
        """Replicas whose heartbeat is within the lease (this one included), in a stable order.
        Raises what Redis raises."""
        members = sorted(_text(m) for m in await self._client.smembers(self._instances))
        if not members:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.exists(self._instance_key(member))
            alive = await pipe.execute()
        dead = [m for m, ok in zip(members, alive, strict=True) if not ok]
        if dead:
            await self._client.srem(self._instances, *dead)
        return [m for m, ok in zip(members, alive, strict=True) if ok]

    async def remote_calls(self) -> tuple[list[dict[str, Any]], list[str]]:
        """(the active calls of every other live replica, each with its ``instance``; the live replicas).
        Raises what Redis raises."""
        instances = await self.live_instances()
        others = [i for i in instances if i != self.instance]
        if not others:
            return [], instances
        async with self._client.pipeline(transaction=False) as pipe:
            for other in others:
                pipe.hgetall(self._calls_key(other))
            tables: list[Mapping[bytes, bytes]] = await pipe.execute()
        calls = []
        for other, table in zip(others, tables, strict=True):
            for raw in table.values():
                doc = json.loads(raw)
                doc["instance"] = other
                calls.append(doc)
        calls.sort(key=lambda c: c.get("started_at") or 0)
        return calls, instances

    async def find_call(self, call_sid: str) -> dict[str, Any] | None:
        """An active call on another live replica (its shared summary), or None. Raises what Redis raises."""
        others = [i for i in await self.live_instances() if i != self.instance]
        if not others:
            return None
        async with self._client.pipeline(transaction=False) as pipe:
            for other in others:
                pipe.hget(self._calls_key(other), call_sid)
            found = await pipe.execute()
        for other, raw in zip(others, found, strict=True):
            if raw is not None:
                doc: dict[str, Any] = json.loads(raw)
                doc["instance"] = other
                return doc
        return None

    async def hang_up(self, call_sid: str, *, peer: str = "") -> tuple[HangUp, str]:
        """Ask the replica carrying ``call_sid`` to hang it up: (what it answered, which replica).
        Raises what Redis raises."""
        found = await self.find_call(call_sid)
        if found is None:
            return "absent", ""
        owner = str(found["instance"])
        reply = f"{self._prefix}reply:{secrets.token_hex(8)}"
        request = {"op": "hangup", "call_sid": call_sid, "reply": reply, "from": self.instance, "peer": peer}
        receivers = await self._client.publish(self._control_channel(owner), json.dumps(request))
        if not receivers:
            return "unreachable", owner
        answer = await self._listener.blpop([reply], timeout=HANGUP_REPLY_S)
        if answer is None:
            return "unreachable", owner
        outcome = _text(answer[1])
        return (outcome if outcome in ("taken", "ending", "absent") else "unreachable"), owner  # type: ignore[return-value]

    # --- messages from the other replicas -----------------------------------------------------------
    async def _listen_loop(self) -> None:
        backoff = 0.2
        while True:
            pubsub = self._listener.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._control, self.streamed_channel)
                self._subscribed.set()
                backoff = 0.2
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self._on_message(_text(message["channel"]), message["data"])
            except REDIS_ERRORS as exc:
                self._note_down("control channel", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(*REDIS_ERRORS):
                    await pubsub.aclose()

    async def _on_message(self, channel: str, data: Any) -> None:
        try:
            if channel == self.streamed_channel:
                self._streamed_elsewhere(json.loads(data))
            elif channel == self._control:
                await self._control_request(json.loads(data))
        except REDIS_ERRORS:
            raise
        except Exception:
            _LOG.exception("cluster message failed", extra={"channel": channel})

    def _streamed_elsewhere(self, message: Mapping[str, Any]) -> None:
        """A call's stream started on another replica: drop its reservation here and close the Gemini
        session preconnected here for it."""
        sid = str(message.get("call_sid", ""))
        if not sid or message.get("instance") == self.instance:
            return
        self.admission.forget_reservation(sid)
        if self._preconnect.release(sid):
            _LOG.info(
                "preconnected session closed: the call's stream started on another replica",
                extra={"call_sid": sid, "stream_instance": message.get("instance")},
            )

    async def _control_request(self, request: Mapping[str, Any]) -> None:
        if request.get("op") != "hangup":
            _LOG.warning("cluster: unknown control request", extra={"op": request.get("op")})
            return
        sid, reply = str(request.get("call_sid", "")), str(request.get("reply", ""))
        if not reply.startswith(self._prefix + "reply:"):
            return
        bridge = self._calls.active.get(sid)
        outcome = "absent"
        if bridge is not None:
            outcome = "taken" if bridge.hang_up("admin", "hung up from the admin API") else "ending"
            if outcome == "taken":
                bridge.log.info(
                    "hang-up requested by the operator",
                    extra={"via_instance": request.get("from"), "peer": request.get("peer")},
                )
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.rpush(reply, outcome)
            pipe.pexpire(reply, round(HANGUP_REPLY_S * 2000))
            await pipe.execute()
