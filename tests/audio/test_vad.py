"""The local VAD (gateway/audio/vad.py): onsets, pre-roll, hangover, noise floor, limits. Sans-I/O."""

from __future__ import annotations

import numpy as np
import pytest
from audio_signals import band_noise, tone

from gateway.audio.vad import LocalVad, VadEdge
from gateway.errors import AudioError

RATE = 16000
FRAME = 320  # 20 ms at 16 kHz


def _frames(samples: np.ndarray) -> list[bytes]:
    data = samples.astype("<i2").tobytes()
    return [data[i : i + 2 * FRAME] for i in range(0, len(data), 2 * FRAME)]


def _speech(seconds: float, amplitude: float = 3000.0) -> list[bytes]:
    return _frames(tone(300.0, RATE, seconds, amplitude))


def _quiet(seconds: float, level: float = 30.0, seed: int = 1) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return _frames(np.round(rng.standard_normal(int(RATE * seconds)) * level))


def _run(vad: LocalVad, frames: list[bytes]) -> list[tuple[int, VadEdge]]:
    """Feed frames; return (index, edge) for every edge."""
    return [(i, edge) for i, frame in enumerate(frames) if (edge := vad.feed(frame)) is not VadEdge.NONE]


def test_speech_starts_after_the_onset_and_ends_after_the_hangover() -> None:
    """60 ms of speech commit the start; 600 ms of quiet (the default hangover) end the turn."""
    vad = LocalVad()
    frames = _quiet(1.0) + _speech(1.0) + _quiet(1.0)
    edges = _run(vad, frames)
    assert edges == [(50 + 2, VadEdge.START), (100 + 30 - 1, VadEdge.END)]
    assert not vad.active


def test_preroll_holds_the_audio_before_and_during_the_onset() -> None:
    """After START, take_preroll returns 240 ms before the onset plus the onset frames, in order."""
    vad = LocalVad()
    quiet = _quiet(1.0)
    speech = _speech(0.2)
    for frame in quiet:
        vad.feed(frame)
    for frame in speech[:2]:
        assert vad.feed(frame) is VadEdge.NONE
    assert vad.feed(speech[2]) is VadEdge.START
    preroll = vad.take_preroll()
    assert preroll == quiet[-12:] + speech[:3]  # 12 x 20 ms = 240 ms, then the 3 onset frames
    assert vad.take_preroll() == []


def test_clicks_shorter_than_the_onset_never_start_a_turn() -> None:
    """A 40 ms tap (two frames) is below the 60 ms onset."""
    vad = LocalVad()
    frames = (_quiet(0.5) + _speech(0.04)) * 10
    assert _run(vad, frames) == []


def test_a_short_pause_stays_inside_one_turn() -> None:
    """A 300 ms breath is shorter than the hangover: one START, one END."""
    vad = LocalVad()
    frames = _speech(0.5) + _quiet(0.3) + _speech(0.5) + _quiet(1.0)
    assert [edge for _, edge in _run(vad, frames)] == [VadEdge.START, VadEdge.END]


def test_steady_line_noise_raises_the_floor_instead_of_reading_as_speech() -> None:
    """Hum louder than the absolute onset level is learnt as the floor (it starts once, before being
    learnt, then stays quiet); speech well above it still starts a turn."""
    vad = LocalVad(max_activity_ms=2000)
    hum = _frames(tone(120.0, RATE, 8.0, 600.0))  # ~-37 dBFS RMS, above the HIGH onset level
    edges = _run(vad, hum)
    assert len([e for _, e in edges if e is VadEdge.START]) <= 1
    assert vad.noise_floor > 300
    assert _run(vad, hum[:100]) == []  # learnt: no more turns
    speech_over_hum = _frames(tone(300.0, RATE, 1.0, 6000.0) + tone(120.0, RATE, 1.0, 600.0))
    assert [e for _, e in _run(vad, speech_over_hum)][:1] == [VadEdge.START]


def test_a_turn_that_never_goes_quiet_is_ended_at_the_limit() -> None:
    """max_activity_ms forces an END so the model still answers."""
    vad = LocalVad(max_activity_ms=1000)
    edges = _run(vad, _speech(1.5))
    assert edges[:2] == [(2, VadEdge.START), (49, VadEdge.END)]  # 1 s counted from the onset


@pytest.mark.parametrize(
    ("kwargs", "end_frame"),
    [
        ({"silence_ms": 200}, 50 + 10 - 1),
        ({"end_sensitivity": "HIGH"}, 50 + 20 - 1),
        ({"end_sensitivity": "LOW"}, 50 + 45 - 1),
    ],
)
def test_hangover_follows_silence_ms_or_end_sensitivity(kwargs: dict[str, object], end_frame: int) -> None:
    """An explicit silence_duration_ms wins; otherwise HIGH ends sooner (400 ms) and LOW later (900 ms)."""
    vad = LocalVad(**kwargs)  # type: ignore[arg-type]
    edges = _run(vad, _speech(1.0) + _quiet(1.5))
    assert edges[-1] == (end_frame, VadEdge.END)


def test_start_sensitivity_sets_the_onset_level() -> None:
    """Quiet speech (about -39 dBFS) starts a turn at HIGH sensitivity but not at LOW."""
    soft = _speech(0.5, amplitude=500.0)
    assert [e for _, e in _run(LocalVad(start_sensitivity="HIGH"), soft)] == [VadEdge.START]
    assert _run(LocalVad(start_sensitivity="LOW"), soft) == []


def test_onset_ms_zero_starts_on_the_first_loud_frame() -> None:
    """prefixPaddingMs 0: the first voiced frame commits the start."""
    assert _run(LocalVad(onset_ms=0), _speech(0.1))[0] == (0, VadEdge.START)


def test_eight_khz_audio_works_the_same() -> None:
    """GATEWAY_UPLINK_RATE=8000: durations are counted in samples at that rate."""
    vad = LocalVad(rate=8000)
    data = (
        np.concatenate([tone(300.0, 8000, 1.0, 3000.0), np.zeros(8000, dtype=np.int16)])
        .astype("<i2")
        .tobytes()
    )
    frames = [data[i : i + 320] for i in range(0, len(data), 320)]
    assert [e for _, e in _run(vad, frames)] == [VadEdge.START, VadEdge.END]


def test_band_noise_at_speech_level_is_speech() -> None:
    """Speech-band noise at a talking level (not a pure tone) is detected too."""
    frames = _frames(band_noise(RATE, 1.0)) + _quiet(1.0)
    assert [e for _, e in _run(LocalVad(), frames)] == [VadEdge.START, VadEdge.END]


def test_bad_settings_are_refused() -> None:
    """Rates outside 8-48 kHz and negative durations are errors, not silent misbehaviour."""
    with pytest.raises(AudioError):
        LocalVad(rate=4000)
    with pytest.raises(AudioError):
        LocalVad(onset_ms=-1)
    with pytest.raises(AudioError):
        LocalVad(preroll_ms=-20)
