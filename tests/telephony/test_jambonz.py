"""jambonz listen codec: the metadata frame, binary audio, DTMF, marks, killAudio, the in-band marker."""

from __future__ import annotations

import json

import pytest

from gateway.errors import ConfigError, TelephonyProtocolError
from gateway.telephony.events import (
    CallerAudio,
    CallStarted,
    ClearPlayback,
    DtmfPressed,
    MarkReached,
    PlayAudio,
    SetMark,
)
from gateway.telephony.jambonz import FRAMES_PER_MESSAGE, MAX_MARKS, JambonzCodec, unmarked
from gateway.telephony.provider import BinaryMediaCodec

SID = "b8a2c0f2-5d1e-4e8e-9f4b-0c1d2e3f4a5b"
METADATA = {
    "sampleRate": 16000,
    "mixType": "mono",
    "callSid": SID,
    "direction": "inbound",
    "from": "+15550001111",
    "to": "+15551230000",
    "accountSid": "acc-1",
    "sipStatus": 200,
    "customerData": {"a": 1},
}


def _started(**changes: object) -> JambonzCodec:
    codec = JambonzCodec()
    codec.receive_text(json.dumps(METADATA | changes))
    return codec


def test_metadata_starts_the_call() -> None:
    codec = JambonzCodec()
    assert isinstance(codec, BinaryMediaCodec)
    event = codec.receive_text(json.dumps(METADATA))
    assert isinstance(event, CallStarted)
    assert (event.call_sid, event.to, event.from_, event.account_sid) == (
        SID, "+15551230000", "+15550001111", "acc-1",
    )  # fmt: skip
    assert event.sample_rate == 16000
    assert codec.audio.frame_bytes == 640
    assert event.custom_parameters["direction"] == "inbound"
    caps = codec.capabilities
    assert caps.marks
    assert caps.clear
    assert caps.binary_audio
    assert caps.provider_buffers
    assert caps.frames_per_message == FRAMES_PER_MESSAGE == 5


def test_default_rate_is_jambonz_default_8k() -> None:
    codec = JambonzCodec()
    meta = dict(METADATA)
    del meta["sampleRate"]
    event = codec.receive_text(json.dumps(meta))
    assert isinstance(event, CallStarted)
    assert event.sample_rate == 8000


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"callSid": None}, 1007),
        ({"callSid": "a b"}, 1007),
        ({"sampleRate": 24000}, 1003),
        ({"sampleRate": "16000"}, 1003),
        ({"mixType": "stereo"}, 1003),
        ({"mixType": "mixed"}, 1003),
        ({"to": 15551230000}, 1007),
    ],
)
def test_bad_metadata_is_refused_with_its_close_code(changes: dict[str, object], code: int) -> None:
    with pytest.raises(TelephonyProtocolError) as err:
        JambonzCodec().receive_text(json.dumps(METADATA | changes))
    assert err.value.close_code == code


@pytest.mark.parametrize("text", ["nope", "[]", '"x"'])
def test_non_object_text_is_invalid(text: str) -> None:
    with pytest.raises(TelephonyProtocolError) as err:
        JambonzCodec().receive_text(text)
    assert err.value.close_code == 1007


def test_binary_audio() -> None:
    with pytest.raises(TelephonyProtocolError) as err:
        JambonzCodec().receive_binary(bytes(640))
    assert err.value.close_code == 1008
    codec = _started()
    event = codec.receive_binary(bytes(640))
    assert isinstance(event, CallerAudio)
    assert len(event.payload) == 640
    for size in (0, 3, 32002):
        with pytest.raises(TelephonyProtocolError) as err:
            codec.receive_binary(bytes(size))
        assert err.value.close_code == 1007


def test_dtmf_events() -> None:
    codec = _started()
    assert codec.receive_text('{"event":"dtmf","dtmf":"2","duration":"1600"}') == DtmfPressed("2")
    assert codec.receive_text('{"event":"dtmf","dtmf":"#","duration":"800"}') == DtmfPressed("#")
    with pytest.raises(TelephonyProtocolError) as err:
        codec.receive_text('{"event":"dtmf","dtmf":"x"}')
    assert err.value.close_code == 1007


def test_marks_come_back_played_or_cleared_once() -> None:
    codec = _started()
    assert json.loads(codec.encode(SetMark("m1"))) == {"type": "mark", "data": {"name": "m1"}}
    codec.encode(SetMark("m2"))
    played = '{"type": "mark", "data": {"name": "m1", "event": "playout"}}'
    assert codec.receive_text(played) == MarkReached("m1")
    assert codec.receive_text(played) is None  # answered already
    assert json.loads(codec.encode(ClearPlayback())) == {"type": "killAudio"}
    cleared = '{"type":"mark","data":{"name":"m2","event":"cleared"}}'
    assert codec.receive_text(cleared) == MarkReached("m2")
    assert codec.receive_text('{"type":"mark","data":{"name":"zz","event":"playout"}}') is None
    assert codec.receive_text('{"type":"playDone","data":{"id":"1"}}') is None
    for bad in ('{"type":"mark","data":{}}', '{"type":"mark","data":{"name":"m","event":"x"}}'):
        with pytest.raises(TelephonyProtocolError) as err:
            codec.receive_text(bad)
        assert err.value.close_code == 1007
    with pytest.raises(TelephonyProtocolError) as err:
        codec.receive_text('{"type":"transcription"}')
    assert err.value.close_code == 1008


def test_more_marks_than_jambonz_keeps_is_our_bug() -> None:
    codec = _started()
    for i in range(MAX_MARKS):
        codec.encode(SetMark(f"m{i}"))
    with pytest.raises(TelephonyProtocolError) as err:
        codec.encode(SetMark("one-too-many"))
    assert err.value.close_code == 1011


def test_audio_goes_out_binary_without_the_in_band_marker() -> None:
    codec = _started()
    plain = bytes(range(0, 200, 2)) * 4
    assert codec.encode(PlayAudio(plain)) is plain  # nothing to change: no copy
    # Samples: 1, -1, 0x12FF | 0xFF34 (straddling 0xFF 0xFF is two samples, kept), -1.
    pcm = b"\x01\x00" + b"\xff\xff" + b"\xff\x12" + b"\x34\xff" + b"\xff\xff"
    out = codec.encode(PlayAudio(pcm))
    assert out == b"\x01\x00" + b"\xfe\xff" + b"\xff\x12" + b"\x34\xff" + b"\xfe\xff"
    assert unmarked(b"\x00\xff\xff\x00") == b"\x00\xff\xff\x00"  # odd offset only: untouched


def test_commands_before_the_metadata_are_our_bug() -> None:
    with pytest.raises(TelephonyProtocolError) as err:
        JambonzCodec().encode(PlayAudio(bytes(640)))
    assert err.value.close_code == 1011
    with pytest.raises(ConfigError):
        JambonzCodec(44100)
