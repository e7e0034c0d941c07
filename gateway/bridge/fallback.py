"""The line a caller hears when Gemini cannot be reached, so a failure is never dead air.

There is no text-to-speech offline, so the line is audio: the gateway ships
``gateway/assets/fallback.wav`` (the default ``fallback.message``, rendered by
``scripts/fallback_wav.sh`` with espeak-ng), and a dialplan gets its own line by putting a WAV next
to its file named ``<plan file stem>.fallback.wav`` (e.g. ``dialplans/support.fallback.wav``). Any
rate, 8/16-bit, mono or stereo; it is converted once to 20 ms frames in the stream's own format
(μ-law 8 kHz for Twilio, L16 16 kHz for a wideband provider…) and cached until the file changes. A
broken per-plan file falls back to the shipped one rather than to silence.
"""

from __future__ import annotations

import io
import wave
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import soxr

from gateway.audio.transcode import ENCODERS, SILENCE_BYTE
from gateway.dialplan.model import Dialplan
from gateway.errors import AudioError
from gateway.telephony.provider import PCMU_8K, AudioFormat

__all__ = [
    "DEFAULT_FALLBACK_WAV",
    "fallback_frames",
    "fallback_wav_for",
    "wav_to_frames",
    "wav_to_ulaw_frames",
]

#: At most this much audio is played: a fallback is a sentence, not a recording.
_MAX_S = 30.0
_ASSET = "assets/fallback.wav"


def _default_path() -> Path:
    return Path(str(resources.files("gateway").joinpath(_ASSET)))


DEFAULT_FALLBACK_WAV = _default_path()


def fallback_wav_for(plan: Dialplan) -> Path | None:
    """The plan's own fallback WAV (``<stem>.fallback.wav`` beside its file), if there is one."""
    candidate = plan.source.with_name(plan.source.stem + ".fallback.wav")
    return candidate if candidate.is_file() else None


def wav_to_ulaw_frames(data: bytes, where: str = "WAV") -> tuple[bytes, ...]:
    """Decode a PCM WAV and return 20 ms frames of 8 kHz μ-law, the last one padded with silence."""
    return wav_to_frames(data, where, PCMU_8K)


def wav_to_frames(data: bytes, where: str = "WAV", audio: AudioFormat = PCMU_8K) -> tuple[bytes, ...]:
    """Decode a PCM WAV and return 20 ms frames in ``audio``'s format, the last one padded with silence.

    Raises:
        AudioError: not a PCM WAV, an unsupported sample width, or empty.
    """
    try:
        with wave.open(io.BytesIO(data)) as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            raw = wav.readframes(min(wav.getnframes(), int(rate * _MAX_S)))
    except (wave.Error, EOFError) as exc:
        raise AudioError(f"{where}: not a PCM WAV file ({exc})") from exc
    if width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        raise AudioError(f"{where}: {8 * width}-bit samples are not supported; use 16-bit PCM")
    if channels > 1:
        samples = samples[: len(samples) - len(samples) % channels].reshape(-1, channels).mean(axis=1)
    if not samples.size:
        raise AudioError(f"{where}: the file holds no audio")
    if rate != audio.rate:
        samples = soxr.resample(samples, rate, audio.rate)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    coded = ENCODERS[audio.codec](pcm)
    size = audio.frame_bytes
    if len(coded) % size:
        coded += bytes([SILENCE_BYTE[audio.codec]]) * (size - len(coded) % size)
    return tuple(coded[i : i + size] for i in range(0, len(coded), size))


@lru_cache(maxsize=64)
def _load(path: str, mtime_ns: int, size: int, audio: AudioFormat) -> tuple[bytes, ...]:
    # The stat fields are part of the key so an edited file is re-read; the rest is cached.
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AudioError(f"{path}: cannot read fallback audio: {exc.strerror}") from exc
    return wav_to_frames(data, path, audio)


def load_frames(path: Path, audio: AudioFormat = PCMU_8K) -> tuple[bytes, ...]:
    """The fallback frames of ``path`` in ``audio``'s format, cached until the file changes.

    Raises:
        AudioError: the file cannot be read or is not a PCM WAV.
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise AudioError(f"{path}: cannot read fallback audio: {exc.strerror}") from exc
    return _load(str(path), st.st_mtime_ns, st.st_size, audio)


def fallback_frames(plan: Dialplan, audio: AudioFormat = PCMU_8K) -> tuple[tuple[bytes, ...], str]:
    """The frames to play for ``plan`` in the stream's format, and where they came from (its own WAV,
    else the shipped one)."""
    own = fallback_wav_for(plan)
    if own is not None:
        try:
            return load_frames(own, audio), str(own)
        except AudioError:
            pass  # a broken per-plan file must not turn the fallback into silence
    return load_frames(DEFAULT_FALLBACK_WAV, audio), "default"
