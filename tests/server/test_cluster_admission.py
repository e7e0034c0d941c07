"""Cluster-wide admission against the real local Redis: the limits hold across replicas (several
``RedisAdmission`` objects on their own connections, as several processes have), reservations turn into
slots on any replica, leases free a killed replica's places, and Redis away means "no" for new calls."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

redis_asyncio = pytest.importorskip("redis.asyncio", reason="the 'redis' package is not installed")

from gateway.server.cluster_admission import RedisAdmission  # noqa: E402  (needs redis)
from tests.needs import unavailable  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/14"


async def _reachable() -> bool:
    client = redis_asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own (tests run in parallel); its keys are deleted afterwards."""
    if not await _reachable():
        unavailable(f"Redis is not reachable at {REDIS_URL}; start redis-server to run these tests")
    value = f"test:{secrets.token_hex(4)}:"
    yield value
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=value + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


Replica = Callable[..., RedisAdmission]


@pytest.fixture
async def replica(prefix: str) -> AsyncIterator[Replica]:
    """Makes one replica's admission (its own Redis connection); all are closed afterwards."""
    made: list[RedisAdmission] = []
    clients = []

    def make(**kw: object) -> RedisAdmission:
        client = redis_asyncio.Redis.from_url(REDIS_URL, socket_timeout=2.0)
        clients.append(client)
        options: dict[str, object] = {"prefix": prefix, "max_calls": 2, "instance": f"r{len(made)}"}
        admission = RedisAdmission(client, **(options | kw))  # type: ignore[arg-type]
        made.append(admission)
        return admission

    yield make
    for admission in made:
        await admission.close()
    for client in clients:
        await client.aclose()


async def test_the_global_limit_holds_across_replicas(replica: Replica) -> None:
    """A webhook answered on one replica holds a place every other replica counts; a stream on another
    replica turns it into a slot without taking a second place; over the limit both refuse."""
    a, b = replica(), replica()
    assert await a.reserve_call("CA1", "support")
    slot = await b.admit_call("CA1", "support")  # CA1's stream landed on b: still one place
    assert slot is not None
    assert slot.plan == "support"
    assert await b.cluster_in_use() == 1
    assert await a.reserve_call("CA2", "support")
    assert not await b.reserve_call("CA3", "support")
    assert await b.admit_call("CA4", "sales") is None  # a stream with no reservation: a fresh place
    assert "cluster at its limit of 2" in (b.refusal("support") or "")
    assert b.refused == 2
    slot.release()
    await b.close()  # the release is in the background; wait for it
    assert await a.cluster_in_use() == 1
    assert await b.reserve_call("CA3", "support")
    assert await a.cluster_in_use() == 2


async def test_per_dialplan_limits_across_replicas(replica: Replica) -> None:
    limits = {"support": 1, "*": 2}
    a, b = replica(max_calls=10, per_plan=limits), replica(max_calls=10, per_plan=limits)
    assert await a.reserve_call("CA1", "support")
    assert not await b.reserve_call("CA2", "support")
    assert "dialplan at its limit of 1" in (b.refusal("support") or "")
    assert await a.reserve_call("CA4", "sales")
    assert await b.reserve_call("CA5", "sales")
    assert not await a.reserve_call("CA6", "sales")
    assert await a.cluster_in_use("sales") == 2
    assert await b.cluster_in_use("support") == 1
    assert await b.cluster_in_use() == 3


async def test_a_retried_webhook_keeps_its_place_on_any_replica(replica: Replica) -> None:
    a, b = replica(max_calls=1), replica(max_calls=1)
    assert await a.reserve_call("CA1", "p")
    assert await a.reserve_call("CA1", "p")  # retried to the same replica
    assert await b.reserve_call("CA1", "p")  # retried to another one
    assert await a.cluster_in_use() == 1
    assert not await b.reserve_call("CA2", "p")


async def test_a_reservation_whose_stream_never_comes_expires(replica: Replica) -> None:
    a = replica(max_calls=1, reserve_s=0.3)
    assert await a.reserve_call("CA1", "p")
    assert not await a.reserve_call("CA2", "p")
    await asyncio.sleep(0.4)
    assert a.total == 0
    assert await a.reserve_call("CA2", "p")


