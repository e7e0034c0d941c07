"""`gateway tools` and the shipped example tools file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.tools.http import load_tools_file

ROOT = Path(__file__).resolve().parents[2]


def test_tools_command_lists_the_default_tools(capsys: pytest.CaptureFixture[str]) -> None:
    """Without options it prints one line per registered tool, with kind, mode and timeout."""
    assert main(["tools"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == [
        "end_call",
        "transfer_call",
        "send_dtmf",
        "lookup_order",
    ]
    assert lines[3].startswith("lookup_order [python, blocking, 5 s] (order_id):")


def test_tools_command_shows_a_dialplans_declarations(capsys: pytest.CaptureFixture[str]) -> None:
    """--dialplan --json prints exactly what that line's sessions declare, transfer targets included."""
    assert main(["tools", "--dialplan", "support", "--dialplans", str(ROOT / "dialplans"), "--json"]) == 0
    decls = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in decls] == ["end_call", "transfer_call", "lookup_order"]
    assert decls[1]["parameters"]["properties"]["target"]["enum"] == ["agent", "billing"]


def test_tools_command_reports_bad_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A module that cannot be imported is a one-line error and exit status 1."""
    monkeypatch.setenv("GATEWAY_TOOL_MODULES", "no_such_tools_module")
    assert main(["tools"]) == 1
    assert "cannot be imported" in capsys.readouterr().err


def test_example_tools_file_is_valid() -> None:
    """tools.example.toml loads as documented."""
    [made] = load_tools_file(ROOT / "tools.example.toml", env={"TOOL_SHOP_TOKEN": "x" * 12})
    assert made.name == "check_stock"
    assert made.kind == "http"
