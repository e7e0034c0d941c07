"""Dialplan objects and number matching: frozen values, no I/O.

Rules of this module:

* Every object is a frozen dataclass. A call keeps the :class:`Dialplan` it started with, so a
  live reload can never change a call half-way through: it only changes what *new* calls get.
* Matching is pure: :meth:`DialplanBook.match` takes the dialled and caller numbers and returns
  a plan. It never raises; unmatched calls get the book's explicit default.
* Precedence, most specific first: exact dialled number > longer dialled prefix > shorter
  prefix; for the same dialled match, a plan whose ``callers`` match beats one without caller
  constraints, and among caller constraints exact > longer prefix > shorter prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from gateway.errors import DialplanError, DialplanErrors

#: The 30 prebuilt voices native-audio Live models accept (docs/gemini-live.md §7.2).
VOICES: tuple[str, ...] = (
    "Zephyr", "Puck", "Charon", "Kore", "Fenrir", "Leda", "Orus", "Aoede", "Callirrhoe", "Autonoe",
    "Enceladus", "Iapetus", "Umbriel", "Algieba", "Despina", "Erinome", "Algenib", "Rasalgethi",
    "Laomedeia", "Achernar", "Alnilam", "Schedar", "Gacrux", "Pulcherrima", "Achird", "Zubenelgenubi",
    "Vindemiatrix", "Sadachbia", "Sadaltager", "Sulafat",
)  # fmt: skip

#: Primary language subtags of the 70 Live API languages (docs/gemini-live.md §7.3), plus the modern
#: codes of three legacy ones the table uses (he = iw, nb = no, tl ≈ fil).
LANGUAGES: frozenset[str] = frozenset((
    "af", "sq", "am", "ar", "hy", "as", "az", "eu", "be", "bn", "bs", "bg", "ca", "zh", "hr", "cs", "da",
    "nl", "en", "et", "fil", "fi", "fr", "gl", "ka", "de", "el", "gu", "iw", "hi", "hu", "is", "id", "it",
    "ja", "kn", "kk", "km", "ko", "lo", "lv", "lt", "mk", "ms", "ml", "mr", "mn", "ne", "no", "or", "pl",
    "pt", "pa", "ro", "ru", "sr", "sk", "sl", "es", "sw", "sv", "ta", "te", "th", "tr", "uk", "ur", "uz",
    "vi", "zu", "he", "nb", "tl",
))  # fmt: skip

#: Model ids Google has shut down (docs/gemini-live.md §7.1); naming one would fail every call.
RETIRED_MODELS: frozenset[str] = frozenset({"gemini-2.0-flash-live-001", "gemini-live-2.5-flash-preview"})

_MODEL_ID = re.compile(r"[a-z0-9][a-z0-9.-]{0,127}")
_VERTEX_MODEL = re.compile(r"projects/[^/\s]+/locations/[^/\s]+/publishers/google/models/(?P<id>[^/\s]+)")


def model_problem(model: str) -> str | None:
    """Why ``model`` cannot name a Live model (None: it can). One rule for dialplans and GEMINI_MODEL:
    a Gemini id like ``gemini-3.8-live`` (``models/`` allowed), or a Vertex AI resource path; not retired."""
    vertex = _VERTEX_MODEL.fullmatch(model)
    bare = vertex["id"] if vertex else model.removeprefix("models/")
    if not _MODEL_ID.fullmatch(bare):
        return f"{model!r} is not a Gemini model id like 'gemini-3.8-live'"
    if bare in RETIRED_MODELS:
        return f"{model!r} has been shut down by Google; use e.g. 'gemini-3.8-live'"
    return None


#: Tools the gateway itself implements.
BUILTIN_TOOLS: frozenset[str] = frozenset({"end_call", "transfer_call", "send_dtmf"})

#: Fallback tool names for loading plans without a tool registry (library use, unit tests): the
#: built-ins plus ``lookup_order`` of the default ``gateway.handlers.support`` module. The server,
#: ``gateway serve`` and ``gateway dialplans check`` validate against the real registry instead
#: (:func:`gateway.tools.loader.adopt_dialplans`).
KNOWN_TOOLS: frozenset[str] = BUILTIN_TOOLS | {"lookup_order"}

Sensitivity = Literal["high", "low"]
ActionKind = Literal["hangup", "transfer"]
ActivityHandling = Literal["interrupt", "no_interruption"]
TurnCoverage = Literal["only_activity", "all_input", "audio_activity_and_all_video"]
ThinkingLevel = Literal["minimal", "low", "medium", "high"]


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Vad:
    """Voice activity detection and turn control; ``None`` leaves the gateway's default in force.

    With ``disabled`` Gemini's own detection is off and the gateway detects speech itself
    (gateway/audio/vad.py): the same sensitivities, ``silence_duration_ms`` (end of an utterance) and
    ``prefix_padding_ms`` (audio kept from before the onset) then configure that detector.
    ``activity_handling = "no_interruption"`` makes the bot's speech impossible to barge in on (a
    disclosure the caller must hear out); ``turn_coverage`` says what input a user turn includes.
    """

    disabled: bool = False
    start_sensitivity: Sensitivity | None = None
    end_sensitivity: Sensitivity | None = None
    silence_duration_ms: int | None = None
    prefix_padding_ms: int | None = None
    activity_handling: ActivityHandling | None = None
    turn_coverage: TurnCoverage | None = None


@dataclass(frozen=True, slots=True)
class Transcription:
    """Whether Gemini transcribes the caller (input) and itself (output), and in which languages.

    ``languages`` (BCP-47) are hints for both transcriptions; empty means the plan's ``language``.
    """

    input: bool = True
    output: bool = True
    languages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Thinking:
    """How much the model reasons before it speaks; which knob applies depends on the model.

    ``level`` for 3.1 and 3.8 extended thinking (which requires one: ``low`` when unset); ``budget``
    (tokens, 0 off, -1 dynamic) for 2.5 native audio; 3.8 Live takes neither.
    """

    level: ThinkingLevel | None = None
    budget: int | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """What to do when a limit is reached or Gemini is unreachable.

    ``say`` is a literal line spoken just before acting; ``target`` is the E.164 number a
    ``transfer`` goes to, already resolved from the plan's ``[transfer]`` table.
    """

    kind: ActionKind
    say: str | None = None
    target: str | None = None


_HANGUP = Action("hangup")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-call limits. ``None`` means no limit."""

    max_duration_s: float | None = None
    #: Said once, at :attr:`warning_at_s`, so the caller can wrap up.
    max_duration_warning: str | None = None
    max_duration_action: Action = _HANGUP
    silence_timeout_s: float | None = None
    #: Said once after ``silence_timeout_s`` of silence; a second timeout triggers ``silence_action``.
    silence_prompt: str | None = None
    silence_action: Action = _HANGUP

    @property
    def warning_at_s(self) -> float | None:
        """When the max-duration warning is due: 30 s before the end, or half-way for short limits."""
        if self.max_duration_s is None or self.max_duration_warning is None:
            return None
        return max(self.max_duration_s - 30.0, self.max_duration_s / 2)


