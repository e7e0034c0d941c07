"""Searching call records and summing up the last hour, for the admin dashboard and the call inspector.

Kept apart from :mod:`gateway.records.store` (which owns writing, the schema and the lease): these are
read-only queries over the same tables, through the store's ``fetch`` primitive. Every statement is
portable between SQLite and PostgreSQL and fully parameterised: filters only ever add ``?``
placeholders, never text from the request. Text matching is ``LOWER(x) LIKE LOWER(?) ESCAPE '!'``
(both databases; ``ILIKE`` is PostgreSQL-only), with ``%``, ``_`` and ``!`` in the user's text escaped.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from gateway.records.model import CallRecord
from gateway.records.store import CALL_COLUMNS, RecordStore, call_record

#: Largest page of search results.
MAX_PAGE = 200
#: ``ended_by`` value that selects calls still running (no ``ended_at`` yet).
RUNNING = "running"
#: Reply-latency histogram edges for the dashboard, in milliseconds (the last bucket is open).
LATENCY_EDGES_MS = (250, 500, 750, 1000, 1500, 2000, 3000, 5000)
#: Event kinds the dashboard counts, and tool-call statuses that count as tool errors.
COUNTED_EVENTS = ("fallback", "failure", "connect_failed", "reconnect", "barge_in", "go_away")
#: A call's events are searched among calls that started at most this long before the window.
_LOOKBACK_S = 4 * 3600.0


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching it anywhere, its wildcards and the escape char escaped."""
    escaped = text.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f"%{escaped}%"


@dataclass(frozen=True, slots=True)
class RecordQuery:
    """Filters for :func:`search_calls`; ``None`` or empty means "any"."""

    #: Part of the caller's or the called number.
    number: str | None = None
    dialplan: str | None = None
    #: Calls that started at or after ``since`` and before ``until`` (Unix time).
    since: float | None = None
    until: float | None = None
    #: ``caller``, ``gateway``, ``gemini``, ``admin``, … or :data:`RUNNING`.
    ended_by: str | None = None
    #: Text anywhere in the transcript (any turn, case-insensitive).
    text: str | None = None
    limit: int = 50
    offset: int = 0


def where_clause(q: RecordQuery) -> tuple[str, tuple[Any, ...]]:
    """The ``WHERE`` of a search over ``calls c`` (empty without filters) and its parameters."""
    parts: list[str] = []
    params: list[Any] = []
    if q.number:
        parts.append("(LOWER(c.from_number) LIKE ? ESCAPE '!' OR LOWER(c.to_number) LIKE ? ESCAPE '!')")
        params += [_like(q.number), _like(q.number)]
    if q.dialplan:
        parts.append("c.dialplan = ?")
        params.append(q.dialplan)
    if q.since is not None:
        parts.append("c.started_at >= ?")
        params.append(q.since)
    if q.until is not None:
        parts.append("c.started_at < ?")
        params.append(q.until)
    if q.ended_by == RUNNING:
        parts.append("c.ended_at IS NULL")
    elif q.ended_by:
        parts.append("c.ended_by = ?")
        params.append(q.ended_by)
    if q.text:
        parts.append(
            "EXISTS (SELECT 1 FROM turns t WHERE t.call_id = c.call_id AND LOWER(t.text) LIKE ? ESCAPE '!')"
        )
        params.append(_like(q.text))
    return ("WHERE " + " AND ".join(parts) + " " if parts else ""), tuple(params)


async def search_calls(store: RecordStore, q: RecordQuery) -> tuple[list[CallRecord], int]:
    """One page of the calls matching ``q``, most recent first (without turns), and how many match."""
    where, params = where_clause(q)
    limit = max(1, min(q.limit, MAX_PAGE))
    offset = max(0, q.offset)
    columns = ", ".join("c." + c for c in CALL_COLUMNS.split(", "))
    rows = await store.fetch(
        f"SELECT {columns}, (SELECT COUNT(*) FROM turns t2 WHERE t2.call_id = c.call_id) "
        f"FROM calls c {where}ORDER BY c.started_at DESC, c.call_id LIMIT ? OFFSET ?",
        (*params, limit, offset),
    )
    total = await store.fetch(f"SELECT COUNT(*) FROM calls c {where}", params)
    return [call_record(r, int(r[16])) for r in rows], int(total[0][0])


async def dialplan_names(store: RecordStore) -> list[str]:
    """Every dialplan that has records (for the dashboard's filter)."""
    rows = await store.fetch("SELECT DISTINCT dialplan FROM calls ORDER BY dialplan", ())
    return [str(r[0]) for r in rows]


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100.0 * (len(ordered) - 1))))
    return ordered[index]


async def summary(store: RecordStore, *, now: float, window_s: float = 3600.0) -> dict[str, Any]:
    """What the dashboard shows of the last ``window_s``: calls per minute, how they ended, the
    reply-latency distribution, and counts of fallbacks, failures, reconnects and tool errors."""
    since = now - window_s
    minutes = max(1, int(window_s // 60))
    per_minute = [0] * minutes
    ended_by: Counter[str] = Counter()
    calls = await store.fetch("SELECT started_at, ended_by FROM calls WHERE started_at >= ?", (since,))
    for started_at, by in calls:
        slot = int((float(started_at) - since) // 60)
        per_minute[min(max(slot, 0), minutes - 1)] += 1
        ended_by[str(by) if by is not None else RUNNING] += 1
    recent = "call_id IN (SELECT call_id FROM calls WHERE started_at >= ?)"
    latencies: list[float] = []
    for (detail,) in await store.fetch(
        f"SELECT detail FROM call_events WHERE kind = 'reply' AND at >= ? AND {recent}",
        (since, since - _LOOKBACK_S),
    ):
        try:
            latencies.append(float(json.loads(detail)["latency_ms"]))
        except (ValueError, KeyError, TypeError):
            continue
    kinds = ", ".join("?" * len(COUNTED_EVENTS))
    events = dict.fromkeys(COUNTED_EVENTS, 0)
    for kind, count in await store.fetch(
        f"SELECT kind, COUNT(*) FROM call_events WHERE kind IN ({kinds}) AND at >= ? AND {recent} "
        "GROUP BY kind",
        (*COUNTED_EVENTS, since, since - _LOOKBACK_S),
    ):
        events[str(kind)] = int(count)
    tools = await store.fetch(
        f"SELECT status, COUNT(*) FROM tool_calls WHERE started_at >= ? AND {recent} GROUP BY status",
        (since, since - _LOOKBACK_S),
    )
    tool_status = {str(s): int(n) for s, n in tools}
    buckets = [0] * (len(LATENCY_EDGES_MS) + 1)
    for ms in latencies:
        buckets[sum(1 for edge in LATENCY_EDGES_MS if ms >= edge)] += 1
    return {
        "window_s": window_s,
        "since": since,
        "now": now,
        "calls": len(calls),
        "calls_per_minute": per_minute,
        "ended_by": dict(ended_by),
        "latency": {
            "count": len(latencies),
            "p50_ms": _percentile(latencies, 50),
            "p95_ms": _percentile(latencies, 95),
            "max_ms": max(latencies) if latencies else None,
            "edges_ms": list(LATENCY_EDGES_MS),
            "buckets": buckets,
        },
        "events": events,
        "tool_calls": sum(tool_status.values()),
        "tool_errors": sum(n for s, n in tool_status.items() if s != "ok"),
    }
