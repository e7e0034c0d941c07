"""The records lease: a replica killed mid-call (SIGKILL, crash, lost machine) leaves no call "active"
forever. Each gateway heartbeats in the shared store; any other one closes a silent one's calls."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.dialplan.model import Dialplan
from gateway.errors import ConfigError, RecordError
from gateway.records.hub import Observability, _instance_alive, new_instance_id
from gateway.records.model import CallClosed, CallOpened, EventAdded, EventRecord, Usage
from gateway.records.sqlite import SqliteStore
from gateway.records.store import ORPHAN_EVENT, RecordStore
from gateway.settings import Settings

from .conftest import call_ops, pg_schema
from .test_writer_and_observer import _value

T0 = 1_700_000_000.0
LEASE = 30.0
PLAN = Dialplan("support", "v1", Path("support.toml"))

#: The schema as the previous release created it (no `instances` table, no `calls_open` index).
OLD_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS calls (
        call_id TEXT PRIMARY KEY, stream_id TEXT NOT NULL, from_number TEXT NOT NULL,
        to_number TEXT NOT NULL, dialplan TEXT NOT NULL, dialplan_version TEXT NOT NULL,
        instance TEXT NOT NULL DEFAULT '', started_at DOUBLE PRECISION NOT NULL,
        ended_at DOUBLE PRECISION, ended_by TEXT, end_reason TEXT,
        prompt_tokens BIGINT NOT NULL DEFAULT 0, response_tokens BIGINT NOT NULL DEFAULT 0,
        total_tokens BIGINT NOT NULL DEFAULT 0, stats TEXT NOT NULL DEFAULT '{}', recording TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS calls_started_at ON calls (started_at)",
    """CREATE TABLE IF NOT EXISTS turns (
        call_id TEXT NOT NULL, seq INTEGER NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, ended_at DOUBLE PRECISION,
        interrupted INTEGER NOT NULL DEFAULT 0, heard TEXT, PRIMARY KEY (call_id, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS tool_calls (
        call_id TEXT NOT NULL, seq INTEGER NOT NULL, tool_call_id TEXT NOT NULL, name TEXT NOT NULL,
        arguments TEXT NOT NULL, status TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL,
        duration_ms DOUBLE PRECISION NOT NULL, result TEXT, error TEXT, PRIMARY KEY (call_id, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS call_events (
        call_id TEXT NOT NULL, seq INTEGER NOT NULL, at DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL,
        detail TEXT NOT NULL, PRIMARY KEY (call_id, seq)
    )""",
)


def opened(call_id: str, instance: str, started_at: float) -> CallOpened:
    return CallOpened(call_id, "MZ", "+1", "+2", "support", "v1", started_at, instance)


async def instances(store: RecordStore) -> dict[str, float]:
    return {str(i): float(s) for i, s in await store.fetch("SELECT instance, seen_at FROM instances", ())}


async def ended(store: RecordStore, call_id: str) -> tuple[float | None, str | None, str | None]:
    record = await store.get_call(call_id)
    assert record is not None
    return record.ended_at, record.ended_by, record.end_reason


# --- the store: explicit times, no clock at all --------------------------------------------------


async def _expired_leases(store: RecordStore, twin: RecordStore) -> None:
    """``twin``: a second connection to the same database, as another replica has."""
    await store.heartbeat("gw-a:1:aaa", T0)
    await store.heartbeat("gw-b:1:bbb", T0)
    await store.write(
        [
            opened("CA-a1", "gw-a:1:aaa", T0 - 60),  # running on A
            opened("CA-a2", "gw-a:1:aaa", T0 + 5),  # A took it after its last heartbeat
            opened("CA-b1", "gw-b:1:bbb", T0 - 60),  # running on B, which lives on
            opened("CA-legacy", "old-host:77", T0 - 60),  # a release without heartbeats: not judged
            EventAdded("CA-a1", EventRecord(1, T0 - 59, "session", {"id": "CA-a1#1"})),
            *call_ops("CA-done", started_at=T0 - 100),  # a finished call: never touched
        ]
    )
    for t in (T0 + 10, T0 + 20, T0 + 29):  # B keeps renewing; A was killed after T0
        await store.heartbeat("gw-b:1:bbb", t)

    # Within the lease nothing happens, whoever looks.
    assert await store.close_expired(instance="gw-b:1:bbb", lease_s=LEASE, now=T0 + 29.9) == []
    assert (await ended(store, "CA-a1"))[0] is None

    # Past it: B and a third replica C sweep at the same moment; each call is closed exactly once.
    await store.heartbeat("gw-c:1:ccc", T0 + 31)
    by_b, by_c = await asyncio.gather(
        store.close_expired(instance="gw-b:1:bbb", lease_s=LEASE, now=T0 + 31),
        twin.close_expired(instance="gw-c:1:ccc", lease_s=LEASE, now=T0 + 31),
    )
    closed = sorted([*by_b, *by_c])
    assert [c.call_id for c in closed] == ["CA-a1", "CA-a2"]
    assert {c.instance for c in closed} == {"gw-a:1:aaa"}
    # Ended at A's last heartbeat, or at the call's start when A took it after that.
    assert [c.ended_at for c in closed] == [T0, T0 + 5]
    for call_id, end in (("CA-a1", T0), ("CA-a2", T0 + 5)):
        ended_at, ended_by, reason = await ended(store, call_id)
        assert (ended_at, ended_by) == (end, "gateway")
        assert reason is not None
        assert "killed or crashed" in reason
        assert "GATEWAY_RECORDS_LEASE_S" in reason
        record = await store.get_call(call_id)
        assert record is not None
        [event] = [e for e in record.events if e.kind == ORPHAN_EVENT]
        assert event.at == end
        assert event.detail["check"] == "lease"
        assert event.detail["instance"] == "gw-a:1:aaa"
        assert event.detail["closed_by"] in ("gw-b:1:bbb", "gw-c:1:ccc")
    # The orphan event follows the call's own events (seq continues).
    a1 = await store.get_call("CA-a1")
    assert a1 is not None
    assert [(e.seq, e.kind) for e in a1.events] == [(1, "session"), (2, ORPHAN_EVENT)]
    done = await store.get_call("CA-done")
    assert done is not None
    assert (done.ended_by, [e.kind for e in done.events]) == ("caller", ["session", "reconnect"])
    for live in ("CA-b1", "CA-legacy"):
        assert (await ended(store, live))[0] is None
    # The dead replica's lease is gone; the live ones' stay.
    assert set(await instances(store)) == {"gw-b:1:bbb", "gw-c:1:ccc"}
    # Nothing more to do: the next sweep is one read and closes nothing.
    assert await store.close_expired(instance="gw-b:1:bbb", lease_s=LEASE, now=T0 + 45) == []
    # Had A only been cut off from the database, the end it writes when the call really ends wins.
    await store.write([CallClosed("CA-a1", T0 + 50, "caller", "stop", Usage(), {})])
    assert await ended(store, "CA-a1") == (T0 + 50, "caller", "stop")


async def test_sqlite_lease_closes_exactly_the_dead_replicas_calls(sqlite_store: SqliteStore) -> None:
    twin = SqliteStore(sqlite_store.path)
    await twin.open()
    try:
        await _expired_leases(sqlite_store, twin)
    finally:
        await twin.close()


async def test_postgres_lease_closes_exactly_the_dead_replicas_calls(postgres_url: str) -> None:
    from gateway.records.postgres import PostgresStore

    store, twin = PostgresStore(postgres_url), PostgresStore(postgres_url)
    await store.open()
    await twin.open()
    try:
        await _expired_leases(store, twin)
    finally:
        await store.close()
        await twin.close()


async def _own_calls_and_retire(store: RecordStore) -> None:
    # A replica never closes its own calls by lease, even when its own heartbeat is stale.
    await store.heartbeat("gw-a:1:aaa", T0)
    await store.write([opened("CA-mine", "gw-a:1:aaa", T0 + 1), opened("CA-other", "gw-z:9:zzz", T0)])
    assert await store.close_expired(instance="gw-a:1:aaa", lease_s=LEASE, now=T0 + 100) == []
    assert (await ended(store, "CA-mine"))[0] is None
    # A clean stop closes what it could not finish and gives its lease up at once.
    [closed] = await store.retire("gw-a:1:aaa", T0 + 50)
    assert (closed.call_id, closed.ended_at) == ("CA-mine", T0 + 50)
    ended_at, ended_by, reason = await ended(store, "CA-mine")
    assert (ended_at, ended_by) == (T0 + 50, "gateway")
    assert reason is not None
    assert "shut down" in reason
    assert await instances(store) == {}
    assert (await ended(store, "CA-other"))[0] is None  # another instance's call, with no lease row


async def test_sqlite_own_calls_and_clean_retire(sqlite_store: SqliteStore) -> None:
    await _own_calls_and_retire(sqlite_store)


async def test_postgres_own_calls_and_clean_retire(postgres_store: RecordStore) -> None:
    await _own_calls_and_retire(postgres_store)


# --- migration from the previous schema ---------------------------------------------------------


async def _migrated(store: RecordStore) -> None:
    """A store created by the previous release, opened by this one: old records intact, lease works."""
    listed = await store.list_calls()
    assert sorted(r.call_id for r in listed) == ["CA-old-done", "CA-old-open"]
    assert (await ended(store, "CA-old-done"))[1] == "caller"
    await store.heartbeat("gw-new:1:nnn", T0 + 1000)
    await store.write([opened("CA-new", "gw-dead:1:ddd", T0 + 1000)])
    await store.heartbeat("gw-dead:1:ddd", T0 + 1000)
    closed = await store.close_expired(instance="gw-new:1:nnn", lease_s=LEASE, now=T0 + 1100)
    assert [c.call_id for c in closed] == ["CA-new"]
    # The previous release's running call has no lease row: left to the start-up check and age cap.
    assert (await ended(store, "CA-old-open"))[0] is None


def _old_rows() -> list[tuple[str, tuple[Any, ...]]]:
    insert = (
        "INSERT INTO calls (call_id, stream_id, from_number, to_number, dialplan, dialplan_version, "
        "instance, started_at, ended_at, ended_by, end_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    return [
        (insert, ("CA-old-open", "MZ", "+1", "+2", "support", "v0", "old-host:77", T0, None, None, None)),
        (
            insert,
            ("CA-old-done", "MZ", "+1", "+2", "support", "v0", "old-host:77", T0, T0 + 9, "caller", "stop"),
        ),
    ]


async def test_sqlite_migrates_a_database_of_the_previous_schema(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    old = sqlite3.connect(path)
    for ddl in OLD_SCHEMA:
        old.execute(ddl)
    for sql, params in _old_rows():
        old.execute(sql, params)
    old.commit()
    old.close()
    store = SqliteStore(path)
    await store.open()
    try:
        await _migrated(store)
        indexes = {r[0] for r in await store.fetch("SELECT name FROM sqlite_master WHERE type = 'index'", ())}
        assert "calls_open" in indexes
    finally:
        await store.close()
    again = SqliteStore(path)  # and opening a migrated database once more changes nothing
    await again.open()
    await again.close()


async def test_postgres_migrates_a_database_of_the_previous_schema(postgres_url: str) -> None:
    import psycopg

    from gateway.records.postgres import PostgresStore

    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        for ddl in OLD_SCHEMA:
            await conn.execute(ddl)
        for sql, params in _old_rows():
            await conn.execute(sql.replace("?", "%s"), params)
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        await _migrated(store)
    finally:
        await store.close()


# --- the hub: two replicas sharing a store, an injected clock -------------------------------------


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def _settings(tmp_path: Path, **changes: Any) -> Settings:
    return dataclasses.replace(
        Settings.from_env({}), **{"data_dir": tmp_path, "records_lease_s": LEASE, **changes}
    )


StoreOpener = Callable[[], RecordStore]


@pytest.fixture(params=["sqlite", "postgres"])
async def replica_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreOpener]:
    """Makes one more connection to a shared store, as each replica has its own."""
    if request.param == "sqlite":
        path = tmp_path / "shared" / "calls.db"
        yield lambda: SqliteStore(path)
        return
    async with pg_schema() as url:
        from gateway.records.postgres import PostgresStore

        yield lambda: PostgresStore(url)


async def _flushed(hub: Observability) -> None:
    assert hub.writer is not None
    for _ in range(500):
        if not hub.writer.pending:
            await asyncio.sleep(0.01)  # the batch just taken off the queue is being committed
            if not hub.writer.pending:
                return
        await asyncio.sleep(0.005)
    raise AssertionError("the record writer did not flush")


async def _kill(hub: Observability) -> None:
    """What SIGKILL leaves behind: no more heartbeats, no record closed, the lease row stays."""
    task = hub._lease_task
    assert task is not None
    task.cancel()
    hub._lease_task = None
    assert hub.writer is not None
    await hub.writer.stop()  # writes nothing more: its calls stay open
    assert hub.store is not None
    await hub.store.close()


async def test_a_killed_replicas_calls_are_closed_by_the_survivor(
    tmp_path: Path, replica_store: StoreOpener, caplog: pytest.LogCaptureFixture
) -> None:
    """Replica A is killed mid-call; B closes exactly A's open calls once the lease has passed, never
    its own; B's clean stop then leaves no lease row behind."""
    start = time.time()
    clock = Clock(start)
    a = Observability(_settings(tmp_path), store=replica_store(), clock=clock)
    b = Observability(_settings(tmp_path), store=replica_store(), clock=clock)
    assert a.instance != b.instance
    assert (a.heartbeat_s, b.lease_s) == (LEASE / 5, LEASE)
    await a.start()
    await b.start()
    try:
        calls = {
            name: hub.observer(call_id=name, stream_id="MZ", from_number="+1", to_number="+2", plan=PLAN)
            for name, hub in (("CA-a1", a), ("CA-a2", a), ("CA-b1", b), ("CA-b2", b))
        }
        calls["CA-a2"].closed(ended_by="caller", reason="stop", stats={})
        calls["CA-b2"].closed(ended_by="caller", reason="stop", stats={})
        await _flushed(a)
        await _flushed(b)
        clock.now = start + 5
        await a.beat()  # A's last heartbeat
        await _kill(a)

        for t in (6, 12, 18, 24, 30, 35):
            clock.now = start + t
            await b.beat()
            assert await b.sweep() == []  # within A's lease (and B's own first lease) nobody judges A
        clock.now = start + 36
        await b.beat()
        with caplog.at_level(logging.WARNING, logger="gateway.records"):
            closed = await b.sweep()
        assert [(c.call_id, c.instance, c.ended_at) for c in closed] == [("CA-a1", a.instance, start + 5)]
        assert b.store is not None
        ended_at, ended_by, reason = await ended(b.store, "CA-a1")
        assert (ended_at, ended_by) == (start + 5, "gateway")
        assert reason is not None
        assert "killed or crashed" in reason
        assert (await ended(b.store, "CA-a2"))[1] == "caller"
        assert (await ended(b.store, "CA-b1"))[0] is None  # B's live call
        [line] = [r for r in caplog.records if "lease expired" in r.getMessage()]
        assert line.__dict__["call_ids"] == ["CA-a1"]
        assert line.__dict__["instances"] == [a.instance]
        assert _value(b.metrics, "gateway_records_orphans_closed_total", check="lease") == 1
        assert set(await instances(b.store)) == {b.instance}
        clock.now = start + 48
        assert await b.sweep() == []

        calls["CA-b1"].closed(ended_by="caller", reason="stop", stats={})
    finally:
        await b.stop()
    check = replica_store()
    await check.open()
    try:
        assert await instances(check) == {}  # B stopped cleanly: nobody waits for its lease
        assert (await ended(check, "CA-b1"))[1] == "caller"
    finally:
        await check.close()


async def test_a_call_left_running_at_a_clean_stop_is_closed_then(tmp_path: Path) -> None:
    """The records end with the process: a call still open when it stops is closed by it, counted."""
    hub = Observability(_settings(tmp_path), store=SqliteStore(tmp_path / "calls.db"))
    await hub.start()
    hub.observer(call_id="CA-cut", stream_id="MZ", from_number="+1", to_number="+2", plan=PLAN)
    await hub.stop()
    store = SqliteStore(tmp_path / "calls.db")
    await store.open()
    try:
        ended_at, ended_by, reason = await ended(store, "CA-cut")
        assert ended_at is not None
        assert (ended_by, reason is not None and "shut down" in reason) == ("gateway", True)
        assert await instances(store) == {}
    finally:
        await store.close()
    assert _value(hub.metrics, "gateway_records_orphans_closed_total", check="shutdown") == 1


class OutageStore(SqliteStore):
    """A SQLite store whose heartbeats fail while ``down`` (the database restarting, say)."""

    down = False

    async def heartbeat(self, instance: str, now: float) -> None:
        if self.down:
            raise RecordError("database restarting")
        await super().heartbeat(instance, now)


async def test_after_a_store_outage_nobody_is_judged_for_a_lease(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When the store was unreachable, every replica missed its heartbeats: the one that gets through
    first must give the others a whole lease to renew theirs before closing anything."""
    path = tmp_path / "calls.db"
    clock = Clock(T0)
    b_store = OutageStore(path)
    b = Observability(_settings(tmp_path), store=b_store, clock=clock)
    await b.start()
    other = SqliteStore(path)
    await other.open()
    try:
        await other.heartbeat("gw-a:1:aaa", T0)
        await other.write([opened("CA-a", "gw-a:1:aaa", T0 - 1)])
        b_store.down = True
        with caplog.at_level(logging.WARNING, logger="gateway.records"):
            for t in (6, 12, 18, 24, 30):
                clock.now = T0 + t
                await b.beat()
        assert len([r for r in caplog.records if "lease not renewed" in r.getMessage()]) == 1
        b_store.down = False
        clock.now = T0 + 40
        await b.beat()
        assert await b.sweep() == []  # A's lease looks expired, but A may be renewing right now
        clock.now = T0 + 70
        await b.beat()
        assert [c.call_id for c in await b.sweep()] == ["CA-a"]
    finally:
        await other.close()
        await b.stop()


class LateStore(SqliteStore):
    """A SQLite store that cannot be opened the first time (the database is still starting)."""

    failed = False

    async def open(self) -> None:
        if not self.failed:
            self.failed = True
            raise RecordError("database starting")
        await super().open()


async def test_a_store_down_at_start_up_gets_the_start_up_check_and_lease_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Start-up does not fail with the store; the first heartbeat that gets through does the start-up
    check (here: a call of a dead process of this host) and takes the lease."""
    path = tmp_path / "calls.db"
    seed = SqliteStore(path)
    await seed.open()
    await seed.write([opened("CA-dead", f"{socket.gethostname()}:{_dead_pid()}:old", T0 - 10)])
    await seed.close()
    clock = Clock(T0)
    hub = Observability(_settings(tmp_path), store=LateStore(path), clock=clock)
    with caplog.at_level(logging.WARNING, logger="gateway.records"):
        await hub.start()
        assert hub.store is not None
        clock.now = T0 + 6
        await hub.beat()
    try:
        assert [r.getMessage() for r in caplog.records] == [
            "call records unavailable for now; retrying",
            "closed call records an earlier gateway process left running",
        ]
        ended_at, ended_by, _ = await ended(hub.store, "CA-dead")
        assert (ended_at, ended_by) == (T0 + 6, "gateway")
        assert await instances(hub.store) == {hub.instance: T0 + 6}
        assert _value(hub.metrics, "gateway_records_orphans_closed_total", check="startup") == 1
    finally:
        await hub.stop()


async def test_the_lease_task_heartbeats_and_sweeps_by_itself(tmp_path: Path) -> None:
    """The background task with a short lease (real time, well under a second): the survivor's own
    loop closes the killed replica's call."""
    path = tmp_path / "calls.db"
    settings = _settings(tmp_path, records_lease_s=0.25)
    a = Observability(settings, store=SqliteStore(path))
    b = Observability(settings, store=SqliteStore(path))
    await a.start()
    await b.start()
    try:
        a.observer(call_id="CA-a", stream_id="MZ", from_number="+1", to_number="+2", plan=PLAN)
        b.observer(call_id="CA-b", stream_id="MZ", from_number="+1", to_number="+2", plan=PLAN)
        await _flushed(a)
        await _flushed(b)
        await asyncio.sleep(0.2)  # a few heartbeats from both
        assert b.store is not None
        seen = await instances(b.store)
        assert set(seen) == {a.instance, b.instance}
        await _kill(a)
        killed_at = time.time()
        async with asyncio.timeout(10):
            while True:
                if (await ended(b.store, "CA-a"))[0] is not None:
                    break
                await asyncio.sleep(0.01)
        closed_after = time.time() - killed_at
        ended_at, ended_by, _ = await ended(b.store, "CA-a")
        assert ended_by == "gateway"
        assert ended_at is not None
        assert ended_at <= killed_at  # A's last heartbeat, before the kill
        # lease (0.25) plus at most one sweep interval (2 × 0.05), with slack for a loaded machine
        assert closed_after < 0.25 + 0.1 + 2.0
        assert (await ended(b.store, "CA-b"))[0] is None
        assert set(await instances(b.store)) == {b.instance}
    finally:
        await b.stop()


# --- identity and settings ----------------------------------------------------------------------


def test_instance_ids_are_unique_per_process_start() -> None:
    """``host:pid:start``: distinct for every start even with the same host and pid (a container's pid 1)."""
    host, pid = socket.gethostname(), os.getpid()
    ids = {new_instance_id() for _ in range(50)}
    assert len(ids) == 50
    for instance in ids:
        h, p, start = instance.split(":")
        assert (h, int(p)) == (host, pid)
        assert start


def test_the_local_process_check_reads_both_identity_forms(tmp_path: Path) -> None:
    """The start-up check still knows this host's dead processes, and an earlier process with our pid."""
    host = socket.gethostname()
    gone = _dead_pid()
    assert _instance_alive(f"{host}:{gone}") is False  # the previous release's form
    assert _instance_alive(f"{host}:{gone}:abc123") is False
    assert _instance_alive(f"{host}:{os.getpid()}:0ther") is False  # our pid, an earlier start
    assert _instance_alive(f"{host}:{os.getppid()}:abc123") is True
    assert _instance_alive(f"elsewhere:{gone}:abc123") is True  # another host: the lease decides
    assert _instance_alive("replica-7") is True  # an id set by the operator
    hub = Observability(_settings(tmp_path, records=False))
    assert hub.instance.startswith(f"{host}:{os.getpid()}:")


def _dead_pid() -> int:
    pid = os.getpid()
    while True:
        pid += 1
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            continue


def test_lease_setting() -> None:
    assert Settings.from_env({}).records_lease_s == 30.0
    assert Settings.from_env({"GATEWAY_RECORDS_LEASE_S": "5"}).records_lease_s == 5.0
    for bad in ("0", "-1", "soon", "601"):
        with pytest.raises(ConfigError, match="GATEWAY_RECORDS_LEASE_S"):
            Settings.from_env({"GATEWAY_RECORDS_LEASE_S": bad})
