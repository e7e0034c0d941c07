"""Turn behaviour over loopback: echo persona, barge-in, tools, resumption, recording.

Plain ``ws://`` on purpose: these test the emulator's own behaviour with a raw client; TLS to the
emulator is what the gateway's tests (tests/e2e, tests/gemini) and the SDK conformance test use.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from websockets.exceptions import ConnectionClosed

from gateway.emulator import Emulator, Rule, voice

from .helpers import MODEL, LiveClient, audio_bytes, fast, silence, tone, transcript

TX = {"inputAudioTranscription": {}, "outputAudioTranscription": {}}
GREET = {
    "clientContent": {
        "turns": [{"role": "user", "parts": [{"text": "Greet the caller."}]}],
        "turnComplete": True,
    }
}


def _kinds(messages: list[dict]) -> list[str]:
    """Flatten messages to the names of their serverContent flags / top-level keys, deduplicated in runs."""
    out: list[str] = []
    for msg in messages:
        content = msg.get("serverContent")
        names = (
            [k for k in content if k in ("interrupted", "generationComplete", "turnComplete")]
            if content
            else []
        )
        names = names or [next(iter(msg))]
        for name in names:
            if not out or out[-1] != name:
                out.append(name)
    return out


async def test_greeting_is_spoken_audio_with_transcription() -> None:
    """A clientContent turn gets 24 kHz audio chunks, a transcription, generationComplete, turnComplete."""
    async with Emulator(fast(audio_chunk_ms=60)) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(**TX)
        await client.send(GREET)
        turn = await client.turn()
        assert transcript(turn) == emu.scenario.greeting
        parts = [
            m["serverContent"]["modelTurn"]["parts"][0] for m in turn if "modelTurn" in m["serverContent"]
        ]
        assert len(parts) > 5
        assert {p["inlineData"]["mimeType"] for p in parts} == {"audio/pcm;rate=24000"}
        assert len(base64.b64decode(parts[0]["inlineData"]["data"])) == 2880  # 60 ms at 24 kHz
        assert audio_bytes(turn) == len(voice.speak(emu.scenario.greeting))
        assert _kinds(turn)[-2:] == ["generationComplete", "turnComplete"]
        assert "usageMetadata" in turn[-1]


async def test_audio_is_sent_faster_than_real_time_but_paced() -> None:
    """With speed=4, a phrase streams in about a quarter of its duration."""
    async with Emulator(fast(speed=4.0, greeting="Hello there, dear caller, how are you today?")) as emu:
        client = await LiveClient.connect(emu)
        await client.setup()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await client.send(GREET)
        turn = await client.turn()
        elapsed = loop.time() - start
        spoken = audio_bytes(turn) / 48000
        assert spoken / 4 * 0.8 <= elapsed < spoken / 2


async def test_echo_after_configured_silence_with_chime_and_matching_length() -> None:
    """An utterance ends after the setup's silenceDurationMs; the echo is chime + the speech at 24 kHz."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(
            realtimeInputConfig={"automaticActivityDetection": {"silenceDurationMs": 300}}, **TX
        )
        await client.stream(tone(0.6), urlsafe=True)
        await client.stream(silence(0.26))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.recv(), 0.2)  # 260 ms of silence is not enough
        await client.stream(silence(0.06))
        turn = await client.turn()
        assert transcript(turn, "inputTranscription") == " [speech 0.6 s]"
        assert transcript(turn) == "You said something 0.6 seconds long; here it is back."
        assert audio_bytes(turn) == len(voice.chime()) + int(0.6 * 48000)
        assert emu.sessions[0].audio_in_bytes == len(tone(0.6)) + len(silence(0.32))


async def test_snake_case_and_standard_base64_input_is_recorded_normalised() -> None:
    """snake_case frames with standard base64 are accepted and recorded in lowerCamel."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.setup()
        await client.stream(tone(0.1), snake=True)
        frame = await emu.wait_for(lambda f: f.direction == "in" and "realtimeInput" in (f.payload or {}))
        assert frame.kind == "text"
        assert frame.payload is not None
        assert frame.payload["realtimeInput"]["audio"]["mimeType"] == "audio/pcm;rate=16000"
        assert '"realtime_input"' in str(frame.raw)


async def test_audio_stream_end_flushes_the_utterance() -> None:
    """audioStreamEnd ends the current utterance without waiting for silence."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(**TX)
        await client.stream(tone(0.4))
        await client.send({"realtimeInput": {"audioStreamEnd": True}})
        turn = await client.turn()
        assert transcript(turn, "inputTranscription") == " [speech 0.4 s]"


