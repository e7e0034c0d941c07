"""Tool-call overhead: argument validation, and the router's round trip for async and sync handlers.

Run: ``.venv/bin/python bench/tools.py``. Prints microseconds per operation (median of 5 runs). The
router figures cover validation, task start, the handler, JSON size check, the answer and the
record; the sync figure includes the hop to the worker thread and back.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence

from gateway.gemini.messages import FunctionCall, FunctionResponse, ToolCall
from gateway.handlers.support import lookup_order
from gateway.log import call_logger
from gateway.tools import CallContext, Tool, ToolRegistry, ToolRouter
from gateway.tools.schema import validate


class _NoControl:
    ending = False

    def end_call(self, reason: str) -> None: ...

    async def transfer(self, number: str, *, label: str, by: str = "gateway") -> None: ...

    async def send_dtmf(self, digits: str) -> None: ...


def bench_validate(n: int) -> float:
    schema = Tool.from_function(lookup_order).parameters
    args = {"order_id": "A1001"}
    start = time.perf_counter()
    for _ in range(n):
        validate(schema, args)
    return (time.perf_counter() - start) / n * 1e6


async def bench_router(sync: bool, n: int) -> float:
    async def ping_async(value: int) -> int:
        """Echo."""
        return value

    def ping_sync(value: int) -> int:
        """Echo."""
        return value

    registry = ToolRegistry()
    registry.add(Tool.from_function(ping_sync if sync else ping_async, name="ping"))
    done = asyncio.Event()
    answered = 0

    def send(responses: Sequence[FunctionResponse]) -> None:
        nonlocal answered
        answered += len(responses)
        if answered == n:
            done.set()

    context = CallContext(
        call_id="CA" + "0" * 32, from_="+1", to="+2", dialplan="bench", control=_NoControl(),
        log=call_logger("bench.tools"),
    )  # fmt: skip
    router = ToolRouter(registry=registry, tools={"ping": registry.get("ping")}, context=context, send=send)  # type: ignore[dict-item]
    start = time.perf_counter()
    for i in range(n):
        router.handle(ToolCall((FunctionCall(f"fc-{i}", "ping", {"value": i}),)))
        if i % 100 == 99:
            await asyncio.sleep(0)
    await done.wait()
    elapsed = time.perf_counter() - start
    registry.close()
    return elapsed / n * 1e6


def main() -> None:
    validate_us = statistics.median(bench_validate(20_000) for _ in range(5))
    async_us = statistics.median(asyncio.run(bench_router(False, 5_000)) for _ in range(5))
    sync_us = statistics.median(asyncio.run(bench_router(True, 2_000)) for _ in range(5))
    print(f"validate lookup_order args        {validate_us:8.2f} µs/call")
    print(f"router round trip, async handler  {async_us:8.2f} µs/call")
    print(f"router round trip, sync handler   {sync_us:8.2f} µs/call (worker thread)")


if __name__ == "__main__":
    main()
