"""Build a call's Gemini Live setup from its dialplan."""

from __future__ import annotations

from typing import Literal

from gateway.audio.formats import LIVE_INPUT_RATE
from gateway.dialplan.model import Dialplan
from gateway.gemini.messages import FunctionDeclaration, SessionConfig, VadConfig


def session_config(
    plan: Dialplan,
    *,
    default_model: str,
    tools: tuple[FunctionDeclaration, ...] = (),
    resumption_handle: str | None = None,
    input_rate: int = LIVE_INPUT_RATE,
) -> SessionConfig:
    """The Live ``setup`` for a call on ``plan``: everything in it is fixed for the session."""
    vad = plan.vad
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
        ),
        input_transcription=plan.transcription.input,
        output_transcription=plan.transcription.output,
        resumption=True,
        resumption_handle=resumption_handle,
        compression=True,
        input_rate=input_rate,
    )


def _upper(value: str) -> Literal["HIGH", "LOW"]:
    return "HIGH" if value == "high" else "LOW"
