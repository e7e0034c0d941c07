"""G.711 μ-law/A-law: every code round-trips, decoders follow the standard curves, encode error is bounded."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from gateway.audio import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from gateway.errors import AudioError

ALL_CODES = bytes(range(256))
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def _ulaw_reference(code: int) -> int:
    u = ~code & 0xFF
    exponent, mantissa = (u >> 4) & 7, u & 0x0F
    value = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -value if u & 0x80 else value


def _alaw_reference(code: int) -> int:
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    segment = (a >> 4) & 7
    if segment == 0:
        t += 8
    elif segment == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (segment - 1)
    return t if a & 0x80 else -t


def _pcm(values: np.ndarray) -> bytes:
    return values.astype("<i2").tobytes()


def _decoded(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.int64)


def test_ulaw_decoder_matches_the_standard_curve() -> None:
    """μ-law decode of all 256 codes equals the textbook decoder."""
    assert _decoded(ulaw_to_pcm16(ALL_CODES)).tolist() == [_ulaw_reference(c) for c in range(256)]


def test_alaw_decoder_matches_the_standard_curve() -> None:
    """A-law decode of all 256 codes equals the textbook decoder."""
    assert _decoded(alaw_to_pcm16(ALL_CODES)).tolist() == [_alaw_reference(c) for c in range(256)]


def test_ulaw_round_trip_of_every_code_but_negative_zero() -> None:
    """Every μ-law code except 0x7F (−0, a duplicate of +0) survives decode → encode unchanged."""
    codes = bytes(c for c in range(256) if c != 0x7F)
    assert pcm16_to_ulaw(ulaw_to_pcm16(codes)) == codes
    assert pcm16_to_ulaw(ulaw_to_pcm16(b"\x7f")) == bytes([ULAW_SILENCE])


def test_alaw_round_trip_of_every_code() -> None:
    """Every A-law code survives decode → encode unchanged."""
    assert pcm16_to_alaw(alaw_to_pcm16(ALL_CODES)) == ALL_CODES


def test_silence_codes() -> None:
    """Zero samples encode to the silence constants, which decode to (near) zero."""
    zeros = bytes(320)
    assert pcm16_to_ulaw(zeros) == bytes([ULAW_SILENCE]) * 160
    assert pcm16_to_alaw(zeros) == bytes([ALAW_SILENCE]) * 160
    assert _decoded(ulaw_to_pcm16(bytes([ULAW_SILENCE]))).tolist() == [0]
    assert _decoded(alaw_to_pcm16(bytes([ALAW_SILENCE]))).tolist() == [8]


def test_ulaw_encode_error_bound_over_all_int16() -> None:
    """μ-law encode → decode error: ≤515 inside ±32124, ≤644 beyond (clipping), ≤1/16 relative above 256."""
    err = np.abs(_decoded(ulaw_to_pcm16(pcm16_to_ulaw(_pcm(ALL_INT16)))) - ALL_INT16)
    inside = np.abs(ALL_INT16.astype(np.int64)) <= 32124
    assert err[inside].max() <= 515
    assert err.max() <= 644
    big = np.abs(ALL_INT16.astype(np.int64)) >= 256
    assert np.all(err[big & inside] <= np.abs(ALL_INT16[big & inside].astype(np.int64)) / 16)


def test_alaw_encode_error_bound_over_all_int16() -> None:
    """A-law encode → decode error is at most 512 (half the top segment's step) everywhere."""
    err = np.abs(_decoded(alaw_to_pcm16(pcm16_to_alaw(_pcm(ALL_INT16)))) - ALL_INT16)
    assert err.max() <= 512
    big = np.abs(ALL_INT16.astype(np.int64)) >= 256
    assert np.all(err[big] <= np.abs(ALL_INT16[big].astype(np.int64)) / 16)


@given(st.lists(st.integers(-32768, 32767), max_size=400))
def test_encode_decode_lengths_and_error(values: list[int]) -> None:
    """Arbitrary int16 buffers: one code per sample, two bytes per decoded sample, bounded error."""
    x = np.array(values, dtype=np.int64)
    pcm = _pcm(x)
    for encode, decode, bound in ((pcm16_to_ulaw, ulaw_to_pcm16, 644), (pcm16_to_alaw, alaw_to_pcm16, 512)):
        coded = encode(pcm)
        assert len(coded) == len(values)
        back = decode(coded)
        assert len(back) == 2 * len(values)
        if values:
            assert np.abs(_decoded(back) - x).max() <= bound


@pytest.mark.parametrize("encode", [pcm16_to_ulaw, pcm16_to_alaw])
def test_odd_byte_count_is_an_audio_error(encode: object) -> None:
    """PCM16 with an odd number of bytes raises AudioError instead of audioop.error."""
    with pytest.raises(AudioError, match="even number of bytes"):
        encode(b"\x00\x01\x02")  # type: ignore[operator]
