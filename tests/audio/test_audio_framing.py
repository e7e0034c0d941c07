"""Reframer: variable-size input becomes exact fixed-size frames with the remainder kept."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from gateway.audio import Reframer
from gateway.errors import AudioError


def test_exact_frames_and_remainder() -> None:
    """Chunks of 100, 250 and 130 bytes become 160-byte frames with the rest pending."""
    framer = Reframer(160, 0xFF)
    data = bytes(range(256)) * 2
    assert framer.push(data[:100]) == []
    assert framer.pending == 100
    assert framer.push(data[100:350]) == [data[:160], data[160:320]]
    assert framer.pending == 30
    assert framer.push(data[350:480]) == [data[320:480]]
    assert framer.pending == 0


def test_one_push_can_yield_many_frames() -> None:
    """A large chunk with nothing pending is cut into as many frames as it holds."""
    framer = Reframer(4, 0)
    assert framer.push(b"abcdefghij") == [b"abcd", b"efgh"]
    assert framer.pending == 2


@given(st.lists(st.binary(max_size=700), max_size=30), st.integers(1, 400))
def test_frames_reassemble_the_input(chunks: list[bytes], size: int) -> None:
    """For any chunking, frames are exactly `size` bytes, in order, and frames + remainder = input."""
    framer = Reframer(size, 0xD5)
    frames = [frame for chunk in chunks for frame in framer.push(chunk)]
    data = b"".join(chunks)
    assert all(len(frame) == size for frame in frames)
    assert b"".join(frames) == data[: len(data) - len(data) % size]
    assert framer.pending == len(data) % size
    last = framer.flush()
    if len(data) % size:
        assert last == data[len(data) - len(data) % size :] + b"\xd5" * (size - len(data) % size)
    else:
        assert last is None


def test_flush_pads_and_empties() -> None:
    """flush() pads the remainder with pad_byte to a whole frame, then returns None."""
    framer = Reframer(8, 0xFF)
    framer.push(b"abc")
    assert framer.flush() == b"abc\xff\xff\xff\xff\xff"
    assert framer.pending == 0
    assert framer.flush() is None


def test_reset_drops_the_remainder() -> None:
    """reset() discards pending bytes so they never reach the next frame."""
    framer = Reframer(4, 0)
    framer.push(b"xyz")
    framer.reset()
    assert framer.pending == 0
    assert framer.push(b"abcd") == [b"abcd"]


@pytest.mark.parametrize(("size", "pad"), [(0, 0), (-160, 0), (160, 256), (160, -1)])
def test_invalid_parameters_are_audio_errors(size: int, pad: int) -> None:
    """A non-positive frame size or a pad value outside a byte raises AudioError."""
    with pytest.raises(AudioError):
        Reframer(size, pad)
