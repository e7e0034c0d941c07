"""Turn control end to end: manual activity detection, a disclosure the caller cannot interrupt,
extended thinking and search grounding — simulated Twilio caller → gateway → strict emulator."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.caller import CallOptions, place_call
from gateway.caller.call import admin_transcript
from gateway.emulator import Emulator, Rule

from .conftest import DEFAULT_PLAN, Gateway, client_messages

pytestmark = pytest.mark.e2e

MANUAL = "+15551230001"
DISCLOSURE = "+15551230002"
THINKING = "+15551230003"
SEARCH = "+15551230004"

PLANS = {
    "manual.toml": f"""
numbers = ["{MANUAL}"]
system_instruction = "You are a helpful phone assistant."
greeting = "Greet the caller."
[vad]
disabled = true
silence_duration_ms = 500
""",
    "disclosure.toml": f"""
numbers = ["{DISCLOSURE}"]
system_instruction = "You are a helpful phone assistant."
greeting = "Say the recording disclosure."
[vad]
silence_duration_ms = 300
activity_handling = "no_interruption"
""",
    "thinking.toml": f"""
numbers = ["{THINKING}"]
model = "gemini-3.8-live-extended-thinking"
system_instruction = "You are the Acme support line."
greeting = "Greet the caller."
tools = ["lookup_order", "end_call"]
[thinking]
level = "medium"
""",
    "search.toml": f"""
numbers = ["{SEARCH}"]
language = "es-US"
system_instruction = "Eres un asistente telefónico."
greeting = "Saluda."
google_search = true
""",
}


@pytest.fixture
def dialplan_dir(tmp_path: Path) -> Path:
    """The default plan plus one plan per behaviour under test, each on its own number."""
    d = tmp_path / "dialplans"
    d.mkdir()
    (d / "default.toml").write_text(DEFAULT_PLAN)
    for name, text in PLANS.items():
        (d / name).write_text(text)
    return d


def _out(emulator: Emulator, session: int = 0) -> list[dict[str, Any]]:
    return [f.payload for f in emulator.sessions[session].frames if f.direction == "out" and f.payload]


async def _record(gateway: Gateway, call_sid: str) -> dict[str, Any]:
    """The call's closed record, from the admin API."""
    async with asyncio.timeout(10):
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(f"{gateway.url}/admin/records/{call_sid}") as resp:
                    doc: dict[str, Any] = await resp.json() if resp.status == 200 else {}
                if doc.get("ended_at"):
                    return doc
                await asyncio.sleep(0.1)


async def test_manual_activity_detection_marks_the_callers_turn_and_is_answered(
    gateway: Gateway, emulator: Emulator
) -> None:
    """[vad] disabled: the gateway's own VAD sends activityStart, the pre-roll and the speech, then
    activityEnd; nothing is sent between turns; the (manual-mode) emulator answers the utterance."""
    report = await place_call(
        CallOptions(
            to=MANUAL,
            gateway=gateway.url,
            play="builtin:hello",
            hangup_after_s=11.0,
            transcript_source=admin_transcript(gateway.url),
        )
    )
    assert report.protocol_errors == []
    assert len(report.reply_ms) == 1, "the utterance was answered"
    setup = emulator.sessions[0].setup
    assert setup is not None
    assert setup["realtimeInputConfig"]["automaticActivityDetection"] == {"disabled": True}
    kinds = [next(iter(m)) for m in client_messages(emulator, "realtimeInput")]
    assert kinds[0] == "activityStart", "no audio before the caller speaks"
    assert kinds.count("activityStart") == 1
    assert kinds.count("activityEnd") == 1
    end = kinds.index("activityEnd")
    assert set(kinds[1:end]) == {"audio"}
    assert "audio" not in kinds[end + 1 :]
    # 1.5 s of speech + pre-roll (~0.3 s) + hangover (0.5 s): about 2.3 s of the 11 s call went up.
    sent_s = emulator.sessions[0].audio_in_bytes / 32000
    assert 1.8 <= sent_s <= 3.0, sent_s
    assert report.frames_sent >= 500
    roles = [t["role"] for t in report.transcript]
    assert roles[:3] == ["bot", "caller", "bot"], report.transcript


