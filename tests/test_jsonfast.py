"""gateway.jsonfast: the same results and the same error type with orjson and with the standard library."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from types import ModuleType

import orjson
import pytest

import gateway.jsonfast

CASES = [
    '{"event":"media","media":{"payload":"/w=="},"streamSid":"MZ1"}',
    b'{"serverContent":{"turnComplete":true}}',
    '{"a":[1,2.5,null,false,"\\u00e9"]}',
]
BAD = ["", "{", '{"a":}', "[1,]", b"\xff\xfe"]


@pytest.fixture
def stdlib_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setitem(sys.modules, "orjson", None)  # import orjson -> ImportError
    yield importlib.reload(gateway.jsonfast)
    monkeypatch.undo()
    importlib.reload(gateway.jsonfast)


def test_the_fast_backend_is_what_tests_and_benchmarks_run() -> None:
    assert gateway.jsonfast.BACKEND == "orjson"  # the dev extra installs the fast extra


@pytest.mark.parametrize("text", CASES)
def test_both_backends_agree(text: str | bytes, stdlib_only: ModuleType) -> None:
    assert stdlib_only.BACKEND == "json"
    assert stdlib_only.loads(text) == json.loads(text)
    assert orjson.loads(text) == json.loads(text)


@pytest.mark.parametrize("text", BAD)
def test_bad_input_is_a_value_error_either_way(text: str | bytes, stdlib_only: ModuleType) -> None:
    for loads in (stdlib_only.loads, orjson.loads):
        # The codecs catch ValueError: both raise a subclass (JSONDecodeError, or UnicodeDecodeError).
        with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
            loads(text)
