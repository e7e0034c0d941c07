"""`gateway dialplans check`, and the example dialplans shipped in dialplans/."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway import cli as gateway_cli
from gateway.dialplan import cli
from gateway.dialplan.loader import load_dialplans

from .helpers import MINIMAL_DEFAULT, plan, write

EXAMPLES = Path(__file__).resolve().parents[2] / "dialplans"


def _run(directory: Path) -> int:
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    return cli.run(parser.parse_args(["check", str(directory)]))


def test_check_reports_every_problem_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad folder prints FILE: FIELD: why for each problem and exits 1."""
    write(tmp_path, "default.toml", MINIMAL_DEFAULT)
    bad = write(
        tmp_path, "bad.toml", plan('"+15550100100"', extra='voice = "Nobody"\n[vad]\nsilence_ms = 3\n')
    )
    assert _run(tmp_path) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert f"{bad}: voice: 'Nobody' is not a Gemini prebuilt voice" in lines
    assert f"{bad}: vad.silence_ms: unknown key (did you mean 'silence_duration_ms'?)" in lines
    assert "2 problems" in err


def test_check_summarises_a_good_folder_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A good folder prints one line per plan with name, version, numbers, voice, language, tools."""
    write(tmp_path, "default.toml", MINIMAL_DEFAULT)
    write(
        tmp_path,
        "a.toml",
        plan('"+15550100100"', extra='voice = "Kore"\nlanguage = "en-US"\ntools = ["end_call"]\n'),
    )
    assert _run(tmp_path) == 0
    lines = capsys.readouterr().out.splitlines()
    version = load_dialplans(tmp_path).get("a").version  # type: ignore[union-attr]
    assert lines[0] == f"a version={version} numbers=+15550100100 voice=Kore language=en-US tools=end_call"
    assert lines[1].startswith("default version=")
    assert "numbers=- (default)" in lines[1]


def test_check_through_the_gateway_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`gateway dialplans check dialplans` passes on the shipped examples."""
    assert gateway_cli.main(["dialplans", "check", str(EXAMPLES)]) == 0
    out = capsys.readouterr().out
    assert {line.split()[0] for line in out.splitlines()} == {
        "default",
        "reminders",
        "spanish",
        "support",
        "support-vip",
    }


def test_check_on_a_missing_folder_is_an_error_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong path gives exit 1 and a clear line, not a traceback."""
    assert _run(tmp_path / "missing") == 1
    assert "(directory): not a directory" in capsys.readouterr().out


def test_shipped_examples_load_and_route() -> None:
    """The example dialplans load and route support, VIP, Spanish and unknown numbers as documented."""
    book = load_dialplans(EXAMPLES)
    assert book.default.name == "default"
    assert book.match("+15550100100").name == "support"
    assert book.match("+15550100100", "+15550100177").name == "support-vip"
    assert book.match("+34911234567").name == "spanish"
    assert book.match("+15550100150").name == "spanish"
    assert book.match("+442071234567").name == "default"
    support = book.match("+15550100101")
    assert "lookup_order" in support.tools
    assert support.metadata["company"] == "Acme Widgets"
    assert support.fallback.action.target == support.transfer_targets["agent"]
    spanish = book.match("+34911234567")
    assert spanish.language == "es-US"
    assert spanish.instruction_file == EXAMPLES / "spanish.prompt.md"
    assert "ESPAÑOL" in spanish.system_instruction
    reminders = book.get("reminders")  # outbound only: it answers no number
    assert reminders is not None
    assert reminders.outbound is not None
    assert reminders.outbound.params == ("customer_name", "appointment")
    assert "{customer_name}" in reminders.outbound.instruction_template
