"""The emulator's audio: a vowel-like "voice", a chime, an energy speech detector, resampling.

There is no TTS offline, so the persona "speaks" with additive formant synthesis: one voiced syllable
per word, its vowel taken from the word's spelling, with a gently falling pitch. It is clearly
audible, pleasant enough on a phone line, and deterministic (same text → same bytes, cached).

Pure functions and a small state machine (numpy only, no I/O), so they are cheap to test.
"""

from __future__ import annotations

import enum
import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import soxr

#: Model audio is always 24 kHz 16-bit little-endian mono.
OUT_RATE = 24000
OUT_MIME = "audio/pcm;rate=24000"

# (F1, F2, F3) in Hz, for the vowel picked from a word's first vowel letter.
_VOWELS: dict[str, tuple[float, float, float]] = {
    "a": (730.0, 1090.0, 2440.0),
    "e": (530.0, 1840.0, 2480.0),
    "i": (300.0, 2250.0, 3000.0),
    "o": (570.0, 840.0, 2410.0),
    "u": (320.0, 900.0, 2240.0),
}
_FORMANT_WEIGHTS = (1.0, 0.55, 0.25)
_FORMANT_WIDTHS = (110.0, 140.0, 190.0)
_PEAK = 0.45 * 32767


def _to_pcm(signal: npt.NDArray[np.float64]) -> bytes:
    peak = float(np.max(np.abs(signal))) if signal.size else 0.0
    if peak > 0:
        signal = signal * (_PEAK / peak)
    return signal.astype("<i2").tobytes()


def _envelope(n: int, attack: int, release: int) -> npt.NDArray[np.float64]:
    env = np.ones(n)
    attack = min(attack, n // 2)
    release = min(release, n - attack)
    if attack:
        env[:attack] = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, attack))
    if release:
        env[n - release :] = 0.5 + 0.5 * np.cos(np.linspace(0.0, math.pi, release))
    return env


def _syllable(word: str, f0_start: float, f0_end: float) -> npt.NDArray[np.float64]:
    letters = [c for c in word.lower() if c.isalpha()]
    vowel = next((c for c in letters if c in _VOWELS), "e" if not letters else "a")
    formants = _VOWELS[vowel]
    seconds = min(0.45, max(0.14, 0.08 + 0.05 * max(1, len(letters))))
    n = int(OUT_RATE * seconds)
    f0 = np.linspace(f0_start, f0_end, n)
    phase = 2.0 * math.pi * np.cumsum(f0) / OUT_RATE
    mean_f0 = (f0_start + f0_end) / 2
    out = np.zeros(n)
    for k in range(1, int(3600 / mean_f0) + 1):
        freq = k * mean_f0
        gain = sum(
            w * math.exp(-(((freq - f) / bw) ** 2))
            for f, w, bw in zip(formants, _FORMANT_WEIGHTS, _FORMANT_WIDTHS, strict=True)
        )
        gain = gain + 0.02 / k  # a little spectral floor so every syllable sounds voiced
        out += gain * np.sin(k * phase)
    if letters and letters[0] not in _VOWELS:
        # A soft consonant onset: a short burst of deterministic noise.
        burst = int(0.025 * OUT_RATE)
        rng = np.random.default_rng(sum(map(ord, word)))
        out[:burst] += rng.standard_normal(burst) * 0.15 * np.linspace(1.0, 0.0, burst)
    return out * _envelope(n, int(0.015 * OUT_RATE), int(0.045 * OUT_RATE))


@lru_cache(maxsize=256)
def speak(text: str) -> bytes:
    """Synthesise ``text`` as 24 kHz PCM16: one vowel-like syllable per word, pauses at punctuation."""
    words = text.split()
    if not words:
        return b""
    pieces: list[npt.NDArray[np.float64]] = []
    count = len(words)
    for index, word in enumerate(words):
        # Declination: pitch falls across the phrase; questions rise at the end.
        start = 190.0 - 40.0 * index / count
        end = start - 12.0
        if word.endswith("?"):
            end = start + 45.0
        pieces.append(_syllable(word, start, end))
        pause = 0.05
        if word[-1] in ",;:":
            pause = 0.16
        elif word[-1] in ".!?":
            pause = 0.32
        pieces.append(np.zeros(int(OUT_RATE * pause)))
    return _to_pcm(np.concatenate(pieces))


@lru_cache(maxsize=1)
def chime() -> bytes:
    """A short two-note chime (A5 then E6) that announces the echo."""
    notes = []
    for freq, seconds in ((880.0, 0.12), (1318.5, 0.18)):
        n = int(OUT_RATE * seconds)
        t = np.arange(n) / OUT_RATE
        tone = np.sin(2 * math.pi * freq * t) + 0.25 * np.sin(4 * math.pi * freq * t)
        notes.append(tone * np.exp(-t * 9.0) * _envelope(n, int(0.004 * OUT_RATE), int(0.02 * OUT_RATE)))
    notes.append(np.zeros(int(0.06 * OUT_RATE)))
    return _to_pcm(np.concatenate(notes))


