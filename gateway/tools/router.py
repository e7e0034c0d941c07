"""The per-call tool router: every function call the model makes gets exactly one answer.

Rules:

* Each ``functionCall`` is answered exactly once: with the handler's result, with an error the
  model can act on (unknown tool, invalid arguments, the handler's :class:`ToolError`, a
  generic failure for any other exception, a timeout), or — only when the model cancelled it with
  ``toolCallCancellation`` — not at all. A per-call ledger entry enforces this.
* Handlers run as tasks owned by the router, never on the downlink task: a slow tool does not stop
  model audio or caller audio. Sync handlers run on the registry's thread pool.
* A handler's crash is logged with its traceback and never leaves this module.
* Every finished call produces a :class:`ToolCallRecord` for the registry's observers (metrics,
  call records) and for :attr:`ToolRouter.records`.
* A handler that is an async generator streams: on a NON_BLOCKING tool of a model that reads
  ``willContinue``, each yielded value is sent at once (``willContinue: true``) and the stream is
  closed with an empty ``SILENT`` answer (``willContinue: false``), as the SDK documents; anywhere
  else the model waits for one answer, so it gets every value at once as a list. The tool's time
  limit covers the whole stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import inspect
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.errors import GatewayError, ToolError
from gateway.gemini.messages import FunctionCall, FunctionResponse, ToolCall
from gateway.tools.context import FUNCTION_CALL_ID, CallContext
from gateway.tools.registry import Scheduling, Tool, ToolRegistry
from gateway.tools.schema import validate

__all__ = ["Outcome", "ToolCallRecord", "ToolRouter"]

Outcome = Literal["ok", "error", "invalid", "unknown", "timeout", "crashed", "cancelled"]

#: Keep at most this many records per call (a runaway model cannot grow memory without bound).
MAX_RECORDS = 200


@dataclass(slots=True)
class ToolCallRecord:
    """One function call and how it ended. ``error`` is exactly what the model was told."""

    call_id: str
    name: str
    args: Mapping[str, Any]
    outcome: Outcome = "ok"
    result: Any = None
    error: str | None = None
    started_at: float = 0.0
    duration_s: float = 0.0
    non_blocking: bool = False
    #: False when the answer could not be handed to the session (it had already ended).
    delivered: bool = True
    #: Results sent before the final answer (a streaming tool's ``willContinue`` answers).
    partials: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True, eq=False)
class _Entry:
    call: FunctionCall
    record: ToolCallRecord
    task: asyncio.Task[None] | None = None
    answered: bool = False
    cancelled: bool = False
    started: float = field(default=0.0)
    #: The call's answers so far were ``willContinue`` partials: the final one must close the stream.
    streaming: bool = False


class ToolRouter:
    """Runs one call's tool calls. ``send`` hands answers to the (current) Live session."""

    def __init__(
        self,
        *,
        registry: ToolRegistry,
        tools: Mapping[str, Tool],
        context: CallContext,
        send: Callable[[Sequence[FunctionResponse]], None],
        on_close: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        streams: bool = True,
    ) -> None:
        """``streams``: the model reads ``willContinue`` (False on 3.1 and extended thinking, see
        gateway/gemini/models.py), so NON_BLOCKING async-generator tools may answer in parts."""
        self.registry = registry
        self.tools = dict(tools)
        self.context = context
        self._streams = streams
        self._send = send
        self._on_close = on_close
        self._clock = clock
        self._entries: list[_Entry] = []
        self._closing = False
        self.records: list[ToolCallRecord] = []
        #: Per-call observers, called after the registry's (e.g. the call record of this call).
        self.observers: list[Callable[[ToolCallRecord], None]] = []

    @property
    def pending(self) -> int:
        """Calls started and not yet answered or cancelled."""
        return len(self._entries)

    # --- events from the model -------------------------------------------------------------------
    def handle(self, event: ToolCall) -> None:
        """Start every call of a ``toolCall``; returns at once (answers follow as handlers finish)."""
        for call in event.calls:
            entry = self._entry(call)
            try:
                self._start(entry)
            except Exception:
                # A bug here must cost one answer, not the call: the downlink task runs this.
                self.context.log.exception("tool call could not be started", extra={"tool": call.name})
                if not entry.answered and not self._closing:
                    entry.answered = True
                    with contextlib.suppress(GatewayError):
                        self._send(
                            [FunctionResponse(call.id, call.name, {"error": "the tool could not be run"})]
                        )

    def cancel(self, ids: Sequence[str]) -> None:
        """``toolCallCancellation``: stop these calls' handlers; they get no answer."""
        wanted = set(ids)
        for entry in list(self._entries):
            if entry.call.id in wanted and not entry.answered:
                entry.cancelled = True
                if entry.task is not None:
                    entry.task.cancel()

    async def close(self) -> None:
        """The call is over: cancel running handlers and wait for them; nothing more is sent."""
        self._closing = True
        tasks = [e.task for e in self._entries if e.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._on_close is not None:
            result = self._on_close()
            if asyncio.iscoroutine(result):
                await result

    # --- running ---------------------------------------------------------------------------------
    def _entry(self, call: FunctionCall) -> _Entry:
        tool = self.tools.get(call.name)
        record = ToolCallRecord(
            call_id=call.id,
            name=call.name,
            args=call.args,
            started_at=time.time(),
            non_blocking=bool(tool and tool.non_blocking),
        )
        return _Entry(call, record, started=self._clock())

    def _start(self, entry: _Entry) -> None:
        call = entry.call
        tool = self.tools.get(call.name)
        if self._closing:
            return
        if tool is None:
            available = ", ".join(sorted(self.tools)) or "none"
            self._fail(entry, "unknown", f"unknown tool {call.name!r}; available tools: {available}")
            return
        args, problems = validate(tool.parameters, dict(call.args))
        if problems:
            self._fail(entry, "invalid", "invalid arguments: " + "; ".join(problems[:8]))
            return
        self._entries.append(entry)
        entry.task = asyncio.get_running_loop().create_task(
            self._run(tool, entry, args), name=f"tool:{call.name}:{call.id}"
        )

    async def _run(self, tool: Tool, entry: _Entry, args: dict[str, Any]) -> None:
        name = tool.name
        timeout_s = tool.timeout_s or self.registry.default_timeout_s
        FUNCTION_CALL_ID.set(entry.call.id)  # this task's own context: handlers may read it
        try:
            async with asyncio.timeout(timeout_s):
                if inspect.isasyncgenfunction(tool.handler):
                    result = await self._stream(tool, entry, args)
                else:
                    result = await self._invoke(tool, args)
        except TimeoutError:
            message = f"tool {name!r} did not answer within {timeout_s:g} s; try again later"
            self._fail(entry, "timeout", message)
        except asyncio.CancelledError:
            # Cancelled by the model (no answer is wanted) or because the call ended.
            entry.record.outcome = "cancelled"
            self._finish(entry)
        except ToolError as exc:
            self._fail(entry, "error", str(exc) or f"tool {name!r} failed")
        except Exception:
            self.context.log.exception("tool handler crashed", extra={"tool": name, "call_id": entry.call.id})
            self._fail(entry, "crashed", f"tool {name!r} failed because of an internal error")
        else:
            self._succeed(tool, entry, result)

    def _prepare(self, tool: Tool, args: dict[str, Any]) -> None:
        for key, convert in tool.converters.items():
            if key in args and args[key] is not None:
                args[key] = convert(args[key])
        if tool.context_param is not None:
            args[tool.context_param] = self.context

    async def _stream(self, tool: Tool, entry: _Entry, args: dict[str, Any]) -> list[Any]:
        """Run an async-generator handler; send each value as it comes where the model takes parts."""
        self._prepare(tool, args)
        partial = self._streams and tool.non_blocking
        items: list[Any] = []
        stream = tool.handler(**args)
        try:
            async for item in stream:
                if dataclasses.is_dataclass(item) and not isinstance(item, type):
                    item = dataclasses.asdict(item)
                items.append(item)
                if partial:
                    self._partial(tool, entry, item)
        finally:
            await stream.aclose()
        return items

    def _partial(self, tool: Tool, entry: _Entry, item: Any) -> None:
        """One ``willContinue: true`` answer. A value that cannot be sent fails the whole call."""
        if entry.cancelled or self._closing:
            return
        response = {"output": item}
        self._check_result(tool, response)
        entry.streaming = True
        entry.record.partials += 1
        try:
            self._send([FunctionResponse(entry.call.id, entry.call.name, response, tool.scheduling, True)])
        except GatewayError as exc:
            entry.record.delivered = False
            self.context.log.info("tool part not delivered", extra={"tool": tool.name, "error": str(exc)})

    def _check_result(self, tool: Tool, response: dict[str, Any]) -> None:
        """Raise ToolError (its text is what the model is told) for a result that cannot be sent."""
        try:
            size = len(json.dumps(response, ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError) as exc:
            self.context.log.error(
                "tool result is not JSON", extra={"tool": tool.name, "error": str(exc)[:200]}
            )
            raise ToolError(f"tool {tool.name!r} returned a result that cannot be sent") from exc
        if size > self.registry.max_result_bytes:
            self.context.log.warning("tool result too large", extra={"tool": tool.name, "bytes": size})
            raise ToolError(
                f"tool {tool.name!r} returned {size} bytes, more than the {self.registry.max_result_bytes}"
                " allowed; ask for less"
            )

    async def _invoke(self, tool: Tool, args: dict[str, Any]) -> Any:
        self._prepare(tool, args)
        if tool.is_async:
            return await tool.handler(**args)
        # Off the loop, on the registry's own pool; the context is copied so log bindings carry over.
        call = functools.partial(contextvars.copy_context().run, tool.handler, **args)
        result = await asyncio.get_running_loop().run_in_executor(self.registry.executor, call)
        if asyncio.iscoroutine(result):  # a sync wrapper returning a coroutine: run it here
            result = await result
        return result

    # --- answering -------------------------------------------------------------------------------
    def _succeed(self, tool: Tool, entry: _Entry, result: Any) -> None:
        if dataclasses.is_dataclass(result) and not isinstance(result, type):
            result = dataclasses.asdict(result)
        entry.record.result = result
        if entry.streaming:
            # Every part is with the model already: close the stream without prompting a new reply.
            self._answer(entry, {}, "SILENT")
            return
        response = {"output": result}
        try:
            self._check_result(tool, response)
        except ToolError as exc:
            entry.record.result = None
            crashed = isinstance(exc.__cause__, (TypeError, ValueError))
            self._fail(entry, "crashed" if crashed else "error", str(exc))
            return
        self._answer(entry, response)

    def _fail(self, entry: _Entry, outcome: Outcome, message: str) -> None:
        entry.record.outcome = outcome
        entry.record.error = message
        self._answer(entry, {"error": message})

    def _answer(self, entry: _Entry, response: dict[str, Any], scheduling: Scheduling | None = None) -> None:
        if entry.answered or entry.cancelled or self._closing:
            if entry.cancelled or self._closing:
                entry.record.outcome = "cancelled"
            self._finish(entry)
            return
        entry.answered = True
        tool = self.tools.get(entry.call.name)
        if tool is None or not tool.non_blocking:
            scheduling = None
        elif scheduling is None:
            scheduling = tool.scheduling
        # The last answer of a stream says so; a single answer leaves willContinue out.
        will_continue = False if entry.streaming else None
        answer = FunctionResponse(entry.call.id, entry.call.name, response, scheduling, will_continue)
        try:
            self._send([answer])
        except GatewayError as exc:
            # The session ended (or is being replaced); the call is ending, nothing can be told.
            entry.record.delivered = False
            self.context.log.info(
                "tool answer not delivered", extra={"tool": entry.call.name, "error": str(exc)}
            )
        self._finish(entry)

    def _finish(self, entry: _Entry) -> None:
        record = entry.record
        record.duration_s = round(self._clock() - entry.started, 4)
        if entry in self._entries:
            self._entries.remove(entry)
        if len(self.records) < MAX_RECORDS:
            self.records.append(record)
        self.context.log.info(
            "tool call",
            extra={
                "tool": record.name,
                "call_id": record.call_id,
                "outcome": record.outcome,
                "duration_ms": round(record.duration_s * 1000, 1),
                "arg_names": ",".join(str(k) for k in record.args),
                **({"error": record.error} if record.error else {}),
            },
        )
        for observer in self.registry.observers:
            self._notify(functools.partial(observer, self.context, record), record)
        for own in self.observers:
            self._notify(functools.partial(own, record), record)

    def _notify(self, observer: Callable[[], None], record: ToolCallRecord) -> None:
        try:
            observer()
        except Exception:
            self.context.log.exception("tool observer failed", extra={"tool": record.name})
