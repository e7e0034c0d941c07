"""Reading and validating dialplan TOML files.

Sans-I/O apart from reading files: no event loop, no network. Validation collects *every*
problem of every file before raising one :class:`~gateway.errors.DialplanErrors`, so an operator
fixes a directory in one pass. Each problem names the file and the field (``vad.start_sensitivity``,
``numbers[2]``), and unknown keys get a "did you mean" suggestion: a typo must never silently
turn a setting off.
"""

from __future__ import annotations

import difflib
import errno
import hashlib
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, cast

from gateway.dialplan.model import (
    KNOWN_TOOLS,
    LANGUAGES,
    RETIRED_MODELS,
    VOICES,
    Action,
    ActionKind,
    ActivityHandling,
    Dialplan,
    DialplanBook,
    Fallback,
    Limits,
    Recording,
    Sensitivity,
    Thinking,
    ThinkingLevel,
    Transcription,
    TurnCoverage,
    Vad,
    book_problems,
)
from gateway.dialplan.outbound import parse_outbound
from gateway.errors import DialplanError, DialplanErrors
from gateway.gemini.models import capabilities

__all__ = ["DialplanBook", "dialplan_files", "load_dialplan", "load_dialplans"]

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_PREFIX = re.compile(r"\+[1-9][0-9]{0,13}\*")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_TOOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MODEL = re.compile(r"[a-z0-9][a-z0-9.-]{0,127}")
# BCP-47 as Live uses it: language[-Script][-REGION], e.g. "es-US", "zh-Hant-TW", "es-419".
_LANGUAGE = re.compile(r"([A-Za-z]{2,3})(?:-([A-Za-z]{4}))?(?:-([A-Za-z]{2}|[0-9]{3}))?")
_TOML_LINE = re.compile(r"\(at line (\d+), column (\d+)\)")
_TOML_WHERE = re.compile(r"\(at [^)]*\)")

_TOP_KEYS = (
    "name", "numbers", "callers", "default", "model", "voice", "language", "system_instruction",
    "system_instruction_file", "greeting", "tools", "vad", "transcription", "limits", "transfer",
    "fallback", "metadata", "recording", "thinking", "google_search", "outbound",
)  # fmt: skip
_VAD_KEYS = (
    "disabled", "start_sensitivity", "end_sensitivity", "silence_duration_ms", "prefix_padding_ms",
    "activity_handling", "turn_coverage",
)  # fmt: skip
_TRANSCRIPTION_KEYS = ("input", "output", "languages")
_THINKING_KEYS = ("level", "budget")
_ACTIVITY_HANDLINGS: tuple[ActivityHandling, ...] = ("interrupt", "no_interruption")
_TURN_COVERAGES: tuple[TurnCoverage, ...] = ("only_activity", "all_input", "audio_activity_and_all_video")
_THINKING_LEVELS: tuple[ThinkingLevel, ...] = ("minimal", "low", "medium", "high")
_MAX_DURATION_KEYS = (
    "max_duration_warning",
    "max_duration_action",
    "max_duration_target",
    "max_duration_say",
)
_SILENCE_KEYS = ("silence_prompt", "silence_action", "silence_target", "silence_say")
_LIMITS_KEYS = ("max_duration_s", *_MAX_DURATION_KEYS, "silence_timeout_s", *_SILENCE_KEYS)
_FALLBACK_KEYS = ("message", "action", "target")
_RECORDING_KEYS = ("enabled", "retention_days")
_ACTIONS: tuple[ActionKind, ...] = ("hangup", "transfer")
_SENSITIVITIES: tuple[Sensitivity, ...] = ("high", "low")
_VOICES_BY_LOWER = {v.lower(): v for v in VOICES}

T = TypeVar("T")


def _kind(value: object) -> str:
    """How TOML spells the type of ``value``, for error messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _suggest(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(word.lower(), [c.lower() for c in choices], n=1, cutoff=0.6)
        close = [next(c for c in choices if c.lower() == close[0])] if close else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def _freeze(value: Any) -> Any:
    """Read-only copy of TOML data: tables become mapping proxies, arrays tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


