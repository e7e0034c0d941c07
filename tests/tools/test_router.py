"""ToolRouter: exactly one answer per function call, whatever the handler does."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

import pytest

from gateway.errors import LiveSessionError, ToolError
from gateway.gemini.messages import FunctionCall, ToolCall
from gateway.tools.context import FUNCTION_CALL_ID, CallContext
from gateway.tools.registry import Tool, ToolRegistry
from gateway.tools.router import ToolCallRecord, ToolRouter

from .helpers import Harness, context


async def settle(harness: Harness) -> None:
    """Wait until every started handler has finished."""
    for _ in range(200):
        if harness.router.pending == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("handlers did not finish")


async def test_async_handler_result_is_the_output() -> None:
    """An async handler's return value goes back as {"output": …} with the call's id and name."""

    async def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    h = Harness(Tool.from_function(add))
    h.call("add", "fc-7", a=2, b=3.0)
    await settle(h)
    answer = h.answer("fc-7")
    assert (answer.name, answer.response, answer.scheduling) == ("add", {"output": 5}, None)
    assert h.router.records[0].outcome == "ok"


async def test_sync_handler_runs_off_the_event_loop() -> None:
    """A plain function runs on a worker thread, so a blocking handler cannot stall the call."""
    loop_thread = threading.get_ident()

    def where(context: CallContext) -> dict[str, object]:
        """Report the thread and the call."""
        return {"off_loop": threading.get_ident() != loop_thread, "call": context.call_id}

    h = Harness(Tool.from_function(where))
    h.call("where")
    await settle(h)
    assert h.answer("fc-1").response == {"output": {"off_loop": True, "call": h.context.call_id}}
    h.registry.close()


async def test_unknown_tool_is_answered_with_the_available_names() -> None:
    """A call to a tool this session does not have gets an error listing the real ones."""

    async def ping() -> str:
        """Ping."""
        return "pong"

    h = Harness(Tool.from_function(ping))
    h.call("pnig")
    assert h.answer("fc-1").response == {"error": "unknown tool 'pnig'; available tools: ping"}
    assert h.router.records[0].outcome == "unknown"


async def test_invalid_arguments_never_reach_the_handler() -> None:
    """Arguments that fail the schema are answered with the problems; the handler is not called."""
    calls: list[str] = []

    async def lookup(order_id: str) -> str:
        """Look up."""
        calls.append(order_id)
        return "ok"

    h = Harness(Tool.from_function(lookup))
    h.call("lookup", order_id=1001)
    await settle(h)
    assert calls == []
    assert h.answer("fc-1").response == {
        "error": "invalid arguments: order_id: expected a string, got a number"
    }
    assert h.router.records[0].outcome == "invalid"


async def test_tool_error_message_goes_to_the_model() -> None:
    """A ToolError's text is what the model hears: it was written for it."""

    async def lookup(order_id: str) -> str:
        """Look up."""
        raise ToolError(f"no order {order_id}")

    h = Harness(Tool.from_function(lookup))
    h.call("lookup", order_id="A9")
    await settle(h)
    assert h.answer("fc-1").response == {"error": "no order A9"}


async def test_crash_is_contained_and_its_text_is_not_leaked(caplog: pytest.LogCaptureFixture) -> None:
    """Any other exception is logged with its traceback; the model gets a generic error."""

    def broken() -> None:
        """Break."""
        raise RuntimeError("db password=hunter2 refused")

    h = Harness(Tool.from_function(broken))
    h.call("broken")
    await settle(h)
    response = h.answer("fc-1").response
    assert response == {"error": "tool 'broken' failed because of an internal error"}
    assert "hunter2" not in str(response)
    assert h.router.records[0].outcome == "crashed"
    assert any(r.exc_info and "hunter2" in str(r.exc_info[1]) for r in caplog.records)
    h.registry.close()


async def test_timeout_answers_and_cancels_the_handler() -> None:
    """A handler slower than its timeout is cancelled and the model is told it timed out."""
    cancelled = asyncio.Event()

    async def slow() -> None:
        """Take forever."""
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    h = Harness(Tool.from_function(slow, timeout_s=0.05))
    h.call("slow")
    await settle(h)
    assert h.answer("fc-1").response == {"error": "tool 'slow' did not answer within 0.05 s; try again later"}
    assert cancelled.is_set()
    assert h.router.records[0].outcome == "timeout"


async def test_registry_default_timeout_applies() -> None:
    """A tool without its own timeout gets the registry default."""

    async def slow() -> None:
        """Take forever."""
        await asyncio.sleep(60)

    h = Harness(Tool.from_function(slow), registry=ToolRegistry(default_timeout_s=0.05))
    h.call("slow")
    await settle(h)
    assert "within 0.05 s" in h.answer("fc-1").response["error"]


async def test_cancellation_stops_the_handler_and_sends_nothing() -> None:
    """toolCallCancellation cancels the running handler; the cancelled call gets no answer."""
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        """Take a while."""
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    h = Harness(Tool.from_function(slow))
    h.call("slow", "fc-1")
    h.call("slow", "fc-2")
    await started.wait()
    h.router.cancel(["fc-1"])
    await asyncio.sleep(0.05)
    assert cancelled.is_set()
    assert [r.id for r in h.sent] == []
    h.router.cancel(["fc-2"])
    await settle(h)
    assert h.sent == []
    assert [r.outcome for r in h.router.records] == ["cancelled", "cancelled"]


