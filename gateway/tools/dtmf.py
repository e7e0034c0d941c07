"""In-band DTMF: keypad digits as dual-tone μ-law audio the far end's IVR can detect.

Media streams carry audio only (Twilio has no outbound DTMF message), so ``send_dtmf`` plays the
tones like any other bot audio. Each digit is the sum of its row and column frequencies (ITU-T
Q.23) for :data:`TONE_MS`, followed by :data:`GAP_MS` of silence: both comfortably above the 40 ms
minimum receivers need (Q.24). ``w`` is a half-second pause, as on a phone's dialler.
Rules: no I/O; the output is whole 20 ms frames in the stream's own format (μ-law 8 kHz for Twilio,
L16 16 kHz for a wideband stream…), synthesised at the stream's rate.
"""

from __future__ import annotations

import re

import numpy as np

from gateway.audio.transcode import ENCODERS
from gateway.errors import ToolError
from gateway.telephony.provider import PCMU_8K, AudioFormat

__all__ = ["DIGITS", "GAP_MS", "TONE_MS", "dtmf_frames", "normalise_digits"]

RATE = 8000
FRAME_SAMPLES = 160
TONE_MS = 120
GAP_MS = 80
PAUSE_MS = 500
MAX_DIGITS = 64
#: Each tone at -9 dBFS, so the pair peaks below full scale.
_AMPLITUDE = 0.35 * 32767

_ROWS = (697.0, 770.0, 852.0, 941.0)
_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
DIGITS = "".join(_KEYPAD)
_FREQS = {key: (_ROWS[r], _COLS[c]) for r, row in enumerate(_KEYPAD) for c, key in enumerate(row)}
_VALID = re.compile(r"[0-9A-D*#w]+")


def normalise_digits(digits: str) -> str:
    """Upper-case letters, drop spaces and dashes; raise :class:`ToolError` for anything else."""
    cleaned = re.sub(r"[\s\-]", "", digits).upper().replace("W", "w")
    if not cleaned or not _VALID.fullmatch(cleaned):
        raise ToolError("digits may only contain 0-9, *, #, A-D and w (a half-second pause)")
    if len(cleaned) > MAX_DIGITS:
        raise ToolError(f"at most {MAX_DIGITS} digits at a time")
    return cleaned


def _tone(low: float, high: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(rate * TONE_MS // 1000) / rate
    wave = np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)
    # 5 ms raised-cosine edges keep clicks (and their spurious frequencies) out of the detector.
    ramp = rate * 5 // 1000
    edge = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
    wave[:ramp] *= edge
    wave[-ramp:] *= edge[::-1]
    return np.asarray(wave * (_AMPLITUDE / 2), dtype=np.float64)


def dtmf_frames(digits: str, audio: AudioFormat = PCMU_8K) -> list[bytes]:
    """``digits`` (already normalised or not) as 20 ms frames in ``audio``'s format: tone, gap, tone…"""
    rate = audio.rate
    pieces: list[np.ndarray] = []
    for key in normalise_digits(digits):
        if key == "w":
            pieces.append(np.zeros(rate * PAUSE_MS // 1000))
            continue
        pieces.append(_tone(*_FREQS[key], rate=rate))
        pieces.append(np.zeros(rate * GAP_MS // 1000))
    samples = np.concatenate(pieces)
    frame_samples = rate * 20 // 1000
    pad = -len(samples) % frame_samples
    pcm = np.concatenate([samples, np.zeros(pad)]).round().astype("<i2").tobytes()
    coded = ENCODERS[audio.codec](pcm)
    size = audio.frame_bytes
    return [coded[i : i + size] for i in range(0, len(coded), size)]
