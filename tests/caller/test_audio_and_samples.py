"""Caller audio: the built-in utterance, WAV files of any shape, and utterance framing."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.caller.audio import SPEECH_RMS, is_audible, pcm16_to_ulaw, read_wav
from gateway.caller.call import _caller_frames
from gateway.caller.samples import hello_utterance
from gateway.caller.sides import parse_twiml
from gateway.errors import AudioError, ConfigError, TelephonyProtocolError


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
def test_hello_is_a_loud_voiced_utterance(rate: int) -> None:
    """The built-in utterance lasts 1.5 s, stays in [-1, 1] and is loud through its middle."""
    x = hello_utterance(rate)
    assert len(x) == int(1.5 * rate)
    assert np.max(np.abs(x)) <= 0.5001
    frame = rate // 50
    rms = np.sqrt(np.mean(x[: len(x) // frame * frame].reshape(-1, frame) ** 2, axis=1)) * 32768
    assert np.mean(rms[5:-5] > 3 * SPEECH_RMS) > 0.95
    # Voiced: most energy below 1 kHz, as in speech.
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    assert spectrum[freqs < 1000].sum() > 0.6 * spectrum.sum()


def test_builtin_hello_frames_are_mostly_speech() -> None:
    """builtin:hello becomes 75 frames of 160 μ-law bytes, flagged speech through the middle."""
    frames = _caller_frames("builtin:hello")
    assert len(frames) == 75
    assert all(len(f) == 160 for f, _ in frames)
    assert sum(speech for _, speech in frames) >= 70
    with pytest.raises(ConfigError):
        _caller_frames("builtin:nope")


def _write(path: Path, data: bytes, rate: int, width: int, channels: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(data)


@pytest.mark.parametrize(
    ("rate", "width", "channels"), [(44100, 2, 2), (16000, 1, 1), (48000, 3, 1), (22050, 4, 2)]
)
def test_wav_of_any_shape_becomes_8k_frames(tmp_path: Path, rate: int, width: int, channels: int) -> None:
    """WAVs of any rate, width and channel count resample to 8 kHz μ-law frames of the right length."""
    t = np.arange(rate) / rate  # 1 s
    x = 0.5 * np.sin(2 * np.pi * 440 * t)
    if width == 1:
        raw = (x * 127 + 128).astype(np.uint8)
    elif width == 3:
        ints = (x * (2**23 - 1)).astype("<i4")
        raw = np.frombuffer(ints.tobytes(), np.uint8).reshape(-1, 4)[:, :3].copy()
    else:
        raw = (x * (2 ** (8 * width - 1) - 1)).astype(f"<i{width}")
    data = np.repeat(raw, channels, axis=0)  # interleave: each frame holds `channels` equal samples
    path = tmp_path / "in.wav"
    _write(path, data.tobytes(), rate, width, channels)
    mono, got_rate = read_wav(path)
    assert got_rate == rate
    assert len(mono) == rate
    assert abs(float(np.sqrt(np.mean(mono**2))) - 0.5 / np.sqrt(2)) < 0.02
    frames = _caller_frames(path)
    assert len(frames) == 50
    assert all(speech for _, speech in frames[1:-1])


def test_unreadable_wav_raises_audio_error(tmp_path: Path) -> None:
    """A missing or non-WAV file raises AudioError."""
    with pytest.raises(AudioError):
        read_wav(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(AudioError):
        read_wav(bad)


def test_audible_detection() -> None:
    """Near-silent μ-law counts as silence; a quiet but real signal is audible."""
    assert not is_audible(b"\xff\x7f\xfe\x7e" * 40)
    assert is_audible(pcm16_to_ulaw(np.full(160, 400, "<i2").tobytes()))


def test_twiml_parsing() -> None:
    """Relative stream URLs resolve against the webhook; malformed TwiML raises TelephonyProtocolError."""
    twiml = (
        '<Response><Connect><Stream url="/twilio/media">'
        '<Parameter name="a" value="1"/></Stream></Connect></Response>'
    )
    parsed = parse_twiml(twiml, "http://127.0.0.1:8080/twilio/voice")
    assert parsed is not None
    assert (parsed.url, parsed.parameters, parsed.after) == (
        "http://127.0.0.1:8080/twilio/media",
        {"a": "1"},
        [],
    )
    assert parse_twiml("<Response><Hangup/></Response>", "http://h/v") is None
    for bad in ("<Response>", "<Html/>", "<Response><Connect/></Response>"):
        with pytest.raises(TelephonyProtocolError):
            parse_twiml(bad, "http://h/v")
