"""The call inspector's pure parts: waveform peaks of a recording, and reply latencies on bot turns."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.records.peaks import wav_peaks
from gateway.server.inspector import attach_latencies


def _stereo(path: Path, caller: np.ndarray, bot: np.ndarray, rate: int = 8000) -> None:
    frames = np.empty(len(caller) * 2, dtype="<i2")
    frames[0::2], frames[1::2] = caller, bot
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames.tobytes())


def test_peaks_follow_each_channel(tmp_path: Path) -> None:
    """Caller loud in the first second, bot at half scale in the second: 50 ms buckets say so."""
    rate = 8000
    caller = np.zeros(2 * rate, dtype=np.int16)
    bot = np.zeros(2 * rate, dtype=np.int16)
    caller[:rate] = 32000
    bot[rate:] = -16384
    _stereo(tmp_path / "a.wav", caller, bot)
    doc = wav_peaks(tmp_path / "a.wav")
    assert (doc["rate"], doc["duration_s"], doc["bucket_s"]) == (8000, 2.0, 0.05)
    assert doc["caller"] == [976] * 20 + [0] * 20
    assert doc["bot"] == [0] * 20 + [500] * 20


def test_a_long_recording_gets_coarser_buckets_not_a_bigger_answer(tmp_path: Path) -> None:
    rate = 8000
    n = 100 * rate + 37  # not a whole number of buckets: the tail is a bucket of its own
    signal = (np.arange(n) % 200).astype(np.int16)
    _stereo(tmp_path / "b.wav", signal, signal)
    doc = wav_peaks(tmp_path / "b.wav", max_buckets=500)
    assert len(doc["caller"]) <= 501
    assert doc["bucket_s"] == pytest.approx(n / 500 / rate, abs=1 / rate)


def test_peaks_refuse_what_is_not_a_recording(tmp_path: Path) -> None:
    (tmp_path / "c.wav").write_bytes(b"RIFF....not a wave")
    with pytest.raises((wave.Error, EOFError)):
        wav_peaks(tmp_path / "c.wav")


def test_latencies_go_to_the_nearest_bot_turn() -> None:
    doc: dict[str, Any] = {
        "turns": [
            {"seq": 1, "role": "bot", "started_at": 100.6},
            {"seq": 2, "role": "caller", "started_at": 103.0},
            {"seq": 3, "role": "bot", "started_at": 104.9},
            {"seq": 4, "role": "bot", "started_at": 130.0},
        ],
        "events": [
            {"kind": "greeting", "at": 100.5, "detail": {"latency_ms": 480.0}},
            {"kind": "reply", "at": 104.7, "detail": {"latency_ms": 612.5, "speech_end_at": 104.09}},
            {"kind": "reply", "at": 200.0, "detail": {"latency_ms": 700.0, "speech_end_at": 199.3}},
        ],
    }
    attach_latencies(doc)
    first, _, second, third = doc["turns"]
    assert first["greeting_latency_ms"] == 480.0
    assert "reply_latency_ms" not in first
    assert (second["reply_latency_ms"], second["speech_end_at"], second["audio_at"]) == (612.5, 104.09, 104.7)
    assert "reply_latency_ms" not in third  # no bot turn near the last event: nothing is guessed