async def test_parallel_calls_each_get_one_answer() -> None:
    """Several calls in one toolCall run concurrently and each is answered once, in finishing order."""

    async def wait(seconds: float) -> float:
        """Wait."""
        await asyncio.sleep(seconds)
        return seconds

    h = Harness(Tool.from_function(wait))
    h.router.handle(
        ToolCall(
            (
                FunctionCall("slow", "wait", {"seconds": 0.1}),
                FunctionCall("fast", "wait", {"seconds": 0.0}),
                FunctionCall("bad", "wait", {"seconds": "x"}),
            )
        )
    )
    await settle(h)
    assert [r.id for r in h.sent] == ["bad", "fast", "slow"]
    for call_id in ("slow", "fast", "bad"):
        h.answer(call_id)


async def test_results_that_cannot_be_sent_become_errors() -> None:
    """A non-JSON or oversized result is an error answer, never a broken session."""

    async def weird() -> object:
        """Return a set."""
        return {1, 2}

    async def huge() -> str:
        """Return a lot."""
        return "x" * 100

    h = Harness(
        Tool.from_function(weird), Tool.from_function(huge), registry=ToolRegistry(max_result_bytes=50)
    )
    h.call("weird", "w")
    h.call("huge", "h")
    await settle(h)
    assert h.answer("w").response == {"error": "tool 'weird' returned a result that cannot be sent"}
    assert "more than the 50 allowed" in h.answer("h").response["error"]


async def test_dataclass_results_are_sent_as_objects() -> None:
    """A dataclass result is converted to a JSON object."""

    @dataclass
    class Stock:
        sku: str
        count: int

    async def stock() -> Stock:
        """Stock."""
        return Stock("W1", 3)

    h = Harness(Tool.from_function(stock))
    h.call("stock")
    await settle(h)
    assert h.answer("fc-1").response == {"output": {"sku": "W1", "count": 3}}


async def test_non_blocking_answers_carry_the_tool_scheduling() -> None:
    """A NON_BLOCKING tool's answer says how the model should deliver it."""

    async def notify() -> str:
        """Notify."""
        return "done"

    h = Harness(Tool.from_function(notify, non_blocking=True, scheduling="INTERRUPT"))
    h.call("notify")
    await settle(h)
    assert h.answer("fc-1").scheduling == "INTERRUPT"


async def test_close_cancels_running_handlers_without_answering() -> None:
    """When the call ends, running handlers are cancelled and nothing more is sent."""
    started = asyncio.Event()

    async def slow() -> None:
        """Slow."""
        started.set()
        await asyncio.sleep(60)

    h = Harness(Tool.from_function(slow))
    h.call("slow")
    await started.wait()
    await h.router.close()
    assert h.sent == []
    assert h.router.records[0].outcome == "cancelled"
    h.call("slow", "after-close")
    assert h.sent == []


async def test_session_gone_does_not_break_the_router() -> None:
    """An answer the session can no longer take is recorded as undelivered, not raised."""

    async def ping() -> str:
        """Ping."""
        return "pong"

    registry = ToolRegistry()
    registry.add(Tool.from_function(ping))

    def send(_: object) -> None:
        raise LiveSessionError("closed")

    router = ToolRouter(registry=registry, tools={"ping": registry.get("ping")}, context=context(), send=send)  # type: ignore[dict-item]
    router.handle(ToolCall((FunctionCall("x", "ping", {}),)))
    for _ in range(100):
        if router.records:
            break
        await asyncio.sleep(0.01)
    assert router.records[0].delivered is False


async def test_observers_see_every_record_and_cannot_break_the_call() -> None:
    """Registry and per-call observers get each record; an observer that raises is contained."""
    seen: list[tuple[str, str]] = []

    async def ping() -> str:
        """Ping."""
        return FUNCTION_CALL_ID.get()

    h = Harness(Tool.from_function(ping))

    def app_wide(ctx: CallContext, record: ToolCallRecord) -> None:
        seen.append((ctx.call_id[:2], record.outcome))

    def broken(record: ToolCallRecord) -> None:
        raise ValueError("observer bug")

    h.registry.observers.append(app_wide)
    h.router.observers.append(broken)
    h.router.observers.append(lambda r: seen.append(("own", r.name)))
    h.call("ping", "fc-42")
    await settle(h)
    assert h.answer("fc-42").response == {"output": "fc-42"}
    assert seen == [("CA", "ok"), ("own", "ping")]
    record = h.router.records[0]
    assert record.as_dict()["args"] == {}
    assert record.duration_s >= 0


async def test_each_call_is_logged_at_info_without_breaking(caplog: pytest.LogCaptureFixture) -> None:
    """With INFO logging on (as in production), every outcome logs one 'tool call' line with its fields."""
    caplog.set_level(logging.INFO)

    async def lookup(order_id: str) -> str:
        """Look up."""
        return order_id

    h = Harness(Tool.from_function(lookup))
    h.call("lookup", "ok", order_id="A1")
    h.call("lookup", "bad", order_id=1)
    h.call("nope", "unknown")
    await settle(h)
    lines = [r for r in caplog.records if r.getMessage() == "tool call"]
    assert sorted((r.call_id, r.outcome, r.arg_names) for r in lines) == [  # type: ignore[attr-defined]
        ("bad", "invalid", "order_id"),
        ("ok", "ok", "order_id"),
        ("unknown", "unknown", ""),
    ]


async def test_a_bug_while_starting_costs_one_answer_not_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """If starting a call fails unexpectedly, that call still gets an error answer and handle() returns."""

    async def ping() -> str:
        """Ping."""
        return "pong"

    h = Harness(Tool.from_function(ping))

    def broken(entry: object) -> None:
        raise RuntimeError("router bug")

    monkeypatch.setattr(h.router, "_start", broken)
    h.call("ping", "fc-1")
    assert h.answer("fc-1").response == {"error": "the tool could not be run"}
