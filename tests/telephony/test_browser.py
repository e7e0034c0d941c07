"""The softphone codec (gateway/telephony/browser.py): binary 16 kHz PCM16 + JSON control, sans-I/O."""

from __future__ import annotations

import json

import pytest

from gateway.errors import TelephonyProtocolError
from gateway.telephony.browser import BrowserCodec
from gateway.telephony.events import (
    CallerAudio,
    CallStarted,
    CallStopped,
    ClearPlayback,
    DtmfPressed,
    MarkReached,
    PlayAudio,
    SetMark,
)
from gateway.telephony.provider import BinaryMediaCodec

SID = "BR" + "0123456789abcdef" * 2
PCMU = {"encoding": "audio/pcmu", "sample_rate": 8000, "channels": 1}
FORMAT = {"encoding": "audio/l16", "sample_rate": 16000, "channels": 1}
START = json.dumps(
    {"event": "start", "call_sid": SID, "token": "tok", "to": "+15551230000", "media_format": FORMAT}
)


def _streaming() -> BrowserCodec:
    codec = BrowserCodec()
    codec.receive_text(START)
    return codec


def test_start_begins_a_wideband_stream_with_the_token() -> None:
    codec = BrowserCodec()
    assert isinstance(codec, BinaryMediaCodec)
    start = codec.receive_text(START)
    assert isinstance(start, CallStarted)
    assert (start.call_sid, start.stream_sid, start.to, start.from_) == (SID, SID, "+15551230000", "")
    assert start.custom_parameters["token"] == "tok"
    assert (start.encoding, start.sample_rate) == ("audio/l16", 16000)
    assert (codec.audio.codec, codec.audio.rate, codec.audio.frame_bytes, codec.audio.wideband) == (
        "l16", 16000, 640, True,
    )  # fmt: skip
    caps = codec.capabilities
    assert (caps.binary_audio, caps.marks, caps.clear, caps.provider_buffers) == (True, True, True, True)
    assert (caps.frames_per_message, caps.hangup, caps.transfer) == (None, "close", "none")


def test_start_without_a_media_format_is_taken() -> None:
    codec = BrowserCodec()
    start = codec.receive_text(json.dumps({"event": "start", "call_sid": SID, "token": "t"}))
    assert isinstance(start, CallStarted)
    assert start.to == ""


@pytest.mark.parametrize(
    ("start", "code"),
    [
        ({"event": "start", "call_sid": "CA123", "token": "t"}, 1007),  # not a softphone call id
        ({"event": "start", "call_sid": SID}, 1007),  # no token field
        ({"event": "start", "call_sid": SID, "token": 5}, 1007),
        ({"event": "start", "call_sid": SID, "token": "t", "to": "\x00"}, 1007),
        # Wideband end to end: no μ-law, no 8 kHz on this path.
        ({"event": "start", "call_sid": SID, "token": "t", "media_format": PCMU}, 1003),
        ({"event": "start", "call_sid": SID, "token": "t", "media_format": {**FORMAT, "sample_rate": 8000}},
         1003),
        ({"event": "start", "call_sid": SID, "token": "t", "media_format": "l16"}, 1003),
        ({"event": "hello"}, 1008),
        ({"event": "mark", "name": "t1f2"}, 1008),  # before start
    ],
)  # fmt: skip
def test_bad_starts_are_refused_with_the_right_close_code(start: dict[str, object], code: int) -> None:
    with pytest.raises(TelephonyProtocolError) as excinfo:
        BrowserCodec().receive_text(json.dumps(start))
    assert excinfo.value.close_code == code


@pytest.mark.parametrize("text", ["not json", "[1]", '{"no":"event"}', '{"event": 3}'])
def test_malformed_text_is_invalid_data(text: str) -> None:
    with pytest.raises(TelephonyProtocolError) as excinfo:
        BrowserCodec().receive_text(text)
    assert excinfo.value.close_code == 1007


def test_binary_frames_are_caller_audio() -> None:
    codec = _streaming()
    frame = bytes(range(256)) * 2 + bytes(128)  # 640 bytes: 20 ms at 16 kHz
    audio = codec.receive_binary(frame)
    assert isinstance(audio, CallerAudio)
    assert audio.payload == frame
    assert codec.receive_binary(b"\x01\x00") == CallerAudio(b"\x01\x00")  # any whole number of samples
    assert codec.receive_media("{}") is None  # never audio in text


@pytest.mark.parametrize(("size", "code"), [(0, 1007), (641, 1007), (32002, 1007)])
def test_bad_binary_frames_are_refused(size: int, code: int) -> None:
    with pytest.raises(TelephonyProtocolError) as excinfo:
        _streaming().receive_binary(b"\0" * size)
    assert excinfo.value.close_code == code


def test_audio_before_start_is_a_violation() -> None:
    with pytest.raises(TelephonyProtocolError) as excinfo:
        BrowserCodec().receive_binary(b"\0" * 640)
    assert excinfo.value.close_code == 1008


def test_marks_dtmf_and_stop() -> None:
    codec = _streaming()
    assert codec.receive_text('{"event":"mark","name":"t1f25"}') == MarkReached("t1f25")
    assert codec.receive_text('{"event":"dtmf","digit":"#"}') == DtmfPressed("#")
    assert codec.receive_text('{"event":"dtmf","digit":"a"}') == DtmfPressed("A")
    assert codec.receive_text('{"event":"stop"}') == CallStopped(SID)
    # What the page still had in flight when it hung up is dropped, not an error.
    assert codec.receive_binary(b"\0" * 640) is None
    assert codec.receive_text('{"event":"mark","name":"t1f26"}') is None


@pytest.mark.parametrize(
    "text",
    ['{"event":"dtmf","digit":"x"}', '{"event":"dtmf"}', '{"event":"mark","name":""}',
     '{"event":"mark","name":7}', '{"event":"mark","name":"' + "m" * 65 + '"}'],
)  # fmt: skip
def test_bad_control_messages_are_invalid(text: str) -> None:
    with pytest.raises(TelephonyProtocolError) as excinfo:
        _streaming().receive_text(text)
    assert excinfo.value.close_code == 1007


def test_a_second_start_is_a_violation() -> None:
    with pytest.raises(TelephonyProtocolError) as excinfo:
        _streaming().receive_text(START)
    assert excinfo.value.close_code == 1008


def test_encode_sends_audio_as_binary_and_control_as_json() -> None:
    codec = _streaming()
    pcm = b"\x10\x00" * 960  # three frames in one message: the page buffers any size
    assert codec.encode(PlayAudio(pcm)) == pcm
    mark = codec.encode(SetMark("t2f10"))
    assert isinstance(mark, str)
    assert json.loads(mark) == {"event": "mark", "name": "t2f10"}
    clear = codec.encode(ClearPlayback())
    assert isinstance(clear, str)
    assert json.loads(clear) == {"event": "clear"}


def test_encode_refuses_what_the_page_cannot_play() -> None:
    with pytest.raises(TelephonyProtocolError):
        BrowserCodec().encode(PlayAudio(b"\0\0"))  # before start
    with pytest.raises(TelephonyProtocolError) as excinfo:
        _streaming().encode(PlayAudio(b"\0\0\0"))  # half a sample
    assert excinfo.value.close_code == 1011
