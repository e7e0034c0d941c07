"""Shared pieces for tool tests: a recording call control and a router wired to a list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.gemini.messages import FunctionCall, FunctionResponse, ToolCall
from gateway.log import call_logger
from gateway.tools.context import CallContext
from gateway.tools.registry import Tool, ToolRegistry
from gateway.tools.router import ToolRouter


@dataclass
class RecordingControl:
    """A CallControl that records what tools asked of the call."""

    ending: bool = False
    actions: list[tuple[str, Any]] = field(default_factory=list)

    def end_call(self, reason: str) -> None:
        self.ending = True
        self.actions.append(("end_call", reason))

    async def transfer(self, number: str, *, label: str, by: str = "gateway") -> None:
        self.actions.append(("transfer", (number, label)))

    async def send_dtmf(self, digits: str) -> None:
        self.actions.append(("dtmf", digits))


def context(control: RecordingControl | None = None, **overrides: Any) -> CallContext:
    values: dict[str, Any] = {
        "call_id": "CA" + "0" * 32,
        "from_": "+15550001111",
        "to": "+15550100100",
        "dialplan": "support",
        "control": control or RecordingControl(),
        "log": call_logger("tests.tools"),
        "metadata": {"company": "Acme"},
        "transfer_targets": {"agent": "+15550100199"},
    }
    values.update(overrides)
    return CallContext(**values)


class Harness:
    """A router for ``tools`` whose answers land in :attr:`sent`."""

    def __init__(self, *tools: Tool, registry: ToolRegistry | None = None, ctx: CallContext | None = None):
        self.registry = registry if registry is not None else ToolRegistry(default_timeout_s=2.0)
        for t in tools:
            self.registry.add(t)
        self.sent: list[FunctionResponse] = []
        self.context = ctx or context()
        self.router = ToolRouter(
            registry=self.registry,
            tools={t.name: t for t in self.registry},
            context=self.context,
            send=self._send,
        )

    def _send(self, responses: Sequence[FunctionResponse]) -> None:
        self.sent.extend(responses)

    def call(self, name: str, call_id: str = "fc-1", **args: Any) -> None:
        self.router.handle(ToolCall((FunctionCall(call_id, name, args),)))

    def answer(self, call_id: str) -> FunctionResponse:
        matching = [r for r in self.sent if r.id == call_id]
        assert len(matching) == 1, f"expected exactly one answer to {call_id}, got {matching}"
        return matching[0]
