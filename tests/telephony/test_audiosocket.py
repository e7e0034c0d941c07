"""AudioSocket framing and codec: every message kind, the byte stream cut anywhere, malformed input."""

from __future__ import annotations

import uuid

import pytest

from gateway.errors import TelephonyProtocolError
from gateway.telephony.audiosocket import HANGUP, AudioSocketCodec, FrameReader, frame
from gateway.telephony.events import (
    CallerAudio,
    CallStarted,
    CallStopped,
    ClearPlayback,
    DtmfPressed,
    PlayAudio,
)

ID = uuid.UUID("10000000-1234-4abc-8def-0123456789ab")


def test_reader_cuts_the_stream_anywhere() -> None:
    stream = frame(0x01, ID.bytes) + frame(0x10, bytes(320)) + frame(0x03, b"7") + HANGUP
    whole = FrameReader().feed(stream)
    assert [m[0] for m in whole] == [0x01, 0x10, 0x03, 0x00]
    for cut in (1, 2, 3, 18, 19, 200):
        reader = FrameReader()
        assert reader.feed(stream[:cut]) + reader.feed(stream[cut:]) == whole
        assert reader.pending == 0
    reader = FrameReader()
    assert [m for b in stream for m in reader.feed(bytes([b]))] == whole


def test_reader_refuses_an_oversized_message() -> None:
    with pytest.raises(TelephonyProtocolError) as bad:
        FrameReader().feed(bytes([0x10, 0xFF, 0xFF]) + bytes(10))
    assert bad.value.close_code == 1007


@pytest.mark.parametrize(("kind", "rate"), [(0x10, 8000), (0x12, 16000), (0x13, 24000), (0x16, 48000)])
def test_the_first_audio_kind_is_the_streams_format(kind: int, rate: int) -> None:
    codec = AudioSocketCodec()
    assert codec.receive_frame(frame(0x01, ID.bytes)) is None
    size = rate // 50 * 2
    first = bytes(range(256))[:size] * (size // 256 + 1)
    start = codec.receive_frame(frame(kind, first[:size]))
    assert isinstance(start, CallStarted)
    assert (start.call_sid, start.sample_rate) == (str(ID), rate)
    assert start.audio == first[:size]  # the start's own 20 ms of the call, for the bridge to hear
    assert (codec.audio.codec, codec.audio.rate) == ("l16", rate)
    assert codec.receive_binary(frame(kind, bytes(size))) == CallerAudio(bytes(size))
    assert codec.receive_frame(frame(kind, bytes(size))) == CallerAudio(bytes(size))
    assert codec.receive_binary(frame(0x03, b"1")) is None  # not audio: the reading task's
    assert codec.receive_frame(frame(0x03, b"1")) == DtmfPressed("1")
    assert codec.encode(PlayAudio(bytes(size))) == frame(kind, bytes(size))
    assert (codec.answer_frame(), codec.hangup_frame()) == (None, b"\x00\x00\x00")
    caps = codec.capabilities
    assert (caps.frames_per_message, caps.provider_buffers, caps.marks, caps.clear) == (
        1,
        False,
        False,
        False,
    )


def _streaming() -> AudioSocketCodec:
    codec = AudioSocketCodec()
    codec.receive_frame(frame(0x01, ID.bytes))
    codec.receive_frame(frame(0x10, bytes(320)))
    return codec


def test_hangup_and_error_messages() -> None:
    assert _streaming().receive_frame(HANGUP) == CallStopped(str(ID))
    assert _streaming().receive_frame(frame(0xFF, b"\x01")) == CallStopped(str(ID))
    with pytest.raises(TelephonyProtocolError, match="memory error"):
        _streaming().receive_frame(frame(0xFF, b"\x04"))


@pytest.mark.parametrize(
    ("setup", "data", "code"),
    [
        (False, frame(0x10, bytes(320)), 1008),  # audio before the UUID
        (False, frame(0x01, b"short"), 1007),
        (True, frame(0x01, ID.bytes), 1008),  # a second UUID
        (True, frame(0x42, b"x"), 1003),
        (True, frame(0x12, bytes(640)), 1003),  # another audio format mid-stream
        (True, frame(0x10, bytes(321)), 1007),
        (True, frame(0x03, b"Z"), 1007),
        (True, b"\x10\x00", 1007),  # not a whole message
    ],
)
def test_malformed_messages(setup: bool, data: bytes, code: int) -> None:
    codec = _streaming() if setup else AudioSocketCodec()
    with pytest.raises(TelephonyProtocolError) as bad:
        codec.receive_frame(data)
    assert bad.value.close_code == code


def test_no_marks_or_clear_and_nothing_before_the_stream() -> None:
    with pytest.raises(TelephonyProtocolError):
        AudioSocketCodec().encode(PlayAudio(bytes(320)))
    with pytest.raises(TelephonyProtocolError):
        _streaming().encode(ClearPlayback())
    with pytest.raises(TelephonyProtocolError):
        _streaming().receive_binary(frame(0x10, bytes(321)))