def resample(pcm: bytes, rate: int, target: int = OUT_RATE) -> bytes:
    """Resample PCM16 mono from ``rate`` to ``target`` (once per utterance, not per frame)."""
    usable = len(pcm) & ~1
    if rate == target or usable == 0:
        return pcm[:usable]
    samples = np.frombuffer(pcm, dtype="<i2", count=usable // 2)
    out = soxr.resample(samples, rate, target)
    return np.asarray(out, dtype="<i2").tobytes()


class VadEvent(enum.Enum):
    """What one fed chunk changed."""

    NONE = 0
    #: Speech has lasted ``confirm_ms``: enough to count as a barge-in.
    SPEECH_CONFIRMED = 1
    #: Speech followed by ``silence_ms`` of quiet: the utterance is over (see ``take``).
    UTTERANCE_ENDED = 2


class SpeechDetector:
    """Energy-based end-of-utterance detector, clocked by the audio itself (not wall time).

    Durations are counted in received samples, so a client that streams faster than real time
    sees the same decisions as a phone call, and tests are deterministic. In manual mode
    (``automaticActivityDetection.disabled``) only :meth:`start` / :meth:`finish` delimit turns, and
    audio outside them is dropped unless ``keep_outside`` (``TURN_INCLUDES_ALL_INPUT``): then it
    belongs to the next turn.
    """

    def __init__(
        self,
        *,
        threshold_rms: float,
        silence_ms: int,
        confirm_ms: int = 100,
        min_speech_ms: int = 80,
        max_keep_s: float = 15.0,
        manual: bool = False,
        keep_outside: bool = False,
    ) -> None:
        self.threshold_sq = threshold_rms * threshold_rms
        self.silence_ms = silence_ms
        self.confirm_ms = confirm_ms
        self.min_speech_ms = min_speech_ms
        self.max_keep_s = max_keep_s
        self.manual = manual
        self.keep_outside = keep_outside
        self.active = False
        self._confirmed = False
        self._loud_ms = 0.0
        self._silence_ms = 0.0
        self._buf = bytearray()
        self._rate = 0
        self._end_mark = 0
        self._speech_bytes = 0
        self._ready: tuple[bytes, int, float] | None = None

    def _reset(self) -> None:
        self.active = False
        self._confirmed = False
        self._loud_ms = self._silence_ms = 0.0
        self._buf = bytearray()
        self._end_mark = 0
        self._speech_bytes = 0

    def _complete(self) -> VadEvent:
        rate = self._rate
        if self.manual:
            end = self._speech_bytes
            kept = bytes(self._buf)
        else:
            end = self._end_mark
            kept = bytes(self._buf[: min(end, len(self._buf))])
        loud = self._loud_ms
        self._reset()
        if not self.manual and loud < self.min_speech_ms:
            return VadEvent.NONE  # a click or a cough: not an utterance
        self._ready = (kept, rate, end / (2 * rate) if rate else 0.0)
        return VadEvent.UTTERANCE_ENDED

    def take(self) -> tuple[bytes, int, float]:
        """The finished utterance: ``(pcm trimmed of trailing silence, rate, spoken seconds)``."""
        ready, self._ready = self._ready, None
        if ready is None:
            raise RuntimeError("no finished utterance")
        return ready

    def start(self) -> None:
        """Manual mode: an ``activityStart`` opens a turn (keeping earlier audio with ``keep_outside``)."""
        if not self.keep_outside:
            self._reset()
        self.active = True

    def finish(self) -> VadEvent:
        """``activityEnd`` / ``audioStreamEnd``: close the current utterance, if any."""
        if not self.active:
            return VadEvent.NONE
        return self._complete()

    def feed(self, pcm: bytes, rate: int) -> VadEvent:
        """Account one chunk of caller audio."""
        n = len(pcm) >> 1
        if n == 0:
            return VadEvent.NONE
        if self.manual:
            if self.active or self.keep_outside:
                self._rate = self._rate or rate
                self._speech_bytes += 2 * n
                if len(self._buf) < self.max_keep_s * 2 * self._rate:
                    self._buf += pcm[: 2 * n]
            return VadEvent.NONE
        samples = np.frombuffer(pcm, dtype="<i2", count=n).astype(np.float32)
        loud = float(np.dot(samples, samples)) >= self.threshold_sq * n
        chunk_ms = 1000.0 * n / rate
        if not self.active:
            if not loud:
                return VadEvent.NONE
            self.active = True
            self._rate = rate
        elif rate != self._rate:
            # A rate change mid-utterance: close what we have and start afresh.
            event = self._complete()
            if loud:
                self.active = True
                self._rate = rate
            return event
        self._speech_bytes += 2 * n
        if len(self._buf) < self.max_keep_s * 2 * rate:
            self._buf += pcm[: 2 * n]
        if loud:
            self._loud_ms += chunk_ms
            self._silence_ms = 0.0
            self._end_mark = self._speech_bytes
            if not self._confirmed and self._loud_ms >= self.confirm_ms:
                self._confirmed = True
                return VadEvent.SPEECH_CONFIRMED
            return VadEvent.NONE
        self._silence_ms += chunk_ms
        if self._silence_ms >= self.silence_ms:
            return self._complete()
        return VadEvent.NONE
