"""The gateway's own call tools: ``end_call``, ``transfer_call`` and ``send_dtmf``.

They act through :attr:`CallContext.control <gateway.tools.context.CallContext.control>`, so they work
the same on any provider the bridge supports. A dialplan enables them by name like any other tool;
``transfer_call`` only ever dials a number from the plan's ``[transfer]`` table, chosen by target
*name*, and its declaration lists those names so the model cannot invent one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.dialplan.model import Dialplan
from gateway.errors import ToolError
from gateway.tools.context import CallContext
from gateway.tools.dtmf import normalise_digits
from gateway.tools.registry import Tool

__all__ = ["BUILTIN_NAMES", "builtin_tools"]


async def end_call(context: CallContext, reason: str = "") -> dict[str, Any]:
    """End the phone call. Say your goodbye first: the line closes once the caller has heard it.

    Args:
        reason: Why the call is ending, for the call record (e.g. "caller said goodbye").
    """
    context.control.end_call(reason.strip()[:200] or "end_call")
    return {"status": "ending", "note": "The call ends once your goodbye has played. Say nothing more."}


async def transfer_call(context: CallContext, target: str, reason: str = "") -> dict[str, Any]:
    """Transfer the caller to a person or team. Tell the caller first; they are put through once they
    have heard you.

    Args:
        target: Who to transfer to (one of the names listed).
        reason: Why, for the call record.
    """
    number = context.transfer_targets.get(target)
    if number is None:
        names = ", ".join(sorted(context.transfer_targets)) or "none"
        raise ToolError(f"unknown transfer target {target!r}; choose one of: {names}")
    if context.control.ending:
        raise ToolError("the call is already ending")
    context.log.info("transferring call", extra={"target": target, "reason": reason[:200]})
    await context.control.transfer(number, label=target, by="bot")
    return {"status": "transferred", "target": target}


async def send_dtmf(context: CallContext, digits: str) -> dict[str, Any]:
    """Press phone keys: play DTMF tones to the other end, e.g. to navigate an automated menu.

    Args:
        digits: Keys to press, in order: 0-9, *, #, A-D; "w" waits half a second.
    """
    keys = normalise_digits(digits)
    await context.control.send_dtmf(keys)
    return {"status": "sent", "digits": keys}


def _with_targets(tool: Tool, plan: Dialplan) -> Tool:
    """``transfer_call`` for ``plan``: its targets become the ``target`` enum."""
    names = sorted(plan.transfer_targets)
    if not names:
        return tool
    params = dict(tool.parameters)
    props = dict(params["properties"])
    props["target"] = {**props["target"], "enum": names}
    params["properties"] = props
    return replace(tool, parameters=params)


BUILTIN_NAMES = frozenset({"end_call", "transfer_call", "send_dtmf"})


def builtin_tools() -> list[Tool]:
    """Fresh :class:`Tool` objects for the built-ins (timeouts cover waiting for playback)."""
    return [
        Tool.from_function(end_call, timeout_s=5.0, kind="builtin"),
        replace(Tool.from_function(transfer_call, timeout_s=30.0, kind="builtin"), specialize=_with_targets),
        Tool.from_function(send_dtmf, timeout_s=40.0, kind="builtin"),
    ]
