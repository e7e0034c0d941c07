"""A local Gemini Live API emulator: a real WebSocket server speaking the Live wire protocol.

Tests, demos and benchmarks talk to it instead of Google; ``gateway emulator`` runs it on its own.
With no scenario it plays the *echo persona*: it greets text turns with a synthesised phrase, and
answers each caller utterance (found by an energy VAD and the setup's ``silenceDurationMs``) with a
chime followed by the caller's own audio. :class:`Scenario` / :class:`Rule` script tool calls,
goAway, injected closes and timings. It never imports ``gateway.gemini``: its JSON handling is its
own, so it catches the client's mistakes.
"""

from __future__ import annotations

from gateway.emulator.scenario import Rule, Scenario
from gateway.emulator.server import KNOWN_MODELS, LIVE_PATH, RETIRED_MODELS, Emulator
from gateway.emulator.session import Conversation, EmulatedSession, RecordedFrame

__all__ = [
    "KNOWN_MODELS",
    "LIVE_PATH",
    "RETIRED_MODELS",
    "Conversation",
    "EmulatedSession",
    "Emulator",
    "RecordedFrame",
    "Rule",
    "Scenario",
]
