"""TwilioCodec: golden Twilio messages → events, commands → Twilio JSON, state table, fuzzing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from gateway.errors import TelephonyProtocolError
from gateway.telephony import (
    CallerAudio,
    CallStarted,
    CallStopped,
    ClearPlayback,
    Connected,
    DtmfPressed,
    MarkReached,
    PlayAudio,
    SetMark,
    TwilioCodec,
    TwilioState,
)
from gateway.telephony.provider import AudioFormat, MediaCodec

STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL_SID = "CA4b5f9e1c2d3e4f5a6b7c8d9e0f1a2b3c"
ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"

# Golden messages, field layout exactly as Twilio's "WebSocket Messages" page shows them.
CONNECTED = '{"event":"connected","protocol":"Call","version":"1.0.0"}'
START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": ACCOUNT_SID,
            "streamSid": STREAM_SID,
            "callSid": CALL_SID,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"from_number": "+15550001111", "token": "a&b<c>"},
        },
        "streamSid": STREAM_SID,
    }
)
ULAW = bytes(range(256))[:160]


def media(payload: bytes = ULAW, *, chunk: str = "1", timestamp: str = "5", sid: str = STREAM_SID) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": "3",
            "media": {
                "track": "inbound",
                "chunk": chunk,
                "timestamp": timestamp,
                "payload": base64.b64encode(payload).decode(),
            },
            "streamSid": sid,
        }
    )


DTMF = json.dumps(
    {
        "event": "dtmf",
        "streamSid": STREAM_SID,
        "sequenceNumber": "5",
        "dtmf": {"track": "inbound_track", "digit": "#"},
    }
)
MARK = json.dumps(
    {"event": "mark", "sequenceNumber": "4", "streamSid": STREAM_SID, "mark": {"name": "turn-1"}}
)
STOP = json.dumps(
    {
        "event": "stop",
        "sequenceNumber": "6",
        "streamSid": STREAM_SID,
        "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID},
    }
)


def streaming_codec() -> TwilioCodec:
    codec = TwilioCodec()
    codec.receive_text(CONNECTED)
    codec.receive_text(START)
    return codec


def test_connected_then_start_yield_typed_events() -> None:
    """connected and start parse into Connected and CallStarted with every field."""
    codec = TwilioCodec()
    assert codec.receive_text(CONNECTED) == Connected("Call", "1.0.0")
    assert codec.state is TwilioState.AWAITING_START
    started = codec.receive_text(START)
    assert isinstance(started, CallStarted)
    assert started.stream_sid == STREAM_SID
    assert started.call_sid == CALL_SID
    assert started.account_sid == ACCOUNT_SID
    assert started.tracks == ("inbound",)
    assert dict(started.custom_parameters) == {"from_number": "+15550001111", "token": "a&b<c>"}
    assert (started.encoding, started.sample_rate, started.channels) == ("audio/x-mulaw", 8000, 1)
    assert codec.state is TwilioState.STREAMING
    assert (codec.stream_sid, codec.call_sid, codec.account_sid) == (STREAM_SID, CALL_SID, ACCOUNT_SID)


def test_start_without_connected_is_tolerated() -> None:
    """A stream whose first message is start (no connected) is accepted."""
    codec = TwilioCodec()
    assert isinstance(codec.receive_text(START), CallStarted)
    assert codec.state is TwilioState.STREAMING


def test_media_decodes_payload_and_counters() -> None:
    """media yields the raw μ-law bytes with integer chunk and timestamp, and counts them."""
    codec = streaming_codec()
    event = codec.receive_text(media(chunk="7", timestamp="125"))
    assert event == CallerAudio(ULAW, 125, 7)
    assert (codec.media_in, codec.bytes_in) == (1, 160)


def test_media_counters_may_be_numbers_or_absent() -> None:
    """Integer counters and missing counters are accepted (Twilio-compatible platforms vary)."""
    codec = streaming_codec()
    msg = {
        "event": "media",
        "streamSid": STREAM_SID,
        "media": {"payload": "//8=", "chunk": 2, "timestamp": 40},
    }
    assert codec.receive_text(json.dumps(msg)) == CallerAudio(b"\xff\xff", 40, 2)
    msg = {"event": "media", "media": {"payload": "//8="}}
    assert codec.receive_text(json.dumps(msg)) == CallerAudio(b"\xff\xff", None, None)


def test_dtmf_mark_stop() -> None:
    """dtmf, mark and stop become DtmfPressed, MarkReached and CallStopped; stop ends the stream."""
    codec = streaming_codec()
    assert codec.receive_text(DTMF) == DtmfPressed("#")
    assert codec.receive_text(MARK) == MarkReached("turn-1")
    assert codec.receive_text(STOP) == CallStopped(CALL_SID)
    assert codec.state is TwilioState.STOPPED
    assert codec.messages_in == 5


def test_encode_media_exactly_as_twilio_expects() -> None:
    """PlayAudio becomes {"event":"media","streamSid":…,"media":{"payload":base64}}."""
    codec = streaming_codec()
    text = codec.encode(PlayAudio(ULAW))
    assert json.loads(text) == {
        "event": "media",
        "streamSid": STREAM_SID,
        "media": {"payload": base64.b64encode(ULAW).decode()},
    }
    assert (codec.media_out, codec.bytes_out) == (1, 160)


def test_encode_mark_and_clear_exactly_as_twilio_expects() -> None:
    """SetMark and ClearPlayback become Twilio's mark and clear messages, names JSON-escaped."""
    codec = streaming_codec()
    name = 'turn "3" \\ é\n'
    assert json.loads(codec.encode(SetMark(name))) == {
        "event": "mark",
        "streamSid": STREAM_SID,
        "mark": {"name": name},
    }
    assert json.loads(codec.encode(ClearPlayback())) == {"event": "clear", "streamSid": STREAM_SID}


