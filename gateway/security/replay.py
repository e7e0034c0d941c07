"""Replay guards shared by several gateway processes.

A stream token is single-use. One process remembers used nonces in memory
(:class:`~gateway.security.tokens.InMemoryReplayGuard`); once Twilio's webhook and media socket may
land on different processes, they must share the memory. :class:`RedisReplayGuard` claims a nonce
with one ``SET key 1 NX PX ttl``: the first process to claim it wins, the key expires on its own
shortly after the token would have anyway, so Redis holds at most a few seconds of calls.

The guard fails closed: if Redis cannot answer, the stream is refused (:class:`AuthError`), because
a guard that says "yes" when it does not know is no guard.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from gateway.errors import AuthError, ConfigError
from gateway.security.tokens import InMemoryReplayGuard, ReplayGuard

if TYPE_CHECKING:
    from redis.asyncio import Redis

#: Keys live this much longer than their token, so processes with slightly skewed clocks agree.
CLOCK_SKEW_MARGIN_S = 5.0
DEFAULT_PREFIX = "gateway:stream-nonce:"


class RedisReplayGuard:
    """A :class:`ReplayGuard` over Redis ``SET NX PX``; one instance per process, reused by every call."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        margin_s: float = CLOCK_SKEW_MARGIN_S,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._margin_s = margin_s

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 1.0, prefix: str = DEFAULT_PREFIX) -> RedisReplayGuard:
        """A guard for ``redis://…`` (or ``rediss://``, ``unix://``); it connects on the first claim.

        Raises:
            ConfigError: the ``redis`` package is missing (``pip install 'gemini-phone-gateway[redis]'``)
                or the URL is not a Redis URL.
        """
        try:
            from redis.asyncio import Redis
        except ImportError as exc:
            raise ConfigError(
                "GATEWAY_REDIS_URL is set but the 'redis' package is missing: "
                "pip install 'gemini-phone-gateway[redis]'"
            ) from exc
        try:
            client = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        except ValueError as exc:
            # The message names the scheme problem, never the URL (it may carry a password).
            raise ConfigError(f"GATEWAY_REDIS_URL is not a Redis URL: {exc.__class__.__name__}") from None
        return cls(client, prefix=prefix)

    async def claim(self, nonce: str, expires_at: float, now: float) -> bool:
        from redis.exceptions import RedisError

        ttl_ms = max(1, math.ceil((expires_at - now + self._margin_s) * 1000))
        try:
            created: Any = await self._client.set(self._prefix + nonce, b"1", nx=True, px=ttl_ms)
        except (RedisError, OSError, TimeoutError) as exc:
            raise AuthError(f"replay guard unavailable ({type(exc).__name__}); refusing the stream") from exc
        return bool(created)

    async def close(self) -> None:
        await self._client.aclose()


def replay_guard(redis_url: str, *, prefix: str = DEFAULT_PREFIX) -> ReplayGuard:
    """The guard a process should use: Redis when ``redis_url`` is set (keys under ``prefix``), else
    in-memory."""
    return RedisReplayGuard.from_url(redis_url, prefix=prefix) if redis_url else InMemoryReplayGuard()


async def close_guard(guard: ReplayGuard) -> None:
    """Release a guard's connections, if it holds any (an ``async close()``, as every shared guard has)."""
    close = getattr(guard, "close", None)
    if close is not None:
        await close()
