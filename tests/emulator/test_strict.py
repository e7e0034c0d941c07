"""The emulator is strict where the real service is (docs/gemini-live.md §9.3) and plays each model's
turn rules.

Rejections come as the service's close code and reason; the per-model behaviours (3.8's non-blocking
default, extended thinking's interactionStatus, manual activity, no-interruption) are what our client
is tested against, so its mistakes fail here rather than on a phone line.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from gateway.emulator import Emulator, Rule

from .helpers import LiveClient, fast, silence, tone, transcript

TX = {"inputAudioTranscription": {}, "outputAudioTranscription": {}}
AUDIO = {"responseModalities": ["AUDIO"]}
INVALID = "Request contains an invalid argument."
MANUAL = {"automaticActivityDetection": {"disabled": True}}


def _decl(name: str, behavior: str | None = None) -> dict[str, Any]:
    decl: dict[str, Any] = {"name": name, "description": f"The {name} tool."}
    if behavior is not None:
        decl["behavior"] = behavior
    return decl


async def _closed_with(client: LiveClient) -> tuple[int, str]:
    async def drain() -> None:
        while True:
            await client.recv()

    with pytest.raises(ConnectionClosed) as info:
        await drain()
    rcvd = info.value.rcvd
    assert rcvd is not None
    return rcvd.code, rcvd.reason


async def _rejected(setup: dict[str, Any], model: str = "gemini-3.8-live") -> tuple[int, str]:
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.send({"setup": {"model": f"models/{model}", **setup}})
        return await _closed_with(client)


@pytest.mark.parametrize(
    ("model", "setup", "reason"),
    [
        pytest.param(
            "gemini-3.8-live",
            {"generationConfig": {**AUDIO, "creativity": 3}},
            "Invalid JSON payload received. Unknown name \"creativity\" at 'setup.generation_config': "
            "Cannot find field.",
            id="unknown-generation-field",
        ),
        pytest.param(
            "gemini-3.8-live",
            {"generationConfig": {**AUDIO, "responseMimeType": "application/json"}},
            INVALID,
            id="unsupported-generation-field",
        ),
        pytest.param(
            "gemini-3.8-live",
            {"generationConfig": {**AUDIO, "thinkingConfig": {"thinkingLevel": "LOW"}}},
            INVALID,
            id="thinking-on-3.8-live",
        ),
        pytest.param(
            "gemini-3.8-live", {"proactivity": {"proactiveAudio": False}}, INVALID, id="proactive-off-on-3.8"
        ),
        pytest.param(
            "gemini-3.8-live",
            {"generationConfig": {**AUDIO, "enableAffectiveDialog": True}},
            INVALID,
            id="affective-dialog-on-3.8",
        ),
        pytest.param(
            "gemini-3.8-live-extended-thinking",
            {"tools": [{"functionDeclarations": [_decl("end_call", "BLOCKING")]}]},
            INVALID,
            id="blocking-on-extended-thinking",
        ),
        pytest.param(
            "gemini-3.8-live-extended-thinking",
            {"generationConfig": {**AUDIO, "thinkingConfig": {"thinkingLevel": "MINIMAL"}}},
            INVALID,
            id="minimal-on-extended-thinking",
        ),
        pytest.param(
            "gemini-3.1-flash-live-preview",
            {"tools": [{"functionDeclarations": [_decl("report", "NON_BLOCKING")]}]},
            INVALID,
            id="non-blocking-on-3.1",
        ),
        pytest.param(
            "gemini-2.5-flash-native-audio-preview-12-2025",
            {"generationConfig": {**AUDIO, "thinkingConfig": {"thinkingLevel": "LOW"}}},
            INVALID,
            id="level-on-2.5",
        ),
        pytest.param(
            "gemini-3.8-live",
            {
                "generationConfig": {
                    "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}}}
                }
            },
            "Cannot extract voices from a non-audio request.",
            id="voice-without-audio-modality",
        ),
        pytest.param(
            "gemini-3.8-live",
            {"realtimeInputConfig": {"activityHandling": "NEVER_INTERRUPT"}},
            "Invalid value at 'setup.realtime_input_config.activity_handling' "
            '(type.googleapis.com/google.ai.generativelanguage.v1beta.ActivityHandling), "NEVER_INTERRUPT"',
            id="bad-activity-handling",
        ),
        pytest.param(
            "gemini-3.8-live",
            {"realtimeInputConfig": {"automaticActivityDetection": {"startOfSpeechSensitivity": "HIGH"}}},
            "Invalid value at 'setup.realtime_input_config.automatic_activity_detection.start_of_speech_"
            "sensitivity' (type.googleapis.com/google.ai.generativelanguage.v1beta.StartSensitivity), \"HI",
            id="short-sensitivity-name",
        ),
        pytest.param(
            "gemini-3.8-live",
            {"tools": [{"functionDeclarations": [_decl("x", "ASYNC")]}]},
            "Invalid value at 'setup.tools[0].function_declarations[0].behavior' "
            '(type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionDeclaration.Behavior), "ASYNC"',
            id="bad-behavior",
        ),
        pytest.param(
            "gemini-3.8-live", {"tools": [{"codeExecution": {}}]}, INVALID, id="code-execution-on-3.8"
        ),
    ],
)
async def test_setup_the_service_refuses_is_closed_with_its_code_and_reason(
    model: str, setup: dict[str, Any], reason: str
) -> None:
    """Each documented rejection closes 1007 with the service's wording (cut to 123 bytes)."""
    code, got = await _rejected(setup, model)
    assert code == 1007
    assert got == reason.encode()[:123].decode("utf-8", "ignore")


