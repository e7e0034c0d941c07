"""Streaming tools: an async-generator handler answers in parts where the model reads willContinue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gateway.errors import ToolError
from gateway.tools.registry import Tool, model_behaviour

from .helpers import Harness


async def _settle(harness: Harness) -> None:
    async with asyncio.timeout(2.0):
        while harness.router.pending:  # noqa: ASYNC110 - the router has no completion signal
            await asyncio.sleep(0.01)


async def progress(steps: int) -> AsyncIterator[dict[str, int]]:
    """Report progress in steps.

    Args:
        steps: How many steps.
    """
    for step in range(1, steps + 1):
        yield {"done": step}


async def test_non_blocking_stream_sends_each_part_then_a_silent_empty_end() -> None:
    """Each value goes at once with willContinue true; an empty SILENT answer with false closes it."""
    h = Harness(Tool.from_function(progress, non_blocking=True, scheduling="WHEN_IDLE"))
    h.call("progress", "fc-1", steps=3)
    await _settle(h)
    assert [(r.response, r.scheduling, r.will_continue) for r in h.sent] == [
        ({"output": {"done": 1}}, "WHEN_IDLE", True),
        ({"output": {"done": 2}}, "WHEN_IDLE", True),
        ({"output": {"done": 3}}, "WHEN_IDLE", True),
        ({}, "SILENT", False),
    ]
    [record] = h.router.records
    assert (record.outcome, record.partials, record.result) == (
        "ok",
        3,
        [{"done": 1}, {"done": 2}, {"done": 3}],
    )


async def test_a_blocking_stream_is_one_answer_with_every_value() -> None:
    """The model waits for one answer: it gets the values as a list, no willContinue."""
    h = Harness(Tool.from_function(progress))
    h.call("progress", "fc-1", steps=2)
    await _settle(h)
    answer = h.answer("fc-1")
    assert (answer.response, answer.will_continue) == ({"output": [{"done": 1}, {"done": 2}]}, None)


async def test_a_model_without_will_continue_gets_one_answer_even_for_a_non_blocking_tool() -> None:
    """streams=False (3.1, extended thinking): collected into one answer."""
    h = Harness(Tool.from_function(progress, non_blocking=True))
    h.router._streams = False
    h.call("progress", "fc-1", steps=2)
    await _settle(h)
    assert h.answer("fc-1").response == {"output": [{"done": 1}, {"done": 2}]}


async def test_a_stream_that_fails_after_parts_closes_with_the_error() -> None:
    """The final answer after parts is the error, with willContinue false so the call is closed."""

    async def flaky() -> AsyncIterator[str]:
        """Flaky stream."""
        yield "first"
        raise ToolError("the backend went away")

    h = Harness(Tool.from_function(flaky, non_blocking=True))
    h.call("flaky", "fc-1")
    await _settle(h)
    assert [(r.response, r.will_continue) for r in h.sent] == [
        ({"output": "first"}, True),
        ({"error": "the backend went away"}, False),
    ]
    assert h.router.records[0].outcome == "error"


async def test_cancelling_a_stream_stops_it_without_a_final_answer() -> None:
    """toolCallCancellation mid-stream: the generator is closed, nothing more is sent."""
    gate = asyncio.Event()
    closed = asyncio.Event()

    async def slow() -> AsyncIterator[int]:
        """Slow stream."""
        try:
            yield 1
            await gate.wait()
            yield 2
        finally:
            closed.set()

    h = Harness(Tool.from_function(slow, non_blocking=True))
    h.call("slow", "fc-1")
    async with asyncio.timeout(2.0):
        while not h.sent:  # noqa: ASYNC110 - wait for the first part
            await asyncio.sleep(0.01)
    h.router.cancel(["fc-1"])
    await _settle(h)
    assert closed.is_set()
    assert [r.will_continue for r in h.sent] == [True]
    assert h.router.records[0].outcome == "cancelled"


def test_tools_run_as_the_model_allows() -> None:
    """Extended thinking runs every tool non-blocking, 3.1 every tool blocking, 3.8 as declared."""
    assert model_behaviour("gemini-3.8-live-extended-thinking", False) is True
    assert model_behaviour("models/gemini-3.1-flash-live-preview", True) is False
    assert model_behaviour("gemini-3.8-live", False) is False
    assert model_behaviour("gemini-3.8-live", True) is True
