"""The tool registry: named handlers, their schemas, and what each dialplan's session declares.

A :class:`Tool` is a name, a description, an OBJECT parameter schema (checked against Gemini's
subset when it is made) and a handler: a plain function, async or not. Functions become tools with
the :func:`tool` decorator (schema from type hints and the ``Args:`` docstring section) or with an
explicit ``parameters`` schema; HTTP tools come from configuration (:mod:`gateway.tools.http`).

A dialplan enables tools by name; :meth:`ToolRegistry.session_tools` picks them for one Live session,
lets a tool adapt its declaration to the plan (``transfer_call`` lists the plan's targets) and
applies what the model supports: ``gemini-3.1-*`` only runs blocking functions, the 3.8
extended-thinking model only non-blocking ones (docs/gemini-live.md §6, §7.1).
"""

from __future__ import annotations

import concurrent.futures
import importlib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from gateway.dialplan.model import Dialplan
from gateway.errors import ConfigError
from gateway.gemini.messages import FunctionDeclaration
from gateway.gemini.models import capabilities
from gateway.tools.context import CallContext
from gateway.tools.schema import check_schema, parse_docstring, resolve_hints, signature_schema

if TYPE_CHECKING:
    from gateway.tools.router import ToolCallRecord

__all__ = ["Handler", "Scheduling", "Tool", "ToolKind", "ToolRegistry", "tool", "tools_in_module"]

Scheduling = Literal["INTERRUPT", "WHEN_IDLE", "SILENT"]
ToolKind = Literal["python", "http", "builtin"]
Handler = Callable[..., Any]
F = TypeVar("F", bound=Callable[..., Any])

_SCHEDULINGS = ("INTERRUPT", "WHEN_IDLE", "SILENT")
_ATTRIBUTE = "__gateway_tool__"
#: Default per-tool time limit when neither the tool nor the settings give one.
DEFAULT_TIMEOUT_S = 10.0


def _is_context(hint: Any) -> bool:
    if hint is CallContext:
        return True
    # An annotation we could not resolve (e.g. imported under TYPE_CHECKING) still counts by name.
    return isinstance(hint, str) and hint.rsplit(".", 1)[-1] == "CallContext"


