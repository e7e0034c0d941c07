"""Call records in PostgreSQL (psycopg 3, asyncio), for deployments with several gateway instances.

One connection per gateway: the record writer is a single task that batches, and admin reads are
rare, so a pool would only add moving parts. A lock keeps the two from interleaving on it. A
broken connection is dropped and reopened on the next operation, so a database restart costs the
writer a retry, not the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg

from gateway.errors import RecordError
from gateway.records.store import SCHEMA, RecordStore, Statement, redacted


def _pg(sql: str) -> str:
    """Our statements use ``?``; psycopg wants ``%s`` (no statement contains a literal ``%`` or ``?``)."""
    return sql.replace("?", "%s")


class PostgresStore(RecordStore):
    def __init__(self, url: str) -> None:
        self._url = url
        self.description = redacted(url)
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise RecordError(f"cannot connect to {self.description}: {exc}") from exc
        return self._conn

    async def open(self) -> None:
        async with self._lock:
            conn = await self._connection()
            try:
                async with conn.transaction():
                    # Several instances may start at once: serialise schema creation.
                    await conn.execute("SELECT pg_advisory_xact_lock(7315402981)")
                    for ddl in SCHEMA:
                        await conn.execute(ddl)
            except psycopg.Error as exc:
                raise RecordError(f"cannot create the record schema in {self.description}: {exc}") from exc

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()

    async def _execute(self, batch: Sequence[Statement]) -> None:
        async with self._lock:
            conn = await self._connection()
            try:
                async with conn.transaction(), conn.cursor() as cur:
                    for sql, params in batch:
                        await cur.execute(_pg(sql), params)
            except psycopg.Error as exc:
                if conn.broken:
                    self._conn = None
                raise RecordError(f"writing call records to {self.description} failed: {exc}") from exc

    async def fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        async with self._lock:
            conn = await self._connection()
            try:
                async with conn.transaction():
                    cur = await conn.execute(_pg(sql), params)
                    return list(await cur.fetchall())
            except psycopg.Error as exc:
                if conn.broken:
                    self._conn = None
                raise RecordError(f"reading call records from {self.description} failed: {exc}") from exc
