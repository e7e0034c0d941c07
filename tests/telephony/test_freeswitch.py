"""FreeSWITCH mod_audio_stream codec: metadata, binary audio, the event script's DTMF, streamAudio out."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.errors import ConfigError, TelephonyProtocolError
from gateway.telephony.events import CallerAudio, CallStarted, ClearPlayback, DtmfPressed, PlayAudio, SetMark
from gateway.telephony.freeswitch import FRAMES_PER_FILE, FreeSwitchCodec, metadata_json
from gateway.telephony.provider import BinaryMediaCodec

UUID = "7f4de4bc-9e1e-4b4b-9a4e-1c0e8b1d2a3f"


def _started(rate: int = 16000, **extra: object) -> FreeSwitchCodec:
    codec = FreeSwitchCodec()
    codec.receive_text(json.dumps({"uuid": UUID, "sampleRate": rate, **extra}))
    return codec


def test_metadata_starts_the_call_with_its_rate_and_identity() -> None:
    codec = FreeSwitchCodec()
    assert isinstance(codec, BinaryMediaCodec)
    event = codec.receive_text(metadata_json(uuid=UUID, rate=16000, to="+15551230000", from_="1001"))
    assert isinstance(event, CallStarted)
    assert (event.call_sid, event.stream_sid, event.to, event.from_) == (UUID, UUID, "+15551230000", "1001")
    assert (event.encoding, event.sample_rate) == ("audio/l16", 16000)
    assert codec.audio.rate == 16000
    assert codec.audio.frame_bytes == 640
    assert codec.capabilities.binary_audio
    assert not codec.capabilities.marks
    assert codec.capabilities.frames_per_message == FRAMES_PER_FILE
    assert codec.capabilities.transfer == "none"


def test_metadata_without_to_and_from_leaves_them_to_the_url() -> None:
    codec = FreeSwitchCodec()
    event = codec.receive_text(metadata_json(uuid=UUID, rate=8000))
    assert isinstance(event, CallStarted)
    assert (event.to, event.from_, event.sample_rate) == ("", "", 8000)


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ("not json", 1007),
        ("[1]", 1007),
        (json.dumps({"sampleRate": 16000}), 1007),  # no uuid
        (json.dumps({"uuid": "a b", "sampleRate": 16000}), 1007),
        (json.dumps({"uuid": UUID}), 1003),  # no rate
        (json.dumps({"uuid": UUID, "sampleRate": "16k"}), 1003),
        (json.dumps({"uuid": UUID, "sampleRate": 24000}), 1003),
        (json.dumps({"uuid": UUID, "sampleRate": 16000, "mixType": "stereo"}), 1003),
        (json.dumps({"uuid": UUID, "sampleRate": 16000, "to": 5}), 1007),
    ],
)
def test_bad_metadata_is_refused_with_its_close_code(metadata: str, code: int) -> None:
    with pytest.raises(TelephonyProtocolError) as err:
        FreeSwitchCodec().receive_text(metadata)
    assert err.value.close_code == code


def test_binary_audio_before_the_metadata_is_a_violation() -> None:
    with pytest.raises(TelephonyProtocolError) as err:
        FreeSwitchCodec().receive_binary(bytes(640))
    assert err.value.close_code == 1008


@pytest.mark.parametrize("size", [0, 641, 32002])
def test_malformed_audio_frames_are_invalid(size: int) -> None:
    with pytest.raises(TelephonyProtocolError) as err:
        _started().receive_binary(bytes(size))
    assert err.value.close_code == 1007


def test_audio_frames_of_any_whole_sample_count_pass_through() -> None:
    codec = _started()
    for size in (640, 3200, 2):  # 20 ms, STREAM_BUFFER_SIZE=100, a resampler's short frame
        event = codec.receive_binary(b"\x01\x00" * (size // 2))
        assert isinstance(event, CallerAudio)
        assert len(event.payload) == size
    assert codec.receive_media("{}") is None


def test_dtmf_from_the_event_script() -> None:
    codec = _started()
    assert codec.receive_text('{"type":"dtmf","digit":"5"}') == DtmfPressed("5")
    assert codec.receive_text('{"type":"dtmf","digit":"a"}') == DtmfPressed("A")
    with pytest.raises(TelephonyProtocolError) as err:
        codec.receive_text('{"type":"dtmf","digit":"55"}')
    assert err.value.close_code == 1007
    with pytest.raises(TelephonyProtocolError) as err:
        codec.receive_text('{"type":"hello"}')
    assert err.value.close_code == 1008


def test_audio_goes_out_as_a_raw_streamaudio_file_and_clear_as_killaudio() -> None:
    codec = _started(8000)
    pcm = bytes(range(256)) * 6 + bytes(64)  # 100 ms at 8 kHz
    msg = json.loads(codec.encode(PlayAudio(pcm)))
    assert msg == {
        "type": "streamAudio",
        "data": {"audioDataType": "raw", "sampleRate": 8000, "audioData": base64.b64encode(pcm).decode()},
    }
    assert json.loads(codec.encode(ClearPlayback())) == {"type": "killAudio"}


def test_marks_and_early_commands_are_our_bugs() -> None:
    with pytest.raises(TelephonyProtocolError) as err:
        FreeSwitchCodec().encode(PlayAudio(bytes(320)))
    assert err.value.close_code == 1011
    with pytest.raises(TelephonyProtocolError) as err:
        _started().encode(SetMark("m1"))
    assert err.value.close_code == 1011


def test_an_unsupported_placeholder_rate_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        FreeSwitchCodec(24000)
