"""Loading and validating dialplan files: every field, every error naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.dialplan.loader import load_dialplan, load_dialplans
from gateway.dialplan.model import Action
from gateway.errors import ConfigError, DialplanError, DialplanErrors

from .helpers import MINIMAL_DEFAULT, plan, write

FULL = """\
name = "sales"
numbers = ["+15550100100", "+1555012*"]
callers = ["+1415*"]
model = "models/gemini-3.8-live"
voice = "kore"
language = "ES-us"
system_instruction = "  You sell widgets.  "
greeting = "Greet the caller."
tools = ["end_call", "transfer_call"]

[vad]
start_sensitivity = "high"
end_sensitivity = "low"
silence_duration_ms = 700
prefix_padding_ms = 40

[transcription]
input = false

[transfer]
desk = "+15550100199"

[limits]
max_duration_s = 120
max_duration_warning = "One minute left."
max_duration_action = "transfer"
max_duration_target = "desk"
max_duration_say = "Transferring you now."
silence_timeout_s = 7.5
silence_prompt = "Still there?"
silence_say = "Goodbye."

[fallback]
message = "We are having trouble."
action = "transfer"
target = "desk"

[metadata]
company = "Acme"
hours = { open = 8, close = 18 }
days = ["mon", "tue"]
"""


DESK = '[transfer]\ndesk = "+15550100199"\n'


def _errors(path: Path) -> list[DialplanError]:
    with pytest.raises(DialplanErrors) as info:
        load_dialplan(path)
    return info.value.errors


def test_full_file_loads_every_field(tmp_path: Path) -> None:
    """A complete file maps to the model, with names normalised and transfer targets resolved."""
    p = load_dialplan(write(tmp_path, "sales.toml", FULL))
    assert (p.name, p.source, p.default) == ("sales", tmp_path / "sales.toml", False)
    assert p.numbers == ("+15550100100", "+1555012*")
    assert p.callers == ("+1415*",)
    assert p.model == "gemini-3.8-live"  # "models/" prefix dropped
    assert p.voice == "Kore"  # canonical spelling
    assert p.language == "es-US"  # canonical BCP-47 casing
    assert p.system_instruction == "You sell widgets."
    assert p.greeting == "Greet the caller."
    assert p.tools == ("end_call", "transfer_call")
    assert (p.vad.disabled, p.vad.start_sensitivity, p.vad.end_sensitivity) == (False, "high", "low")
    assert (p.vad.silence_duration_ms, p.vad.prefix_padding_ms) == (700, 40)
    assert (p.transcription.input, p.transcription.output) == (False, True)
    assert dict(p.transfer_targets) == {"desk": "+15550100199"}
    assert p.limits.max_duration_s == 120.0
    assert p.limits.max_duration_warning == "One minute left."
    assert p.limits.warning_at_s == 90.0
    assert p.limits.max_duration_action == Action("transfer", "Transferring you now.", "+15550100199")
    assert (p.limits.silence_timeout_s, p.limits.silence_prompt) == (7.5, "Still there?")
    assert p.limits.silence_action == Action("hangup", "Goodbye.", None)
    assert p.fallback.message == "We are having trouble."
    assert p.fallback.action == Action("transfer", None, "+15550100199")
    assert p.metadata["company"] == "Acme"
    assert p.metadata["hours"]["close"] == 18
    assert p.metadata["days"] == ("mon", "tue")
    assert len(p.version) == 12
    assert int(p.version, 16) >= 0


def test_defaults_when_optional_fields_are_absent(tmp_path: Path) -> None:
    """Name defaults to the file stem; absent settings mean gateway defaults, hang-up actions, no limits."""
    p = load_dialplan(write(tmp_path, "plain.toml", plan('"+15550100100"')))
    assert p.name == "plain"
    assert (p.model, p.voice, p.language, p.greeting) == (None, None, None, None)
    assert p.tools == ()
    assert p.callers == ()
    assert p.vad.start_sensitivity is None
    assert not p.vad.disabled
    assert p.transcription.input
    assert p.transcription.output
    assert p.limits.max_duration_s is None
    assert p.limits.warning_at_s is None
    assert p.limits.max_duration_action.kind == "hangup"
    assert p.fallback.action.kind == "hangup"
    assert p.fallback.message
    assert dict(p.metadata) == {}
    assert dict(p.transfer_targets) == {}


def test_empty_greeting_means_wait_for_the_caller(tmp_path: Path) -> None:
    """An empty greeting is the same as none: the bot waits for the caller to speak."""
    p = load_dialplan(write(tmp_path, "quiet.toml", plan('"+15550100100"', extra='greeting = "  "\n')))
    assert p.greeting is None


def test_metadata_and_targets_are_read_only(tmp_path: Path) -> None:
    """A tool handler cannot change a plan that other calls share."""
    p = load_dialplan(write(tmp_path, "sales.toml", FULL))
    with pytest.raises(TypeError):
        p.metadata["company"] = "Evil"  # type: ignore[index]
    with pytest.raises(TypeError):
        p.transfer_targets["x"] = "+15550100100"  # type: ignore[index]
    with pytest.raises(AttributeError):
        p.voice = "Puck"  # type: ignore[misc]


def test_instruction_file_is_read_relative_to_the_plan_and_versioned(tmp_path: Path) -> None:
    """system_instruction_file is read beside the plan, and editing it changes the version."""
    (tmp_path / "prompts").mkdir()
    write(tmp_path, "prompts/es.md", "Habla español.\n")
    path = write(tmp_path, "es.toml", 'numbers = ["+34*"]\nsystem_instruction_file = "prompts/es.md"\n')
    first = load_dialplan(path)
    assert first.system_instruction == "Habla español."
    assert first.instruction_file == tmp_path / "prompts" / "es.md"
    write(tmp_path, "prompts/es.md", "Habla siempre español.\n")
    assert load_dialplan(path).version != first.version


def test_version_is_stable_for_identical_content(tmp_path: Path) -> None:
    """The same bytes give the same version, so a touch is not a new version."""
    path = write(tmp_path, "a.toml", plan('"+15550100100"'))
    assert load_dialplan(path).version == load_dialplan(path).version


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        pytest.param(
            'numbers = ["+1555*"\nfoo',
            "line 2",
            "invalid TOML: Unclosed array (column 1)",
            id="toml-syntax-with-line",
        ),
        pytest.param('numbers = ["+1555*"\n', "end of file", "Unclosed array", id="toml-syntax-at-end"),
        pytest.param(
            plan('"+15550100100"', extra='voise = "Puck"\n'),
            "voise",
            "did you mean 'voice'",
            id="unknown-key",
        ),
        pytest.param(
            plan('"+1555*"', extra="[vad]\nsilence_ms = 5\n"),
            "vad.silence_ms",
            "did you mean 'silence_duration_ms'",
            id="unknown-nested-key",
        ),
        pytest.param(
            plan('"+1555*"', extra="[limitz]\n"), "limitz", "did you mean 'limits'", id="unknown-table"
        ),
        pytest.param(
            'numbers = "+15550100100"\nsystem_instruction = "x"\n',
            "numbers",
            "array of strings",
            id="numbers-not-array",
        ),
        pytest.param(
            plan("15550100100"), "numbers[0]", "must be a string, not an integer", id="number-not-string"
        ),
        pytest.param(plan('"15550100100"'), "numbers[0]", "E.164", id="number-missing-plus"),
        pytest.param(plan('"+1 555 0100"'), "numbers[0]", "E.164", id="number-with-spaces"),
        pytest.param(plan('"+0555"'), "numbers[0]", "E.164", id="number-leading-zero"),
        pytest.param(plan('"+1555*0"'), "numbers[0]", "E.164", id="star-not-at-end"),
        pytest.param(plan('"+1234567890123456"'), "numbers[0]", "E.164", id="number-too-long"),
        pytest.param(plan('"+15550100100", "+15550100100"'), "numbers[1]", "listed twice", id="number-twice"),
        pytest.param(
            plan('"+1555*"', extra='callers = ["anonymous"]\n'), "callers[0]", "E.164", id="bad-caller"
        ),
        pytest.param('system_instruction = "x"\n', "numbers", "must list the numbers", id="no-numbers"),
        pytest.param(
            plan('"+1555*"', extra='default = "yes"\n'),
            "default",
            "true or false, not a string",
            id="default-not-bool",
        ),
        pytest.param(
            plan('"+1555*"', extra='voice = "Pluck"\n'), "voice", "did you mean 'Puck'", id="bad-voice"
        ),
        pytest.param(
            plan('"+1555*"', extra="voice = 3\n"), "voice", "must be a string", id="voice-not-string"
        ),
        pytest.param(
            plan('"+1555*"', extra='language = "english"\n'), "language", "BCP-47", id="language-shape"
        ),
        pytest.param(
            plan('"+1555*"', extra='language = "es_US"\n'), "language", "BCP-47", id="language-underscore"
        ),
        pytest.param(
            plan('"+1555*"', extra='language = "qq-US"\n'),
            "language",
            "not a Live API language",
            id="language-unknown",
        ),
        pytest.param(
            plan('"+1555*"', extra='model = "Gemini 3.8"\n'),
            "model",
            "not a Gemini model id",
            id="model-shape",
        ),
        pytest.param(
            plan('"+1555*"', extra='model = "gemini-2.0-flash-live-001"\n'),
            "model",
            "shut down",
            id="model-retired",
        ),
        pytest.param(
            'numbers = ["+1555*"]\nsystem_instruction = "a"\nsystem_instruction_file = "a.md"\n',
            "system_instruction",
            "not both",
            id="two-instructions",
        ),
        pytest.param('numbers = ["+1555*"]\n', "system_instruction", "missing", id="no-instruction"),
        pytest.param(
            'numbers = ["+1555*"]\nsystem_instruction = "  "\n',
            "system_instruction",
            "empty",
            id="blank-instruction",
        ),
        pytest.param(
            'numbers = ["+1555*"]\nsystem_instruction_file = "nope.md"\n',
            "system_instruction_file",
            "not found",
            id="missing-instruction-file",
        ),
        pytest.param(
            plan('"+1555*"', extra='tools = ["end_cal"]\n'),
            "tools[0]",
            "did you mean 'end_call'",
            id="unknown-tool",
        ),
        pytest.param(
            plan('"+1555*"', extra='tools = "end_call"\n'), "tools", "array of strings", id="tools-not-array"
        ),
        pytest.param(
            plan('"+1555*"', extra='tools = ["transfer_call"]\n'),
            "tools",
            "needs at least one target",
            id="transfer-tool-without-targets",
        ),
        pytest.param(
            plan('"+1555*"', extra='[vad]\nstart_sensitivity = "medium"\n'),
            "vad.start_sensitivity",
            "'high' or 'low'",
            id="vad-sensitivity",
        ),
        pytest.param(
            plan('"+1555*"', extra="[vad]\nsilence_duration_ms = 1.5\n"),
            "vad.silence_duration_ms",
            "integer, not a float",
            id="vad-float",
        ),
        pytest.param(
            plan('"+1555*"', extra="[vad]\nprefix_padding_ms = -1\n"),
            "vad.prefix_padding_ms",
            "between 0 and",
            id="vad-negative",
        ),
        pytest.param(
            plan('"+1555*"', extra='[vad]\nactivity_handling = "never"\n'),
            "vad.activity_handling",
            "'interrupt' or 'no_interruption'",
            id="vad-bad-activity-handling",
        ),
        pytest.param(
            plan('"+1555*"', extra='[vad]\nturn_coverage = "everything"\n'),
            "vad.turn_coverage",
            "'all_input'",
            id="vad-bad-turn-coverage",
        ),
        pytest.param(
            plan('"+1555*"', extra='[transcription]\nlanguages = ["en-US", "xx-YY"]\n'),
            "transcription.languages[1]",
            "not a Live API language",
            id="transcription-bad-language",
        ),
        pytest.param(
            plan('"+1555*"', extra='[transcription]\ninput = false\noutput = false\nlanguages = ["fr"]\n'),
            "transcription.languages",
            "no effect",
            id="transcription-languages-without-transcription",
        ),
        pytest.param(
            plan('"+1555*"', extra='[thinking]\nlevel = "huge"\n'),
            "thinking.level",
            "'minimal' or 'low'",
            id="thinking-bad-level",
        ),
        pytest.param(
            plan('"+1555*"', extra='[thinking]\nlevel = "low"\nbudget = 100\n'),
            "thinking.budget",
            "not both",
            id="thinking-level-and-budget",
        ),
        pytest.param(
            plan('"+1555*"', extra='model = "gemini-3.8-live"\n[thinking]\nlevel = "low"\n'),
            "thinking",
            "takes no thinking settings",
            id="thinking-on-3.8-live",
        ),
        pytest.param(
            plan(
                '"+1555*"',
                extra='model = "gemini-3.8-live-extended-thinking"\n[thinking]\nlevel = "minimal"\n',
            ),
            "thinking.level",
            "'low' or 'medium' or 'high'",
            id="thinking-minimal-on-extended-thinking",
        ),
        pytest.param(
            plan('"+1555*"', extra='model = "gemini-3.1-flash-live-preview"\n[thinking]\nbudget = 512\n'),
            "thinking.budget",
            "takes a thinking.level",
            id="thinking-budget-on-3.1",
        ),
        pytest.param(
            plan(
                '"+1555*"',
                extra='model = "gemini-2.5-flash-native-audio-preview-12-2025"\n[thinking]\nlevel = "low"\n',
            ),
            "thinking.level",
            "takes a thinking.budget",
            id="thinking-level-on-2.5",
        ),
        pytest.param(
            plan('"+1555*"', extra="google_search = 1\n"), "google_search", "true or false", id="search-type"
        ),
        pytest.param(plan('"+1555*"', extra="vad = 1\n"), "vad", "must be a table", id="vad-not-table"),
        pytest.param(
            plan('"+1555*"', extra="[transcription]\ninput = 1\n"),
            "transcription.input",
            "true or false",
            id="transcription-type",
        ),
        pytest.param(
            plan('"+1555*"', extra="[limits]\nmax_duration_s = true\n"),
            "limits.max_duration_s",
            "number of seconds, not a boolean",
            id="limit-bool",
        ),
        pytest.param(
            plan('"+1555*"', extra="[limits]\nsilence_timeout_s = 0\n"),
            "limits.silence_timeout_s",
            "more than 0",
            id="limit-zero",
        ),
        pytest.param(
            plan('"+1555*"', extra='[limits]\nmax_duration_warning = "x"\n'),
            "limits.max_duration_warning",
            "no effect without limits.max_duration_s",
            id="warning-without-limit",
        ),
        pytest.param(
            plan('"+1555*"', extra='[limits]\nsilence_timeout_s = 5\nsilence_action = "transfer"\n'),
            "limits.silence_target",
            "needs a target",
            id="transfer-action-without-target",
        ),
        pytest.param(
            plan(
                '"+1555*"',
                extra=DESK
                + '[limits]\nsilence_timeout_s = 5\nsilence_action = "transfer"\nsilence_target = "dsk"\n',
            ),
            "limits.silence_target",
            "did you mean 'desk'",
            id="transfer-action-unknown-target",
        ),
        pytest.param(
            plan('"+1555*"', extra='[limits]\nmax_duration_s = 5\nmax_duration_action = "hang up"\n'),
            "limits.max_duration_action",
            "did you mean 'hangup'",
            id="bad-action",
        ),
        pytest.param(
            plan('"+1555*"', extra='[transfer]\ndesk = "+15550100199"\n[fallback]\ntarget = "desk"\n'),
            "fallback.target",
            "only used when",
            id="target-without-transfer",
        ),
        pytest.param(
            plan('"+1555*"', extra='[fallback]\naction = "transfer"\n'),
            "fallback.target",
            "needs a target",
            id="fallback-transfer-without-target",
        ),
        pytest.param(
            plan('"+1555*"', extra='[transfer]\ndesk = "555-0199"\n'),
            "transfer.desk",
            "E.164",
            id="transfer-bad-number",
        ),
        pytest.param(
            plan('"+1555*"', extra='[transfer]\n"front desk" = "+15550100199"\n'),
            "transfer.front desk",
            "target names",
            id="transfer-bad-name",
        ),
        pytest.param(
            plan('"+1555*"', extra='metadata = "x"\n'), "metadata", "must be a table", id="metadata-not-table"
        ),
        pytest.param(plan('"+1555*"', extra='name = "my plan"\n'), "name", "letters, digits", id="bad-name"),
        pytest.param(
            MINIMAL_DEFAULT + 'callers = ["+1415*"]\n', "callers", "default plan", id="callers-on-default"
        ),
    ],
)
def test_invalid_field_is_reported_with_file_and_field(
    tmp_path: Path, text: str, field: str, fragment: str
) -> None:
    """Each kind of mistake is reported as FILE: FIELD: why, with a useful reason."""
    path = write(tmp_path, "bad.toml", text)
    errors = _errors(path)
    assert any(e.field == field and fragment in e.problem for e in errors), [str(e) for e in errors]
    assert all(e.file == str(path) for e in errors)
    assert all(str(e).startswith(f"{path}: {e.field}: ") for e in errors)


def test_one_file_reports_all_its_problems(tmp_path: Path) -> None:
    """Every problem in a file is reported at once, not just the first."""
    path = write(tmp_path, "bad.toml", 'numbers = ["x"]\nvoice = "Nobody"\nlanguage = "??"\ncolour = "red"\n')
    fields = {e.field for e in _errors(path)}
    assert fields == {"numbers[0]", "voice", "language", "colour", "system_instruction"}


def test_dialplan_errors_are_config_errors_listing_every_problem(tmp_path: Path) -> None:
    """DialplanErrors belongs to the one error tree and its message lists each problem."""
    path = write(tmp_path, "bad.toml", 'numbers = ["x"]\nvoice = "Nobody"\nsystem_instruction = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_dialplan(path)
    assert isinstance(info.value, DialplanErrors)
    text = str(info.value)
    assert text.startswith("2 dialplan problems:")
    assert f"{path}: numbers[0]:" in text
    assert f"{path}: voice:" in text


def test_unreadable_and_non_utf8_files_are_errors_not_crashes(tmp_path: Path) -> None:
    """A missing file or binary junk is a clear DialplanError."""
    assert _errors(tmp_path / "missing.toml")[0].field == "(file)"
    junk = tmp_path / "junk.toml"
    junk.write_bytes(b"\xff\xfe\x00garbage")
    assert "UTF-8" in _errors(junk)[0].problem


def test_an_oversized_plan_or_instruction_file_is_refused_unread(tmp_path: Path) -> None:
    """A dialplan is a prompt, not a data dump: files over 256 KiB are errors naming the file."""
    big = write(tmp_path, "big.toml", MINIMAL_DEFAULT + "# " + "x" * 300_000 + "\n")
    (error,) = _errors(big)
    assert (error.field, error.problem) == ("(file)", "cannot read: larger than 256 KiB")
    (tmp_path / "prompt.md").write_text("y" * 300_000)
    with_file = write(tmp_path, "with_file.toml", 'default = true\nsystem_instruction_file = "prompt.md"\n')
    (error,) = _errors(with_file)
    assert error.field == "system_instruction_file"
    assert "larger than 256 KiB" in error.problem


# -- the folder -------------------------------------------------------------------------------------


def test_folder_loads_into_a_book(tmp_path: Path) -> None:
    """A folder with one default and other plans loads; hidden files are ignored."""
    write(tmp_path, "default.toml", MINIMAL_DEFAULT)
    write(tmp_path, "a.toml", plan('"+15550100100"'))
    write(tmp_path, ".#a.toml", "junk = ")
    write(tmp_path, "notes.md", "not a plan")
    book = load_dialplans(tmp_path)
    assert [p.name for p in book.plans] == ["a", "default"]
    assert book.default.name == "default"
    assert book.match("+15550100100").name == "a"


def test_same_number_with_different_callers_is_allowed(tmp_path: Path) -> None:
    """A VIP plan may claim a number another plan claims, as long as the caller constraint differs."""
    write(tmp_path, "default.toml", MINIMAL_DEFAULT)
    write(tmp_path, "a.toml", plan('"+15550100100"'))
    write(tmp_path, "vip.toml", plan('"+15550100100"', extra='callers = ["+1415*"]\n'))
    book = load_dialplans(tmp_path)
    assert book.match("+15550100100", "+14155550000").name == "vip"


def test_duplicate_number_across_files(tmp_path: Path) -> None:
    """A number claimed by two files is reported against the second file, naming the first."""
    write(tmp_path, "default.toml", MINIMAL_DEFAULT)
    write(tmp_path, "a.toml", plan('"+15550100100"'))
    write(tmp_path, "b.toml", plan('"+15550100100"'))
    with pytest.raises(DialplanErrors) as info:
        load_dialplans(tmp_path)
    (error,) = info.value.errors
    assert (error.file, error.field) == (str(tmp_path / "b.toml"), "numbers")
    assert str(tmp_path / "a.toml") in error.problem


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    """Two plans with the same name would make logs ambiguous, so that is an error."""
    write(tmp_path, "default.toml", MINIMAL_DEFAULT)
    write(tmp_path, "a.toml", plan('"+1555*"', extra='name = "x"\n'))
    write(tmp_path, "b.toml", plan('"+1666*"', extra='name = "x"\n'))
    with pytest.raises(DialplanErrors) as info:
        load_dialplans(tmp_path)
    assert [(Path(e.file).name, e.field) for e in info.value.errors] == [("b.toml", "name")]


def test_no_default(tmp_path: Path) -> None:
    """A folder without a default plan is refused: unmatched calls would have nowhere to go."""
    write(tmp_path, "a.toml", plan('"+15550100100"'))
    with pytest.raises(DialplanErrors) as info:
        load_dialplans(tmp_path)
    assert [(e.file, e.field) for e in info.value.errors] == [(str(tmp_path), "default")]


def test_two_defaults(tmp_path: Path) -> None:
    """Two default plans are refused, naming both files."""
    write(tmp_path, "a.toml", MINIMAL_DEFAULT)
    write(tmp_path, "b.toml", MINIMAL_DEFAULT)
    with pytest.raises(DialplanErrors) as info:
        load_dialplans(tmp_path)
    (error,) = info.value.errors
    assert (error.file, error.field) == (str(tmp_path / "b.toml"), "default")
    assert str(tmp_path / "a.toml") in error.problem


def test_every_problem_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    """Problems in several files and between files all come back in one DialplanErrors."""
    write(tmp_path, "default.toml", MINIMAL_DEFAULT)
    write(tmp_path, "a.toml", plan('"+15550100100"', extra='voice = "Nobody"\n'))
    write(tmp_path, "b.toml", 'numbers = ["+1555*"\nfoo')
    write(tmp_path, "c.toml", plan('"+15550100101"'))
    write(tmp_path, "d.toml", plan('"+15550100101"', extra="[vad]\nsilence_duration_ms = -5\n"))
    write(tmp_path, "e.toml", plan('"+15550100101"'))
    with pytest.raises(DialplanErrors) as info:
        load_dialplans(tmp_path)
    found = {(Path(e.file).name, e.field) for e in info.value.errors}
    assert found == {
        ("a.toml", "voice"),
        ("b.toml", "line 2"),
        ("d.toml", "vad.silence_duration_ms"),
        ("e.toml", "numbers"),
    }


def test_broken_default_file_does_not_also_report_no_default(tmp_path: Path) -> None:
    """When the default file itself is broken, the report names its problem, not a spurious 'no default'."""
    write(tmp_path, "default.toml", MINIMAL_DEFAULT + 'voice = "Nobody"\n')
    write(tmp_path, "a.toml", plan('"+15550100100"'))
    with pytest.raises(DialplanErrors) as info:
        load_dialplans(tmp_path)
    assert [e.field for e in info.value.errors] == ["voice"]


def test_default_file_with_a_toml_syntax_error_does_not_also_report_no_default(tmp_path: Path) -> None:
    """A TOML syntax error hides whether the file was the default: report the syntax error alone."""
    write(tmp_path, "default.toml", MINIMAL_DEFAULT + 'voice = "Puck\n')
    write(tmp_path, "a.toml", plan('"+15550100100"'))
    with pytest.raises(DialplanErrors) as info:
        load_dialplans(tmp_path)
    assert [Path(e.file).name for e in info.value.errors] == ["default.toml"]
    assert "invalid TOML" in info.value.errors[0].problem
    assert "default = true" not in str(info.value)


def test_missing_or_empty_folder(tmp_path: Path) -> None:
    """A missing folder or one without plans is a clear error, not a crash."""
    with pytest.raises(DialplanErrors, match="not a directory"):
        load_dialplans(tmp_path / "nope")
    with pytest.raises(DialplanErrors, match=r"no \*\.toml dialplan files"):
        load_dialplans(tmp_path)


def test_known_tools_can_be_replaced(tmp_path: Path) -> None:
    """The tools registry can pass its own names; a tool outside them is refused."""
    path = write(tmp_path, "a.toml", plan('"+1555*"', extra='tools = ["book_table"]\n'))
    assert load_dialplan(path, known_tools={"book_table"}).tools == ("book_table",)
    with pytest.raises(DialplanErrors, match="unknown tool 'book_table'"):
        load_dialplan(path)


def test_turn_control_languages_thinking_and_search_are_read(tmp_path: Path) -> None:
    """[vad] turn control, transcription languages, [thinking] and google_search reach the plan."""
    path = write(
        tmp_path,
        "p.toml",
        plan(
            '"+1555*"',
            extra=(
                'model = "gemini-3.8-live-extended-thinking"\ngoogle_search = true\n'
                "[vad]\ndisabled = true\nsilence_duration_ms = 700\nprefix_padding_ms = 40\n"
                'activity_handling = "no_interruption"\nturn_coverage = "all_input"\n'
                '[transcription]\nlanguages = ["es-us", "en-US"]\n'
                '[thinking]\nlevel = "medium"\n'
            ),
        ),
    )
    loaded = load_dialplan(path)
    assert loaded.vad.disabled
    assert (loaded.vad.silence_duration_ms, loaded.vad.prefix_padding_ms) == (700, 40)
    assert loaded.vad.activity_handling == "no_interruption"
    assert loaded.vad.turn_coverage == "all_input"
    assert loaded.transcription.languages == ("es-US", "en-US")  # canonical BCP-47 casing
    assert loaded.thinking.level == "medium"
    assert loaded.google_search


def test_thinking_is_checked_against_the_model_only_when_the_plan_names_one(tmp_path: Path) -> None:
    """Without a model of its own a plan may carry any thinking setting: the gateway's model decides
    at call time which one applies (gateway/gemini/messages.py drops the others)."""
    path = write(tmp_path, "p.toml", plan('"+1555*"', extra="[thinking]\nbudget = 0\n"))
    assert load_dialplan(path).thinking.budget == 0
