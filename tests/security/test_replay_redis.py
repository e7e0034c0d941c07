"""The Redis replay guard: one claim per nonce across processes, expiry, and failing closed."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from gateway.errors import AuthError, ConfigError
from gateway.security.replay import RedisReplayGuard, replay_guard
from gateway.security.tokens import InMemoryReplayGuard, StreamTokens
from tests.needs import unavailable

redis_asyncio = pytest.importorskip("redis.asyncio", reason="the 'redis' package is not installed")

REDIS_URL = "redis://127.0.0.1:6379/15"
SID = "CA" + "4" * 32


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
    """A key prefix of this test's own; the keys are deleted afterwards."""
    if not await _reachable():
        unavailable(f"Redis is not reachable at {REDIS_URL}; start redis-server to run these tests")
    value = f"test:{secrets.token_hex(4)}:"
    yield value
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=value + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def _guard(prefix: str, **kw: float) -> RedisReplayGuard:
    return RedisReplayGuard(redis_asyncio.Redis.from_url(REDIS_URL), prefix=prefix, **kw)


async def test_a_nonce_is_claimed_once_across_processes(prefix: str) -> None:
    """Two guards (two gateway processes) sharing Redis: only the first claim of a nonce wins."""
    a, b = _guard(prefix), _guard(prefix)
    try:
        assert await a.claim("n1", expires_at=130.0, now=100.0)
        assert not await b.claim("n1", expires_at=130.0, now=100.5)
        assert not await a.claim("n1", expires_at=130.0, now=101.0)
        assert await b.claim("n2", expires_at=130.0, now=101.0)
    finally:
        await a.close()
        await b.close()


async def test_tokens_issued_by_one_process_are_single_use_in_all(prefix: str) -> None:
    """A stream token verified by one process is a replay in another process with the same secret."""
    secret = b"k" * 32
    first, second = StreamTokens(secret, guard=_guard(prefix)), StreamTokens(secret, guard=_guard(prefix))
    token = first.issue(call_sid=SID, to="+1555", from_="+1666", now=1000.0)
    try:
        await second.verify(token, call_sid=SID, now=1001.0)
        with pytest.raises(AuthError, match="already used"):
            await first.verify(token, call_sid=SID, now=1001.5)
    finally:
        for tokens in (first, second):
            assert isinstance(tokens.guard, RedisReplayGuard)
            await tokens.guard.close()


async def test_concurrent_claims_have_exactly_one_winner(prefix: str) -> None:
    """Racing claims of the same nonce from many clients: exactly one succeeds (SET NX is atomic)."""
    guards = [_guard(prefix) for _ in range(8)]
    try:
        results = await asyncio.gather(*(g.claim("race", 60.0, 0.0) for g in guards))
        assert sum(results) == 1
    finally:
        await asyncio.gather(*(g.close() for g in guards))


async def test_keys_expire_shortly_after_the_token(prefix: str) -> None:
    """The key's TTL is the token's remaining life plus the clock-skew margin, so Redis stays small."""
    guard = _guard(prefix, margin_s=0.0)
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        await guard.claim("ttl", expires_at=12.0, now=10.0)
        pttl = await client.pttl(prefix + "ttl")
        assert 0 < pttl <= 2000
    finally:
        await guard.close()
        await client.aclose()


async def test_unreachable_redis_fails_closed() -> None:
    """When Redis cannot answer, the claim raises AuthError (the stream is refused), quickly."""
    guard = RedisReplayGuard.from_url("redis://127.0.0.1:1/0", timeout_s=0.5)
    try:
        with pytest.raises(AuthError, match="replay guard unavailable"):
            await guard.claim("n", 30.0, 0.0)
    finally:
        await guard.close()


def test_guard_selection_follows_the_setting() -> None:
    """No URL: the in-memory guard; a Redis URL: the Redis guard; a bad URL: ConfigError."""
    assert isinstance(replay_guard(""), InMemoryReplayGuard)
    assert isinstance(replay_guard(REDIS_URL), RedisReplayGuard)
    with pytest.raises(ConfigError, match="GATEWAY_REDIS_URL"):
        replay_guard("http://not-redis")
