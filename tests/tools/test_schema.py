"""Schemas from Python signatures, the Gemini keyword subset, and argument validation."""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import pytest

from gateway.errors import ConfigError
from gateway.tools.context import CallContext
from gateway.tools.schema import check_schema, parse_docstring, signature_schema, validate


def _is_context(hint: object) -> bool:
    return hint is CallContext


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def sample(
    context: CallContext,
    order_id: str,
    quantity: int,
    colour: Colour,
    size: Literal["S", "M", "L"] = "M",
    gift: bool = False,
    price: float | None = None,
    tags: list[str] | None = None,
    note: Annotated[str, "Free text for the courier."] = "",
) -> None:
    """Place an order for a widget.

    Extra detail after a blank line.

    Args:
        order_id: The order number,
            read out by the caller.
        quantity: How many.
        colour: Which colour.

    Returns:
        Nothing.
    """


def test_schema_is_derived_from_hints_and_docstring() -> None:
    """Types, enums, optionality and Args descriptions become an OBJECT schema; the context is hidden."""
    sig = signature_schema(sample, is_context=_is_context, where="tool 'sample'")
    assert sig.description == "Place an order for a widget. Extra detail after a blank line."
    assert sig.context_param == "context"
    props = sig.parameters["properties"]
    assert "context" not in props
    assert props["order_id"] == {"type": "STRING", "description": "The order number, read out by the caller."}
    assert props["quantity"]["type"] == "INTEGER"
    assert props["colour"] == {"type": "STRING", "enum": ["red", "blue"], "description": "Which colour."}
    assert props["size"] == {"type": "STRING", "enum": ["S", "M", "L"]}
    assert props["gift"] == {"type": "BOOLEAN"}
    assert props["price"] == {"type": "NUMBER", "nullable": True}
    assert props["tags"] == {"type": "ARRAY", "items": {"type": "STRING"}, "nullable": True}
    assert props["note"] == {"type": "STRING", "description": "Free text for the courier."}
    assert sig.parameters["required"] == ["order_id", "quantity", "colour"]
    assert sig.converters["colour"]("red") is Colour.RED


def test_parse_docstring_without_sections() -> None:
    """A docstring with no Args section is all description."""
    assert parse_docstring("Say hello.\n\n  Politely.") == ("Say hello. Politely.", {})
    assert parse_docstring(None) == ("", {})


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("def f(x): ...", "needs a type hint"),
        ("def f(*args: int): ...", "passable by keyword"),
        ("def f(x: int | str): ...", "unions"),
        ("def f(x: Literal[1, 2]): ...", "Literal values must be strings"),
        ("def f(x: set[int]): ...", "unsupported type hint"),
        ("def f(x: list): ...", "say what the list holds"),
    ],
)
def test_undescribable_signatures_fail_at_registration(source: str, problem: str) -> None:
    """A signature that cannot become a schema raises ConfigError naming the parameter."""
    namespace: dict[str, object] = {"Literal": Literal}
    exec(source, namespace)
    with pytest.raises(ConfigError, match=problem):
        signature_schema(namespace["f"], is_context=_is_context, where="tool 'f'")  # type: ignore[arg-type]


def test_check_schema_normalises_types_and_rejects_unsupported_keywords() -> None:
    """Lower-case JSON-schema types are accepted; keywords Gemini rejects (1007) fail at start-up."""
    checked = check_schema(
        {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]}, "t"
    )
    assert checked == {"type": "OBJECT", "properties": {"sku": {"type": "STRING"}}, "required": ["sku"]}
    with pytest.raises(ConfigError, match="additionalProperties not supported"):
        check_schema({"type": "object", "additionalProperties": False}, "t")
    with pytest.raises(ConfigError, match="must have type OBJECT"):
        check_schema({"type": "string"}, "t")
    with pytest.raises(ConfigError, match="not in properties"):
        check_schema({"type": "object", "properties": {}, "required": ["x"]}, "t")
    with pytest.raises(ConfigError, match="needs 'items'"):
        check_schema({"type": "object", "properties": {"a": {"type": "array"}}}, "t")
    with pytest.raises(ConfigError, match="Gemini enums are strings"):
        check_schema({"type": "object", "properties": {"a": {"type": "integer", "enum": [1]}}}, "t")


SCHEMA = check_schema(
    {
        "type": "OBJECT",
        "properties": {
            "order_id": {"type": "STRING", "pattern": "^A[0-9]{4}$"},
            "quantity": {"type": "INTEGER", "minimum": 1, "maximum": 10},
            "size": {"type": "STRING", "enum": ["S", "M"]},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 2},
            "gift": {"type": "BOOLEAN"},
            "note": {"type": "STRING", "nullable": True},
        },
        "required": ["order_id", "quantity"],
    },
    "t",
)


def test_valid_arguments_pass_and_integral_floats_become_ints() -> None:
    """Struct numbers arrive as doubles: 2.0 is a valid INTEGER and reaches the handler as 2."""
    value, problems = validate(SCHEMA, {"order_id": "A1001", "quantity": 2.0, "note": None, "tags": ["x"]})
    assert problems == []
    assert value == {"order_id": "A1001", "quantity": 2, "note": None, "tags": ["x"]}
    assert isinstance(value["quantity"], int)


def test_invalid_arguments_are_listed_for_the_model() -> None:
    """Every problem names the argument and what was wrong, so the model can retry correctly."""
    _, problems = validate(
        SCHEMA,
        {"order_id": 1001, "size": "XL", "tags": ["a", 2, "c"], "gift": "yes", "colour": "red"},
    )
    assert "order_id: expected a string, got a number" in problems
    assert "quantity: missing (required)" in problems
    assert "size: 'XL' is not one of S, M" in problems
    assert "tags: takes at most 2 items" in problems
    assert "tags[1]: expected a string, got a number" in problems
    assert "gift: expected true or false, got a string" in problems
    assert any(p.startswith("colour: unexpected argument") for p in problems)


def test_range_pattern_and_whole_number_checks() -> None:
    """minimum/maximum, pattern and non-integral numbers are reported."""
    _, problems = validate(SCHEMA, {"order_id": "B1", "quantity": 2.5})
    assert problems == [
        "order_id: 'B1' does not match the pattern ^A[0-9]{4}$",
        "quantity: expected a whole number, got 2.5",
    ]
    _, problems = validate(SCHEMA, {"order_id": "A1001", "quantity": 11})
    assert problems == ["quantity: must be at most 10"]
    _, problems = validate(SCHEMA, "not an object")
    assert problems == ["arguments: expected an object, got a string"]
