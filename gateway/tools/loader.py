"""Build the gateway's tool registry from its settings: built-ins, Python modules, HTTP tools."""

from __future__ import annotations

from gateway.dialplan.store import DialplanStore
from gateway.errors import DialplanError, DialplanErrors
from gateway.settings import Settings
from gateway.tools.builtin import builtin_tools
from gateway.tools.http import load_tools_file
from gateway.tools.registry import ToolRegistry

__all__ = ["adopt_dialplans", "build_registry"]


def build_registry(settings: Settings) -> ToolRegistry:
    """Every tool a dialplan may enable, for ``settings``.

    Order: the built-ins (``end_call``, ``transfer_call``, ``send_dtmf``), then each module of
    ``GATEWAY_TOOL_MODULES``, then the HTTP tools of ``GATEWAY_TOOLS_FILE``. A name defined twice is
    an error, so a business tool can never silently shadow a built-in.

    Raises:
        ConfigError: a module cannot be imported or defines bad tools, or the tools file is wrong.
    """
    registry = ToolRegistry(default_timeout_s=settings.tool_timeout_s)
    for item in builtin_tools():
        registry.add(item)
    for module in settings.tool_modules:
        registry.add_module(module)
    if settings.tools_file is not None:
        for item in load_tools_file(settings.tools_file, env=dict(settings.tool_env)):
            registry.add(item)
    return registry


def adopt_dialplans(store: DialplanStore, registry: ToolRegistry) -> None:
    """Make ``registry`` the authority on tool names for ``store``: now and on every reload.

    Raises:
        DialplanErrors: a plan in force enables a tool the registry does not have (file + field).
    """
    store.known_tools = registry.names()
    problems = [
        DialplanError(str(plan.source), "tools", f"unknown tool {name!r}; registered: {_names(registry)}")
        for plan in store.current.plans
        for name in registry.missing(plan.tools)
    ]
    if problems:
        raise DialplanErrors(problems)


def _names(registry: ToolRegistry) -> str:
    return ", ".join(sorted(registry.names())) or "none"
