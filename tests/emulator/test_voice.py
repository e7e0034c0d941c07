"""The emulator's audio: synthesis, chime, resampling, and the energy speech detector."""

from __future__ import annotations

import numpy as np

from gateway.emulator import voice
from gateway.emulator.voice import SpeechDetector, VadEvent

from .helpers import silence, tone


def _rms(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(x * x)))


def test_speak_is_deterministic_audible_and_scales_with_text() -> None:
    """The same text gives the same clearly audible audio; more words give longer audio."""
    short = voice.speak("Hello there.")
    assert short == voice.speak("Hello there.")
    assert _rms(short) > 2000
    assert len(voice.speak("Hello there, how are you doing today?")) > len(short)
    assert voice.speak("") == b""


def test_chime_is_short_and_audible() -> None:
    """The chime lasts a fraction of a second and is loud enough to hear on a phone."""
    chime = voice.chime()
    assert 0.2 < len(chime) / 48000 < 0.6
    assert _rms(chime) > 1000


def test_resample_16k_to_24k_keeps_duration() -> None:
    """One second at 16 kHz becomes one second at 24 kHz."""
    out = voice.resample(tone(1.0), 16000)
    assert abs(len(out) - 48000) <= 4


def _feed(detector: SpeechDetector, pcm: bytes, rate: int = 16000, chunk_ms: int = 20) -> list[VadEvent]:
    step = 2 * rate * chunk_ms // 1000
    return [detector.feed(pcm[i : i + step], rate) for i in range(0, len(pcm), step)]


def test_detector_ends_utterance_after_configured_silence() -> None:
    """Speech then silence ends the utterance exactly when the silence reaches silence_ms."""
    detector = SpeechDetector(threshold_rms=500, silence_ms=300)
    events = _feed(detector, tone(0.5))
    assert events.count(VadEvent.SPEECH_CONFIRMED) == 1
    assert VadEvent.UTTERANCE_ENDED not in _feed(detector, silence(0.28))
    assert _feed(detector, silence(0.02)) == [VadEvent.UTTERANCE_ENDED]
    pcm, rate, seconds = detector.take()
    assert rate == 16000
    assert seconds == 0.5
    assert len(pcm) == 16000  # trailing silence trimmed


def test_detector_ignores_short_clicks() -> None:
    """A burst shorter than min_speech_ms is noise, not an utterance."""
    detector = SpeechDetector(threshold_rms=500, silence_ms=100, min_speech_ms=80)
    events = _feed(detector, tone(0.04) + silence(0.2))
    assert VadEvent.UTTERANCE_ENDED not in events
    assert not detector.active


def test_manual_detector_only_follows_start_and_finish() -> None:
    """With automatic detection disabled, audio outside start/finish is dropped."""
    detector = SpeechDetector(threshold_rms=500, silence_ms=100, manual=True)
    _feed(detector, tone(0.2))  # before activityStart: dropped
    detector.start()
    _feed(detector, tone(0.3) + silence(0.3))
    assert detector.finish() is VadEvent.UTTERANCE_ENDED
    pcm, _, seconds = detector.take()
    assert seconds == 0.6
    assert len(pcm) == 2 * int(0.6 * 16000)