class _Check:
    """Typed getters over one file's TOML that record problems instead of raising."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[DialplanError] = []

    def error(self, field: str, problem: str) -> None:
        self.errors.append(DialplanError(self.file, field, problem))

    def keys(self, table: Mapping[str, Any], allowed: Collection[str], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                self.error(prefix + key, "unknown key" + _suggest(key, allowed))

    def table(self, data: Mapping[str, Any], key: str, prefix: str = "") -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.error(prefix + key, f"must be a table ([{key}]), not {_kind(value)}")
            return {}
        return value

    def typed(
        self, data: Mapping[str, Any], key: str, prefix: str, types: tuple[type, ...], what: str
    ) -> Any:
        """The value, or None when absent or of the wrong type (recorded). bool is never an int here."""
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
            self.error(prefix + key, f"must be {what}, not {_kind(value)}")
            return None
        return value

    def string(
        self, data: Mapping[str, Any], key: str, prefix: str = "", *, blank_ok: bool = False
    ) -> str | None:
        value = self.typed(data, key, prefix, (str,), "a string")
        if value is not None and not value.strip():
            if not blank_ok:
                self.error(prefix + key, "must not be empty")
            return None
        return cast("str | None", value)

    def boolean(self, data: Mapping[str, Any], key: str, prefix: str, default: bool) -> bool:
        value = self.typed(data, key, prefix, (bool,), "true or false")
        return default if value is None else bool(value)

    def integer(self, data: Mapping[str, Any], key: str, prefix: str, low: int, high: int) -> int | None:
        value = self.typed(data, key, prefix, (int,), "an integer")
        if value is not None and not low <= value <= high:
            self.error(prefix + key, f"must be between {low} and {high}, not {value}")
            return None
        return cast("int | None", value)

    def seconds(self, data: Mapping[str, Any], key: str, prefix: str) -> float | None:
        value = self.typed(data, key, prefix, (int, float), "a number of seconds")
        if value is not None and not 0 < value <= 86_400:
            self.error(prefix + key, f"must be more than 0 and at most 86400 seconds, not {value}")
            return None
        return None if value is None else float(value)

    def choice(self, data: Mapping[str, Any], key: str, prefix: str, choices: tuple[T, ...]) -> T | None:
        value = self.string(data, key, prefix)
        if value is None:
            return None
        if value not in choices:
            listed = " or ".join(repr(c) for c in choices)
            self.error(
                prefix + key, f"must be {listed}, not {value!r}" + _suggest(value, [str(c) for c in choices])
            )
            return None
        return choices[choices.index(value)]

    def strings(
        self, data: Mapping[str, Any], key: str, each: Callable[[str, str], str | None], prefix: str = ""
    ) -> tuple[str, ...]:
        """An array of strings, each checked by ``each(field, value)``; duplicates are errors."""
        value = data.get(key, [])
        if not isinstance(value, list):
            self.error(prefix + key, f"must be an array of strings, not {_kind(value)}")
            return ()
        out: list[str] = []
        for i, item in enumerate(value):
            field = f"{prefix}{key}[{i}]"
            if not isinstance(item, str):
                self.error(field, f"must be a string, not {_kind(item)}")
                continue
            checked = each(field, item.strip())
            if checked is None:
                continue
            if checked in out:
                self.error(field, f"{checked!r} is listed twice")
                continue
            out.append(checked)
        return tuple(out)


def _number_or_pattern(check: _Check) -> Callable[[str, str], str | None]:
    def each(field: str, value: str) -> str | None:
        if _E164.fullmatch(value) or _PREFIX.fullmatch(value):
            return value
        check.error(
            field,
            f"{value!r} is neither an E.164 number like '+15550100123' nor a prefix pattern like '+1555*'"
            " ('+', country code and digits only, no spaces; '*' only at the end)",
        )
        return None

    return each


def _language(check: _Check, value: str, field: str = "language") -> str | None:
    match = _LANGUAGE.fullmatch(value)
    if match is None:
        check.error(field, f"{value!r} is not a BCP-47 code like 'en-US', 'es-US' or 'fr'")
        return None
    primary, script, region = match.groups()
    primary = primary.lower()
    if primary not in LANGUAGES:
        check.error(
            field,
            f"{primary!r} is not a Live API language (the list: LANGUAGES in gateway/dialplan/model.py)"
            + _suggest(primary, LANGUAGES),
        )
        return None
    # Canonical BCP-47 casing, so logs and the setup message agree whatever the file wrote.
    return "-".join(p for p in (primary, script and script.title(), region and region.upper()) if p)


def _action(
    check: _Check,
    data: Mapping[str, Any],
    prefix: str,
    keys: tuple[str, str, str | None],
    targets: Mapping[str, str],
) -> Action:
    kind_key, target_key, say_key = keys
    kind = check.choice(data, kind_key, prefix, _ACTIONS) or "hangup"
    say = check.string(data, say_key, prefix, blank_ok=True) if say_key else None
    target_name = check.string(data, target_key, prefix)
    target: str | None = None
    if kind == "transfer":
        if target_name is None:
            if target_key not in data:
                check.error(prefix + target_key, f"{prefix}{kind_key} = 'transfer' needs a target name")
        elif target_name not in targets:
            known = ", ".join(sorted(targets)) or "none defined"
            check.error(
                prefix + target_key,
                f"{target_name!r} is not a [transfer] target (known: {known})"
                + _suggest(target_name, targets),
            )
        else:
            target = targets[target_name]
    elif target_name is not None:
        check.error(prefix + target_key, f"only used when {prefix}{kind_key} = 'transfer'")
    return Action(kind, say, target)


#: A dialplan (or its instruction file) larger than this is a mistake, not a prompt: it would be read,
#: parsed and hashed on every reload, and sent to Gemini with every call.
MAX_FILE_BYTES = 256 * 1024


def _read_bounded(path: Path) -> bytes:
    """The file's bytes; OSError(EFBIG) when it is over :data:`MAX_FILE_BYTES` (read no further)."""
    with path.open("rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise OSError(errno.EFBIG, f"larger than {MAX_FILE_BYTES // 1024} KiB")
    return raw


def _read_instruction(check: _Check, source: Path, relative: str) -> tuple[str, bytes, Path | None]:
    path = source.parent / relative
    try:
        raw = _read_bounded(path)
    except FileNotFoundError:
        check.error("system_instruction_file", f"{relative!r} not found (looked for {path})")
        return "", b"", None
    except OSError as exc:
        check.error("system_instruction_file", f"cannot read {path}: {exc.strerror or exc}")
        return "", b"", None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        check.error("system_instruction_file", f"{path} is not UTF-8 text")
        return "", b"", None
    if not text.strip():
        check.error("system_instruction_file", f"{path} is empty")
    return text.strip(), raw, path


@dataclass(slots=True)
class _Parsed:
    plan: Dialplan | None
    errors: list[DialplanError]
    #: Whether the file asked to be the default, even if it failed: avoids a spurious "no default".
    declared_default: bool
    #: False when the file could not be read or parsed at all: whether it declared the default is unknown,
    #: so "no plan has default = true" would be a guess stacked on the file's own error.
    parsed: bool = True


def _parse(path: Path, known_tools: Collection[str]) -> _Parsed:
    check = _Check(str(path))
    try:
        raw = _read_bounded(path)
    except OSError as exc:
        check.error("(file)", f"cannot read: {exc.strerror or exc}")
        return _Parsed(None, check.errors, False, parsed=False)
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        check.error("(file)", "not UTF-8 text")
        return _Parsed(None, check.errors, False, parsed=False)
    except tomllib.TOMLDecodeError as exc:
        # tomllib puts the position in the message: "(at line 3, column 9)" or "(at end of document)".
        message = str(exc)
        where = _TOML_LINE.search(message)
        if where:
            field, column = f"line {where.group(1)}", f" (column {where.group(2)})"
        else:
            field, column = ("end of file" if "end of document" in message else "(syntax)"), ""
        reason = _TOML_WHERE.sub("", message).strip()
        check.error(field, f"invalid TOML: {reason}{column}")
        return _Parsed(None, check.errors, False, parsed=False)
    return _validate(check, path, raw, data, known_tools)


def _validate(
    check: _Check, path: Path, raw: bytes, data: dict[str, Any], known_tools: Collection[str]
) -> _Parsed:
    check.keys(data, _TOP_KEYS, "")
    name = check.string(data, "name")
    if name is None:
        name = path.stem
    elif not _NAME.fullmatch(name):
        check.error("name", f"{name!r} must be 1-64 letters, digits, '_', '.' or '-' (it appears in logs)")
    default = check.boolean(data, "default", "", False)

    numbers = check.strings(data, "numbers", _number_or_pattern(check))
    callers = check.strings(data, "callers", _number_or_pattern(check))
    # An outbound-only plan answers no number of its own (gateway/dialplan/outbound.py).
    if not default and data.get("numbers", []) == [] and not data.get("outbound"):
        check.error("numbers", "a plan that is not the default must list the numbers it answers")
    if callers and default:
        check.error(
            "callers", "the default plan answers every unmatched call; move caller rules to another plan"
        )

    model = check.string(data, "model")
    if model is not None:
        model = model.removeprefix("models/")
        if not _MODEL.fullmatch(model):
            check.error("model", f"{model!r} is not a Gemini model id like 'gemini-3.8-live'")
            model = None
        elif model in RETIRED_MODELS:
            check.error("model", f"{model!r} has been shut down by Google; use e.g. 'gemini-3.8-live'")

    voice = check.string(data, "voice")
    if voice is not None:
        canonical = _VOICES_BY_LOWER.get(voice.lower())
        if canonical is None:
            check.error("voice", f"{voice!r} is not a Gemini prebuilt voice" + _suggest(voice, VOICES))
        voice = canonical

    language = check.string(data, "language")
    if language is not None:
        language = _language(check, language)

    instruction_bytes = b""
    instruction_file: Path | None = None
    inline = check.string(data, "system_instruction")
    relative = check.string(data, "system_instruction_file")
    instruction = ""
    if inline is not None and relative is not None:
        check.error("system_instruction", "give system_instruction or system_instruction_file, not both")
    elif inline is not None:
        instruction = inline.strip()
    elif relative is not None:
        instruction, instruction_bytes, instruction_file = _read_instruction(check, path, relative)
    elif "system_instruction" not in data and "system_instruction_file" not in data:
        check.error("system_instruction", "missing: give system_instruction or system_instruction_file")

    greeting = check.string(data, "greeting", blank_ok=True)
    greeting = greeting.strip() if greeting else None
    # [outbound]: the instruction and greeting become templates with {placeholders} (outbound.py).
    outbound_parsed = parse_outbound(check, check.table(data, "outbound"), instruction, greeting)
    outbound = None
    if outbound_parsed is not None:
        outbound, instruction, greeting = outbound_parsed

    targets: dict[str, str] = {}
    for target_name, number in check.table(data, "transfer").items():
        field = f"transfer.{target_name}"
        if not _TARGET.fullmatch(target_name):
            check.error(field, "target names are letters, digits, '_' or '-', starting with a letter")
        elif not isinstance(number, str):
            check.error(field, f"must be an E.164 number string, not {_kind(number)}")
        elif not _E164.fullmatch(number.strip()):
            check.error(field, f"{number!r} is not an E.164 number like '+15550100123'")
        else:
            targets[target_name] = number.strip()

    def tool(field: str, value: str) -> str | None:
        if not _TOOL.fullmatch(value):
            check.error(field, f"{value!r} is not a tool name (letters, digits and '_')")
            return None
        if value not in known_tools:
            check.error(field, f"unknown tool {value!r}" + _suggest(value, known_tools))
            return None
        return value

    tools = check.strings(data, "tools", tool)
    if "transfer_call" in tools and not targets:
        check.error("tools", "transfer_call needs at least one target in [transfer]")

    vad = _vad(check, check.table(data, "vad"))
    table = check.table(data, "transcription")
    check.keys(table, _TRANSCRIPTION_KEYS, "transcription.")
    transcription = Transcription(
        input=check.boolean(table, "input", "transcription.", True),
        output=check.boolean(table, "output", "transcription.", True),
        languages=check.strings(
            table, "languages", lambda field, value: _language(check, value, field), "transcription."
        ),
    )
    if transcription.languages and not (transcription.input or transcription.output):
        check.error("transcription.languages", "has no effect with both transcriptions off")
    thinking = _thinking(check, check.table(data, "thinking"), model)
    google_search = check.boolean(data, "google_search", "", False)
    if google_search and model is not None and not capabilities(model).google_search:
        check.error("google_search", f"{model!r} has no Google Search grounding")
    limits = _limits(check, check.table(data, "limits"), targets)
    table = check.table(data, "fallback")
    check.keys(table, _FALLBACK_KEYS, "fallback.")
    fallback = Fallback(
        message=check.string(table, "message", "fallback.") or Fallback().message,
        action=_action(check, table, "fallback.", ("action", "target", None), targets),
    )
    table = check.table(data, "recording")
    check.keys(table, _RECORDING_KEYS, "recording.")
    recording = Recording(
        enabled=check.boolean(table, "enabled", "recording.", False),
        retention_days=check.integer(table, "retention_days", "recording.", 1, 36_500),
    )
    metadata = check.table(data, "metadata")

    if check.errors:
        return _Parsed(None, check.errors, default)
    plan = Dialplan(
        name=name,
        version=hashlib.sha256(raw + instruction_bytes).hexdigest()[:12],
        source=path,
        numbers=numbers,
        callers=callers,
        default=default,
        model=model,
        voice=voice,
        language=language,
        system_instruction=instruction,
        greeting=greeting,
        tools=tools,
        vad=vad,
        transcription=transcription,
        thinking=thinking,
        google_search=google_search,
        limits=limits,
        transfer_targets=MappingProxyType(targets),
        fallback=fallback,
        recording=recording,
        metadata=_freeze(metadata),
        instruction_file=instruction_file,
        outbound=outbound,
    )
    return _Parsed(plan, [], default)


def _vad(check: _Check, table: dict[str, Any]) -> Vad:
    p = "vad."
    check.keys(table, _VAD_KEYS, p)
    # With vad.disabled the same settings drive the gateway's own detector (gateway/audio/vad.py).
    return Vad(
        disabled=check.boolean(table, "disabled", p, False),
        start_sensitivity=check.choice(table, "start_sensitivity", p, _SENSITIVITIES),
        end_sensitivity=check.choice(table, "end_sensitivity", p, _SENSITIVITIES),
        silence_duration_ms=check.integer(table, "silence_duration_ms", p, 0, 10_000),
        prefix_padding_ms=check.integer(table, "prefix_padding_ms", p, 0, 10_000),
        activity_handling=check.choice(table, "activity_handling", p, _ACTIVITY_HANDLINGS),
        turn_coverage=check.choice(table, "turn_coverage", p, _TURN_COVERAGES),
    )


def _thinking(check: _Check, table: dict[str, Any], model: str | None) -> Thinking:
    """``[thinking]``; checked against the plan's model when it names one (else at call time, where a
    setting the model cannot take is left out of the setup)."""
    p = "thinking."
    check.keys(table, _THINKING_KEYS, p)
    thinking = Thinking(
        level=check.choice(table, "level", p, _THINKING_LEVELS),
        budget=check.integer(table, "budget", p, -1, 32_768),
    )
    if "level" in table and "budget" in table:
        check.error(p + "budget", "give thinking.level or thinking.budget, not both")
    if model is None or not table:
        return thinking
    caps = capabilities(model)
    if caps.thinking == "none":
        check.error("thinking", f"{model!r} takes no thinking settings; remove [thinking]")
    elif caps.thinking == "budget" and "level" in table:
        check.error(p + "level", f"{model!r} takes a thinking.budget (tokens), not a level")
    elif caps.thinking == "level" and "budget" in table:
        check.error(p + "budget", f"{model!r} takes a thinking.level, not a budget")
    elif thinking.level is not None and thinking.level.upper() not in caps.thinking_levels:
        allowed = " or ".join(repr(level.lower()) for level in caps.thinking_levels)
        check.error(p + "level", f"{model!r} takes {allowed}, not {thinking.level!r}")
    return thinking


def _limits(check: _Check, table: dict[str, Any], targets: Mapping[str, str]) -> Limits:
    p = "limits."
    check.keys(table, _LIMITS_KEYS, p)
    limits = Limits(
        max_duration_s=check.seconds(table, "max_duration_s", p),
        max_duration_warning=check.string(table, "max_duration_warning", p, blank_ok=True),
        max_duration_action=_action(
            check, table, p, ("max_duration_action", "max_duration_target", "max_duration_say"), targets
        ),
        silence_timeout_s=check.seconds(table, "silence_timeout_s", p),
        silence_prompt=check.string(table, "silence_prompt", p, blank_ok=True),
        silence_action=_action(check, table, p, ("silence_action", "silence_target", "silence_say"), targets),
    )
    # Settings that only act with their limit set are typos or leftovers: say so.
    for limit, dependants in (
        ("max_duration_s", _MAX_DURATION_KEYS),
        ("silence_timeout_s", _SILENCE_KEYS),
    ):
        if limit not in table:
            for key in dependants:
                if key in table:
                    check.error(p + key, f"has no effect without limits.{limit}")
    return limits


def load_dialplan(path: Path, *, known_tools: Collection[str] | None = None) -> Dialplan:
    """Load and validate one dialplan file.

    Args:
        path: the ``.toml`` file; ``system_instruction_file`` is resolved beside it.
        known_tools: tool names a plan may list; ``None`` means :data:`~gateway.dialplan.model.KNOWN_TOOLS`.

    Raises:
        DialplanErrors: every problem in the file, each naming file and field.
    """
    parsed = _parse(path, KNOWN_TOOLS if known_tools is None else known_tools)
    if parsed.plan is None:
        raise DialplanErrors(parsed.errors)
    return parsed.plan


def dialplan_files(directory: Path) -> list[Path]:
    """The dialplan files of ``directory``: ``*.toml``, skipping hidden files and editor droppings."""
    return sorted(
        p for p in directory.glob("*.toml") if not p.name.startswith((".", "~", "#")) and p.is_file()
    )


def load_dialplans(directory: Path, *, known_tools: Collection[str] | None = None) -> DialplanBook:
    """Load every dialplan of ``directory`` into a :class:`DialplanBook`.

    Raises:
        DialplanErrors: every problem of every file, plus conflicts between files (a number
            claimed twice, duplicate names, not exactly one default), all at once.
    """
    tools = KNOWN_TOOLS if known_tools is None else known_tools
    if not directory.is_dir():
        raise DialplanErrors([DialplanError(str(directory), "(directory)", "not a directory")])
    files = dialplan_files(directory)
    if not files:
        raise DialplanErrors([DialplanError(str(directory), "(directory)", "no *.toml dialplan files")])
    errors: list[DialplanError] = []
    plans: list[Dialplan] = []
    declared_default = False
    for path in files:
        parsed = _parse(path, tools)
        errors += parsed.errors
        declared_default = declared_default or parsed.declared_default or not parsed.parsed
        if parsed.plan is not None:
            plans.append(parsed.plan)
    errors += book_problems(plans)
    if not declared_default:
        errors.append(
            DialplanError(str(directory), "default", "no plan has `default = true`; exactly one must")
        )
    if errors:
        raise DialplanErrors(errors)
    return DialplanBook(plans)
