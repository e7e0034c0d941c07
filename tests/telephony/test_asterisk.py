"""chan_websocket codec: both control formats, every event kind, our commands, malformed input."""

from __future__ import annotations

import json

import pytest

from gateway.errors import TelephonyProtocolError
from gateway.telephony.asterisk import ChanWebsocketCodec
from gateway.telephony.events import (
    CallerAudio,
    CallStarted,
    ClearPlayback,
    DtmfPressed,
    FlowControl,
    MarkReached,
    PlayAudio,
    SetMark,
)

PLAIN_START = (
    "MEDIA_START connection_id:gemini channel:WebSocket/gemini/0x7f01 channel_id:1718000000.7 "
    "format:slin16 optimal_frame_size:640 ptime:20"
)
JSON_START = json.dumps(
    {"event": "MEDIA_START", "connection_id": "gemini", "channel": "WebSocket/gemini/0x7f01",
     "channel_id": "1718000000.8", "format": "ulaw", "optimal_frame_size": 160, "ptime": 20,
     "channel_variables": {"DNID": "100"}}
)  # fmt: skip


def _started(start: str = PLAIN_START) -> ChanWebsocketCodec:
    codec = ChanWebsocketCodec()
    assert isinstance(codec.receive_text(start), CallStarted)
    return codec


def test_plain_text_media_start_and_events() -> None:
    codec = ChanWebsocketCodec()
    start = codec.receive_text(PLAIN_START)
    assert isinstance(start, CallStarted)
    assert (start.call_sid, start.sample_rate, start.encoding) == ("1718000000.7", 16000, "slin16")
    assert codec.control_format == "plain-text"
    assert (codec.audio.codec, codec.audio.rate, codec.optimal_frame_size) == ("l16", 16000, 640)
    assert codec.capabilities.hangup == "command"
    assert codec.capabilities.transfer == "none"
    assert codec.capabilities.frames_per_message is None
    assert codec.receive_binary(bytes(640)) == CallerAudio(bytes(640))
    assert codec.receive_text("DTMF_END digit:# channel_id:1718000000.7") == DtmfPressed("#")
    assert codec.receive_text("MEDIA_MARK_PROCESSED t1f10") == MarkReached("t1f10")
    assert codec.receive_text("MEDIA_MARK_PROCESSED") is None
    assert codec.receive_text("MEDIA_XOFF") == FlowControl(paused=True)
    assert codec.receive_text("MEDIA_XON") == FlowControl(paused=False)
    for quiet in ("QUEUE_DRAINED", "MEDIA_BUFFERING_COMPLETED x", "STATUS channel_id:1 queue_length:3",
                  "SOME_FUTURE_EVENT a:b"):  # fmt: skip
        assert codec.receive_text(quiet) is None


def test_json_media_start_and_events() -> None:
    codec = _started(JSON_START)
    assert codec.control_format == "json"
    assert codec.variables == {"DNID": "100"}
    assert (codec.audio.codec, codec.audio.rate) == ("ulaw", 8000)
    assert codec.receive_text('{"event":"DTMF_END","channel_id":"1","digit":"5"}') == DtmfPressed("5")
    mark = '{"event":"MEDIA_MARK_PROCESSED","channel_id":"1","correlation_id":"t2f4"}'
    assert codec.receive_text(mark) == MarkReached("t2f4")
    assert codec.receive_text('{"event":"MEDIA_XOFF","channel_id":"1"}') == FlowControl(paused=True)
    assert codec.receive_text('{"event":"QUEUE_DRAINED","channel_id":"1"}') is None


def test_commands_in_the_channels_format() -> None:
    plain, js = _started(), _started(JSON_START)
    assert plain.encode(SetMark("t1f10")) == "MARK_MEDIA t1f10"
    assert plain.encode(ClearPlayback()) == "FLUSH_MEDIA"
    assert (plain.answer_frame(), plain.hangup_frame()) == ("ANSWER", "HANGUP")
    assert json.loads(js.encode(SetMark("t1f10"))) == {"command": "MARK_MEDIA", "correlation_id": "t1f10"}
    assert json.loads(js.encode(ClearPlayback())) == {"command": "FLUSH_MEDIA"}
    assert json.loads(js.answer_frame()) == {"command": "ANSWER"}
    assert json.loads(js.hangup_frame()) == {"command": "HANGUP"}
    assert plain.encode(PlayAudio(bytes(1280))) == bytes(1280)
    with pytest.raises(TelephonyProtocolError) as bad:
        plain.encode(PlayAudio(bytes(700)))  # Asterisk would drop the last 60 bytes
    assert bad.value.close_code == 1011


def test_an_optimal_frame_size_other_than_20ms_sets_frames_per_message() -> None:
    codec = _started(
        PLAIN_START.replace("format:slin16 optimal_frame_size:640", "format:ulaw optimal_frame_size:240")
    )
    assert codec.capabilities.frames_per_message == 3  # 3 × 160 B = 2 × 240 B


@pytest.mark.parametrize(
    ("first", "then", "code"),
    [
        ("", "{", 1007),
        (None, "MEDIA_XOFF", 1008),  # before MEDIA_START
        (None, PLAIN_START.replace("format:slin16", "format:opus"), 1003),
        (None, PLAIN_START.replace(" channel_id:1718000000.7", ""), 1007),
        (None, PLAIN_START.replace("optimal_frame_size:640", "optimal_frame_size:641"), 1007),
        (None, PLAIN_START.replace("channel_id:1718000000.7", "channel_id:a/b"), 1007),
        (PLAIN_START, PLAIN_START, 1008),  # a second start
        (PLAIN_START, "DTMF_END digit:Z channel_id:1", 1007),
        (PLAIN_START, "ERROR channel_id:1 error_text:MARK_MEDIA not supported in passthrough mode", 1008),
        (PLAIN_START, '{"event":"MEDIA_XOFF"}', 1007),  # JSON on a plain-text stream
        (JSON_START, "MEDIA_XOFF", 1007),  # plain text on a JSON stream
        (JSON_START, '{"channel_id":"1"}', 1007),
        (PLAIN_START, "lower case garbage", 1007),
    ],
)
def test_malformed_input_closes_with_its_code(first: str | None, then: str, code: int) -> None:
    codec = ChanWebsocketCodec()
    if first:
        codec.receive_text(first)
    with pytest.raises(TelephonyProtocolError) as bad:
        codec.receive_text(then)
    assert bad.value.close_code == code


def test_binary_before_start_and_bad_sizes() -> None:
    with pytest.raises(TelephonyProtocolError) as early:
        ChanWebsocketCodec().receive_binary(bytes(160))
    assert early.value.close_code == 1008
    codec = _started()
    for data in (b"", bytes(641), bytes(65501)):
        with pytest.raises(TelephonyProtocolError) as bad:
            codec.receive_binary(data)
        assert bad.value.close_code == 1007