async def test_leases_free_a_dead_replicas_places_and_heartbeats_keep_a_live_ones(replica: Replica) -> None:
    """b carries CA1 and keeps renewing; c carried CA2 and was killed (it renews no more): within the
    lease CA2's place is free and CA1's still held."""
    b, c = replica(max_calls=2, lease_s=0.5), replica(max_calls=2, lease_s=0.5)
    assert await b.admit_call("CA1", "p") is not None
    assert await c.admit_call("CA2", "p") is not None
    assert not await b.reserve_call("CA3", "p")
    for _ in range(4):  # b's heartbeat; c is dead
        await asyncio.sleep(0.2)
        assert await b.renew() == 1
    assert await b.cluster_in_use() == 1
    assert await b.reserve_call("CA3", "p")
    assert not await b.reserve_call("CA4", "p")


async def test_a_released_place_is_not_renewed_back(replica: Replica) -> None:
    a = replica(max_calls=1, lease_s=5.0)
    slot = await a.admit_call("CA1", "p")
    assert slot is not None
    slot.release()
    slot.release()  # idempotent
    await a.close()
    assert await a.renew() == 0
    assert await a.cluster_in_use() == 0


async def test_many_admits_at_once_never_pass_the_limit(replica: Replica) -> None:
    """Eight replicas, 80 streams and webhooks racing for 7 places: exactly 7 get one."""
    replicas = [replica(max_calls=7, per_plan={"p": 7}) for _ in range(8)]

    async def attempt(i: int) -> bool:
        r = replicas[i % len(replicas)]
        if i % 2:
            return await r.reserve_call(f"CA{i}", "p")
        return await r.admit_call(f"CA{i}", "p") is not None

    results = await asyncio.gather(*(attempt(i) for i in range(80)))
    assert sum(results) == 7
    assert await replicas[0].cluster_in_use() == 7
    assert await replicas[0].cluster_in_use("p") == 7
    assert sum(r.refused for r in replicas) == 73


async def test_pressure_refuses_new_places_first_but_not_a_held_one(replica: Replica) -> None:
    """A draining (or overloaded) replica takes no new place, but a stream whose webhook another replica
    answered still gets its call: the place was given at the webhook."""
    a, b = replica(max_calls=5), replica(max_calls=5)
    b.pressure = lambda: "draining: shutting down"
    assert not await b.reserve_call("CA1", "p")
    assert b.refusal("p") == "draining: shutting down"
    assert await b.admit_call("CA2", "p") is None
    assert await a.reserve_call("CA3", "p")
    assert await b.admit_call("CA3", "p") is not None
    assert await a.cluster_in_use() == 1


async def test_the_local_file_budget_still_caps_each_replica(replica: Replica) -> None:
    a = replica(max_calls=10, local_cap=1)
    assert await a.reserve_call("CA1", "p")
    assert not await a.reserve_call("CA2", "p")
    assert "open files" in (a.refusal("p") or "")
    assert await replica(max_calls=10).reserve_call("CA2", "p")


async def test_a_stream_admitted_away_from_its_webhook_is_announced(replica: Replica, prefix: str) -> None:
    """The webhook's replica learns (pub/sub) that the stream went elsewhere, to close its preconnect."""
    channel = prefix + "streamed"
    a, b = replica(streamed_channel=channel), replica(streamed_channel=channel, instance="b")
    listener = redis_asyncio.Redis.from_url(REDIS_URL)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    try:
        assert await a.reserve_call("CA1", "p")
        assert await a.admit_call("CA1", "p") is not None  # same replica: nothing to announce
        assert await a.reserve_call("CA2", "p")
        assert await b.admit_call("CA2", "p") is not None
        messages = await _messages(pubsub, within_s=0.5)
        assert [json.loads(m["data"]) for m in messages] == [{"call_sid": "CA2", "instance": "b"}]
        a.forget_reservation("CA2")
        assert a.total == 1
    finally:
        await pubsub.aclose()
        await listener.aclose()


async def _messages(pubsub: Any, within_s: float) -> list[dict[str, Any]]:
    """Every message published within ``within_s`` (get_message also returns None for the ignored
    subscribe confirmation, so read until the time is up)."""
    found = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while (left := deadline - loop.time()) > 0:
        message = await pubsub.get_message(timeout=left)
        if message is not None:
            found.append(message)
    return found


async def test_redis_away_refuses_new_calls_with_one_clear_line(caplog: pytest.LogCaptureFixture) -> None:
    client = redis_asyncio.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.3)
    admission = RedisAdmission(client, prefix="test:", max_calls=5)
    try:
        with caplog.at_level(logging.ERROR, logger="gateway.cluster"):
            assert not await admission.reserve_call("CA1", "p")
            assert await admission.admit_call("CA2", "p") is None
        assert "Redis did not answer" in (admission.refusal("p") or "")
        lines = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
        assert len(lines) == 1, "one line per outage, not per call"
        assert admission.refused == 2
    finally:
        await client.aclose()
