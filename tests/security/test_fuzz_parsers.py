"""Property-based fuzzing of the two parsers that read untrusted input: Twilio's media stream and Gemini Live.

Each either accepts its input or raises its documented error (TelephonyProtocolError with a WebSocket
close code, LiveProtocolError), never anything else. These complement the arbitrary-input fuzzers in
tests/telephony and tests/gemini with *mutations of valid messages* (one field changed, removed or
retyped; characters flipped, cut or inserted) and random sequences of messages against the
Twilio codec's state machine.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from hypothesis import given, settings, strategies as st

from gateway.errors import LiveProtocolError, TelephonyProtocolError
from gateway.gemini.messages import parse_server_message
from gateway.telephony.events import CallerAudio, PlayAudio
from gateway.telephony.twilio import TwilioCodec

STREAM = "MZ" + "0" * 32
CALL = "CA" + "0" * 32
_AUDIO = base64.b64encode(b"\x00\x01" * 240).decode()

LIVE_GOLDEN: list[dict[str, Any]] = [
    {"setupComplete": {}},
    {
        "serverContent": {
            "modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": _AUDIO}}]}
        }
    },
    {"serverContent": {"modelTurn": {"parts": [{"text": "hi"}, {"text": "thinking", "thought": True}]}}},
    {"serverContent": {"outputTranscription": {"text": "Hello"}, "inputTranscription": {"text": "Hi"}}},
    {"serverContent": {"interrupted": True}},
    {"serverContent": {"generationComplete": True, "turnComplete": True}},
    {"toolCall": {"functionCalls": [{"id": "fc-1", "name": "lookup_order", "args": {"order": "A1"}}]}},
    {"toolCallCancellation": {"ids": ["fc-1", "fc-2"]}},
    {"goAway": {"timeLeft": "5.5s"}},
    {"sessionResumptionUpdate": {"newHandle": "h-123", "resumable": True}},
    {"voiceActivity": {"type": "ACTIVITY_START"}},
    {"usageMetadata": {"promptTokenCount": 10, "responseTokenCount": "20", "totalTokenCount": 30}},
]

TWILIO_GOLDEN: list[dict[str, Any]] = [
    {"event": "connected", "protocol": "Call", "version": "1.0.0"},
    {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": STREAM,
        "start": {
            "accountSid": "AC" + "0" * 32,
            "streamSid": STREAM,
            "callSid": CALL,
            "tracks": ["inbound"],
            "customParameters": {"token": "v1.abc.def"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    },
    {
        "event": "media",
        "sequenceNumber": "2",
        "streamSid": STREAM,
        "media": {
            "track": "inbound",
            "chunk": "1",
            "timestamp": "5",
            "payload": base64.b64encode(b"\xff" * 160).decode(),
        },
    },
    {
        "event": "dtmf",
        "sequenceNumber": "3",
        "streamSid": STREAM,
        "dtmf": {"track": "inbound_track", "digit": "5"},
    },
    {"event": "mark", "sequenceNumber": "4", "streamSid": STREAM, "mark": {"name": "m1"}},
    {
        "event": "stop",
        "sequenceNumber": "5",
        "streamSid": STREAM,
        "stop": {"accountSid": "AC", "callSid": CALL},
    },
]

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and ±Infinity too: Python's json writes and reads them
    | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


def _mutate(doc: Any, data: st.DataObject) -> Any:
    """One structural mutation: replace a value, delete a key, or rename a key."""
    doc = copy.deepcopy(doc)
    path = data.draw(st.sampled_from(_paths(doc)))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    op = data.draw(st.sampled_from(["replace", "delete", "rename"]))
    last = path[-1]
    if op == "replace" or isinstance(parent, list):
        parent[last] = data.draw(_json)
    elif op == "delete":
        del parent[last]
    else:
        parent[data.draw(st.text(max_size=8))] = parent.pop(last)
    return doc


def _mutate_text(text: str, data: st.DataObject) -> str:
    """One textual mutation: flip, insert or delete a character, or cut the text short."""
    i = data.draw(st.integers(0, max(0, len(text) - 1)))
    op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
    ch = data.draw(st.characters())
    if op == "flip":
        return text[:i] + ch + text[i + 1 :]
    if op == "insert":
        return text[:i] + ch + text[i:]
    if op == "delete":
        return text[:i] + text[i + 1 :]
    return text[:i]


def test_golden_messages_are_valid() -> None:
    """The seeds are real, accepted messages (otherwise the mutation fuzz would test nothing)."""
    for doc in LIVE_GOLDEN:
        assert parse_server_message(json.dumps(doc))
    codec = TwilioCodec()
    for doc in TWILIO_GOLDEN:
        codec.receive_text(json.dumps(doc))


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(LIVE_GOLDEN), st.data())
def test_fuzz_mutated_live_messages_parse_or_raise_live_protocol_error(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    """A valid Live message with one field replaced, removed or renamed parses or raises LiveProtocolError."""
    mutated = _mutate(doc, data)
    try:
        events = parse_server_message(json.dumps(mutated))
    except LiveProtocolError:
        return
    assert isinstance(events, list)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(LIVE_GOLDEN), st.data(), st.booleans())
def test_fuzz_corrupted_live_frames_parse_or_raise_live_protocol_error(
    doc: dict[str, Any], data: st.DataObject, as_bytes: bool
) -> None:
    """A Live frame with a character flipped, inserted, deleted or cut off (text or bytes) is handled."""
    text = _mutate_text(json.dumps(doc), data)
    frame: str | bytes = text.encode("utf-8", "surrogatepass") if as_bytes else text
    try:
        parse_server_message(frame)
    except LiveProtocolError:
        pass


def _codec_at(index: int) -> TwilioCodec:
    """A codec that has seen the golden messages before ``index`` (connected, then start)."""
    codec = TwilioCodec()
    for doc in TWILIO_GOLDEN[: min(index, 2)]:
        codec.receive_text(json.dumps(doc))
    return codec


def _check_twilio(codec: TwilioCodec, text: str) -> None:
    code = None
    try:
        codec.receive_text(text)
    except TelephonyProtocolError as exc:
        code = exc.close_code
    assert code in (None, 1003, 1007, 1008, 1011)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(range(len(TWILIO_GOLDEN))), st.data())
def test_fuzz_mutated_twilio_messages_parse_or_raise_protocol_error(index: int, data: st.DataObject) -> None:
    """A Twilio message with a field replaced, removed or renamed parses or raises TelephonyProtocolError."""
    _check_twilio(_codec_at(index), json.dumps(_mutate(TWILIO_GOLDEN[index], data)))


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(range(len(TWILIO_GOLDEN))), st.data())
def test_fuzz_corrupted_twilio_text_parses_or_raises_protocol_error(index: int, data: st.DataObject) -> None:
    """A Twilio message with characters flipped, inserted, deleted or cut off parses or raises its error."""
    _check_twilio(_codec_at(index), _mutate_text(json.dumps(TWILIO_GOLDEN[index]), data))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(range(len(TWILIO_GOLDEN))), st.booleans()), max_size=12), st.data())
def test_fuzz_message_sequences_keep_the_codec_consistent(
    steps: list[tuple[int, bool]], data: st.DataObject
) -> None:
    """Any order of (possibly mutated) messages only raises TelephonyProtocolError, and a codec that
    reached streaming still encodes commands afterwards (an error ends the call, not the process)."""
    codec = TwilioCodec()
    for index, mutate in steps:
        doc = _mutate(TWILIO_GOLDEN[index], data) if mutate else TWILIO_GOLDEN[index]
        try:
            event = codec.receive_text(json.dumps(doc))
        except TelephonyProtocolError:
            continue
        if isinstance(event, CallerAudio):
            json.loads(codec.encode(PlayAudio(b"\xff" * 160)))
