"""Record stores: what a call wrote is what `gateway calls` and the admin API read back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.errors import ConfigError, RecordError
from gateway.records.model import CallOpened, EventAdded, EventRecord, TurnAdded, TurnRecord
from gateway.records.sqlite import SqliteStore
from gateway.records.store import ALIAS_EVENT, RecordStore, open_store, redacted, sqlite_path

from .conftest import call_ops


async def _round_trip(store: RecordStore) -> None:
    await store.write(call_ops("CA0001", started_at=1_700_000_000.0))
    await store.write(call_ops("CA0002", closed=False, started_at=1_700_000_100.0))
    listed = await store.list_calls()
    assert [r.call_id for r in listed] == ["CA0002", "CA0001"]  # newest first
    assert [r.turn_count for r in listed] == [3, 3]
    assert listed[1].ended_by == "caller"
    assert listed[0].ended_at is None  # still running (or the gateway died mid-call)
    assert listed[0].turns == []  # summaries carry no transcript

    record = await store.get_call("CA0001")
    assert record is not None
    assert (record.from_number, record.to_number, record.dialplan, record.dialplan_version) == (
        "+15550001111", "+15551230000", "support", "abc123",
    )  # fmt: skip
    assert [(t.role, t.text) for t in record.turns] == [
        ("bot", "Hello, how can I help?"),
        ("caller", "Where is my order?"),
        ("bot", "Let me look that up for you now"),
    ]
    cut = record.turns[2]
    assert (cut.interrupted, cut.heard) == (True, "Let me look")
    [tool] = record.tool_calls
    assert (tool.name, dict(tool.arguments), tool.status, tool.duration_ms) == (
        "lookup_order", {"order": "A17"}, "ok", 42.5,
    )  # fmt: skip
    assert tool.result == {"status": "shipped"}
    assert record.gemini_sessions == ["CA0001#1"]
    assert [e.detail["cause"] for e in record.reconnects] == ["go_away"]
    assert (record.usage.total_tokens, record.stats["frames_in"], record.end_reason) == (200, 450, "stop")
    assert record.instance == "host:1"

    # Operations are idempotent: a retried batch changes nothing.
    await store.write(call_ops("CA0001", started_at=1_700_000_000.0))
    again = await store.get_call("CA0001")
    assert again is not None
    assert len(again.turns) == 3
    assert len(again.tool_calls) == 1

    # A unique prefix finds a call; an ambiguous one is a clear error; an unknown id is None.
    assert (await store.get_call("CA0002")) is not None
    with pytest.raises(RecordError, match="more than one call"):
        await store.get_call("CA000")
    assert await store.get_call("CA9") is None
    assert [r.call_id for r in await store.list_calls(dialplan="support", limit=1)] == ["CA0002"]
    assert await store.list_calls(dialplan="nope") == []


async def test_sqlite_round_trip(sqlite_store: SqliteStore) -> None:
    """SQLite keeps a call's header, turns (with what was heard), tool calls, events and outcome."""
    await _round_trip(sqlite_store)


async def test_postgres_round_trip(postgres_store: RecordStore) -> None:
    """PostgreSQL (a real server) keeps and returns exactly what SQLite does."""
    await _round_trip(postgres_store)


async def _aliases(store: RecordStore) -> None:
    await store.write(call_ops("CA-call", started_at=1_700_000_000.0))
    await store.write([EventAdded("REQ-1", EventRecord(1_000_050, 1.0, ALIAS_EVENT, {"call_id": "CA-call"}))])
    assert await store.resolve("REQ-1") == "CA-call"
    assert await store.resolve("CA-call") == "CA-call"
    assert await store.resolve("REQ-2") == "REQ-2"
    record = await store.get_call("REQ-1")
    assert record is not None
    assert record.call_id == "CA-call"
    assert len(record.turns) == 3
    assert await store.get_call("REQ-2") is None


async def test_another_name_of_a_call_finds_its_record(
    sqlite_store: SqliteStore, postgres_store: RecordStore
) -> None:
    """A provider's request id made another name of a call (Plivo's request_uuid → CallUUID) finds the
    call's record, in SQLite and in PostgreSQL; an id that names nothing stays unknown."""
    await _aliases(sqlite_store)
    await _aliases(postgres_store)


