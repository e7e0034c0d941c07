"""Dialplans end to end: the dialled number picks the voice, greeting and prompt of the Gemini session."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.caller import CallOptions, place_call
from gateway.emulator import Emulator

from .conftest import GatewayFactory

pytestmark = pytest.mark.e2e

SALES = """
numbers = ["+15550100300"]
voice = "Kore"
language = "en-US"
system_instruction = "You sell widgets."
greeting = "Say: welcome to widget sales."
"""

SPANISH = """
numbers = ["+34*"]
voice = "Charon"
language = "es-ES"
system_instruction = "Responde siempre en español."
greeting = "Di: hola, gracias por llamar."
"""


def _voice(setup: dict[str, Any]) -> str:
    return str(setup["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"])


def _greeting(emulator: Emulator, session: int) -> str:
    for f in emulator.sessions[session].frames:
        if f.direction == "in" and f.payload and "clientContent" in f.payload:
            turns = f.payload["clientContent"]["turns"]
            return " ".join(p["text"] for t in turns for p in t["parts"])
    return ""


async def test_two_numbers_get_two_greetings_and_voices(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path
) -> None:
    """Calls to two numbers open Gemini sessions with each plan's voice, prompt and greeting."""
    (dialplan_dir / "sales.toml").write_text(SALES)
    (dialplan_dir / "spanish.toml").write_text(SPANISH)
    gw = await make_gateway()
    for to in ("+15550100300", "+34911234567"):
        report = await place_call(CallOptions(to=to, gateway=gw.url, hangup_after_s=3.0))
        assert report.greeting_ms is not None
        assert report.protocol_errors == []
    sales, spanish = emulator.sessions[0].setup, emulator.sessions[1].setup
    assert sales is not None
    assert spanish is not None
    assert (_voice(sales), _voice(spanish)) == ("Kore", "Charon")
    assert "widgets" in sales["systemInstruction"]["parts"][0]["text"]
    assert "español" in spanish["systemInstruction"]["parts"][0]["text"]
    assert _greeting(emulator, 0) == "Say: welcome to widget sales."
    assert _greeting(emulator, 1) == "Di: hola, gracias por llamar."
    # Each call's record names the plan and version it used.
    records = await gw.wait_calls_ended(2)
    assert {r["dialplan"] for r in records} == {"sales", "spanish"}


async def test_live_edit_reaches_new_calls_only(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path
) -> None:
    """Editing a dialplan mid-call changes the next call; the call in progress keeps its version."""
    (dialplan_dir / "sales.toml").write_text(SALES)
    gw = await make_gateway()
    first = asyncio.create_task(
        place_call(CallOptions(to="+15550100300", gateway=gw.url, hangup_after_s=4.0))
    )
    await emulator.wait_for(lambda f: f.payload is not None and "setupComplete" in f.payload, timeout=5)
    (dialplan_dir / "sales.toml").write_text(SALES.replace('"Kore"', '"Puck"'))
    for _ in range(50):
        if _voice_of_next(gw) == "Puck":
            break
        await asyncio.sleep(0.1)
    # A broken edit is rejected and the good version stays in force.
    (dialplan_dir / "spanish.toml").write_text("numbers = [")
    await asyncio.sleep(0.6)
    second = await place_call(CallOptions(to="+15550100300", gateway=gw.url, hangup_after_s=2.0))
    await first
    assert second.greeting_ms is not None
    assert _voice(emulator.sessions[0].setup or {}) == "Kore"
    assert _voice(emulator.sessions[1].setup or {}) == "Puck"
    versions = [r["dialplan_version"] for r in await gw.wait_calls_ended(2)]
    assert len(set(versions)) == 2


def _voice_of_next(gw: Any) -> str | None:
    plan = gw.dialplans().current.match("+15550100300")
    return plan.voice  # type: ignore[no-any-return]
