"""Silence/duration timers (pure) and fallback audio loading."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.bridge.fallback import (
    DEFAULT_FALLBACK_WAV,
    fallback_frames,
    load_frames,
    wav_to_frames,
    wav_to_ulaw_frames,
)
from gateway.bridge.timers import DEFAULT_SILENCE_PROMPT, CallTimers, Say, TimerAction
from gateway.dialplan.model import Action, Dialplan, Limits
from gateway.errors import AudioError
from gateway.telephony.provider import AudioFormat


def test_silence_prompts_once_then_ends_politely() -> None:
    """N s of silence → one prompt; N more → the silence action with a goodbye line."""
    t = CallTimers(Limits(silence_timeout_s=10.0), now=0.0)
    assert t.next_at() == 10.0
    assert t.due(9.9) is None
    assert t.due(10.0) == Say(DEFAULT_SILENCE_PROMPT, "silence prompt")
    assert t.next_at() == 20.0
    step = t.due(20.0)
    assert isinstance(step, TimerAction)
    assert step.action.kind == "hangup"
    assert "Goodbye" in step.say
    assert t.next_at() is None
    assert not t.active


def test_caller_activity_rearms_the_prompt_and_bot_audio_pauses_the_clock() -> None:
    """Speech restarts the clock and re-arms the prompt; the bot talking is not the caller's silence."""
    t = CallTimers(Limits(silence_timeout_s=5.0, silence_prompt="Hello?"), now=0.0)
    assert t.due(5.0) == Say("Hello?", "silence prompt")
    t.caller_active(7.0)
    assert t.due(11.9) is None
    assert t.due(12.0) == Say("Hello?", "silence prompt")  # prompted again after new speech
    t.bot_active(until=30.0)
    assert t.next_at() == 35.0


def test_max_duration_warns_then_acts() -> None:
    """The warning comes once at warning_at_s, the action at max_duration_s (transfer with its target)."""
    transfer = Action("transfer", say="Connecting you to a person.", target="+15550009999")
    t = CallTimers(
        Limits(max_duration_s=100.0, max_duration_warning="One minute left.", max_duration_action=transfer),
        now=0.0,
    )
    assert t.next_at() == 70.0
    assert t.due(70.0) == Say("One minute left.", "max duration warning")
    assert t.next_at() == 100.0
    assert t.due(100.0) == TimerAction(transfer, "Connecting you to a person.", "maximum call duration")


def test_no_limits_means_nothing_to_time() -> None:
    """A plan without limits never wakes the timer task."""
    t = CallTimers(Limits(), now=0.0)
    assert t.next_at() is None
    assert not t.active


def _wav(rate: int, channels: int, seconds: float) -> bytes:
    n = int(rate * seconds)
    tone = (np.sin(2 * np.pi * 440 * np.arange(n) / rate) * 12000).astype("<i2")
    samples = np.repeat(tone, channels)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def test_wav_becomes_20ms_ulaw_frames_at_any_rate() -> None:
    """A 16 kHz stereo WAV of 0.5 s becomes 25 frames of 160 bytes, audibly non-silent."""
    frames = wav_to_ulaw_frames(_wav(16000, 2, 0.5))
    assert len(frames) == 25
    assert {len(f) for f in frames} == {160}
    assert frames[10] != b"\xff" * 160


def test_bad_wav_is_a_clear_audio_error() -> None:
    """Garbage is refused with AudioError naming the file."""
    with pytest.raises(AudioError, match=r"x\.wav: not a PCM WAV"):
        wav_to_ulaw_frames(b"RIFF nonsense", "x.wav")


def test_shipped_fallback_line_loads() -> None:
    """The default asset exists and holds a few seconds of speech."""
    frames = load_frames(DEFAULT_FALLBACK_WAV)
    assert 50 < len(frames) < 500


def _plan(tmp_path: Path) -> Dialplan:
    return Dialplan(name="support", version="v", source=tmp_path / "support.toml")


def test_per_dialplan_wav_wins_and_a_broken_one_falls_back(tmp_path: Path) -> None:
    """<stem>.fallback.wav beside the plan is used; a broken one falls back to the shipped line."""
    plan = _plan(tmp_path)
    assert fallback_frames(plan)[1] == "default"
    own = tmp_path / "support.fallback.wav"
    own.write_bytes(_wav(8000, 1, 0.2))
    frames, source = fallback_frames(plan)
    assert source == str(own)
    assert len(frames) == 10
    own.write_bytes(b"not a wav at all")
    assert fallback_frames(plan)[1] == "default"


@pytest.mark.parametrize(
    ("audio", "size", "silence"),
    [
        (AudioFormat("ulaw", 8000), 160, 0xFF),
        (AudioFormat("alaw", 8000), 160, 0xD5),
        (AudioFormat("l16", 16000), 640, 0),
    ],
)
def test_fallback_frames_come_in_the_streams_own_format(audio: AudioFormat, size: int, silence: int) -> None:
    """A wideband or A-law stream gets its fallback line in its own format, padded with its silence."""
    frames = wav_to_frames(_wav(16000, 2, 0.51), audio=audio)  # 25.5 frames: the last one half silence
    assert {len(f) for f in frames} == {size}
    assert len(frames) == 26
    assert frames[-1][size // 2 + 8 :] == bytes([silence]) * (size // 2 - 8)
