"""Record-store fixtures: SQLite in a temp folder, and a real PostgreSQL when one is reachable."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.records.model import (
    CallClosed,
    CallOpened,
    EventAdded,
    EventRecord,
    RecordOp,
    ToolCallDone,
    ToolCallRecord,
    TurnAdded,
    TurnRecord,
    Usage,
)
from gateway.records.sqlite import SqliteStore
from gateway.records.store import RecordStore
from tests.needs import unavailable

#: The development and CI machines run PostgreSQL here (trust auth, database `test`).
PG_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")
PG_HOWTO = (
    "PostgreSQL not reachable at {url} ({error}); run a server there with trust auth and a "
    "database named `test` (or set GATEWAY_TEST_POSTGRES_URL) to run these tests"
)


def call_ops(
    call_id: str = "CA0001", *, closed: bool = True, started_at: float = 1_700_000_000.0
) -> list[RecordOp]:
    """A whole small call: opened, greeting, an utterance, a cut reply, a tool call, a reconnect, closed."""
    ops: list[RecordOp] = [
        CallOpened(
            call_id, "MZ01", "+15550001111", "+15551230000", "support", "abc123", started_at, "host:1"
        ),
        EventAdded(call_id, EventRecord(1, started_at, "session", {"id": f"{call_id}#1", "resumed": False})),
        TurnAdded(
            call_id, TurnRecord(1, "bot", "Hello, how can I help?", started_at + 0.5, started_at + 2.0)
        ),
        TurnAdded(call_id, TurnRecord(2, "caller", "Where is my order?", started_at + 3.0, started_at + 4.0)),
        TurnAdded(
            call_id,
            TurnRecord(
                3,
                "bot",
                "Let me look that up for you now",
                started_at + 4.5,
                started_at + 5.0,
                interrupted=True,
                heard="Let me look",
            ),
        ),
        ToolCallDone(
            call_id,
            ToolCallRecord(
                1,
                "fc-1",
                "lookup_order",
                {"order": "A17"},
                "ok",
                started_at + 5.1,
                42.5,
                result={"status": "shipped"},
            ),
        ),
        EventAdded(call_id, EventRecord(2, started_at + 6.0, "reconnect", {"cause": "go_away"})),
    ]
    if closed:
        ops.append(
            CallClosed(call_id, started_at + 9.0, "caller", "stop", Usage(120, 80, 200), {"frames_in": 450})
        )
    return ops


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "data" / "calls.db")
    await store.open()
    yield store
    await store.close()


@contextlib.asynccontextmanager
async def pg_schema() -> AsyncIterator[str]:
    """The URL of a fresh, empty schema of the `test` database (dropped afterwards); skips without one."""
    psycopg = pytest.importorskip("psycopg")
    schema = "records_test_" + secrets.token_hex(4)
    try:
        admin = await psycopg.AsyncConnection.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        unavailable(PG_HOWTO.format(url=PG_URL, error=str(exc).strip().splitlines()[0]))
    await admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with pg_schema() as url:
        yield url


@pytest.fixture
async def postgres_store(postgres_url: str) -> AsyncIterator[RecordStore]:
    """A PostgresStore on a fresh schema of the `test` database, dropped afterwards."""
    from gateway.records.postgres import PostgresStore

    store = PostgresStore(postgres_url)
    try:
        await store.open()
        yield store
    finally:
        await store.close()


StoreFactory = Callable[[], RecordStore]