def test_encode_before_start_is_local_misuse() -> None:
    """Encoding before start raises TelephonyProtocolError with close code 1011."""
    codec = TwilioCodec()
    codec.receive_text(CONNECTED)
    with pytest.raises(TelephonyProtocolError) as info:
        codec.encode(PlayAudio(b"\xff"))
    assert info.value.close_code == 1011


def test_encode_still_allowed_after_stop() -> None:
    """A bridge racing the hang-up can still encode after stop without an exception."""
    codec = streaming_codec()
    codec.receive_text(STOP)
    assert json.loads(codec.encode(ClearPlayback()))["event"] == "clear"


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        pytest.param([MARK], 1008, id="mark-before-start"),
        pytest.param([media()], 1008, id="media-before-start"),
        pytest.param([CONNECTED, CONNECTED], 1008, id="connected-twice"),
        pytest.param([CONNECTED, media()], 1008, id="media-before-start-after-connected"),
        pytest.param([CONNECTED, START, START], 1008, id="start-twice"),
        pytest.param([CONNECTED, START, STOP, media()], 1008, id="media-after-stop"),
        pytest.param([CONNECTED, START, STOP, STOP], 1008, id="stop-twice"),
        pytest.param([CONNECTED, STOP], 1008, id="stop-before-start"),
        pytest.param([CONNECTED, START, DTMF.replace("dtmf", "hello", 1)], 1008, id="unknown-event"),
    ],
)
def test_out_of_order_messages_are_rejected(messages: list[str], code: int) -> None:
    """Messages illegal in the current state raise TelephonyProtocolError with close code 1008."""
    codec = TwilioCodec()
    *legal, bad = messages
    for text in legal:
        codec.receive_text(text)
    with pytest.raises(TelephonyProtocolError) as info:
        codec.receive_text(bad)
    assert info.value.close_code == code


def _start_with(**changes: Any) -> str:
    msg = json.loads(START)
    for key, value in changes.items():
        msg["start"][key] = value
    return json.dumps(msg)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        pytest.param("not json", 1007, id="not-json"),
        pytest.param("[1, 2]", 1007, id="not-object"),
        pytest.param('{"protocol": "Call"}', 1007, id="no-event"),
        pytest.param('{"event": 3}', 1007, id="event-not-string"),
        pytest.param(_start_with(streamSid='MZ"}'), 1007, id="sid-not-plain"),
        pytest.param(_start_with(callSid=None), 1007, id="no-call-sid"),
        pytest.param(_start_with(tracks="inbound"), 1007, id="tracks-not-list"),
        pytest.param(_start_with(customParameters={"a": 1}), 1007, id="param-not-string"),
        pytest.param(_start_with(mediaFormat={"encoding": "audio/x-mulaw"}), 1007, id="no-rate"),
        pytest.param(
            _start_with(mediaFormat={"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1}),
            1003,
            id="l16-unsupported",
        ),
    ],
)
def test_malformed_start_or_envelope_is_rejected(text: str, code: int) -> None:
    """Malformed JSON, envelopes and start messages raise with 1007 (bad data) or 1003 (unsupported)."""
    codec = TwilioCodec()
    with pytest.raises(TelephonyProtocolError) as info:
        codec.receive_text(text)
    assert info.value.close_code == code
    assert codec.state is TwilioState.AWAITING_CONNECTED


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        pytest.param(lambda m: m["media"].update(payload="ab=c"), 1007, id="discontinuous-padding"),
        pytest.param(lambda m: m["media"].update(payload="a!bc"), 1007, id="bad-alphabet"),
        pytest.param(lambda m: m["media"].update(payload="abc"), 1007, id="truncated"),
        pytest.param(lambda m: m["media"].update(payload="ab¢d"), 1007, id="non-ascii"),
        pytest.param(lambda m: m["media"].update(payload=12), 1007, id="payload-not-string"),
        pytest.param(lambda m: m["media"].update(chunk="-1"), 1007, id="negative-chunk"),
        pytest.param(lambda m: m["media"].update(timestamp="1.5"), 1007, id="fractional-timestamp"),
        pytest.param(lambda m: m["media"].update(track="outbound"), 1008, id="outbound-track"),
        pytest.param(lambda m: m.update(media="x"), 1007, id="media-not-object"),
        pytest.param(lambda m: m.update(streamSid="MZother"), 1008, id="other-stream"),
    ],
)
def test_malformed_media_is_rejected(mutate: Any, code: int) -> None:
    """Bad base64, wrong types, another stream's media raise TelephonyProtocolError with a close code."""
    codec = streaming_codec()
    msg = json.loads(media())
    mutate(msg)
    with pytest.raises(TelephonyProtocolError) as info:
        codec.receive_text(json.dumps(msg))
    assert info.value.close_code == code
    assert codec.media_in == 0


