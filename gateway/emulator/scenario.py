"""Scenarios: what the emulator does beyond the default echo persona, and its timing knobs.

A :class:`Scenario` is built in Python (tests) or loaded from a TOML or JSON file (demos, ``gateway
emulator --scenario F``). Its :class:`Rule` list is checked on every user turn; the first rule that
matches decides the reply, otherwise the echo persona answers.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

_DTMF_RUN = re.compile(r"[0-9*#A-Da-d]+")

#: ``turnCompleteReason`` values a rule may script (google-genai 3.3 ``types.TurnCompleteReason``, abridged).
TURN_COMPLETE_REASONS = frozenset(
    {
        "MALFORMED_FUNCTION_CALL", "RESPONSE_REJECTED", "NEED_MORE_INPUT", "PROHIBITED_INPUT_CONTENT",
        "GENERATED_CONTENT_SAFETY", "GENERATED_AUDIO_SAFETY", "BLOCKLIST", "INPUT_OTHER", "GENERATED_OTHER",
    }
)  # fmt: skip

DEFAULT_GREETING = (
    "Hello! You are talking to the Gemini Live emulator. Say something, and I will play it back to you."
)


@dataclass(slots=True)
class Rule:
    """One scripted reply: a trigger (every given field must match) and what to do.

    Triggers:
      * ``text_contains``: the user's text turn contains this (case-insensitive);
      * ``turn``: the Nth caller turn of the conversation (1-based, spoken or typed; resumed sessions
        keep counting). The opening clientContent before the model has spoken (the gateway's greeting
        instruction) and bracketed client notes (``[Say exactly this …]``) are not caller turns;
      * ``dtmf``: the text turn carries exactly these keypad digits as one token, e.g. ``"5"`` matches
        ``"5"``, ``"DTMF 5"`` or ``"The caller pressed 5"`` but not ``"55"``.

    Actions, in order: ``say`` the text; call ``tool`` with ``args`` (``non_blocking`` keeps talking
    instead of waiting, for a tool the setup did not declare: a declared one runs as its ``behavior``
    and the model's default say); then speak ``reply`` with ``{result}`` replaced by the tool
    response's JSON; finally ``close`` the connection with that code (1006 drops TCP without a close
    frame). ``search`` reports a Google Search for that query (``groundingMetadata``) when the setup
    enabled ``googleSearch``; ``wait_for_input`` answers nothing (``waitingForInput``, then a
    turnComplete with ``NEED_MORE_INPUT``); ``turn_complete_reason`` rides on the turn's turnComplete.
    """

    text_contains: str | None = None
    turn: int | None = None
    dtmf: str | None = None
    say: str | None = None
    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    non_blocking: bool = False
    reply: str = "The result is: {result}"
    close: int | None = None
    close_reason: str = ""
    search: str | None = None
    wait_for_input: bool = False
    turn_complete_reason: str | None = None
    #: Fire at most once per conversation.
    once: bool = False

    def matches(self, user_turn: int, text: str | None) -> bool:
        """Whether this rule answers user turn number ``user_turn`` whose text is ``text``."""
        if self.turn is not None and self.turn != user_turn:
            return False
        if self.text_contains is not None and (
            text is None or self.text_contains.lower() not in text.lower()
        ):
            return False
        if self.dtmf is not None:
            if text is None:
                return False
            return self.dtmf.upper() in (run.upper() for run in _DTMF_RUN.findall(text))
        return self.turn is not None or self.text_contains is not None

    def validate(self, where: str) -> None:
        """Raise :class:`ConfigError` for a rule that could never fire or cannot act."""
        if self.turn is None and self.text_contains is None and self.dtmf is None:
            raise ConfigError(f"{where}: a rule needs a trigger (text_contains, turn or dtmf)")
        if self.say is None and self.tool is None and self.close is None and not self.wait_for_input:
            raise ConfigError(f"{where}: a rule needs an action (say, tool, close or wait_for_input)")
        if self.turn_complete_reason is not None and self.turn_complete_reason not in TURN_COMPLETE_REASONS:
            raise ConfigError(f"{where}: unknown turn_complete_reason {self.turn_complete_reason!r}")
        if self.turn is not None and self.turn < 1:
            raise ConfigError(f"{where}: turn counts from 1")
        if self.close is not None and not (self.close == 1006 or 1000 <= self.close <= 4999):
            raise ConfigError(f"{where}: close must be a WebSocket close code (1000-4999) or 1006")
        if not isinstance(self.args, dict):
            raise ConfigError(f"{where}: args must be a table/object")


@dataclass(slots=True)
class Scenario:
    """Timing knobs and scripted rules. The defaults give the echo persona at realistic speed."""

    #: Delay before ``setupComplete`` (slow-setup tests).
    setup_delay_s: float = 0.0
    #: Time from the end of a user turn to the first model audio.
    first_audio_delay_s: float = 0.25
    #: Size of each model audio message.
    audio_chunk_ms: int = 80
    #: How much faster than real time model audio is sent; 0 sends it as fast as possible.
    speed: float = 4.0
    #: Hold ``turnComplete`` until the audio sent would have finished playing (as the real server does).
    playback_wait: bool = True
    #: End-of-utterance silence when the client's setup does not set ``silenceDurationMs``.
    silence_duration_ms: int = 500
    #: RMS (on the int16 scale) above which caller audio counts as speech.
    vad_threshold_rms: float = 500.0
    #: Speech needed while the model talks before it counts as a barge-in.
    barge_in_ms: int = 100
    #: Shorter bursts are noise, not utterances.
    min_speech_ms: int = 80
    #: The echo keeps at most this much of an utterance.
    max_echo_s: float = 15.0
    #: Send ``goAway`` this long after ``setupComplete``, then close 1011 after ``go_away_time_left_s``.
    go_away_after_s: float | None = None
    go_away_time_left_s: float = 50.0
    #: Close the connection this long after ``setupComplete`` with ``close_code`` / ``close_reason``.
    close_after_s: float | None = None
    close_code: int = 1011
    close_reason: str = "Internal error encountered."
    #: Send a ``sessionResumptionUpdate`` right after ``setupComplete`` too (not only after turns).
    resumption_update_on_setup: bool = False
    #: Close 1007 on a ``toolResponse`` id that matches no pending call (default: ignore it).
    strict_tool_ids: bool = False
    #: Close 1007 on ``activityStart``/``activityEnd`` under automatic activity detection and on
    #: ``audioStreamEnd`` under manual detection (each is only valid in the other mode).
    strict_activity: bool = True
    #: Send ``voiceActivity`` ACTIVITY_START/END when the emulator's VAD hears the caller start and stop.
    #: Off by default: the service is not known to send it to ordinary clients.
    voice_activity: bool = False
    #: Send server messages as text frames instead of binary (the real server uses binary).
    text_frames: bool = False
    #: The greeting spoken in reply to the opening instruction (unless it quotes the words to say).
    greeting: str = DEFAULT_GREETING
    rules: list[Rule] = field(default_factory=list)

    def validate(self, where: str = "scenario") -> None:
        """Raise :class:`ConfigError` naming the first bad knob."""
        for name in ("setup_delay_s", "first_audio_delay_s", "speed", "max_echo_s", "go_away_time_left_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}: {name} must be >= 0")
        if not 10 <= self.audio_chunk_ms <= 1000:
            raise ConfigError(f"{where}: audio_chunk_ms must be between 10 and 1000")
        if self.silence_duration_ms < 0 or self.barge_in_ms < 0 or self.min_speech_ms < 0:
            raise ConfigError(f"{where}: durations must be >= 0")
        for index, rule in enumerate(self.rules):
            rule.validate(f"{where}: rules[{index}]")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "scenario") -> Scenario:
        """Build from plain data (a parsed TOML/JSON document); unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
        values = dict(data)
        rules_data = values.pop("rules", [])
        if not isinstance(rules_data, list):
            raise ConfigError(f"{where}: rules must be a list")
        rule_fields = {f.name for f in dataclasses.fields(Rule)}
        rules = []
        for index, item in enumerate(rules_data):
            if not isinstance(item, dict):
                raise ConfigError(f"{where}: rules[{index}] must be a table/object")
            bad = sorted(set(item) - rule_fields)
            if bad:
                raise ConfigError(f"{where}: rules[{index}]: unknown key(s) {', '.join(bad)}")
            rules.append(Rule(**item))
        try:
            scenario = cls(**values, rules=rules)
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        try:
            scenario.validate(where)
        except TypeError as exc:  # e.g. a string where a number belongs
            raise ConfigError(f"{where}: wrong value type ({exc})") from exc
        return scenario

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        """Load a ``.toml`` or ``.json`` scenario file."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read scenario: {exc.strerror}") from exc
        try:
            data = json.loads(text) if file.suffix.lower() == ".json" else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(
                f"{file}: not valid {'JSON' if file.suffix == '.json' else 'TOML'}: {exc}"
            ) from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: a scenario must be a table/object")
        return cls.from_dict(data, str(file))
