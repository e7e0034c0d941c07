"""The emulator follows a client's instructions instead of reading them aloud, and numbers caller turns.

The gateway talks to the model in clientContent: the dialplan's greeting instruction first, later
``say_prompt`` ("[Say exactly this to the caller, …]") from its silence/limit guard. The real model
speaks what it is asked to say; the emulator must too, and a ``turn = 1`` rule must answer the
caller's first utterance, not replace the greeting.
"""

from __future__ import annotations

from gateway.bridge.guard import say_prompt
from gateway.emulator import Emulator, Rule

from .helpers import LiveClient, fast, transcript

TX = {"inputAudioTranscription": {}, "outputAudioTranscription": {}}


def _content(text: str) -> dict[str, object]:
    return {"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": True}}


async def test_say_prompt_is_spoken_verbatim() -> None:
    """The gateway's say_prompt is said word for word, not echoed as "You said: [Say exactly …]"."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(**TX)
        await client.send(_content("Greet the caller."))
        assert transcript(await client.turn()) == emu.scenario.greeting
        await client.send(_content(say_prompt("Are you still there?")))
        assert transcript(await client.turn()) == "Are you still there?"


async def test_greeting_that_quotes_its_words_is_spoken_verbatim() -> None:
    """A greeting instruction like support.toml's ``Say: '…'`` gets exactly the quoted sentence."""
    greeting = "Say: 'Thanks for calling Acme Widgets support, it's the assistant.' Then ask for the order."
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(**TX)
        await client.send(_content(greeting))
        assert (
            transcript(await client.turn()) == "Thanks for calling Acme Widgets support, it's the assistant."
        )


async def test_other_bracketed_notes_are_not_read_aloud() -> None:
    """A client note such as the reconnect/tool notice is acted on, never read back to the caller."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(**TX)
        await client.send(_content("Greet the caller."))
        await client.turn()
        await client.send(_content("[The line was briefly interrupted. Tell the caller the outcome.]"))
        said = transcript(await client.turn())
        assert "[" not in said
        assert "interrupted" not in said


async def test_turn_one_is_the_callers_first_utterance_not_the_greeting() -> None:
    """Caller turns count from 1 after the greeting; client notes in between do not shift the count."""
    rules = [Rule(turn=1, say="First caller turn."), Rule(turn=2, say="Second caller turn.")]
    async with Emulator(fast(rules=rules)) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(**TX)
        await client.send(_content("Greet the caller warmly."))
        assert transcript(await client.turn()) == emu.scenario.greeting
        await client.send({"realtimeInput": {"text": "hello"}})
        assert transcript(await client.turn()) == "First caller turn."
        await client.send(_content(say_prompt("Are you still there?")))
        assert transcript(await client.turn()) == "Are you still there?"
        await client.send({"realtimeInput": {"text": "[The caller pressed the phone key 5]"}})
        assert transcript(await client.turn()) == "Second caller turn."