@pytest.mark.parametrize(
    "text",
    [
        DTMF.replace('"#"', '"x"'),
        DTMF.replace('"#"', "5"),
        MARK.replace('"turn-1"', "null"),
        json.dumps({"event": "mark", "streamSid": STREAM_SID}),
        json.dumps({"event": "stop", "streamSid": STREAM_SID, "stop": "now"}),
        json.dumps({"event": "dtmf", "streamSid": "MZother", "dtmf": {"digit": "1"}}),
    ],
)
def test_malformed_control_messages_are_rejected(text: str) -> None:
    """Bad dtmf digits, mark names, stop bodies or foreign stream SIDs raise TelephonyProtocolError."""
    codec = streaming_codec()
    with pytest.raises(TelephonyProtocolError):
        codec.receive_text(text)
    assert codec.state is TwilioState.STREAMING


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_GOLDEN = [CONNECTED, START, media(), DTMF, MARK, STOP]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text_parses_or_raises_protocol_error(text: str) -> None:
    """Arbitrary text either parses or raises TelephonyProtocolError, in any state."""
    for prefix in ([], [CONNECTED], [CONNECTED, START]):
        codec = TwilioCodec()
        for good in prefix:
            codec.receive_text(good)
        try:
            codec.receive_text(text)
        except TelephonyProtocolError:
            pass


def _set_path(doc: Any, path: list[Any], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def _paths(doc: Any, prefix: list[Any] | None = None) -> list[list[Any]]:
    prefix = prefix or []
    found: list[list[Any]] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found.append([*prefix, key])
            found.extend(_paths(value, [*prefix, key]))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found.append([*prefix, i])
            found.extend(_paths(value, [*prefix, i]))
    return found


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(range(len(_GOLDEN))), st.data())
def test_fuzz_mutated_golden_messages_parse_or_raise_protocol_error(index: int, data: st.DataObject) -> None:
    """Golden messages with one field replaced by arbitrary JSON parse or raise TelephonyProtocolError."""
    msg = json.loads(_GOLDEN[index])
    path = data.draw(st.sampled_from(_paths(msg)))
    _set_path(msg, path, data.draw(_JSON))
    codec = TwilioCodec()
    for good in _GOLDEN[: min(index, 2)]:
        codec.receive_text(good)
    try:
        codec.receive_text(json.dumps(msg))
    except TelephonyProtocolError:
        pass


@given(st.binary(max_size=400))
def test_fuzz_media_round_trip(payload: bytes) -> None:
    """Any μ-law payload we encode decodes back to the same bytes through Twilio's media shape."""
    codec = streaming_codec()
    sent = json.loads(codec.encode(PlayAudio(payload)))
    echoed = json.dumps({"event": "media", "streamSid": STREAM_SID, "media": sent["media"]})
    event = codec.receive_text(echoed)
    assert isinstance(event, CallerAudio)
    assert event.payload == payload


def test_the_codec_declares_what_the_bridge_may_rely_on() -> None:
    """TwilioCodec is a MediaCodec: the bridge reads its capabilities and format, not its name."""
    codec: MediaCodec = TwilioCodec()
    assert codec.audio == AudioFormat("ulaw", 8000)
    assert codec.audio.frame_bytes == 160
    caps = codec.capabilities
    assert (caps.marks, caps.clear, caps.frames_per_message, caps.hangup) == (True, True, None, "close")
    assert caps.continuous_media