@pytest.mark.parametrize(
    ("model", "setup"),
    [
        # Native audio ignores a language code (field reports: livekit#4338, adk-python#5542).
        ("gemini-3.8-live", {"generationConfig": {**AUDIO, "speechConfig": {"languageCode": "es-US"}}}),
        # Google's examples spell the level in lower case.
        (
            "gemini-3.8-live-extended-thinking",
            {"generationConfig": {**AUDIO, "thinkingConfig": {"thinkingLevel": "low"}}},
        ),
        (
            "gemini-2.5-flash-native-audio-preview-12-2025",
            {"generationConfig": {**AUDIO, "thinkingConfig": {"thinkingBudget": 0}}},
        ),
        (
            "gemini-3.8-live",
            {"tools": [{"googleSearch": {}}, {"functionDeclarations": [_decl("a", "BLOCKING")]}]},
        ),
        ("gemini-3.8-live", {"inputAudioTranscription": {"languageCodes": ["es-US", "en-US"]}}),
        (
            "gemini-live-2.5-flash",
            {"generationConfig": {"responseModalities": ["TEXT"], "speechConfig": {"languageCode": "de-DE"}}},
        ),
    ],
)
async def test_what_the_service_accepts_is_accepted(model: str, setup: dict[str, Any]) -> None:
    """Strictness stops at what the service is known to refuse."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.send({"setup": {"model": f"models/{model}", **setup}})
        assert await client.recv() == {"setupComplete": {}}
        await client.close()


@pytest.mark.parametrize(
    ("realtime", "message"),
    [
        ({}, {"realtimeInput": {"activityStart": {}}}),
        ({}, {"realtimeInput": {"activityEnd": {}}}),
        (MANUAL, {"realtimeInput": {"audioStreamEnd": True}}),
    ],
)
async def test_activity_signals_of_the_other_detection_mode_close_the_session(
    realtime: dict[str, Any], message: dict[str, Any]
) -> None:
    """activityStart/End need manual detection, audioStreamEnd automatic (§2.4)."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(realtimeInputConfig=realtime)
        await client.send(message)
        assert await _closed_with(client) == (1007, INVALID)


async def test_a_bad_scheduling_value_closes_the_session() -> None:
    """FunctionResponse.scheduling is an enum: an unknown name is a parse error."""
    rule = Rule(text_contains="go", tool="report", non_blocking=True)
    async with Emulator(fast(rules=[rule])) as emu:
        client = await LiveClient.connect(emu)
        await client.setup()
        await client.send({"realtimeInput": {"text": "go"}})
        call = (await client.until(lambda m: "toolCall" in m))[-1]["toolCall"]["functionCalls"][0]
        answer = {"id": call["id"], "name": "report", "response": {}, "scheduling": "LATER"}
        await client.send({"toolResponse": {"functionResponses": [answer]}})
        code, reason = await _closed_with(client)
        assert code == 1007
        assert reason.startswith("Invalid value at 'tool_response.function_responses.scheduling'")


# ------------------------------------------------------------------------------------------ turns