async def test_manual_activity_detection_uses_activity_start_and_end() -> None:
    """With automatic detection disabled, activityStart/End delimit the turn; silence does not."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(realtimeInputConfig={"automaticActivityDetection": {"disabled": True}}, **TX)
        await client.stream(tone(0.3) + silence(1.0))  # outside a window: dropped
        await client.send({"realtimeInput": {"activityStart": {}}})
        await client.stream(tone(0.5) + silence(0.7))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.recv(), 0.1)
        await client.send({"realtimeInput": {"activityEnd": {}}})
        turn = await client.turn()
        assert transcript(turn, "inputTranscription") == " [speech 1.2 s]"


async def test_barge_in_interrupts_without_generation_complete() -> None:
    """Caller speech over the reply: interrupted, audio stops, turnComplete without generationComplete."""
    async with Emulator(fast(speed=1.0)) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(**TX)
        await client.send(GREET)
        first = await client.until(lambda m: "modelTurn" in m.get("serverContent", {}))
        await client.stream(tone(0.2))
        turn = first + await client.turn()
        assert _kinds(turn)[-2:] == ["interrupted", "turnComplete"]
        assert not any(m.get("serverContent", {}).get("generationComplete") for m in turn)
        after = turn[next(i for i, m in enumerate(turn) if m.get("serverContent", {}).get("interrupted")) :]
        assert audio_bytes(after) == 0
        assert audio_bytes(turn) < len(voice.speak(emu.scenario.greeting)) // 2


async def test_no_interruption_mode_never_interrupts() -> None:
    """activityHandling NO_INTERRUPTION lets the reply finish despite caller speech."""
    async with Emulator(fast(speed=2.0, greeting="Hello there, dear caller.")) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(realtimeInputConfig={"activityHandling": "NO_INTERRUPTION"})
        await client.send(GREET)
        await client.until(lambda m: "modelTurn" in m.get("serverContent", {}))
        await client.stream(tone(0.2))
        turn = await client.turn()
        assert _kinds(turn)[-2:] == ["generationComplete", "turnComplete"]


async def test_blocking_tool_call_round_trip() -> None:
    """A scripted blocking tool call waits for the toolResponse, then speaks the result."""
    rule = Rule(text_contains="weather", tool="get_weather", args={"city": "Paris"})
    async with Emulator(fast(rules=[rule])) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(**TX)
        await client.send({"realtimeInput": {"text": "What's the weather?"}})
        before = await client.until(lambda m: "toolCall" in m)
        assert transcript(before, "inputTranscription") == "What's the weather?"
        call = before[-1]["toolCall"]["functionCalls"][0]
        assert call["name"] == "get_weather"
        assert call["args"] == {"city": "Paris"}
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.recv(), 0.1)  # the model waits
        await client.send(
            {
                "tool_response": {
                    "function_responses": [
                        {"id": call["id"], "name": "get_weather", "response": {"temp_c": 21}}
                    ]
                }
            }
        )
        turn = await client.turn()
        assert transcript(turn) == 'The result is: {"temp_c": 21}'
        assert _kinds(turn)[-2:] == ["generationComplete", "turnComplete"]


async def test_barge_in_during_pending_call_cancels_it() -> None:
    """Speech while a blocking call is pending: interrupted, toolCallCancellation, turnComplete."""
    rule = Rule(text_contains="weather", tool="get_weather")
    async with Emulator(fast(rules=[rule])) as emu:
        client = await LiveClient.connect(emu)
        await client.setup()
        await client.send({"realtimeInput": {"text": "weather please"}})
        call = (await client.until(lambda m: "toolCall" in m))[-1]["toolCall"]["functionCalls"][0]
        await client.stream(tone(0.2))
        turn = await client.turn()
        assert _kinds(turn) == ["interrupted", "toolCallCancellation", "turnComplete"]
        assert turn[1]["toolCallCancellation"] == {"ids": [call["id"]]}


@pytest.mark.parametrize("inside", [False, True])
async def test_non_blocking_tool_when_idle_and_silent(inside: bool) -> None:
    """NON_BLOCKING: the turn ends after the call; WHEN_IDLE answers later, SILENT stays quiet."""
    rule = Rule(
        text_contains="book", say="Booking it.", tool="book", non_blocking=True, reply="Booked: {result}"
    )
    async with Emulator(fast(rules=[rule])) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(**TX)
        await client.send({"realtimeInput": {"text": "book a table"}})
        turn = await client.turn()
        assert _kinds(turn)[-3:] == ["toolCall", "generationComplete", "turnComplete"]
        call_id = next(m for m in turn if "toolCall" in m)["toolCall"]["functionCalls"][0]["id"]

        def response(scheduling: str, ok: str) -> dict:
            if inside:  # the tools guide's spelling: scheduling inside response
                return {
                    "id": call_id,
                    "name": "book",
                    "response": {"ok": ok, "scheduling": scheduling},
                    "willContinue": True,
                }
            return {
                "id": call_id,
                "name": "book",
                "response": {"ok": ok},
                "scheduling": scheduling,
                "willContinue": True,
            }

        await client.send({"toolResponse": {"functionResponses": [response("SILENT", "a")]}})
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.recv(), 0.15)
        await client.send({"toolResponse": {"functionResponses": [response("WHEN_IDLE", "b")]}})
        turn = await client.turn()
        assert transcript(turn) == 'Booked: {"ok": "b"}'


async def test_non_blocking_interrupt_scheduling_cuts_current_reply() -> None:
    """scheduling INTERRUPT interrupts the ongoing reply and speaks the result at once."""
    rule = Rule(text_contains="book", tool="book", non_blocking=True, reply="Done: {result}")
    async with Emulator(fast(speed=1.0, rules=[rule])) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(**TX)
        await client.send({"realtimeInput": {"text": "book it"}})
        call_id = (await client.until(lambda m: "toolCall" in m))[-1]["toolCall"]["functionCalls"][0]["id"]
        await client.turn()
        await client.send(GREET)  # a long reply starts
        await client.until(lambda m: "modelTurn" in m.get("serverContent", {}))
        await client.send(
            {
                "toolResponse": {
                    "functionResponses": [{"id": call_id, "response": {"x": 1}, "scheduling": "INTERRUPT"}]
                }
            }
        )
        cut = await client.turn()
        assert _kinds(cut)[-2:] == ["interrupted", "turnComplete"]
        answer = await client.turn()
        assert transcript(answer) == 'Done: {"x": 1}'


async def test_strict_tool_ids_reject_unknown_ids() -> None:
    """With strict_tool_ids an unknown response id closes 1007; by default it is ignored."""
    async with Emulator(fast(strict_tool_ids=True)) as emu:
        client = await LiveClient.connect(emu)
        await client.setup()
        await client.send({"toolResponse": {"functionResponses": [{"id": "nope", "response": {}}]}})
        with pytest.raises(ConnectionClosed) as info:
            await client.recv()
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1007


async def test_dtmf_rule_and_scripted_close() -> None:
    """A DTMF digit sent as text triggers its rule, which speaks and then closes with its code."""
    rule = Rule(dtmf="0", say="Goodbye.", close=1000, close_reason="The operation was cancelled.")
    async with Emulator(fast(rules=[rule])) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(**TX)
        await client.send({"realtimeInput": {"text": "DTMF 0"}})
        turn = await client.turn()
        assert transcript(turn) == "Goodbye."
        with pytest.raises(ConnectionClosed) as info:
            await client.recv()
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1000


async def test_resumption_updates_and_resumed_session_keeps_history() -> None:
    """Updates carry fresh handles; a resumed session keeps the history and the turn count.

    The first GREET is the opening instruction, not a caller turn: the 4th text sent is caller turn 3.
    """
    rule = Rule(turn=3, say="Third caller turn.")
    async with Emulator(fast(rules=[rule])) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(sessionResumption={})
        handles = []
        for _ in range(2):
            await client.send(GREET)
            await client.turn()
            update = (await client.recv())["sessionResumptionUpdate"]
            assert update["resumable"] is True
            handles.append(update["newHandle"])
        assert handles[0] != handles[1]
        await client.close()
        resumed = await LiveClient.connect(emu)
        await resumed.setup(sessionResumption={"handle": handles[-1]}, **TX)
        assert emu.sessions[1].resumed_from == handles[-1]
        assert emu.sessions[1].conversation is emu.sessions[0].conversation
        await resumed.send(GREET)
        assert transcript(await resumed.turn()) == "Welcome back! This conversation already has 4 turns."
        await resumed.send(GREET)
        assert transcript(await resumed.turn()) == "Third caller turn."  # the turn count continued


async def test_resumption_update_not_resumable_while_call_pending() -> None:
    """While a non-blocking call is pending the update is the empty (not resumable) message."""
    rule = Rule(text_contains="book", tool="book", non_blocking=True)
    async with Emulator(fast(rules=[rule], resumption_update_on_setup=True)) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(sessionResumption={})
        assert "newHandle" in (await client.recv())["sessionResumptionUpdate"]
        await client.send({"realtimeInput": {"text": "book"}})
        await client.turn()
        assert await client.recv() == {"sessionResumptionUpdate": {}}


async def test_text_frames_option_and_frame_log() -> None:
    """text_frames sends text frames; every frame in both directions is recorded with timestamps."""
    async with Emulator(fast(text_frames=True)) as emu:
        client = await LiveClient.connect(emu)
        await client.send({"setup": {"model": MODEL}})
        assert json.loads(await client.ws.recv()) == {"setupComplete": {}}
        frames = emu.sessions[0].frames
        assert [(f.direction, f.kind) for f in frames] == [("in", "text"), ("out", "text")]
        assert frames[0].t <= frames[1].t
        assert frames[0].payload == {"setup": {"model": MODEL}}


async def test_usage_metadata_counts_audio_tokens() -> None:
    """turnComplete carries usageMetadata with audio token counts (25 tokens/s)."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.setup()
        await client.stream(tone(1.0) + silence(0.6))
        turn = await client.turn()
        usage = turn[-1]["usageMetadata"]
        assert usage["promptTokenCount"] >= 25
        assert usage["responseTokenCount"] == int(audio_bytes(turn) / 48000 * 25)
        assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["responseTokenCount"]
