"""Uplink and Downlink: whole call directions from G.711 to Gemini's PCM16 and back in exact 20 ms frames."""

from __future__ import annotations

import numpy as np
import pytest
from audio_signals import band_noise, snr_db, tone, vhq

from gateway.audio import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    Downlink,
    Uplink,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from gateway.errors import AudioError

CODECS = {
    "ulaw": (pcm16_to_ulaw, ulaw_to_pcm16, ULAW_SILENCE),
    "alaw": (pcm16_to_alaw, alaw_to_pcm16, ALAW_SILENCE),
}


def _pcm(x: np.ndarray) -> np.ndarray:
    return np.frombuffer(x, dtype="<i2").astype(np.float64)


@pytest.mark.parametrize("codec", CODECS)
def test_uplink_turns_each_frame_into_20ms_of_16k_pcm(codec: str) -> None:
    """Each 160-byte G.711 frame yields 640 bytes of 16 kHz PCM16 matching soxr VHQ of the decoded audio."""
    encode, decode, _ = CODECS[codec]
    uplink = Uplink(codec)
    coded = encode(band_noise(8000).tobytes())
    outs = [uplink.process(coded[i : i + 160]) for i in range(0, len(coded), 160)]
    assert {len(out) for out in outs} == {640}
    y = _pcm(b"".join(outs))
    ref = vhq(np.frombuffer(decode(coded), dtype="<i2"), 8000, 16000)
    d = round(uplink.delay_ms * 16)
    assert snr_db(y[d + 800 : ref.size - 800 + d], ref[800 : ref.size - 800]) >= 50


def test_uplink_reset_forgets_history() -> None:
    """After reset() the uplink output equals a fresh uplink's."""
    used, fresh = Uplink(), Uplink()
    used.process(pcm16_to_ulaw(tone(1000, 8000, 0.1, 30000).tobytes()))
    used.reset()
    frame = pcm16_to_ulaw(tone(440, 8000, 0.02).tobytes())
    assert used.process(frame) == fresh.process(frame)


@pytest.mark.parametrize("codec", CODECS)
def test_downlink_emits_one_frame_per_20ms_chunk(codec: str) -> None:
    """Model audio in 960-byte (20 ms at 24 kHz) chunks comes out as exactly one 160-byte frame each."""
    downlink = Downlink(codec)
    x = tone(1000, 24000, 0.5).tobytes()
    for i in range(0, len(x), 960):
        frames = downlink.process(x[i : i + 960])
        assert [len(f) for f in frames] == [160]
    assert downlink.pending_ms == pytest.approx(downlink.delay_ms)


@pytest.mark.parametrize("codec", CODECS)
def test_downlink_odd_chunks_become_exact_frames_and_flush_completes_the_turn(codec: str) -> None:
    """Arbitrary chunk sizes yield only 160-byte frames; flush() adds the tail padded with silence."""
    encode, decode, silence = CODECS[codec]
    downlink = Downlink(codec)
    x = band_noise(24000, 0.5, seed=11)
    pcm = x.tobytes()
    frames: list[bytes] = []
    i = 0
    for size in [2468, 10, 0, 4802, 960, 1234] * 10:
        frames += downlink.process(pcm[i : i + size])
        i += size
        if i >= len(pcm):
            break
    frames += downlink.process(pcm[i:])
    frames += downlink.flush()
    assert all(len(f) == 160 for f in frames)
    delay = round(downlink.delay_ms * 8)
    expected = x.size // 3 + delay
    assert len(frames) == -(-expected // 160)
    assert frames[-1].endswith(bytes([silence]) * (len(frames) * 160 - expected))
    assert downlink.pending_ms == 0
    y = _pcm(decode(b"".join(frames)))
    ref = _pcm(decode(encode(np.round(vhq(x, 24000, 8000)).astype("<i2").tobytes())))
    assert snr_db(y[delay + 400 : delay + ref.size - 400], ref[400:-400]) >= 30


def test_downlink_pending_ms_counts_the_partial_frame() -> None:
    """pending_ms reports the partial frame plus the resampler tail while a turn is open."""
    downlink = Downlink()
    assert downlink.pending_ms == 0
    assert downlink.process(bytes(2 * 240)) == []  # 10 ms
    assert downlink.pending_ms == pytest.approx(10 + downlink.delay_ms)


def test_downlink_reset_drops_everything() -> None:
    """Barge-in: after reset() nothing is pending and flush() returns no frames."""
    downlink = Downlink()
    downlink.process(tone(1000, 24000, 0.03).tobytes())
    downlink.reset()
    assert downlink.pending_ms == 0
    assert downlink.flush() == []


def test_downlink_flush_with_nothing_fed_returns_no_frames() -> None:
    """flush() on an idle downlink hands out nothing (no spurious silence frame)."""
    assert Downlink().flush() == []


def test_downlink_from_16k() -> None:
    """Downlink also takes 16 kHz PCM16 (16→8 kHz) and still emits 160-byte frames."""
    downlink = Downlink(in_rate=16000)
    assert [len(f) for f in downlink.process(bytes(640))] == [160]


def test_l16_16k_uplink_is_a_pass_through() -> None:
    """Wideband L16 at 16 kHz reaches a 16 kHz uplink untouched: no decode, no resampler, no copy."""
    uplink = Uplink("l16", in_rate=16000, out_rate=16000)
    frame = tone(440, 16000, 0.02).tobytes()
    assert uplink.process(frame) is frame
    assert uplink.delay_ms == 0
    with pytest.raises(AudioError, match="even byte count"):
        uplink.process(b"\x00")


def test_l16_8k_uplink_resamples_like_g711_without_the_companding() -> None:
    """L16 at 8 kHz to 16 kHz matches soxr VHQ of the same samples (no μ-law quantisation noise)."""
    uplink = Uplink("l16", in_rate=8000, out_rate=16000)
    x = band_noise(8000)
    raw = x.tobytes()
    y = _pcm(b"".join(uplink.process(raw[i : i + 320]) for i in range(0, len(raw), 320)))
    ref = vhq(x, 8000, 16000)
    d = round(uplink.delay_ms * 16)
    assert snr_db(y[d + 800 : ref.size - 800 + d], ref[800 : ref.size - 800]) >= 60


@pytest.mark.parametrize(("rate", "size"), [(8000, 320), (16000, 640)])
def test_l16_downlink_emits_exact_20ms_frames(rate: int, size: int) -> None:
    """Model audio to L16 comes out in exact 20 ms frames (320 bytes at 8 kHz, 640 at 16 kHz), the
    turn's tail padded with zero samples."""
    downlink = Downlink("l16", out_rate=rate)
    x = tone(1000, 24000, 0.5).tobytes()
    frames = [f for i in range(0, len(x), 1000) for f in downlink.process(x[i : i + 1000])]
    frames += downlink.flush()
    assert {len(f) for f in frames} == {size}
    assert downlink.pending_ms == 0
    samples = 0.5 * rate + round(downlink.delay_ms * rate / 1000)  # the tone and the filter's tail
    assert len(frames) == -(-int(samples * 2) // size)


def test_unknown_codec_and_rates_are_audio_errors() -> None:
    """Unknown codecs, unsupported rates and odd PCM16 sizes raise AudioError."""
    with pytest.raises(AudioError, match="codec"):
        Uplink("opus")
    with pytest.raises(AudioError, match="codec"):
        Downlink("g722")
    with pytest.raises(AudioError, match="unsupported"):
        Downlink(in_rate=44100)
    with pytest.raises(AudioError, match="even number"):
        Downlink().process(b"\x00")
