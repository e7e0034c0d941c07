"""Built-in caller audio: a synthetic, speech-like ~1.5 s "utterance" for demos and tests.

It is not speech, but it has what voice-activity detectors look for: a voiced source (a pitch
contour around 120 Hz with harmonics), vowel-like formants that move between three "syllables",
and a syllabic loudness envelope, well above any sensible energy threshold (RMS ≈ -16 dBFS).
Deterministic, so tests can rely on it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: Formant frequencies (F1, F2, F3) in Hz of the three "syllables": roughly /a/, /e/, /o/.
_VOWELS = ((730.0, 1090.0, 2440.0), (530.0, 1840.0, 2480.0), (570.0, 840.0, 2410.0))
_BANDWIDTH = 90.0
BUILTINS = ("hello", "machine")
#: The answering machine's greeting (``machine``): speech this long, a pause, then the beep.
MACHINE_SPEECH_S = 2.0
MACHINE_PAUSE_S = 0.3
BEEP_S = 0.5
BEEP_HZ = 1000.0
MACHINE_GREETING_S = MACHINE_SPEECH_S + MACHINE_PAUSE_S + BEEP_S


def hello_utterance(rate: int = 16000, *, duration_s: float = 1.5) -> npt.NDArray[np.float32]:
    """A voiced, formant-shaped utterance of ``duration_s`` at ``rate``, mono float32 in [-1, 1]."""
    n = int(rate * duration_s)
    t = np.arange(n, dtype=np.float64) / rate
    pos = t / duration_s  # 0 → 1 across the utterance
    # Falling pitch with a little vibrato, integrated into a phase so harmonics stay coherent.
    f0 = 135.0 - 30.0 * pos + 3.0 * np.sin(2 * np.pi * 5.0 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    # Formant tracks: interpolate between the three vowels so they glide like syllables.
    anchors = np.linspace(0.0, 1.0, len(_VOWELS))
    formants = [np.interp(pos, anchors, [v[i] for v in _VOWELS]) for i in range(3)]
    nyquist = 0.45 * min(rate, 8000)
    out = np.zeros(n)
    for k in range(1, int(nyquist / 100.0) + 1):
        freq = k * f0
        gain = sum(1.0 / (1.0 + ((freq - f) / _BANDWIDTH) ** 2) for f in formants) / np.sqrt(k)
        gain = np.where(freq < nyquist, gain, 0.0)
        out += gain * np.sin(k * phase)
    # Three syllables: raised-cosine bumps that never fall to silence inside the utterance.
    syllables = 0.35 + 0.65 * np.abs(np.sin(np.pi * 3.0 * pos)) ** 0.7
    edges = np.minimum(1.0, np.minimum(t, duration_s - t) / 0.05)
    out *= syllables * edges
    out *= 0.5 / np.max(np.abs(out))
    return out.astype(np.float32)


def machine_greeting(rate: int = 16000) -> npt.NDArray[np.float32]:
    """An answering machine's greeting: a spoken-like message, a short pause, and the beep (a 1 kHz tone)."""
    speech = hello_utterance(rate, duration_s=MACHINE_SPEECH_S)
    pause = np.zeros(int(rate * MACHINE_PAUSE_S), dtype=np.float32)
    t = np.arange(int(rate * BEEP_S), dtype=np.float64) / rate
    edges = np.minimum(1.0, np.minimum(t, BEEP_S - t) / 0.01)
    beep = (0.4 * np.sin(2 * np.pi * BEEP_HZ * t) * edges).astype(np.float32)
    return np.concatenate([speech, pause, beep])


def builtin(name: str, rate: int) -> npt.NDArray[np.float32]:
    """A built-in sample by name (``hello``, ``machine``), at ``rate``.

    Raises:
        KeyError: no such built-in.
    """
    if name == "hello":
        return hello_utterance(rate)
    if name == "machine":
        return machine_greeting(rate)
    raise KeyError(name)