async def test_sqlite_is_wal_and_readable_while_open(sqlite_store: SqliteStore) -> None:
    """The file is in WAL mode and another connection (the CLI) sees each committed turn at once."""
    await sqlite_store.write(call_ops("CA1", closed=False)[:3])
    reader = sqlite3.connect(sqlite_store.path)
    try:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reader.execute("SELECT text FROM turns WHERE call_id = 'CA1'").fetchall() == [
            ("Hello, how can I help?",)
        ]
    finally:
        reader.close()


async def test_a_failed_batch_writes_nothing(sqlite_store: SqliteStore) -> None:
    """A batch is one transaction: when a statement fails, the earlier ones are rolled back."""
    good = CallOpened("CA2", "MZ", "+1", "+2", "p", "v", 1.0)
    bad = TurnAdded("CA2", TurnRecord(1, "bot", "x", 2.0))
    await sqlite_store._execute([("DROP TABLE turns", ())])  # make the second statement fail
    with pytest.raises(RecordError, match="writing call records"):
        await sqlite_store.write([good, bad])
    assert await sqlite_store.fetch("SELECT call_id FROM calls", ()) == []


def test_database_urls() -> None:
    """The URL picks the backend; SQLite paths and password redaction behave as documented."""
    data = Path("/var/lib/gw")
    assert sqlite_path("", data) == data / "calls.db"
    assert sqlite_path("sqlite:///tmp/x.db", data) == Path("/tmp/x.db")
    assert sqlite_path("sqlite:rel/x.db", data) == Path("rel/x.db")
    assert sqlite_path("postgresql://h/db", data) is None
    with pytest.raises(ConfigError, match="absolute"):
        sqlite_path("sqlite://host/x.db", data)
    with pytest.raises(ConfigError, match="unsupported scheme 'mysql'"):
        open_store("mysql://h/db", data)
    assert redacted("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redacted("postgresql://h/db") == "postgresql://h/db"


async def test_unreachable_postgres_is_a_record_error() -> None:
    """A database that is down gives RecordError (the writer retries), never a driver exception."""
    pytest.importorskip("psycopg")
    from gateway.records.postgres import PostgresStore

    store = PostgresStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    with pytest.raises(RecordError, match="cannot connect"):
        await store.open()


async def _orphans(store: RecordStore) -> None:
    now = 1_700_010_000.0

    def opened(call_id: str, instance: str, started_at: float) -> CallOpened:
        return CallOpened(call_id, "MZ", "+1", "+2", "support", "v1", started_at, instance)

    await store.write(
        [
            opened("CA-dead", "gw-a:101", now - 60),  # its process is gone: an orphan
            opened("CA-self", "gw-a:7", now - 60),  # written by an earlier process with our identity
            opened("CA-live", "gw-a:202", now - 60),  # another live process of this host
            opened("CA-far", "gw-b:1", now - 60),  # another host: cannot be checked, left alone
            opened("CA-ancient", "gw-b:1", now - 8000),  # older than any call may last
        ]
    )
    await store.write(call_ops("CA-done", started_at=now - 100))  # ended: never touched
    alive = {"gw-a:202", "gw-a:7", "gw-b:1"}
    closed = await store.close_orphans(
        instance="gw-a:7", alive=lambda owner: owner in alive, max_call_s=7200, now=now
    )
    assert sorted(c.call_id for c in closed) == ["CA-ancient", "CA-dead", "CA-self"]
    for call_id in (c.call_id for c in closed):
        record = await store.get_call(call_id)
        assert record is not None
        assert record.ended_by == "gateway"
        assert "killed or crashed" in record.end_reason
    for call_id in ("CA-live", "CA-far"):
        record = await store.get_call(call_id)
        assert record is not None
        assert record.ended_at is None
    done = await store.get_call("CA-done")
    assert done is not None
    assert done.ended_by == "caller"


async def test_sqlite_closes_calls_a_killed_process_left_running(sqlite_store: SqliteStore) -> None:
    await _orphans(sqlite_store)


async def test_postgres_closes_calls_a_killed_process_left_running(postgres_store: RecordStore) -> None:
    await _orphans(postgres_store)
