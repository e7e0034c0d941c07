"""Tool parameter schemas: derived from Python signatures, checked, and used to validate arguments.

Gemini declares function parameters in an OpenAPI subset (docs/gemini-live.md §6): a keyword outside it
fails the whole ``setup`` with close 1007, so every schema (derived or declared by hand) is checked
against :data:`KEYWORDS` when a tool is registered, at start-up, not on a live call.

Arguments arrive as a protobuf ``Struct``, where every number is a double: ``INTEGER`` parameters
therefore accept integral floats (``5.0``) and hand the handler an ``int``. Validation returns the
problems as short sentences the model can act on ("order_id: expected a string, got a number").

Rules: this module does no I/O; :func:`validate` never raises for bad *arguments*, only
:class:`~gateway.errors.ConfigError` for bad *schemas*, at registration.
"""

from __future__ import annotations

import enum
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gateway.errors import ConfigError

__all__ = [
    "KEYWORDS",
    "TYPES",
    "Signature",
    "check_schema",
    "parse_docstring",
    "resolve_hints",
    "signature_schema",
    "validate",
]

#: The Schema keywords Gemini accepts in function declarations (its OpenAPI subset).
KEYWORDS = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "properties", "required",
        "items", "minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength",
        "pattern", "minimum", "maximum", "default", "example", "anyOf", "propertyOrdering",
    }
)  # fmt: skip
TYPES = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"})
#: The longest argument path or value quoted back to the model in an error.
_QUOTE = 40


# --------------------------------------------------------------------------------------------------
# Checking declared schemas
# --------------------------------------------------------------------------------------------------


