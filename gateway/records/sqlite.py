"""The embedded record store: one SQLite file in WAL mode, driven from one worker thread.

sqlite3 blocks, so every statement runs on a dedicated single thread (which also owns the
connection, as sqlite3 wants); the event loop only awaits the thread's future. WAL lets
`gateway calls` read while the gateway writes. ``synchronous=FULL`` makes each committed batch
survive a power cut too, not just a killed process; the writer batches whatever queued up while
the previous commit ran, so the fsync rate stays bounded however many calls are up.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import RecordError
from gateway.records.store import SCHEMA, RecordStore, Statement

T = TypeVar("T")


class SqliteStore(RecordStore):
    """Records in ``path`` (created with its folder on :meth:`open`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"sqlite:///{path.resolve()}"
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._thread is None:
            raise RecordError("the record store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def open(self) -> None:
        if self._thread is not None:
            return
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="records-sqlite")
        try:
            await self._call(self._open)
        except BaseException:
            self._thread.shutdown(wait=False)
            self._thread = None
            raise

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA busy_timeout = 5000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous = FULL")
            for ddl in SCHEMA:
                conn.execute(ddl)
        except (sqlite3.Error, OSError) as exc:
            raise RecordError(f"cannot open the record store {self.path}: {exc}") from exc
        if str(mode).lower() != "wal":
            conn.close()
            raise RecordError(f"{self.path}: SQLite refused WAL mode (journal_mode={mode}); is it on NFS?")
        self._conn = conn

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(thread, conn.close)
        thread.shutdown(wait=True)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RecordError("the record store is not open")
        return self._conn

    async def _execute(self, batch: Sequence[Statement]) -> None:
        def run() -> None:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for sql, params in batch:
                        conn.execute(sql, params)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise RecordError(f"writing call records to {self.path} failed: {exc}") from exc

        await self._call(run)

    async def fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            try:
                return list(self._connection().execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise RecordError(f"reading call records from {self.path} failed: {exc}") from exc

        return await self._call(run)