_DEFAULT_FALLBACK_MESSAGE = "Sorry, our assistant is not available right now. Please call again later."


@dataclass(frozen=True, slots=True)
class Fallback:
    """What the caller gets when Gemini cannot be reached: ``message`` (a literal line), then ``action``."""

    message: str = _DEFAULT_FALLBACK_MESSAGE
    action: Action = _HANGUP


@dataclass(frozen=True, slots=True)
class Recording:
    """Audio recording of both legs (one stereo WAV per call). Off unless a plan turns it on.

    ``retention_days`` deletes this plan's recordings that are older; ``None`` keeps them.
    """

    enabled: bool = False
    retention_days: int | None = None


MachineAction = Literal["message", "hangup", "continue"]
#: Providers the gateway places outbound calls through (gateway/server/outbound.py).
OutboundProvider = Literal["twilio", "telnyx", "vonage", "plivo"]


@dataclass(frozen=True, slots=True)
class Outbound:
    """``[outbound]``: the plan may place calls (gateway/dialplan/outbound.py renders and checks them).

    ``params`` name the ``{placeholders}`` the instruction, greeting and machine message may use; each
    must be given when a call is placed, unless ``defaults`` has it (inbound calls get the defaults, or
    the empty string). ``hours`` are ``(start, end)`` minutes after local midnight in ``timezone`` on
    ``days`` (0 = Monday). ``machine``: what an answering machine gets (the provider's AMD says which).
    ``provider``: whose API places the calls (Twilio's ``Calls`` resource, Telnyx Call Control's Dial,
    Vonage's create-call request, Plivo's Make Call).
    The ``*_template`` fields keep the unrendered texts; the plan itself holds them rendered with defaults.
    """

    params: tuple[str, ...] = ()
    defaults: Mapping[str, str] = field(default_factory=_empty, hash=False)
    caller_id: str | None = None
    max_concurrent: int | None = None
    hours: tuple[tuple[int, int], ...] = ()
    days: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    timezone: str | None = None
    machine: MachineAction = "continue"
    machine_message: str | None = None
    #: Seconds the callee's phone may ring (Twilio's ``Timeout``, Telnyx's ``timeout_secs``, Plivo's
    #: ``ring_timeout``).
    ring_timeout_s: int = 30
    provider: OutboundProvider = "twilio"
    instruction_template: str = field(default="", repr=False)
    greeting_template: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Dialplan:
    """Everything that differs between numbers: prompt, voice, language, tools, limits.

    ``version`` is a content hash of the file (and its instruction file), so a call record says
    exactly which edit a call used. Mappings are read-only views.
    """

    name: str
    version: str
    source: Path
    numbers: tuple[str, ...] = ()
    callers: tuple[str, ...] = ()
    default: bool = False
    #: Gemini model id (without ``models/``); ``None`` uses the gateway's configured model.
    model: str | None = None
    voice: str | None = None
    language: str | None = None
    #: Kept out of ``repr`` so logging a plan does not dump its whole prompt.
    system_instruction: str = field(default="", repr=False)
    #: A prompt sent to the model as the first user turn so it speaks first; ``None``: wait for the caller.
    greeting: str | None = None
    tools: tuple[str, ...] = ()
    vad: Vad = field(default_factory=Vad)
    transcription: Transcription = field(default_factory=Transcription)
    thinking: Thinking = field(default_factory=Thinking)
    #: Let the model search the web (Google Search grounding); sources land in the call record.
    google_search: bool = False
    limits: Limits = field(default_factory=Limits)
    #: Target name → E.164 number.
    transfer_targets: Mapping[str, str] = field(default_factory=_empty, hash=False)
    fallback: Fallback = field(default_factory=Fallback)
    recording: Recording = field(default_factory=Recording)
    #: Free-form, read-only data handed to tool handlers.
    metadata: Mapping[str, Any] = field(default_factory=_empty, hash=False, repr=False)
    #: The ``system_instruction_file`` the instruction came from, so the store can watch it.
    instruction_file: Path | None = None
    #: ``[outbound]``: the plan may place calls; None: inbound only.
    outbound: Outbound | None = None