def check_schema(schema: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Return ``schema`` with type names upper-cased, or raise :class:`ConfigError` naming the problem.

    The top level of a tool's parameters must be an ``OBJECT``.
    """
    checked = _check(schema, where)
    if checked.get("type") != "OBJECT":
        raise ConfigError(f"{where}: the parameters schema must have type OBJECT")
    return checked


def _check(schema: Any, where: str) -> dict[str, Any]:
    if not isinstance(schema, Mapping):
        raise ConfigError(f"{where}: a schema must be a table/object, not {type(schema).__name__}")
    unknown = sorted(set(schema) - KEYWORDS)
    if unknown:
        raise ConfigError(
            f"{where}: {', '.join(unknown)} not supported by Gemini function declarations"
            f" (allowed: {', '.join(sorted(KEYWORDS))})"
        )
    out: dict[str, Any] = dict(schema)
    kind = schema.get("type")
    if kind is None and "anyOf" not in schema:
        raise ConfigError(f"{where}: missing 'type'")
    if kind is not None:
        if not isinstance(kind, str) or kind.upper() not in TYPES:
            raise ConfigError(f"{where}: type must be one of {', '.join(sorted(TYPES))}, not {kind!r}")
        out["type"] = kind = kind.upper()
    if "properties" in schema:
        props = schema["properties"]
        if not isinstance(props, Mapping):
            raise ConfigError(f"{where}.properties: must be a table/object")
        out["properties"] = {str(k): _check(v, f"{where}.properties.{k}") for k, v in props.items()}
    if "required" in schema:
        required = schema["required"]
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ConfigError(f"{where}.required: must be a list of property names")
        missing = [r for r in required if r not in out.get("properties", {})]
        if missing:
            raise ConfigError(f"{where}.required: {', '.join(missing)} not in properties")
    if "items" in schema:
        out["items"] = _check(schema["items"], f"{where}.items")
    elif kind == "ARRAY":
        raise ConfigError(f"{where}: an ARRAY needs 'items'")
    if "anyOf" in schema:
        options = schema["anyOf"]
        if not isinstance(options, list) or not options:
            raise ConfigError(f"{where}.anyOf: must be a non-empty list of schemas")
        out["anyOf"] = [_check(o, f"{where}.anyOf[{i}]") for i, o in enumerate(options)]
    if "enum" in schema:
        values = schema["enum"]
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise ConfigError(f"{where}.enum: must be a non-empty list of strings (Gemini enums are strings)")
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError) as exc:
            raise ConfigError(f"{where}.pattern: not a valid regular expression: {exc}") from exc
    if "description" in schema and not isinstance(schema["description"], str):
        raise ConfigError(f"{where}.description: must be a string")
    return out


# --------------------------------------------------------------------------------------------------
# Deriving schemas from Python functions
# --------------------------------------------------------------------------------------------------

_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Returns?|Raises|Yields?|Examples?|Notes?|See Also):\s*$"
)
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into (description, {parameter: description}).

    The description is the text before the first section header, with lines joined; parameter
    descriptions come from the ``Args:`` section, continuation lines included.
    """
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    base_indent: int | None = None
    for line in lines:
        stripped = line.strip()
        header = _SECTION.match(stripped) if not line.startswith((" ", "\t")) else None
        if header:
            section = header.group(1).lower()
            current, base_indent = None, None
            continue
        if section is None:
            summary.append(stripped)
            continue
        if section not in ("args", "arguments", "parameters", "params") or not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if base_indent is None:
            base_indent = indent
        match = _ARG_LINE.match(stripped) if indent <= base_indent else None
        if match:
            current = match.group(1).lstrip("*")
            params[current] = match.group(2).strip()
        elif current is not None:
            params[current] = f"{params[current]} {stripped}".strip()
    return re.sub(r"\s+", " ", " ".join(summary)).strip(), params


@dataclass(frozen=True, slots=True)
class Signature:
    """What registering a function learns from it."""

    description: str
    parameters: dict[str, Any]
    #: The parameter that receives the call context, if the function asks for it.
    context_param: str | None
    #: Parameters whose validated JSON value is converted before the call (e.g. to an Enum member).
    converters: Mapping[str, Callable[[Any], Any]]


def resolve_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """``fn``'s evaluated type hints; an annotation that cannot be evaluated stays a string."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        # One unresolvable hint (e.g. a TYPE_CHECKING-only import) should not hide the others.
        hints: dict[str, Any] = {}
        module_globals = getattr(fn, "__globals__", {})
        for name, raw in getattr(fn, "__annotations__", {}).items():
            if isinstance(raw, str):
                try:
                    # What get_type_hints does: the function's own annotation, in its own module.
                    hints[name] = eval(raw, module_globals)
                except Exception:
                    hints[name] = raw
            else:
                hints[name] = raw
        return hints


def signature_schema(fn: Callable[..., Any], *, is_context: Callable[[Any], bool], where: str) -> Signature:
    """Derive a tool's description and OBJECT parameter schema from ``fn``'s hints and docstring.

    Supported hints: ``str``, ``int``, ``float``, ``bool``, ``list[T]``/``tuple[T, ...]``,
    ``dict``/``Mapping``, ``Literal["a", "b"]``, string ``Enum`` subclasses, ``T | None`` and
    ``Annotated[T, "description"]``. A parameter annotated with the call-context type receives the
    context and is left out of the schema. Parameters with defaults are optional.

    Raises:
        ConfigError: a parameter has no usable hint, or cannot be passed by keyword.
    """
    description, docs = parse_docstring(inspect.getdoc(fn))
    hints = resolve_hints(fn)
    properties: dict[str, Any] = {}
    required: list[str] = []
    context_param: str | None = None
    converters: dict[str, Callable[[Any], Any]] = {}
    for param in inspect.signature(fn).parameters.values():
        here = f"{where}: parameter {param.name!r}"
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ConfigError(f"{here}: tool parameters must be passable by keyword (no *args/**kwargs)")
        hint = hints.get(param.name, inspect.Parameter.empty)
        if is_context(hint):
            context_param = param.name
            continue
        if hint is inspect.Parameter.empty:
            raise ConfigError(f"{here}: needs a type hint so its schema can be derived")
        schema, convert = _hint_schema(hint, here)
        doc = docs.get(param.name)
        if doc and "description" not in schema:
            schema["description"] = doc
        properties[param.name] = schema
        if convert is not None:
            converters[param.name] = convert
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
    parameters: dict[str, Any] = {"type": "OBJECT", "properties": properties}
    if required:
        parameters["required"] = required
    return Signature(description, check_schema(parameters, where), context_param, converters)


_SCALARS: dict[Any, str] = {str: "STRING", int: "INTEGER", float: "NUMBER", bool: "BOOLEAN"}


def _hint_schema(hint: Any, where: str) -> tuple[dict[str, Any], Callable[[Any], Any] | None]:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        schema, convert = _hint_schema(args[0], where)
        for extra in args[1:]:
            if isinstance(extra, str):
                schema["description"] = extra
            elif isinstance(extra, Mapping):
                schema.update(extra)  # explicit keywords, checked with the whole schema
        return schema, convert
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise ConfigError(f"{where}: unions other than `T | None` are not supported")
        schema, convert = _hint_schema(rest[0], where)
        if len(rest) != len(args):
            schema["nullable"] = True
        return schema, convert
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}, None
    if origin is typing.Literal:
        if not all(isinstance(a, str) for a in args):
            raise ConfigError(f"{where}: Literal values must be strings (Gemini enums are strings)")
        return {"type": "STRING", "enum": list(args)}, None
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        values = [m.value for m in hint]
        if not all(isinstance(v, str) for v in values):
            raise ConfigError(f"{where}: Enum values must be strings")
        return {"type": "STRING", "enum": values}, hint
    if origin in (list, Sequence, tuple) or hint in (list, tuple):
        if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):
            raise ConfigError(f"{where}: only tuple[T, ...] is supported")
        if not args:
            raise ConfigError(f"{where}: say what the list holds, e.g. list[str]")
        items, _ = _hint_schema(args[0], where)
        return {"type": "ARRAY", "items": items}, (tuple if origin is tuple else None)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return {"type": "OBJECT"}, None
    raise ConfigError(f"{where}: unsupported type hint {hint!r}")


# --------------------------------------------------------------------------------------------------
# Validating arguments
# --------------------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


@lru_cache(maxsize=256)
def _pattern(expr: str) -> re.Pattern[str]:
    return re.compile(expr)


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTE else text[: _QUOTE - 1] + "…"


def validate(schema: Mapping[str, Any], value: Any, path: str = "") -> tuple[Any, list[str]]:
    """Check ``value`` against a checked schema; return (coerced value, problems).

    Problems name the argument path. Integral floats become ints for ``INTEGER``; nothing else is
    converted. Properties not in ``properties`` are rejected (a handler could not accept them).
    """
    problems: list[str] = []
    result = _validate(schema, value, path, problems)
    return result, problems


def _validate(schema: Mapping[str, Any], value: Any, path: str, problems: list[str]) -> Any:
    where = path or "arguments"
    if value is None:
        if schema.get("nullable") or schema.get("type") == "NULL":
            return None
        problems.append(f"{where}: must not be null")
        return None
    if "anyOf" in schema:
        for option in schema["anyOf"]:
            attempt: list[str] = []
            coerced = _validate(option, value, path, attempt)
            if not attempt:
                return coerced
        problems.append(f"{where}: matches none of the allowed forms")
        return value
    kind = schema.get("type")
    if kind == "STRING":
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, got {_kind(value)}")
            return value
        enum_values = schema.get("enum")
        if enum_values is not None and value not in enum_values:
            problems.append(f"{where}: {_quote(value)} is not one of {', '.join(enum_values)}")
        if "minLength" in schema and len(value) < int(schema["minLength"]):
            problems.append(f"{where}: must be at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > int(schema["maxLength"]):
            problems.append(f"{where}: must be at most {schema['maxLength']} characters")
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            problems.append(f"{where}: {_quote(value)} does not match the pattern {schema['pattern']}")
        return value
    if kind in ("INTEGER", "NUMBER"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{where}: expected a number, got {_kind(value)}")
            return value
        if kind == "INTEGER":
            if isinstance(value, float):
                if not value.is_integer():
                    problems.append(f"{where}: expected a whole number, got {value}")
                    return value
                value = int(value)
        elif value != value or value in (float("inf"), float("-inf")):
            problems.append(f"{where}: expected a finite number")
            return value
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where}: must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where}: must be at most {schema['maximum']}")
        return value
    if kind == "BOOLEAN":
        if not isinstance(value, bool):
            problems.append(f"{where}: expected true or false, got {_kind(value)}")
        return value
    if kind == "ARRAY":
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {_kind(value)}")
            return value
        if "minItems" in schema and len(value) < int(schema["minItems"]):
            problems.append(f"{where}: needs at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > int(schema["maxItems"]):
            problems.append(f"{where}: takes at most {schema['maxItems']} items")
        items = schema.get("items")
        if items is None:
            return value
        return [_validate(items, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if kind == "OBJECT":
        if not isinstance(value, dict):
            problems.append(f"{where}: expected an object, got {_kind(value)}")
            return value
        props: Mapping[str, Any] | None = schema.get("properties")
        for name in schema.get("required", ()):
            if name not in value:
                problems.append(f"{_join(path, name)}: missing (required)")
        if props is None:
            return value
        out: dict[str, Any] = {}
        for name, item in value.items():
            sub = props.get(name)
            if sub is None:
                allowed = ", ".join(props) or "none"
                problems.append(f"{_join(path, str(name))}: unexpected argument (allowed: {allowed})")
                continue
            out[name] = _validate(sub, item, _join(path, name), problems)
        return out
    return value


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