async def test_a_disclosure_the_caller_cannot_interrupt(gateway: Gateway, emulator: Emulator) -> None:
    """activity_handling = "no_interruption": talking over the greeting neither cuts it nor clears the
    line; the caller is answered once it has been said in full."""
    report = await place_call(
        CallOptions(
            to=DISCLOSURE,
            gateway=gateway.url,
            play="builtin:hello",
            speak_at_s=1.5,
            hangup_after_s=16.0,
            transcript_source=admin_transcript(gateway.url),
        )
    )
    assert report.protocol_errors == []
    setup = emulator.sessions[0].setup
    assert setup is not None
    assert setup["realtimeInputConfig"]["activityHandling"] == "NO_INTERRUPTION"
    assert report.clears == 0
    assert not any(m.get("serverContent", {}).get("interrupted") for m in _out(emulator))
    bots = [t for t in report.transcript if t["role"] == "bot"]
    assert bots[0]["text"] == emulator.scenario.greeting
    assert "heard" not in bots[0], "the disclosure was not cut"
    assert len(bots) >= 2, "the caller's utterance was answered after the disclosure"
    assert "[speech" in json.dumps(report.transcript)


async def test_extended_thinking_speaks_twice_for_one_request_and_declares_only_non_blocking(
    gateway: Gateway, emulator: Emulator
) -> None:
    """The tool runs non-blocking (the model's only mode); the first turnComplete is IN_PROGRESS, so the
    call waits for the answer's turn (IDLE); the setup carries the plan's thinking level."""
    emulator.scenario.rules = [
        Rule(text_contains="Greet the caller", say="Let me check that order.", tool="lookup_order",
             args={"order_id": "A1001"}, reply="Your order is on its way.")
    ]  # fmt: skip
    done = asyncio.Event()
    task = asyncio.create_task(
        place_call(
            CallOptions(
                to=THINKING,
                gateway=gateway.url,
                hangup_event=done,
                max_duration_s=20.0,
                transcript_source=admin_transcript(gateway.url),
            )
        )
    )
    await emulator.wait_for(
        lambda f: (
            f.direction == "out"
            and (f.payload or {}).get("serverContent", {}).get("interactionStatus") == "IDLE"
        ),
        timeout=15,
    )
    await asyncio.sleep(1.0)  # let the answer play out
    done.set()
    report = await task
    assert report.protocol_errors == []
    setup = emulator.sessions[0].setup
    assert setup is not None
    assert setup["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "MEDIUM"}
    behaviors = {d["name"]: d["behavior"] for d in setup["tools"][0]["functionDeclarations"]}
    assert behaviors == {"lookup_order": "NON_BLOCKING", "end_call": "NON_BLOCKING"}
    [answer] = [r for m in client_messages(emulator, "toolResponse") for r in m["functionResponses"]]
    assert answer["response"]["output"]["status"] == "shipped"
    assert "scheduling" not in answer  # not read by this model, so not sent
    statuses = [
        m["serverContent"]["interactionStatus"]
        for m in _out(emulator)
        if "interactionStatus" in m.get("serverContent", {})
    ]
    assert statuses == ["IN_PROGRESS", "IDLE"]
    bot = [t["text"] for t in report.transcript if t["role"] == "bot"]
    assert bot == ["Let me check that order.", "Your order is on its way."]


async def test_search_grounding_reaches_the_call_record_and_transcripts_use_the_plans_language(
    gateway: Gateway, emulator: Emulator
) -> None:
    """google_search = true declares the tool; the model's groundingMetadata becomes a "grounding" event
    in the call record. The plan's language goes to the transcriptions, not to speechConfig."""
    emulator.scenario.rules = [
        Rule(text_contains="Saluda", say="Abrimos a las nueve.", search="horario acme")
    ]
    report = await place_call(CallOptions(to=SEARCH, gateway=gateway.url, hangup_after_s=6.0))
    assert report.protocol_errors == []
    setup = emulator.sessions[0].setup
    assert setup is not None
    assert {"googleSearch": {}} in setup["tools"]
    assert setup["inputAudioTranscription"] == {"languageCodes": ["es-US"]}
    assert setup["outputAudioTranscription"] == {"languageCodes": ["es-US"]}
    assert "languageCode" not in setup["generationConfig"].get("speechConfig", {})
    record = await _record(gateway, report.call_sid)
    [grounding] = [e for e in record["events"] if e["kind"] == "grounding"]
    assert grounding["detail"] == {
        "queries": ["horario acme"],
        "sources": [{"uri": "https://search.example/horario-acme", "title": "search.example"}],
    }
