"""Build a call's Gemini Live setup from its dialplan."""

from __future__ import annotations

from typing import Literal

from gateway.audio.formats import LIVE_INPUT_RATE
from gateway.audio.vad import LocalVad
from gateway.dialplan.model import ActivityHandling, Dialplan, ThinkingLevel, TurnCoverage
from gateway.gemini import messages
from gateway.gemini.messages import FunctionDeclaration, SessionConfig, VadConfig
from gateway.gemini.models import ThinkingLevel as WireThinkingLevel

_ACTIVITY_HANDLING: dict[ActivityHandling, messages.ActivityHandling] = {
    "interrupt": "START_OF_ACTIVITY_INTERRUPTS",
    "no_interruption": "NO_INTERRUPTION",
}
_TURN_COVERAGE: dict[TurnCoverage, messages.TurnCoverage] = {
    "only_activity": "TURN_INCLUDES_ONLY_ACTIVITY",
    "all_input": "TURN_INCLUDES_ALL_INPUT",
    "audio_activity_and_all_video": "TURN_INCLUDES_AUDIO_ACTIVITY_AND_ALL_VIDEO",
}
_THINKING_LEVEL: dict[ThinkingLevel, WireThinkingLevel] = {
    "minimal": "MINIMAL",
    "low": "LOW",
    "medium": "MEDIUM",
    "high": "HIGH",
}


def session_config(
    plan: Dialplan,
    *,
    default_model: str,
    tools: tuple[FunctionDeclaration, ...] = (),
    resumption_handle: str | None = None,
    input_rate: int = LIVE_INPUT_RATE,
) -> SessionConfig:
    """The Live ``setup`` for a call on ``plan``: everything in it is fixed for the session.

    Transcripts are asked for in the plan's language(s): ``transcription.languages``, else ``language``.
    """
    vad = plan.vad
    languages = plan.transcription.languages or ((plan.language,) if plan.language else ())
    level = plan.thinking.level
    return SessionConfig(
        model=plan.model or default_model,
        voice=plan.voice,
        language=plan.language,
        system_instruction=plan.system_instruction or None,
        tools=tools,
        vad=VadConfig(
            disabled=vad.disabled,
            start_sensitivity=None if vad.start_sensitivity is None else _upper(vad.start_sensitivity),
            end_sensitivity=None if vad.end_sensitivity is None else _upper(vad.end_sensitivity),
            prefix_padding_ms=vad.prefix_padding_ms,
            silence_duration_ms=vad.silence_duration_ms,
            activity_handling=None
            if vad.activity_handling is None
            else _ACTIVITY_HANDLING[vad.activity_handling],
            turn_coverage=None if vad.turn_coverage is None else _TURN_COVERAGE[vad.turn_coverage],
        ),
        input_transcription=plan.transcription.input,
        output_transcription=plan.transcription.output,
        transcription_languages=languages,
        thinking_level=None if level is None else _THINKING_LEVEL[level],
        thinking_budget=plan.thinking.budget,
        google_search=plan.google_search,
        resumption=True,
        resumption_handle=resumption_handle,
        compression=True,
        input_rate=input_rate,
    )


def _upper(value: str) -> Literal["HIGH", "LOW"]:
    return "HIGH" if value == "high" else "LOW"


def manual_vad(plan: Dialplan, rate: int = LIVE_INPUT_RATE) -> LocalVad | None:
    """The call's own speech detector when ``plan`` turns Gemini's off (``[vad] disabled = true``).

    The plan's VAD settings keep their meaning on our side: sensitivities set the onset and release
    levels, ``silence_duration_ms`` is the hangover that ends a turn, and ``prefix_padding_ms`` is, as
    for Gemini's detector, the speech needed before a start is committed.
    """
    vad = plan.vad
    if not vad.disabled:
        return None
    return LocalVad(
        rate=rate,
        start_sensitivity=None if vad.start_sensitivity is None else _upper(vad.start_sensitivity),
        end_sensitivity=None if vad.end_sensitivity is None else _upper(vad.end_sensitivity),
        silence_ms=vad.silence_duration_ms,
        **({} if vad.prefix_padding_ms is None else {"onset_ms": vad.prefix_padding_ms}),
    )