@dataclass(frozen=True, slots=True)
class Tool:
    """One function the model may call.

    ``handler`` is called with the validated arguments as keywords, plus the call context as
    ``context_param`` when set. ``timeout_s`` ``None`` means the registry's default.
    ``non_blocking`` is False (the default) for a tool the model must wait for — its answer decides
    what the model says next, or it acts on the call (``end_call``, ``transfer_call``): such a tool is
    declared ``BLOCKING`` wherever the model allows it, because on 3.8 Live an undeclared behaviour
    means NON_BLOCKING. ``scheduling`` is how the answer of a NON_BLOCKING call is delivered.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    handler: Handler
    timeout_s: float | None = None
    non_blocking: bool = False
    scheduling: Scheduling = "WHEN_IDLE"
    context_param: str | None = None
    kind: ToolKind = "python"
    #: Converters for validated values, by parameter (an Enum class turns its value into a member).
    converters: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    #: Adapts the tool to a dialplan (e.g. list its transfer targets); ``None`` keeps it as is.
    specialize: Callable[[Tool, Dialplan], Tool] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or len(self.name) > 64:
            raise ConfigError(f"tool {self.name!r}: names are 1-64 letters, digits and '_'")
        if not self.description.strip():
            raise ConfigError(f"tool {self.name!r}: needs a description (the model reads it)")
        if self.scheduling not in _SCHEDULINGS:
            raise ConfigError(f"tool {self.name!r}: scheduling must be one of {', '.join(_SCHEDULINGS)}")
        if self.timeout_s is not None and not 0 < self.timeout_s <= 600:
            raise ConfigError(f"tool {self.name!r}: timeout_s must be in (0, 600]")
        object.__setattr__(self, "parameters", check_schema(self.parameters, f"tool {self.name!r}"))

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.handler)

    def declaration(self) -> FunctionDeclaration:
        """How the model sees this tool."""
        return FunctionDeclaration(
            name=self.name,
            description=self.description,
            parameters=self.parameters,
            non_blocking=self.non_blocking,
        )

    @classmethod
    def from_function(
        cls,
        fn: Handler,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        non_blocking: bool = False,
        scheduling: Scheduling = "WHEN_IDLE",
        kind: ToolKind = "python",
    ) -> Tool:
        """Make a tool of ``fn``; the schema is derived unless ``parameters`` is given.

        Raises:
            ConfigError: the signature cannot be described, or the explicit schema is invalid.
        """
        tool_name = name or str(getattr(fn, "__name__", ""))
        converters: Mapping[str, Callable[[Any], Any]] = {}
        schema: Mapping[str, Any]
        if parameters is None:
            derived = signature_schema(fn, is_context=_is_context, where=f"tool {tool_name!r}")
            doc, schema, context_param = derived.description, derived.parameters, derived.context_param
            converters = derived.converters
        else:
            # An explicit schema: the handler takes the arguments as it likes (e.g. **kwargs).
            doc, schema = parse_docstring(inspect.getdoc(fn))[0], parameters
            context_param = next((n for n, h in resolve_hints(fn).items() if _is_context(h)), None)
        return cls(
            name=tool_name,
            description=description or doc,
            parameters=schema,
            handler=fn,
            timeout_s=timeout_s,
            non_blocking=non_blocking,
            scheduling=scheduling,
            context_param=context_param,
            kind=kind,
            converters=converters,
        )


@overload
def tool(fn: F, /) -> F: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
    non_blocking: bool = False,
    scheduling: Scheduling = "WHEN_IDLE",
) -> Callable[[F], F]: ...


def tool(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
    non_blocking: bool = False,
    scheduling: Scheduling = "WHEN_IDLE",
) -> F | Callable[[F], F]:
    """Mark a function as a tool; :meth:`ToolRegistry.add_module` picks it up.

    The function is returned unchanged (still callable and testable on its own); the schema is
    derived and checked now, so a bad signature fails at import, not on a call.
    """

    def mark(func: F) -> F:
        made = Tool.from_function(
            func,
            name=name,
            description=description,
            parameters=parameters,
            timeout_s=timeout_s,
            non_blocking=non_blocking,
            scheduling=scheduling,
        )
        setattr(func, _ATTRIBUTE, made)
        return func

    return mark(fn) if fn is not None else mark


def tools_in_module(module: ModuleType) -> list[Tool]:
    """The tools a module marked with :func:`tool`, in definition order."""
    return [t for v in vars(module).values() if isinstance(t := getattr(v, _ATTRIBUTE, None), Tool)]


def model_behaviour(model: str, non_blocking: bool) -> bool:
    """Whether a tool wanting ``non_blocking`` runs NON_BLOCKING on ``model`` (gateway/gemini/models.py):
    extended thinking only runs non-blocking tools (BLOCKING is a hard error there), 3.1 only blocking."""
    return capabilities(model).runs_non_blocking(non_blocking)


class ToolRegistry:
    """Every tool the gateway offers, by name. Built once per app; read-only while calls run."""

    def __init__(
        self,
        *,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
        max_result_bytes: int = 16_384,
        sync_workers: int = 8,
    ) -> None:
        if default_timeout_s <= 0:
            raise ConfigError("tool default timeout must be > 0")
        self.default_timeout_s = default_timeout_s
        #: Larger answers are refused: big tool responses have made Live sessions fail (docs/peers.md §3.8).
        self.max_result_bytes = max_result_bytes
        self._tools: dict[str, Tool] = {}
        self._sync_workers = sync_workers
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        #: Called with every finished tool call (metrics, call records); must not raise or block.
        self.observers: list[Callable[[CallContext, ToolCallRecord], None]] = []

    # --- building ------------------------------------------------------------------------------
    def add(self, item: Tool) -> Tool:
        """Add a tool. Raises :class:`ConfigError` when the name is taken."""
        if item.name in self._tools:
            raise ConfigError(f"tool {item.name!r} is registered twice")
        self._tools[item.name] = item
        return item

    def register(self, fn: Handler, **options: Any) -> Tool:
        """Add a function as a tool (``options`` as for :meth:`Tool.from_function`)."""
        made = getattr(fn, _ATTRIBUTE, None) if not options else None
        return self.add(made if isinstance(made, Tool) else Tool.from_function(fn, **options))

    def add_module(self, module: ModuleType | str) -> list[Tool]:
        """Import ``module`` (a name or a module) and add every function it marked with :func:`tool`.

        Raises:
            ConfigError: the module cannot be imported, or marks no tools.
        """
        if isinstance(module, str):
            try:
                module = importlib.import_module(module)
            except ImportError as exc:
                raise ConfigError(f"tool module {module!r} cannot be imported: {exc}") from exc
        found = tools_in_module(module)
        if not found:
            raise ConfigError(f"tool module {module.__name__!r} defines no @tool functions")
        return [self.add(t) for t in found]

    # --- reading -------------------------------------------------------------------------------
    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> frozenset[str]:
        return frozenset(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def session_tools(self, plan: Dialplan, model: str) -> dict[str, Tool]:
        """The tools ``plan`` enables, as declared to ``model`` (unknown names are skipped)."""
        chosen: dict[str, Tool] = {}
        for name in plan.tools:
            item = self._tools.get(name)
            if item is None:
                continue
            if item.specialize is not None:
                item = item.specialize(item, plan)
            wanted = model_behaviour(model, item.non_blocking)
            if wanted != item.non_blocking:
                item = replace(item, non_blocking=wanted)
            chosen[name] = item
        return chosen

    def declarations_for(self, plan: Dialplan, model: str) -> tuple[FunctionDeclaration, ...]:
        """The ``functionDeclarations`` of a session on ``plan`` with ``model``."""
        return tuple(t.declaration() for t in self.session_tools(plan, model).values())

    def missing(self, names: Iterable[str]) -> list[str]:
        """Which of ``names`` are not registered."""
        return [n for n in names if n not in self._tools]

    # --- running sync handlers -----------------------------------------------------------------
    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """Threads for sync handlers, separate from the loop's default pool (used for file reads)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._sync_workers, thread_name_prefix="tool"
            )
        return self._executor

    def close(self) -> None:
        """Stop the sync-handler threads (running handlers finish; queued ones are dropped)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