async def test_an_undeclared_behavior_is_non_blocking_on_38_live() -> None:
    """The model does not wait for a tool declared without behavior: the turn ends before the answer."""
    rule = Rule(text_contains="order", say="Checking.", tool="lookup", reply="Found: {result}")
    async with Emulator(fast(rules=[rule])) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(tools=[{"functionDeclarations": [_decl("lookup")]}], **TX)
        await client.send({"realtimeInput": {"text": "my order"}})
        turn = await client.turn()
        assert any("toolCall" in m for m in turn)  # the turn completed without waiting for the answer
        call = next(m for m in turn if "toolCall" in m)["toolCall"]["functionCalls"][0]
        answer = {"id": call["id"], "name": "lookup", "response": {"status": "shipped"}}
        await client.send({"toolResponse": {"functionResponses": [answer]}})
        later = await client.turn()
        assert transcript(later) == 'Found: {"status": "shipped"}'


async def test_declared_blocking_waits_even_where_the_rule_says_non_blocking() -> None:
    """A declared behavior wins over the scenario: BLOCKING pauses the model until the answer."""
    rule = Rule(text_contains="order", tool="lookup", non_blocking=True, reply="Found: {result}")
    async with Emulator(fast(rules=[rule])) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(tools=[{"functionDeclarations": [_decl("lookup", "BLOCKING")]}], **TX)
        await client.send({"realtimeInput": {"text": "my order"}})
        call = (await client.until(lambda m: "toolCall" in m))[-1]["toolCall"]["functionCalls"][0]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.recv(), 0.1)
        await client.send(
            {"toolResponse": {"functionResponses": [{"id": call["id"], "name": "lookup", "response": {}}]}}
        )
        assert transcript(await client.turn()) == "Found: {}"


async def test_extended_thinking_reports_in_progress_until_the_tool_answer_is_spoken() -> None:
    """interactionStatus rides on every turnComplete: IN_PROGRESS while the call is out, then IDLE."""
    rule = Rule(
        text_contains="refund", say="Let me check that.", tool="refund_status", reply="Your refund: {result}"
    )
    async with Emulator(fast(rules=[rule])) as emu:
        client = await LiveClient.connect(emu)
        await client.send(
            {
                "setup": {
                    "model": "models/gemini-3.8-live-extended-thinking",
                    "generationConfig": {**AUDIO, "thinkingConfig": {"thinkingLevel": "LOW"}},
                    "tools": [{"functionDeclarations": [_decl("refund_status", "NON_BLOCKING")]}],
                    **TX,
                }
            }
        )
        assert await client.recv() == {"setupComplete": {}}
        await client.send({"realtimeInput": {"text": "my refund"}})
        first = await client.turn()
        assert first[-1]["serverContent"]["interactionStatus"] == "IN_PROGRESS"
        call = next(m for m in first if "toolCall" in m)["toolCall"]["functionCalls"][0]
        # Scheduling is not read on this model: SILENT would otherwise keep it quiet.
        answer = {
            "id": call["id"],
            "name": "refund_status",
            "response": {"output": "sent"},
            "scheduling": "SILENT",
        }
        await client.send({"toolResponse": {"functionResponses": [answer]}})
        second = await client.turn()
        assert transcript(second) == 'Your refund: {"output": "sent"}'
        assert second[-1]["serverContent"]["interactionStatus"] == "IDLE"


async def test_a_streamed_answer_ends_with_an_empty_silent_response() -> None:
    """willContinue parts are spoken; the empty last answer (willContinue false) only closes the call."""
    rule = Rule(text_contains="go", tool="progress", reply="Update: {result}")
    async with Emulator(fast(rules=[rule])) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(tools=[{"functionDeclarations": [_decl("progress", "NON_BLOCKING")]}], **TX)
        await client.send({"realtimeInput": {"text": "go"}})
        turn = await client.turn()
        call = next(m for m in turn if "toolCall" in m)["toolCall"]["functionCalls"][0]
        part = {"id": call["id"], "name": "progress", "response": {"output": "half"}, "willContinue": True}
        await client.send({"toolResponse": {"functionResponses": [part]}})
        assert transcript(await client.turn()) == 'Update: {"output": "half"}'
        last = {
            "id": call["id"],
            "name": "progress",
            "response": {},
            "willContinue": False,
            "scheduling": "SILENT",
        }
        await client.send({"toolResponse": {"functionResponses": [last]}})
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.recv(), 0.2)
        assert emu.sessions[0]._pending == {}


