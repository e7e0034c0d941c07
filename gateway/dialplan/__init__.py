"""Dialplans: per-number call configuration (prompt, voice, language, tools, limits), from TOML files.

The asyncio live-reload layer is :mod:`gateway.dialplan.store`; it is not imported here so the
sans-I/O parts stay importable without an event loop.
"""

from gateway.dialplan.loader import dialplan_files, load_dialplan, load_dialplans
from gateway.dialplan.model import (
    BUILTIN_TOOLS,
    KNOWN_TOOLS,
    LANGUAGES,
    VOICES,
    Action,
    Dialplan,
    DialplanBook,
    Fallback,
    Limits,
    Transcription,
    Vad,
)

__all__ = [
    "BUILTIN_TOOLS",
    "KNOWN_TOOLS",
    "LANGUAGES",
    "VOICES",
    "Action",
    "Dialplan",
    "DialplanBook",
    "Fallback",
    "Limits",
    "Transcription",
    "Vad",
    "dialplan_files",
    "load_dialplan",
    "load_dialplans",
]
