"""`gateway calls list` and `gateway calls show ID`: read call records from the command line.

Reads the store the gateway writes (``GATEWAY_DATABASE_URL``, else ``<GATEWAY_DATA_DIR>/calls.db``);
SQLite's WAL lets this run while the gateway is writing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from gateway.errors import ConfigError, RecordError
from gateway.records.model import CallRecord
from gateway.records.store import open_store, sqlite_path
from gateway.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", help="record store (default: GATEWAY_DATABASE_URL or data/calls.db)"
    )
    parser.add_argument("--data-dir", type=Path, help="data folder (GATEWAY_DATA_DIR, default data)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="the most recent calls, newest first")
    listing.add_argument("-n", "--limit", type=int, default=20, help="how many calls (default 20)")
    listing.add_argument("--dialplan", help="only calls answered by this dialplan")
    show = sub.add_parser("show", help="one call: ids, outcome, transcript, tool calls, events")
    show.add_argument("call_id", metavar="ID", help="call SID, or a unique prefix of one")
    for action in (listing, show):
        # Also after the action (`calls show ID --json`); SUPPRESS keeps a --json given before it.
        action.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    url = args.database_url if args.database_url is not None else settings.database_url
    data_dir = args.data_dir if args.data_dir is not None else settings.data_dir
    try:
        path = sqlite_path(url, data_dir)
        if path is not None and not path.exists():
            print(f"gateway calls: no call records yet ({path} does not exist)", file=sys.stderr)
            return 1
        return asyncio.run(_run(args, url, data_dir))
    except (ConfigError, RecordError) as exc:
        print(f"gateway calls: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, url: str, data_dir: Path) -> int:
    store = open_store(url, data_dir)
    await store.open()
    try:
        if args.action == "list":
            records = await store.list_calls(limit=args.limit, dialplan=args.dialplan)
            if args.json:
                print(json.dumps([_summary(r) for r in records], indent=2))
            else:
                print(format_list(records, dialplan=args.dialplan))
            return 0
        record = await store.get_call(args.call_id)
        if record is None:
            print(f"gateway calls: no call {args.call_id!r} in {store.description}", file=sys.stderr)
            return 1
        print(
            json.dumps(record.as_dict(), indent=2, ensure_ascii=False) if args.json else format_call(record)
        )
        return 0
    finally:
        await store.close()


def _summary(record: CallRecord) -> dict[str, object]:
    doc = record.as_dict()
    for key in ("turns", "tool_calls", "events"):
        doc.pop(key)
    return doc


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _duration(record: CallRecord) -> str:
    if record.ended_at is None:
        return "running"
    return f"{record.ended_at - record.started_at:.1f}s"


def format_list(records: list[CallRecord], *, dialplan: str | None = None) -> str:
    """One line per call: when, id, numbers, dialplan, duration, turns, who ended it."""
    if not records:
        return f"no calls for dialplan {dialplan!r}" if dialplan is not None else "no calls recorded yet"
    header = ("started", "call", "from", "to", "dialplan", "duration", "turns", "ended by")
    rows = [
        (
            _when(r.started_at),
            r.call_id,
            r.from_number,
            r.to_number,
            r.dialplan,
            _duration(r),
            str(r.turn_count),
            r.ended_by or ("(unfinished)" if r.ended_at is None else "-"),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    head = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()
    return "\n".join([head, *lines])


def format_call(record: CallRecord) -> str:
    """A call as an operator reads it: header, transcript, tool calls, events."""
    u = record.usage
    out = [
        f"call      {record.call_id}  (stream {record.stream_id})",
        f"numbers   {record.from_number} -> {record.to_number}",
        f"dialplan  {record.dialplan} @ {record.dialplan_version}",
        f"started   {_when(record.started_at)}   ended {_when(record.ended_at)}   ({_duration(record)})",
        f"ended by  {record.ended_by or '-'}: {record.end_reason or ('the gateway stopped mid-call' if record.ended_at is None else '-')}",  # noqa: E501
        f"gemini    sessions {', '.join(record.gemini_sessions) or '-'}; reconnects {len(record.reconnects)}",
        f"tokens    prompt {u.prompt_tokens}, response {u.response_tokens}, total {u.total_tokens}",
    ]
    if record.recording:
        out.append(f"recording {record.recording}")
    out.append("")
    out.append("transcript")
    if not record.turns:
        out.append("  (no turns)")
    # Turns are stored as they finish: a caller turn ends after the bot turn it interrupted began.
    for t in sorted(record.turns, key=lambda t: t.started_at):
        clock = time.strftime("%H:%M:%S", time.localtime(t.started_at))
        line = f"  {clock}  {t.role:<6}  {t.text}"
        if t.interrupted:
            line += f"\n  {'':8}  {'':6}  [cut off; the caller heard: {t.heard or '(nothing)'!s}]"
        out.append(line)
    if record.tool_calls:
        out.append("")
        out.append("tool calls")
        for c in record.tool_calls:
            outcome = json.dumps(c.result, ensure_ascii=False) if c.error is None else f"error: {c.error}"
            out.append(
                f"  {c.name}({json.dumps(dict(c.arguments), ensure_ascii=False)}) -> {c.status} "
                f"in {c.duration_ms:.0f} ms: {outcome}"
            )
    if record.events:
        out.append("")
        out.append("events")
        for e in record.events:
            clock = time.strftime("%H:%M:%S", time.localtime(e.at))
            detail = " ".join(f"{k}={v}" for k, v in e.detail.items())
            out.append(f"  {clock}  {e.kind} {detail}".rstrip())
    return "\n".join(out)
