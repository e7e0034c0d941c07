"""The registry: decorated modules, built-ins, per-dialplan declarations, names checked at start-up."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from gateway.dialplan.store import DialplanStore
from gateway.errors import ConfigError, DialplanErrors
from gateway.handlers import support
from gateway.settings import Settings
from gateway.tools import CallContext, Tool, ToolRegistry, tool, tools_in_module
from gateway.tools.builtin import BUILTIN_NAMES
from gateway.tools.loader import adopt_dialplans, build_registry
from gateway.tools.registry import model_behaviour


def write_plan(directory: Path, name: str, text: str) -> None:
    (directory / f"{name}.toml").write_text(text)


SUPPORT_PLAN = """
name = "support"
numbers = ["+15550100100"]
system_instruction = "Help."
tools = ["end_call", "transfer_call", "lookup_order", "send_dtmf"]
[transfer]
agent = "+15550100199"
billing = "+15550100198"
"""


def test_decorated_function_stays_callable_and_is_found_in_its_module() -> None:
    """@tool returns the function unchanged and tools_in_module finds it, in definition order."""
    module = types.ModuleType("biz")

    @tool(timeout_s=3, non_blocking=True, scheduling="SILENT")
    def first(x: int) -> int:
        """First."""
        return x

    @tool
    async def second(context: CallContext) -> str:
        """Second."""
        return context.call_id

    module.first, module.second, module.helper = first, second, len  # type: ignore[attr-defined]
    assert first(2) == 2
    found = tools_in_module(module)
    assert [t.name for t in found] == ["first", "second"]
    assert (found[0].timeout_s, found[0].non_blocking, found[0].scheduling) == (3, True, "SILENT")
    assert found[1].is_async
    assert found[1].context_param == "context"
    registry = ToolRegistry()
    assert [t.name for t in registry.add_module(module)] == ["first", "second"]


def test_explicit_schema_and_bad_tools_are_rejected() -> None:
    """Explicit schemas are checked; duplicate names, empty descriptions and bad modules fail."""

    def handler(**kwargs: object) -> None:
        """Anything."""

    made = Tool.from_function(handler, name="any", parameters={"type": "object", "properties": {}})
    assert made.parameters == {"type": "OBJECT", "properties": {}}
    registry = ToolRegistry()
    registry.add(made)
    with pytest.raises(ConfigError, match="registered twice"):
        registry.add(made)
    with pytest.raises(ConfigError, match="needs a description"):
        Tool.from_function(lambda: None, name="silent", parameters={"type": "OBJECT"})
    with pytest.raises(ConfigError, match="cannot be imported"):
        registry.add_module("no_such_module_for_tools")
    with pytest.raises(ConfigError, match="defines no @tool functions"):
        registry.add_module("gateway.errors")


def test_default_registry_has_the_builtins_and_the_support_example() -> None:
    """build_registry offers end_call, transfer_call, send_dtmf and the shipped lookup_order."""
    registry = build_registry(Settings())
    assert registry.names() == BUILTIN_NAMES | {"lookup_order"}
    assert registry.get("lookup_order") is not None


def test_session_tools_follow_the_plan_and_list_its_transfer_targets(tmp_path: Path) -> None:
    """Only the plan's tools are declared; transfer_call's target is an enum of the plan's targets."""
    write_plan(tmp_path, "default", 'default = true\nsystem_instruction = "Hi."\n')
    write_plan(tmp_path, "support", SUPPORT_PLAN)
    registry = build_registry(Settings())
    store = DialplanStore(tmp_path, known_tools=registry.names())
    plan = store.current.match("+15550100100")
    decls = registry.declarations_for(plan, "gemini-3.8-live")
    assert [d.name for d in decls] == ["end_call", "transfer_call", "lookup_order", "send_dtmf"]
    transfer = next(d for d in decls if d.name == "transfer_call")
    assert transfer.parameters is not None
    assert transfer.parameters["properties"]["target"]["enum"] == ["agent", "billing"]
    assert registry.declarations_for(store.current.default, "gemini-3.8-live") == ()


def test_model_support_decides_non_blocking() -> None:
    """gemini-3.1 runs blocking functions only; the extended-thinking model only non-blocking ones."""
    assert model_behaviour("gemini-3.8-live", True) is True
    assert model_behaviour("gemini-3.8-live", False) is False
    assert model_behaviour("models/gemini-3.1-flash-live-preview", True) is False
    assert model_behaviour("gemini-3.8-live-extended-thinking", False) is True


def test_dialplans_are_checked_against_the_registry(tmp_path: Path) -> None:
    """A plan naming a tool the registry lacks fails with its file and field, also on reload."""
    write_plan(tmp_path, "default", 'default = true\nsystem_instruction = "Hi."\ntools = ["lookup_order"]\n')
    store = DialplanStore(tmp_path)  # the fallback names accept lookup_order
    registry = ToolRegistry()
    with pytest.raises(DialplanErrors, match=r"default\.toml: tools: unknown tool 'lookup_order'"):
        adopt_dialplans(store, registry)
    assert store.known_tools == frozenset()
    assert store.reload() is False
    assert not store.healthy


def test_support_handler_module_is_loadable_by_name() -> None:
    """The shipped example module registers lookup_order with a derived schema."""
    registry = ToolRegistry()
    [lookup] = registry.add_module("gateway.handlers.support")
    assert lookup.name == "lookup_order"
    assert not lookup.is_async
    assert lookup.parameters["required"] == ["order_id"]
    assert support.lookup_order is not None
