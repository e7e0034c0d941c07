"""Matching: which plan answers a call, by dialled number and caller."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from gateway.dialplan.model import Dialplan, DialplanBook, pattern_matches
from gateway.errors import DialplanErrors


def _plan(
    name: str, numbers: tuple[str, ...] = (), callers: tuple[str, ...] = (), default: bool = False
) -> Dialplan:
    return Dialplan(
        name=name,
        version="0" * 12,
        source=Path(f"{name}.toml"),
        numbers=numbers,
        callers=callers,
        default=default,
    )


@pytest.fixture
def book() -> DialplanBook:
    return DialplanBook(
        [
            _plan("default", default=True),
            _plan("us", ("+1*",)),
            _plan("area", ("+1555*",)),
            _plan("exchange", ("+1555010*",)),
            _plan("support", ("+15550100100",)),
            _plan("vip", ("+15550100100",), callers=("+1415*",)),
            _plan("ceo", ("+15550100100",), callers=("+14155550100",)),
            _plan("vip-area", ("+1555*",), callers=("+1212*",)),
        ]
    )


def test_exact_number_beats_prefix(book: DialplanBook) -> None:
    """An exact dialled number wins over every prefix that also matches it."""
    assert book.match("+15550100100").name == "support"


def test_longest_prefix_wins(book: DialplanBook) -> None:
    """Among prefix patterns, the longest matching one wins."""
    assert book.match("+15550100999").name == "exchange"
    assert book.match("+15559999999").name == "area"
    assert book.match("+12125550100").name == "us"


def test_unmatched_number_gets_default(book: DialplanBook) -> None:
    """A number no plan claims gets the explicit default plan."""
    assert book.match("+442071234567") is book.default
    assert book.match("anonymous").name == "default"
    assert book.match("").name == "default"


def test_caller_constraint_beats_plain_plan_for_same_number(book: DialplanBook) -> None:
    """A VIP caller gets the caller-constrained plan; others and unknown callers get the plain one."""
    assert book.match("+15550100100", "+14155550123").name == "vip"
    assert book.match("+15550100100", "+12125550123").name == "support"
    assert book.match("+15550100100", None).name == "support"


def test_exact_caller_beats_caller_prefix(book: DialplanBook) -> None:
    """Among caller constraints, an exact caller number beats a caller prefix."""
    assert book.match("+15550100100", "+14155550100").name == "ceo"


def test_dialled_specificity_comes_before_caller_constraint(book: DialplanBook) -> None:
    """A caller constraint only breaks ties: a longer dialled match without callers still wins."""
    # vip-area (+1555* for +1212 callers) loses to exchange (+1555010*) for a +1212 caller.
    assert book.match("+15550100999", "+12125550000").name == "exchange"
    # …but beats plain area (+1555*) for the same dialled match.
    assert book.match("+15559999999", "+12125550000").name == "vip-area"


def test_caller_only_plan_falls_through_when_caller_differs() -> None:
    """When the only plan for a number needs other callers, matching continues to wider patterns."""
    book = DialplanBook(
        [_plan("default", default=True), _plan("vip", ("+15550100100",), callers=("+1415*",))]
    )
    assert book.match("+15550100100", "+12125550123").name == "default"
    assert book.match("+15550100100", "+14155550123").name == "vip"


def test_match_ignores_surrounding_whitespace(book: DialplanBook) -> None:
    """Numbers with stray whitespace (hand-typed test requests) still match."""
    assert book.match(" +15550100100 ", " +14155550123\n").name == "vip"


def test_book_requires_exactly_one_default() -> None:
    """A book with no default, or two, is refused with the field named."""
    with pytest.raises(DialplanErrors) as info:
        DialplanBook([_plan("a", ("+1555*",))])
    assert [e.field for e in info.value.errors] == ["default"]
    with pytest.raises(DialplanErrors) as info:
        DialplanBook([_plan("a", default=True), _plan("b", default=True)])
    assert [(e.file, e.field) for e in info.value.errors] == [("b.toml", "default")]


def test_book_refuses_a_number_claimed_twice() -> None:
    """The same number (or pattern) with the same caller constraint in two plans is an error."""
    with pytest.raises(DialplanErrors) as info:
        DialplanBook([_plan("d", default=True), _plan("a", ("+1555*",)), _plan("b", ("+1555*",))])
    (error,) = info.value.errors
    assert (error.file, error.field) == ("b.toml", "numbers")
    assert "'+1555*'" in error.problem
    assert "a.toml" in error.problem


def test_book_refuses_overlapping_caller_claims() -> None:
    """Two plans sharing a caller pattern for the same number would tie, so that is an error too."""
    with pytest.raises(DialplanErrors) as info:
        DialplanBook(
            [
                _plan("d", default=True),
                _plan("a", ("+15550100100",), callers=("+1415*",)),
                _plan("b", ("+15550100100",), callers=("+1212*", "+1415*")),
            ]
        )
    (error,) = info.value.errors
    assert "'+1415*'" in error.problem


def test_pattern_matches() -> None:
    """A trailing '*' matches any continuation (including none); other patterns match exactly."""
    assert pattern_matches("+1555*", "+15550100100")
    assert pattern_matches("+1555*", "+1555")
    assert not pattern_matches("+1555*", "+1556")
    assert pattern_matches("+1555", "+1555")
    assert not pattern_matches("+1555", "+15551")


# Reference model: rank every candidate explicitly and take the best.
_DIGITS = st.text(alphabet="12", min_size=1, max_size=4)


def _rank(pattern: str) -> tuple[int, int]:
    return (0, len(pattern)) if pattern.endswith("*") else (1, len(pattern))


def _reference(plans: list[Dialplan], default: Dialplan, dialled: str, caller: str | None) -> Dialplan:
    best: tuple[tuple[int, int], tuple[int, int, int], Dialplan] | None = None
    for plan in plans:
        for number in plan.numbers:
            if not pattern_matches(number, dialled):
                continue
            for pattern in plan.callers or (None,):
                if pattern is None:
                    crank = (0, 0, 0)
                elif caller is not None and pattern_matches(pattern, caller):
                    crank = (1, *_rank(pattern))
                else:
                    continue
                key = (_rank(number), crank, plan)
                if best is None or key[:2] > best[:2]:
                    best = key
    return default if best is None else best[2]


@settings(max_examples=200, deadline=None)
@given(
    claims=st.dictionaries(
        st.tuples(
            st.builds(lambda d, star: "+" + d + ("*" if star else ""), _DIGITS, st.booleans()),
            st.one_of(
                st.none(), st.builds(lambda d, star: "+" + d + ("*" if star else ""), _DIGITS, st.booleans())
            ),
        ),
        st.integers(0, 1000),
        max_size=12,
    ),
    dialled=st.builds(lambda d: "+" + d, _DIGITS),
    caller=st.one_of(st.none(), st.builds(lambda d: "+" + d, _DIGITS)),
)
def test_match_agrees_with_a_brute_force_ranking(
    claims: dict[tuple[str, str | None], int], dialled: str, caller: str | None
) -> None:
    """The indexed matcher picks the same plan as ranking every matching claim explicitly."""
    default = _plan("default", default=True)
    plans = [
        _plan(f"p{i}", (number,), () if who is None else (who,)) for i, (number, who) in enumerate(claims)
    ]
    book = DialplanBook([default, *plans])
    assert book.match(dialled, caller) is _reference(plans, default, dialled, caller)
