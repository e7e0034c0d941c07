"""The call-record store interface, the SQL both backends share, and the factory picking one.

Backends differ only in how a statement reaches the database (SQLite in a worker thread, PostgreSQL
over psycopg's asyncio API), so the schema, the statements and the row mapping live here once.
Every statement is portable: the schema's type names give SQLite the right affinities, and
``INSERT … ON CONFLICT … DO NOTHING`` makes a retried batch harmless.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from gateway.errors import ConfigError, RecordError
from gateway.records.model import (
    CallOpened,
    CallRecord,
    EventAdded,
    EventRecord,
    RecordOp,
    ToolCallDone,
    ToolCallRecord,
    TurnAdded,
    TurnRecord,
    Usage,
)

#: One statement and its parameters, with ``?`` placeholders (PostgreSQL's backend converts them).
Statement = tuple[str, tuple[Any, ...]]

SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS calls (
        call_id TEXT PRIMARY KEY,
        stream_id TEXT NOT NULL,
        from_number TEXT NOT NULL,
        to_number TEXT NOT NULL,
        dialplan TEXT NOT NULL,
        dialplan_version TEXT NOT NULL,
        instance TEXT NOT NULL DEFAULT '',
        started_at DOUBLE PRECISION NOT NULL,
        ended_at DOUBLE PRECISION,
        ended_by TEXT,
        end_reason TEXT,
        prompt_tokens BIGINT NOT NULL DEFAULT 0,
        response_tokens BIGINT NOT NULL DEFAULT 0,
        total_tokens BIGINT NOT NULL DEFAULT 0,
        stats TEXT NOT NULL DEFAULT '{}',
        recording TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS calls_started_at ON calls (started_at)",
    """CREATE TABLE IF NOT EXISTS turns (
        call_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        text TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        ended_at DOUBLE PRECISION,
        interrupted INTEGER NOT NULL DEFAULT 0,
        heard TEXT,
        PRIMARY KEY (call_id, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS tool_calls (
        call_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        tool_call_id TEXT NOT NULL,
        name TEXT NOT NULL,
        arguments TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        duration_ms DOUBLE PRECISION NOT NULL,
        result TEXT,
        error TEXT,
        PRIMARY KEY (call_id, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS call_events (
        call_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (call_id, seq)
    )""",
    # The lease: every running gateway upserts its row every few seconds (wall-clock ``seen_at``);
    # the calls of an instance whose row went stale are closed by whichever instance notices first.
    """CREATE TABLE IF NOT EXISTS instances (
        instance TEXT PRIMARY KEY,
        seen_at DOUBLE PRECISION NOT NULL
    )""",
    # Only running calls: small whatever the history, and what the lease sweep and start-up check read.
    "CREATE INDEX IF NOT EXISTS calls_open ON calls (instance) WHERE ended_at IS NULL",
)

#: ``end_reason`` of calls closed by somebody other than the gateway that ran them.
REASON_RESTART = "the gateway process handling the call ended before closing it (killed or crashed)"
REASON_LEASE = (
    "the gateway replica handling the call stopped (killed or crashed): "
    "no heartbeat within GATEWAY_RECORDS_LEASE_S"
)
REASON_SHUTDOWN = "the gateway shut down before the end of the call was recorded"
#: ``kind`` of the event added to a call closed that way.
ORPHAN_EVENT = "orphan_closed"
#: ``kind`` of the event that makes an id another name of a call (``detail["call_id"]``): a provider
#: that answers a dial with a request id and names the call itself only later (Plivo's ``request_uuid``
#: and ``CallUUID``), so the id the admin API returned keeps finding the call's record.
ALIAS_EVENT = "alias_of"

CALL_COLUMNS = (
    "call_id, stream_id, from_number, to_number, dialplan, dialplan_version, instance, started_at, "
    "ended_at, ended_by, end_reason, prompt_tokens, response_tokens, total_tokens, stats, recording"
)


#: The writer's last heartbeat, when it came after the call started: the best estimate of its end.
_LAST_SEEN = (
    "SELECT i.seen_at FROM instances i WHERE i.instance = calls.instance AND i.seen_at >= calls.started_at"
)
#: Call ids per UPDATE (well under SQLite's and PostgreSQL's limits on parameters).
_CHUNK = 500


class ClosedCall(NamedTuple):
    """A call record closed on behalf of the gateway that ran it."""

    call_id: str
    instance: str
    ended_at: float


def _json(value: object) -> str:
    # default=str: a tool result may carry a date or a Decimal; the record keeps its text.
    return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)


def statements(op: RecordOp) -> list[Statement]:
    """The SQL that applies one write operation. Re-applying it is harmless (idempotent)."""
    if isinstance(op, TurnAdded):
        t = op.turn
        return [
            (
                "INSERT INTO turns (call_id, seq, role, text, started_at, ended_at, interrupted, heard) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (call_id, seq) DO NOTHING",
                (op.call_id, t.seq, t.role, t.text, t.started_at, t.ended_at, int(t.interrupted), t.heard),
            )
        ]
    if isinstance(op, CallOpened):
        return [
            (
                "INSERT INTO calls (call_id, stream_id, from_number, to_number, dialplan, dialplan_version, "
                "instance, started_at, recording) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (call_id) DO NOTHING",
                (
                    op.call_id,
                    op.stream_id,
                    op.from_number,
                    op.to_number,
                    op.dialplan,
                    op.dialplan_version,
                    op.instance,
                    op.started_at,
                    op.recording,
                ),
            )
        ]
    if isinstance(op, ToolCallDone):
        c = op.tool_call
        return [
            (
                "INSERT INTO tool_calls (call_id, seq, tool_call_id, name, arguments, status, started_at, "
                "duration_ms, result, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (call_id, seq) DO NOTHING",
                (
                    op.call_id,
                    c.seq,
                    c.tool_call_id,
                    c.name,
                    _json(dict(c.arguments)),
                    c.status,
                    c.started_at,
                    c.duration_ms,
                    None if c.result is None else _json(dict(c.result)),
                    c.error,
                ),
            )
        ]
    if isinstance(op, EventAdded):
        e = op.event
        return [
            (
                "INSERT INTO call_events (call_id, seq, at, kind, detail) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (call_id, seq) DO NOTHING",
                (op.call_id, e.seq, e.at, e.kind, _json(dict(e.detail))),
            )
        ]
    u = op.usage
    return [
        (
            "UPDATE calls SET ended_at = ?, ended_by = ?, end_reason = ?, prompt_tokens = ?, "
            "response_tokens = ?, total_tokens = ?, stats = ? WHERE call_id = ?",
            (
                op.ended_at,
                op.ended_by,
                op.end_reason,
                u.prompt_tokens,
                u.response_tokens,
                u.total_tokens,
                _json(dict(op.stats)),
                op.call_id,
            ),
        )
    ]


def _loads(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {"value": value}


def call_record(row: Sequence[Any], turn_count: int = 0) -> CallRecord:
    return CallRecord(
        call_id=row[0],
        stream_id=row[1],
        from_number=row[2],
        to_number=row[3],
        dialplan=row[4],
        dialplan_version=row[5],
        instance=row[6],
        started_at=float(row[7]),
        ended_at=None if row[8] is None else float(row[8]),
        ended_by=row[9],
        end_reason=row[10],
        usage=Usage(int(row[11]), int(row[12]), int(row[13])),
        stats=_loads(row[14]),
        recording=row[15],
        turn_count=turn_count,
    )


class RecordStore(ABC):
    """Where call records live. Subclasses supply the three primitives; the queries are shared."""

    #: Shown by `gateway calls` and the startup log (never with a password).
    description: str = ""

    @abstractmethod
    async def open(self) -> None:
        """Connect and create the schema when missing. Raises :class:`RecordError`."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def _execute(self, batch: Sequence[Statement]) -> None:
        """Run ``batch`` in one transaction; raise :class:`RecordError` when it did not commit."""

    @abstractmethod
    async def fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]: ...

    async def write(self, ops: Sequence[RecordOp]) -> None:
        """Apply ``ops`` in order, all or nothing."""
        batch = [s for op in ops for s in statements(op)]
        if batch:
            await self._execute(batch)

    async def close_orphans(
        self, *, instance: str, alive: Callable[[str], bool], max_call_s: float, now: float
    ) -> list[ClosedCall]:
        """At start-up, close the records of calls a gateway process never closed (killed, or crashed).

        A running call is an orphan when the process that wrote it is gone (``alive`` says, for an
        instance ``host:pid[:start]``; it only knows this host's processes), when it was written by a
        previous process with this process's own identity (one an operator fixed), or when it
        started longer ago than any call may last. Other instances' calls are left to the lease
        (:meth:`close_expired`). Each ends at its writer's last heartbeat when known, else ``now``.
        """
        rows = await self.fetch("SELECT call_id, instance, started_at FROM calls WHERE ended_at IS NULL", ())
        orphans = [
            str(call_id)
            for call_id, owner, started_at in rows
            if owner == instance
            or not alive(str(owner))
            or (max_call_s > 0 and float(started_at) < now - max_call_s - 60.0)
        ]
        ended_at = f"COALESCE(({_LAST_SEEN}), ?)"
        return await self._close(orphans, (ended_at, (now,)), REASON_RESTART, "startup", instance)

    async def heartbeat(self, instance: str, now: float) -> None:
        """Renew ``instance``'s lease: it is alive at ``now`` (its wall clock)."""
        await self._execute(
            [
                (
                    "INSERT INTO instances (instance, seen_at) VALUES (?, ?) "
                    "ON CONFLICT (instance) DO UPDATE SET seen_at = excluded.seen_at",
                    (instance, now),
                )
            ]
        )

    async def close_expired(self, *, instance: str, lease_s: float, now: float) -> list[ClosedCall]:
        """Close the running calls of every other instance whose last heartbeat is older than ``lease_s``.

        Each call ends at its instance's last heartbeat (or its own start, if later). Safe to run on
        every replica at once: a call is closed (and gets its event) by exactly one of them. The
        stale instances' rows are deleted; one that was only cut off re-creates its row with its
        next heartbeat, and the end it records for each call overwrites the one written here.
        """
        cutoff = now - lease_s
        stale = "SELECT instance FROM instances WHERE seen_at < ? AND instance <> ?"
        if not await self.fetch(stale, (cutoff, instance)):
            return []  # the usual answer: one read of a table with a row per replica, no write
        rows = await self.fetch(
            "SELECT c.call_id FROM instances i JOIN calls c ON c.instance = i.instance "
            "WHERE i.seen_at < ? AND i.instance <> ? AND c.ended_at IS NULL",
            (cutoff, instance),
        )
        ended_at = f"COALESCE(({_LAST_SEEN}), calls.started_at)"
        # Re-checked by the UPDATE itself: an instance that heartbeated since the SELECT keeps its calls.
        fresh = (
            "EXISTS (SELECT 1 FROM instances i WHERE i.instance = calls.instance AND i.seen_at < ?)",
            cutoff,
        )
        closed = await self._close(
            [str(r[0]) for r in rows], (ended_at, ()), REASON_LEASE, "lease", instance, fresh
        )
        await self._execute(
            [("DELETE FROM instances WHERE seen_at < ? AND instance <> ?", (cutoff, instance))]
        )
        return closed

    async def retire(self, instance: str, now: float) -> list[ClosedCall]:
        """A clean shutdown: close what ``instance`` left running (nothing, normally) and drop its lease,
        so no other instance waits for it to expire."""
        rows = await self.fetch(
            "SELECT call_id FROM calls WHERE instance = ? AND ended_at IS NULL", (instance,)
        )
        closed = await self._close(
            [str(r[0]) for r in rows], ("?", (now,)), REASON_SHUTDOWN, "shutdown", instance
        )
        await self._execute([("DELETE FROM instances WHERE instance = ?", (instance,))])
        return closed

    async def _close(
        self,
        call_ids: Sequence[str],
        ended_at: tuple[str, tuple[Any, ...]],
        reason: str,
        check: str,
        closed_by: str,
        guard: tuple[str, Any] | None = None,
    ) -> list[ClosedCall]:
        """Close ``call_ids`` that are still running (``ended_by=gateway``), each with an event saying
        why. ``UPDATE … RETURNING`` tells which this instance closed, so two instances closing the same
        call at once record one event and count it once."""
        closed: list[ClosedCall] = []
        end_sql, end_params = ended_at
        extra, extra_params = (f" AND {guard[0]}", (guard[1],)) if guard else ("", ())
        for i in range(0, len(call_ids), _CHUNK):
            chunk = tuple(call_ids[i : i + _CHUNK])
            rows = await self.fetch(
                f"UPDATE calls SET ended_at = {end_sql}, ended_by = 'gateway', end_reason = ? "
                f"WHERE ended_at IS NULL AND call_id IN ({', '.join('?' * len(chunk))}){extra} "
                "RETURNING call_id, instance, ended_at",
                (*end_params, reason, *chunk, *extra_params),
            )
            closed += [ClosedCall(str(r[0]), str(r[1]), float(r[2])) for r in rows]
        if closed:
            await self._execute(
                [
                    (
                        "INSERT INTO call_events (call_id, seq, at, kind, detail) "
                        "SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ? FROM call_events WHERE call_id = ? "
                        "ON CONFLICT (call_id, seq) DO NOTHING",
                        (
                            c.call_id,
                            c.ended_at,
                            ORPHAN_EVENT,
                            _json({"check": check, "instance": c.instance, "closed_by": closed_by}),
                            c.call_id,
                        ),
                    )
                    for c in closed
                ]
            )
        return closed

    async def list_calls(self, *, limit: int = 50, dialplan: str | None = None) -> list[CallRecord]:
        """The most recent calls first, without their turns (``turn_count`` says how many)."""
        where, params = ("WHERE c.dialplan = ? ", (dialplan,)) if dialplan else ("", ())
        rows = await self.fetch(
            f"SELECT {', '.join('c.' + c for c in CALL_COLUMNS.split(', '))}, "
            "(SELECT COUNT(*) FROM turns t WHERE t.call_id = c.call_id) "
            f"FROM calls c {where}ORDER BY c.started_at DESC LIMIT ?",
            (*params, max(1, min(limit, 10_000))),
        )
        return [call_record(r, int(r[16])) for r in rows]

    async def resolve(self, call_id: str) -> str:
        """The call ``call_id`` names: itself, or the call it is another name of (:data:`ALIAS_EVENT`)."""
        rows = await self.fetch(
            "SELECT detail FROM call_events WHERE call_id = ? AND kind = ? ORDER BY seq LIMIT 1",
            (call_id, ALIAS_EVENT),
        )
        target = _loads(rows[0][0]).get("call_id") if rows else None
        return target if isinstance(target, str) and target else call_id

    async def get_call(self, call_id: str) -> CallRecord | None:
        """One call with its turns, tool calls and events; ``call_id`` may be a unique prefix, or another
        name of the call (:meth:`resolve`).

        Raises:
            RecordError: the prefix matches more than one call.
        """
        rows = await self.fetch(f"SELECT {CALL_COLUMNS} FROM calls WHERE call_id = ?", (call_id,))
        if not rows and (target := await self.resolve(call_id)) != call_id:
            rows = await self.fetch(f"SELECT {CALL_COLUMNS} FROM calls WHERE call_id = ?", (target,))
        if not rows and call_id:
            rows = await self.fetch(
                f"SELECT {CALL_COLUMNS} FROM calls WHERE substr(call_id, 1, ?) = ? LIMIT 2",
                (len(call_id), call_id),
            )
            if len(rows) > 1:
                raise RecordError(f"{call_id!r} matches more than one call; give more of the id")
        if not rows:
            return None
        record = call_record(rows[0])
        cid = (record.call_id,)
        record.turns = [
            TurnRecord(
                seq=int(r[0]),
                role=r[1],
                text=r[2],
                started_at=float(r[3]),
                ended_at=None if r[4] is None else float(r[4]),
                interrupted=bool(r[5]),
                heard=r[6],
            )
            for r in await self.fetch(
                "SELECT seq, role, text, started_at, ended_at, interrupted, heard FROM turns "
                "WHERE call_id = ? ORDER BY seq",
                cid,
            )
        ]
        record.turn_count = len(record.turns)
        record.tool_calls = [
            ToolCallRecord(
                seq=int(r[0]),
                tool_call_id=r[1],
                name=r[2],
                arguments=_loads(r[3]),
                status=r[4],
                started_at=float(r[5]),
                duration_ms=float(r[6]),
                result=None if r[7] is None else _loads(r[7]),
                error=r[8],
            )
            for r in await self.fetch(
                "SELECT seq, tool_call_id, name, arguments, status, started_at, duration_ms, result, error "
                "FROM tool_calls WHERE call_id = ? ORDER BY seq",
                cid,
            )
        ]
        record.events = [
            EventRecord(seq=int(r[0]), at=float(r[1]), kind=r[2], detail=_loads(r[3]))
            for r in await self.fetch(
                "SELECT seq, at, kind, detail FROM call_events WHERE call_id = ? ORDER BY seq", cid
            )
        ]
        return record


def sqlite_path(database_url: str, data_dir: Path) -> Path | None:
    """The SQLite file a URL names (``sqlite:///abs/path``, ``sqlite:relative``); ``None`` if not SQLite.

    An empty URL means the embedded default, ``<data_dir>/calls.db``.
    """
    if not database_url:
        return data_dir / "calls.db"
    if database_url.startswith("sqlite:"):
        rest = database_url.removeprefix("sqlite:")
        if rest.startswith("///"):
            return Path(rest[2:])
        if rest.startswith("//"):
            raise ConfigError("GATEWAY_DATABASE_URL: use sqlite:///absolute/path or sqlite:relative/path")
        if not rest:
            raise ConfigError("GATEWAY_DATABASE_URL: sqlite: needs a file path")
        return Path(rest)
    return None


def redacted(database_url: str) -> str:
    """The URL without its password, for logs and `gateway calls`."""
    parts = urlsplit(database_url)
    if parts.password is None:
        return database_url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def open_store(database_url: str, data_dir: Path) -> RecordStore:
    """The store ``database_url`` names (not yet opened): SQLite by default, or PostgreSQL.

    Raises:
        ConfigError: an unsupported scheme, or PostgreSQL without the ``postgres`` extra installed.
    """
    path = sqlite_path(database_url, data_dir)
    if path is not None:
        from gateway.records.sqlite import SqliteStore

        return SqliteStore(path)
    scheme = urlsplit(database_url).scheme
    if scheme in ("postgresql", "postgres"):
        try:
            from gateway.records.postgres import PostgresStore
        except ImportError as exc:  # psycopg is the optional `postgres` extra
            raise ConfigError(
                "GATEWAY_DATABASE_URL names PostgreSQL but psycopg is not installed: "
                "pip install 'gemini-phone-gateway[postgres]'"
            ) from exc
        return PostgresStore(database_url)
    raise ConfigError(
        f"GATEWAY_DATABASE_URL: unsupported scheme {scheme!r}; use sqlite:///path or postgresql://…"
    )
