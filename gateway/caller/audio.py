"""The caller's own audio helpers: G.711 μ-law, WAV in/out, resampling to 8 kHz, loudness.

The simulated caller stands in for Twilio, so it uses the reference G.711 in the standard library
(``audioop``; ``audioop-lts`` from Python 3.13) rather than the gateway's codec: a bug in the
gateway's μ-law then shows up as a difference instead of cancelling out.
"""

from __future__ import annotations

import warnings
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

from gateway.errors import AudioError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

RATE = 8000
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
#: μ-law codes quieter than this (|PCM| < 64 of 32768, about -54 dBFS) count as silence.
_QUIET_LIMIT = 64
QUIET_CODES = bytes(
    c
    for c in range(256)
    if abs(int.from_bytes(audioop.ulaw2lin(bytes([c]), 2), "little", signed=True)) < _QUIET_LIMIT
)
#: RMS (16-bit PCM) above which a frame the caller sends counts as speech.
SPEECH_RMS = 300


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """μ-law bytes → 16-bit little-endian PCM."""
    return audioop.ulaw2lin(ulaw, 2)


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """16-bit little-endian PCM → μ-law bytes."""
    return audioop.lin2ulaw(pcm, 2)


def is_audible(ulaw: bytes) -> bool:
    """Whether a μ-law chunk holds anything louder than near-silence (one C-level pass)."""
    return bool(ulaw.translate(None, QUIET_CODES))


def pcm16_rms(pcm: bytes) -> int:
    """RMS of 16-bit PCM."""
    return int(audioop.rms(pcm, 2))


def read_wav(path: Path) -> tuple[npt.NDArray[np.float32], int]:
    """A PCM WAV of any rate, width (8/16/24/32-bit) and channel count, as mono float32 in [-1, 1].

    Raises:
        AudioError: the file is missing, not a PCM WAV, or empty.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
            raw = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise AudioError(f"cannot read {path} as a PCM WAV file: {exc}") from exc
    if not raw:
        raise AudioError(f"{path} holds no audio")
    if width == 1:
        samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        samples = ints.astype(np.float32) / float(1 << 23)
    elif width == 4:
        samples = (np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    else:
        raise AudioError(f"{path}: unsupported sample width {width} bytes")
    mono = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return mono, rate


def to_pcm16_8k(samples: npt.NDArray[np.float32], rate: int) -> bytes:
    """Mono float samples at ``rate`` → 16-bit PCM at 8 kHz (one-shot soxr for whole files)."""
    if rate != RATE:
        samples = soxr.resample(samples, rate, RATE).astype(np.float32)
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def write_wav(path: Path, pcm16: bytes, rate: int = RATE) -> None:
    """Write 16-bit mono PCM as a WAV file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm16)
