"""The record writer and the per-call observer: nothing waits on the store, nothing is lost or reordered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.errors import RecordError
from gateway.log import CallContextFilter, bind_call_context, reset_call_context
from gateway.metrics import CallDepths, GatewayMetrics
from gateway.records.model import RecordOp
from gateway.records.observer import CallObserver
from gateway.records.sqlite import SqliteStore
from gateway.records.store import RecordStore, Statement
from gateway.records.writer import RecordWriter


class FlakyStore(RecordStore):
    """Fails the first ``failures`` writes, then records every batch it commits."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.batches: list[list[RecordOp]] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def write(self, ops: Sequence[RecordOp]) -> None:
        if self.failures:
            self.failures -= 1
            raise RecordError("database restarting")
        self.batches.append(list(ops))

    async def _execute(self, batch: Sequence[Statement]) -> None:
        raise AssertionError("not used")

    async def fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        raise AssertionError("not used")


def _value(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise KeyError(name)


async def test_writer_retries_in_order_and_reports_saved_turns() -> None:
    """Ops submitted during an outage are committed afterwards, in order; saved_turns follows commits."""
    store = FlakyStore(failures=2)
    metrics = GatewayMetrics()
    writer = RecordWriter(store, metrics=metrics, retry_s=(0.01, 0.02))
    observer = CallObserver(call_id="CA1", dialplan="support", writer=writer, metrics=metrics)
    writer.start()
    observer.opened(stream_id="MZ1", from_number="+1", to_number="+2", dialplan_version="v1")
    observer.turn("bot", "hello", 1.0, 2.0)
    observer.turn("caller", "hi", 3.0, 4.0)
    assert observer.saved_turns == 0  # submit never waits for the store
    await writer.stop()
    ops = [op for batch in store.batches for op in batch]
    assert [type(op).__name__ for op in ops] == ["CallOpened", "TurnAdded", "TurnAdded"]
    assert [op.turn.text for op in ops[1:]] == ["hello", "hi"]  # type: ignore[union-attr]
    assert writer.saved_turns("CA1") == 2
    assert writer.failures == 2
    assert _value(metrics, "gateway_record_write_errors_total") == 2
    assert _value(metrics, "gateway_records_written_total") == 3


async def test_writer_bounds_its_queue_when_the_store_stays_down() -> None:
    """An outage longer than max_pending drops the oldest ops and counts them; calls never block."""
    store = FlakyStore(failures=10_000)
    writer = RecordWriter(store, max_pending=5, retry_s=(0.01, 0.01))
    observer = CallObserver(call_id="CA1", dialplan="p", writer=writer)
    for i in range(20):
        observer.turn("caller", f"t{i}", 0.0, 0.0)
    assert writer.pending == 5
    assert writer.dropped == 15


async def test_observer_metrics_for_a_call() -> None:
    """Greeting and reply latency, barge-in, tools, reconnects and the outcome land in the metrics."""
    now = [100.0]
    metrics = GatewayMetrics(depths=lambda: [CallDepths(7, 12.5, 3), CallDepths(2, 1.0, None)])
    obs = CallObserver(call_id="CA1", dialplan="support", metrics=metrics, clock=lambda: now[0])
    obs.opened(stream_id="MZ", from_number="+1", to_number="+2", dialplan_version="v")
    assert _value(metrics, "gateway_active_calls") == 1
    now[0] = 100.8
    obs.bot_audio_started()  # nobody spoke yet: the greeting
    obs.last_voice_at = 104.0
    now[0] = 104.6
    obs.bot_audio_started()  # a reply 0.6 s after the caller's last voiced frame
    now[0] = 105.0
    obs.bot_audio_started()  # no new speech since: not another reply
    obs.barge_in(unheard_frames=12)
    obs.tool_call(tool_call_id="f1", name="lookup_order", arguments={}, status="ok", duration_s=0.05)
    obs.reconnect("go_away")
    obs.usage(10, 20, 30)
    obs.closed(
        ended_by="caller", reason="stop", stats={"frames_in": 500, "frames_out": 300, "audio_dropped": 2}
    )
    obs.closed(ended_by="caller", reason="again", stats={})  # idempotent
    assert obs.greeting_s == pytest.approx(0.8)
    assert obs.reply_s == [pytest.approx(0.6)]
    assert _value(metrics, "gateway_greeting_latency_seconds_count", dialplan="support") == 1
    assert _value(metrics, "gateway_reply_latency_seconds_count", dialplan="support") == 1
    assert _value(metrics, "gateway_reply_latency_seconds_bucket", dialplan="support", le="0.6") == 1
    assert _value(metrics, "gateway_barge_ins_total", dialplan="support") == 1
    assert _value(metrics, "gateway_frames_dropped_total", reason="barge_in") == 12
    assert _value(metrics, "gateway_frames_dropped_total", reason="gemini_queue_full") == 2
    assert _value(metrics, "gateway_tool_calls_total", tool="lookup_order", result="ok") == 1
    assert _value(metrics, "gateway_gemini_reconnects_total", cause="go_away") == 1
    assert _value(metrics, "gateway_calls_total", outcome="caller", dialplan="support") == 1
    assert _value(metrics, "gateway_active_calls") == 0
    assert _value(metrics, "gateway_media_frames_total", direction="in") == 500
    assert _value(metrics, "gateway_gemini_tokens_total", kind="response", dialplan="support") == 20
    assert _value(metrics, "gateway_queue_depth", queue="playout", stat="sum") == 9
    assert _value(metrics, "gateway_queue_depth", queue="playout", stat="max") == 7
    assert _value(metrics, "gateway_queue_depth", queue="gemini_audio", stat="max") == 3
    assert _value(metrics, "gateway_downlink_buffered_ms", stat="sum") == 13.5


async def test_tool_router_records_are_adapted(tmp_path: Any) -> None:
    """The tool router's records (duck-typed) become tool-call rows with status, result and error."""
    store = SqliteStore(tmp_path / "calls.db")
    writer = RecordWriter(store)
    writer.start()
    obs = CallObserver(call_id="CA1", dialplan="p", writer=writer)
    obs.opened(stream_id="MZ", from_number="+1", to_number="+2", dialplan_version="v")

    class Rec:
        call_id, name, args, outcome, result, error, started_at, duration_s = (
            "fc1", "lookup_order", {"order": "A1"}, "timeout", None, "did not answer", 12.0, 8.0,
        )  # fmt: skip

    obs.tool_record(Rec())
    await writer.stop()
    await store.open()
    record = await store.get_call("CA1")
    await store.close()
    assert record is not None
    [call] = record.tool_calls
    assert (call.status, call.error, call.duration_ms, dict(call.arguments)) == (
        "timeout", "did not answer", 8000.0, {"order": "A1"},
    )  # fmt: skip


async def test_every_log_line_of_a_call_carries_its_id() -> None:
    """Lines from any logger, in the call's task or tasks it starts, carry the bound call id."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep()
    handler.addFilter(CallContextFilter())
    other = logging.getLogger("some.library")
    other.addHandler(handler)
    other.setLevel(logging.INFO)
    try:
        token = bind_call_context(call_sid="CA42", stream_sid="MZ42")
        other.info("in the call's task")
        await asyncio.create_task(asyncio.to_thread(lambda: None))
        await asyncio.create_task(_log_from_task(other))
        reset_call_context(token)
        other.info("after the call")
    finally:
        other.removeHandler(handler)
    assert [getattr(r, "call_sid", None) for r in seen] == ["CA42", "CA42", None]
    assert getattr(seen[1], "stream_sid", None) == "MZ42"


async def _log_from_task(logger: logging.Logger) -> None:
    logger.info("in a task the call started")


def test_resilient_session_reconnects_become_records_and_metrics() -> None:
    """ResilientSession's Reconnect events: hand-overs count by cause and open a new session record."""
    from gateway.bridge.resilience import Reconnect

    metrics = GatewayMetrics()
    events: list[Any] = []

    class Capture:
        instance = ""

        def submit(self, op: Any) -> None:
            events.append(op.event)

        def saved_turns(self, call_id: str) -> int:
            return 0

    obs = CallObserver(call_id="CA1", dialplan="p", writer=Capture(), metrics=metrics)  # type: ignore[arg-type]

    def event(cause: Any, code: int | None, outcome: Any) -> Reconnect:
        return Reconnect(cause, code, "", outcome, 1, 120.0, 6, False, 1.0)

    obs.reconnect_record(event("start", None, "fresh"))  # the first connection is no reconnect
    obs.reconnect_record(event("go_away", None, "resumed"))
    obs.reconnect_record(event("closed", 1011, "fresh"))
    obs.reconnect_record(event("closed", 1006, "failed"))
    assert [(e.kind, e.detail.get("cause"), e.detail.get("id")) for e in events] == [
        ("reconnect", "go_away", None),
        ("session", None, "CA1#1"),
        ("reconnect", "closed_1011", None),
        ("session", None, "CA1#2"),
        ("reconnect", "closed_1006", None),
    ]
    assert events[1].detail["resumed"] is True
    assert _value(metrics, "gateway_gemini_reconnects_total", cause="go_away") == 1
    assert _value(metrics, "gateway_gemini_reconnects_total", cause="closed_1011") == 1
    assert _value(metrics, "gateway_gemini_reconnects_total", cause="closed_1006_failed") == 1


async def test_a_failing_store_shows_its_backlog_and_error_while_it_fails() -> None:
    """While the store cannot write, /metrics and the admin view say so (backlog, store down, why);
    once it writes again, both recover."""
    store = FlakyStore(failures=3)
    metrics = GatewayMetrics()
    writer = RecordWriter(store, metrics=metrics, retry_s=(0.05, 0.05))
    observer = CallObserver(call_id="CA2", dialplan="support", writer=writer, metrics=metrics)
    writer.start()
    observer.opened(stream_id="MZ2", from_number="+1", to_number="+2", dialplan_version="v1")
    observer.turn("bot", "hello", 1.0, 2.0)
    async with asyncio.timeout(2):
        while not writer.last_error:  # noqa: ASYNC110 - the writer signals nothing; poll briefly
            await asyncio.sleep(0.005)
    assert _value(metrics, "gateway_records_pending") == 2
    assert _value(metrics, "gateway_records_store_up") == 0
    health = writer.health()
    assert health["failing"] is True
    assert health["pending"] == 2
    assert health["error"]
    await writer.stop()
    assert _value(metrics, "gateway_records_pending") == 0
    assert _value(metrics, "gateway_records_store_up") == 1
    assert writer.health()["failing"] is False