def is_prefix_pattern(number: str) -> bool:
    """``"+1555*"`` is a prefix pattern; ``"+15551230000"`` is an exact number."""
    return number.endswith("*")


def pattern_matches(pattern: str, number: str) -> bool:
    """Whether ``number`` is ``pattern`` (exact) or starts with it (``*`` pattern, zero or more digits)."""
    if pattern.endswith("*"):
        return number.startswith(pattern[:-1])
    return number == pattern


def _caller_rank(pattern: str | None) -> tuple[int, int, int]:
    # Larger is more specific: constrained > unconstrained; exact > prefix; longer > shorter.
    if pattern is None:
        return (0, 0, 0)
    if pattern.endswith("*"):
        return (1, 0, len(pattern))
    return (1, 1, len(pattern))


#: One claim in a dialled-number bucket: (caller pattern or None, plan).
_Claim = tuple[str | None, Dialplan]


def book_problems(plans: Iterable[Dialplan]) -> list[DialplanError]:
    """Problems between plans: duplicate names or claims, and not exactly one default."""
    problems: list[DialplanError] = []
    names: dict[str, Dialplan] = {}
    claims: dict[tuple[str, str | None], Dialplan] = {}
    defaults: list[Dialplan] = []
    for plan in plans:
        file = str(plan.source)
        if plan.name in names:
            problems.append(
                DialplanError(file, "name", f"{plan.name!r} is already used by {names[plan.name].source}")
            )
        else:
            names[plan.name] = plan
        if plan.default:
            defaults.append(plan)
        for number in plan.numbers:
            for caller in plan.callers or (None,):
                owner = claims.setdefault((number, caller), plan)
                if owner is not plan:
                    who = f" for callers {caller!r}" if caller else ""
                    problems.append(
                        DialplanError(
                            file, "numbers", f"{number!r}{who} is already claimed by {owner.source}"
                        )
                    )
    if len(defaults) > 1:
        others = ", ".join(str(p.source) for p in defaults[:-1])
        problems.append(
            DialplanError(
                str(defaults[-1].source), "default", f"only one plan may be the default; {others} is too"
            )
        )
    return problems


