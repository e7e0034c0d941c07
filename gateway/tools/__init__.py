"""Tool calls: business handlers the model can call, and the router that answers every call once.

* :mod:`~gateway.tools.registry` — :class:`Tool`, :class:`ToolRegistry` and the :func:`tool` decorator.
* :mod:`~gateway.tools.schema` — parameter schemas from type hints and docstrings; argument checks.
* :mod:`~gateway.tools.router` — :class:`ToolRouter`: one per call, exactly one answer per call.
* :mod:`~gateway.tools.context` — :class:`CallContext` handed to handlers; :class:`CallControl`.
* :mod:`~gateway.tools.http` — HTTP tools declared in a TOML file.
* :mod:`~gateway.tools.builtin` — ``end_call``, ``transfer_call``, ``send_dtmf``.
* :mod:`~gateway.tools.twilio_rest` — the Twilio REST requests behind transfer and hang-up.
"""

from gateway.errors import ToolError
from gateway.tools.context import FUNCTION_CALL_ID, CallContext, CallControl
from gateway.tools.registry import Scheduling, Tool, ToolRegistry, tool, tools_in_module
from gateway.tools.router import ToolCallRecord, ToolRouter

__all__ = [
    "FUNCTION_CALL_ID",
    "CallContext",
    "CallControl",
    "Scheduling",
    "Tool",
    "ToolCallRecord",
    "ToolError",
    "ToolRegistry",
    "ToolRouter",
    "tool",
    "tools_in_module",
]
