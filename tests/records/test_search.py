"""The dashboard's record search and last-hour summary: the same SQL on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from gateway.records.model import (
    CallClosed,
    CallOpened,
    EventAdded,
    EventRecord,
    TurnAdded,
    TurnRecord,
    Usage,
)
from gateway.records.search import RUNNING, RecordQuery, dialplan_names, search_calls, summary, where_clause
from gateway.records.store import RecordStore

from .conftest import call_ops

NOW = 1_700_000_000.0


async def _calls(store: RecordStore) -> None:
    """Five calls over two dialplans, with known numbers, ends, words and reply latencies."""
    await store.write(call_ops("CA-old", started_at=NOW - 7200))  # support, two hours ago
    await store.write(call_ops("CA-sup", started_at=NOW - 600))  # support, "Where is my order?"
    await store.write(call_ops("CA-run", started_at=NOW - 60, closed=False))  # support, still running
    for call_id, number, text, at in (
        ("CA-sales1", "+442071234567", "I want 50% off_now!", NOW - 1800),
        ("CA-sales2", "+15557654321", "Tell me about pricing", NOW - 300),
    ):
        await store.write(
            [
                CallOpened(call_id, "MZ", number, "+15559990000", "sales", "v1", at, "host:1"),
                TurnAdded(call_id, TurnRecord(1, "caller", text, at + 1, at + 2)),
                EventAdded(
                    call_id, EventRecord(1, at + 3, "reply", {"latency_ms": 640.0, "speech_end_at": at + 2})
                ),
                EventAdded(call_id, EventRecord(2, at + 9, "fallback", {"action": "hangup"})),
                CallClosed(call_id, at + 10, "gateway", "fallback: x", Usage(), {}),
            ]
        )


async def _ids(store: RecordStore, **filters: object) -> list[str]:
    records, total = await search_calls(store, RecordQuery(**filters))  # type: ignore[arg-type]
    assert total >= len(records)
    return [r.call_id for r in records]


async def _search_and_summary(store: RecordStore) -> None:
    await _calls(store)
    assert await _ids(store) == ["CA-run", "CA-sales2", "CA-sup", "CA-sales1", "CA-old"]
    assert await _ids(store, dialplan="sales") == ["CA-sales2", "CA-sales1"]
    assert await _ids(store, number="4420712") == ["CA-sales1"]
    assert await _ids(store, number="0001111") == ["CA-run", "CA-sup", "CA-old"]  # the caller's number
    assert await _ids(store, ended_by="gateway") == ["CA-sales2", "CA-sales1"]
    assert await _ids(store, ended_by=RUNNING) == ["CA-run"]
    # Transcript text, case-insensitive; LIKE's wildcards in the user's text match only themselves.
    assert await _ids(store, text="WHERE IS my") == ["CA-run", "CA-sup", "CA-old"]
    assert await _ids(store, text="50% off_") == ["CA-sales1"]
    assert await _ids(store, text="50%_off") == []
    assert await _ids(store, text="%") == ["CA-sales1"]
    assert await _ids(store, text="'; DROP TABLE calls; --") == []
    assert await _ids(store, since=NOW - 1000, until=NOW - 100) == ["CA-sales2", "CA-sup"]
    assert await _ids(store, dialplan="support", text="order", since=NOW - 3600) == ["CA-run", "CA-sup"]
    # Pages: the total counts every match, the page holds ``limit`` from ``offset``.
    page, total = await search_calls(store, RecordQuery(limit=2, offset=2))
    assert ([r.call_id for r in page], total) == (["CA-sup", "CA-sales1"], 5)
    assert page[0].turn_count == 3
    assert page[0].turns == []
    assert await dialplan_names(store) == ["sales", "support"]

    doc = await summary(store, now=NOW)
    assert doc["calls"] == 4  # CA-old started two hours ago
    assert sum(doc["calls_per_minute"]) == 4
    assert len(doc["calls_per_minute"]) == 60
    assert doc["calls_per_minute"][-1] == 1  # CA-run, a minute ago
    assert doc["ended_by"] == {"caller": 1, "gateway": 2, RUNNING: 1}
    assert doc["latency"]["count"] == 2
    assert doc["latency"]["p50_ms"] == 640.0
    assert doc["latency"]["buckets"][2] == 2  # 500 ms ≤ 640 ms < 750 ms
    assert doc["events"]["fallback"] == 2
    assert doc["events"]["reconnect"] == 2  # CA-sup and CA-run (CA-old's is outside the hour)
    assert (doc["tool_calls"], doc["tool_errors"]) == (2, 0)


def test_the_where_clause_only_ever_adds_placeholders() -> None:
    where, params = where_clause(
        RecordQuery(number="x'", dialplan="d", text="t", ended_by="caller", since=1.0)
    )
    assert "x'" not in where
    assert "'t'" not in where
    assert where.count("?") == len(params) == 6


async def test_search_and_summary_on_sqlite(sqlite_store: RecordStore) -> None:
    await _search_and_summary(sqlite_store)


async def test_search_and_summary_on_postgres(postgres_store: RecordStore) -> None:
    await _search_and_summary(postgres_store)


@pytest.mark.parametrize(("limit", "rows"), [(0, 1), (-5, 1), (10_000, 5)])
async def test_page_size_is_bounded(sqlite_store: RecordStore, limit: int, rows: int) -> None:
    """A page holds at least one record and at most MAX_PAGE; a negative offset starts at the first."""
    await _calls(sqlite_store)
    page, total = await search_calls(sqlite_store, RecordQuery(limit=limit, offset=-3))
    assert len(page) == rows
    assert total == 5
    first, _ = await search_calls(sqlite_store, RecordQuery(limit=1, offset=0))
    assert page[0].call_id == first[0].call_id