class DialplanBook:
    """A consistent set of dialplans, indexed for matching.

    Built once per (re)load and never mutated, so a reader never sees a half-swapped book.
    """

    __slots__ = ("_exact", "_prefix_lengths", "_prefixes", "default", "plans")

    plans: tuple[Dialplan, ...]
    default: Dialplan

    def __init__(self, plans: Iterable[Dialplan]) -> None:
        """Raises :class:`DialplanErrors` when plans conflict or there is not exactly one default."""
        self.plans = tuple(plans)
        problems = book_problems(self.plans)
        defaults = [p for p in self.plans if p.default]
        if not defaults:
            where = str(self.plans[0].source.parent) if self.plans else "(dialplans)"
            problems.append(DialplanError(where, "default", "no plan has `default = true`; exactly one must"))
        if problems:
            raise DialplanErrors(problems)
        self.default = defaults[0]
        self._exact: dict[str, list[_Claim]] = {}
        self._prefixes: dict[str, list[_Claim]] = {}
        for plan in self.plans:
            for number in plan.numbers:
                index = self._prefixes if is_prefix_pattern(number) else self._exact
                key = number.rstrip("*")
                for caller in plan.callers or (None,):
                    index.setdefault(key, []).append((caller, plan))
        self._prefix_lengths = sorted({len(k) for k in self._prefixes}, reverse=True)

    def __repr__(self) -> str:
        return f"DialplanBook({', '.join(f'{p.name}@{p.version}' for p in self.plans)})"

    @property
    def fingerprint(self) -> tuple[tuple[str, str], ...]:
        """(name, version) of every plan: equal fingerprints mean equal books."""
        return tuple((p.name, p.version) for p in self.plans)

    def get(self, name: str) -> Dialplan | None:
        """The plan called ``name``, if any (for tests and admin tools)."""
        return next((p for p in self.plans if p.name == name), None)

    def match(self, dialled: str, caller: str | None = None) -> Dialplan:
        """The plan for a call to ``dialled`` from ``caller``; the default when nothing matches."""
        dialled = dialled.strip()
        caller = caller.strip() if caller else None
        bucket = self._exact.get(dialled)
        if bucket:
            plan = self._best(bucket, caller)
            if plan is not None:
                return plan
        for length in self._prefix_lengths:
            if length > len(dialled):
                continue
            bucket = self._prefixes.get(dialled[:length])
            if bucket:
                plan = self._best(bucket, caller)
                if plan is not None:
                    return plan
        return self.default

    @staticmethod
    def _best(bucket: list[_Claim], caller: str | None) -> Dialplan | None:
        best: Dialplan | None = None
        best_rank = (-1, 0, 0)
        for pattern, plan in bucket:
            if pattern is not None and (caller is None or not pattern_matches(pattern, caller)):
                continue
            rank = _caller_rank(pattern)
            if rank > best_rank:
                best, best_rank = plan, rank
        return best
