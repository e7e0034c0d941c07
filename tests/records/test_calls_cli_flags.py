"""`gateway calls`: --json after the action, an empty dialplan filter, and turns in time order."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.records.model import TurnRecord
from gateway.records.sqlite import SqliteStore
from gateway.records.store import TurnAdded

from .conftest import call_ops


async def _fill(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    ops = call_ops("CA0001")
    # A caller turn that started before the cut reply but was stored after it (turns are stored as
    # they finish): `show` must still list it in time order.
    late = TurnAdded("CA0001", TurnRecord(9, "caller", "Hello there", 1_700_000_004.2, 1_700_000_006.0))
    await store.write([*ops[:-1], late, ops[-1]])
    await store.close()


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "calls.db"
    asyncio.run(_fill(path))
    return f"sqlite:///{path}"


def test_json_is_accepted_after_the_action(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`calls show ID --json` and `calls list --json` work as `calls --json show ID` does."""
    assert main(["calls", "--database-url", db, "show", "CA0001", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["call_id"] == "CA0001"
    assert main(["calls", "--database-url", db, "list", "--json"]) == 0
    assert [c["call_id"] for c in json.loads(capsys.readouterr().out)] == ["CA0001"]
    assert main(["calls", "--database-url", db, "--json", "show", "CA0001"]) == 0
    assert json.loads(capsys.readouterr().out)["call_id"] == "CA0001"
    assert main(["calls", "--database-url", db, "show", "CA0001"]) == 0
    assert not capsys.readouterr().out.startswith("{")


def test_an_empty_dialplan_filter_says_so(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calls", "--database-url", db, "list", "--dialplan", "sales"]) == 0
    out = capsys.readouterr().out
    assert "no calls for dialplan 'sales'" in out
    assert "recorded yet" not in out


def test_show_lists_turns_in_time_order(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calls", "--database-url", db, "show", "CA0001"]) == 0
    out = capsys.readouterr().out
    texts = ["Hello, how can I help?", "Where is my order?", "Hello there", "Let me look that up"]
    assert [out.index(t) for t in texts] == sorted(out.index(t) for t in texts), out
