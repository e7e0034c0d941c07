"""A stream-token replay guard shared by the worker processes of one machine, with no server.

``gateway serve --workers N`` runs N processes on one port (SO_REUSEPORT): Twilio's webhook may land
on one worker and the media socket on another, so "used once" must hold across processes. With
Redis configured (``GATEWAY_REDIS_URL``) the workers share :class:`~gateway.security.replay.RedisReplayGuard`.
Without it, they share this guard: a SQLite file in a private temporary directory the parent creates,
where claiming a nonce is one ``INSERT`` into a primary key — the first process wins, a replay is a
constraint violation. Why not per-process memory: a replayed token could then be accepted once per
worker. Why SQLite: its file locking is made for exactly this (several processes, one host), it ships
with Python, and the claim happens once per call, never on the media path.

Claims run in a thread (a locked database must not stall every call of the worker) and fail closed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from gateway.errors import AuthError

#: Rows outlive their token by this much, so workers with a slightly different idea of "now" agree.
MARGIN_S = 5.0
#: Purge expired nonces every this many claims (one indexed DELETE).
PURGE_EVERY = 200


class SqliteReplayGuard:
    """A :class:`~gateway.security.tokens.ReplayGuard` over one SQLite file; one instance per process."""

    def __init__(self, path: Path, *, timeout_s: float = 1.0) -> None:
        self.path = path
        self._timeout_s = timeout_s
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._claims = 0

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")  # a crash loses only nonces of tokens about to expire
        conn.execute("CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, expires_at REAL NOT NULL)")
        conn.execute("CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires_at)")
        return conn

    def claim_now(self, nonce: str, expires_at: float, now: float) -> bool:
        """:meth:`claim` in the calling thread. Raises :class:`AuthError` when the file cannot answer."""
        with self._lock:
            try:
                conn = self._conn if self._conn is not None else self._connect()
                self._conn = conn
                self._claims += 1
                if self._claims % PURGE_EVERY == 0:
                    conn.execute("DELETE FROM nonces WHERE expires_at < ?", (now - MARGIN_S,))
                try:
                    conn.execute("INSERT INTO nonces VALUES (?, ?)", (nonce, expires_at + MARGIN_S))
                except sqlite3.IntegrityError:
                    return False
                return True
            except sqlite3.Error as exc:
                raise AuthError(
                    f"replay guard unavailable ({type(exc).__name__}); refusing the stream"
                ) from exc

    async def claim(self, nonce: str, expires_at: float, now: float) -> bool:
        return await asyncio.to_thread(self.claim_now, nonce, expires_at, now)

    async def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