async def test_manual_activity_with_all_input_keeps_audio_from_before_the_start() -> None:
    """TURN_INCLUDES_ALL_INPUT: audio between turns belongs to the next turn instead of being dropped."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(realtimeInputConfig={**MANUAL, "turnCoverage": "TURN_INCLUDES_ALL_INPUT"}, **TX)
        await client.stream(tone(0.3))
        await client.send({"realtimeInput": {"activityStart": {}}})
        await client.stream(tone(0.5))
        await client.send({"realtimeInput": {"activityEnd": {}}})
        turn = await client.turn()
        assert transcript(turn, "inputTranscription") == " [speech 0.8 s]"


async def test_no_interruption_queues_the_callers_turn_until_the_reply_ends() -> None:
    """NO_INTERRUPTION with manual activity: a start during the reply does not cut it; the caller's
    turn is answered after it."""
    async with Emulator(fast(speed=2.0, greeting="Hello there, dear caller.")) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(realtimeInputConfig={**MANUAL, "activityHandling": "NO_INTERRUPTION"}, **TX)
        await client.send(
            {"clientContent": {"turns": [{"role": "user", "parts": [{"text": "Hi"}]}], "turnComplete": True}}
        )
        await client.until(lambda m: "modelTurn" in m.get("serverContent", {}))
        await client.send({"realtimeInput": {"activityStart": {}}})
        await client.stream(tone(0.4))
        await client.send({"realtimeInput": {"activityEnd": {}}})
        greeting = await client.turn()
        assert not any(m.get("serverContent", {}).get("interrupted") for m in greeting)
        assert transcript(greeting) == "Hello there, dear caller."
        answer = await client.turn()
        assert transcript(answer, "inputTranscription") == " [speech 0.4 s]"


async def test_voice_activity_is_reported_when_the_scenario_asks() -> None:
    """voiceActivity ACTIVITY_START/END with the audio offset, for clients that read it."""
    async with Emulator(fast(voice_activity=True)) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(realtimeInputConfig={"automaticActivityDetection": {"silenceDurationMs": 300}})
        await client.stream(silence(0.5) + tone(0.5) + silence(0.5))
        seen = await client.turn()
        signals = [m["voiceActivity"] for m in seen if "voiceActivity" in m]
        assert [s["type"] for s in signals] == ["ACTIVITY_START", "ACTIVITY_END"]
        assert signals[0]["audioOffset"] == "0.600s"  # 0.5 s of silence + the 100 ms that confirm speech


async def test_wait_for_input_and_turn_complete_reason() -> None:
    """A rule can make the model wait (waitingForInput, NEED_MORE_INPUT) or end with a reason."""
    rules = [
        Rule(text_contains="um", wait_for_input=True),
        Rule(text_contains="bad", say="Sorry.", turn_complete_reason="RESPONSE_REJECTED"),
    ]
    async with Emulator(fast(rules=rules)) as emu:
        client = await LiveClient.connect(emu)
        await client.setup()
        await client.send({"realtimeInput": {"text": "um"}})
        turn = await client.turn()
        assert {"serverContent": {"waitingForInput": True}} in turn
        assert turn[-1]["serverContent"]["turnCompleteReason"] == "NEED_MORE_INPUT"
        assert not any(m.get("serverContent", {}).get("generationComplete") for m in turn)
        await client.send({"realtimeInput": {"text": "bad"}})
        turn = await client.turn()
        assert turn[-1]["serverContent"]["turnCompleteReason"] == "RESPONSE_REJECTED"


async def test_search_grounding_only_when_the_setup_enables_google_search() -> None:
    """groundingMetadata (queries and sources) comes with the answer when googleSearch is declared."""
    rule = Rule(text_contains="hours", say="We open at nine.", search="acme opening hours")
    async with Emulator(fast(rules=[rule])) as emu:
        with_search = await LiveClient.connect(emu)
        await with_search.setup(tools=[{"googleSearch": {}}])
        await with_search.send({"realtimeInput": {"text": "hours?"}})
        grounded = [
            m["serverContent"]["groundingMetadata"]
            for m in await with_search.turn()
            if "groundingMetadata" in m.get("serverContent", {})
        ]
        assert grounded == [
            {
                "webSearchQueries": ["acme opening hours"],
                "groundingChunks": [
                    {"web": {"uri": "https://search.example/acme-opening-hours", "title": "search.example"}}
                ],
            }
        ]
        without = await LiveClient.connect(emu)
        await without.setup()
        await without.send({"realtimeInput": {"text": "hours?"}})
        assert not any("groundingMetadata" in m.get("serverContent", {}) for m in await without.turn())
