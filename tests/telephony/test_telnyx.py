"""Telnyx: golden stream frames, formats and byte order, Ed25519 webhooks, TeXML, Call Control, the wire."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings, strategies as st
from telnyx.lib.webhook_verification import WebhookVerificationError, verify_webhook_signature

from gateway.caller import wire_telnyx as wire
from gateway.errors import ConfigError, TelephonyProtocolError
from gateway.telephony.events import (
    CallerAudio,
    CallStarted,
    CallStopped,
    ClearPlayback,
    Connected,
    DtmfPressed,
    MarkReached,
    PlayAudio,
    SetMark,
)
from gateway.telephony.provider import AudioFormat, MediaCodec
from gateway.telephony.telnyx import (
    CallControlEvent,
    TelnyxCodec,
    TelnyxRest,
    TelnyxState,
    connect_stream_texml,
    load_public_key,
    parse_call_control_event,
    stream_url_with_token,
    verify_telnyx_signature,
)

STREAM_ID = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"
CALL_ID = "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"
USER_ID = "3E6F995F-85F7-4705-9741-53B116D28237"

# Golden frames: the examples of Telnyx's "Stream call media over WebSocket" AsyncAPI page.
CONNECTED = '{"event": "connected", "version": "1.0.0"}'
START_DOC: dict[str, Any] = {
    "event": "start",
    "sequence_number": "1",
    "stream_id": STREAM_ID,
    "start": {
        "user_id": USER_ID,
        "call_control_id": CALL_ID,
        "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
        "from": "+13122010094",
        "to": "+13122123456",
        "tags": ["TAG1", "TAG2"],
        "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
        "custom_parameters": {"customer_id": "customer_123"},
        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
    },
}
START = json.dumps(START_DOC)
ULAW = bytes(range(96, 256))  # 160 bytes: 20 ms
MEDIA = json.dumps(
    {
        "event": "media",
        "sequence_number": "4",
        "media": {
            "track": "inbound",
            "chunk": "2",
            "timestamp": "5",
            "payload": base64.b64encode(ULAW).decode(),
        },
        "stream_id": STREAM_ID,
    }
)
DTMF = json.dumps(
    {
        "event": "dtmf",
        "stream_id": STREAM_ID,
        "occurred_at": "2024-09-11T18:41:24.000000Z",
        "sequence_number": "5",
        "dtmf": {"digit": "1"},
    }
)
MARK = json.dumps(
    {"event": "mark", "sequence_number": "6", "stream_id": STREAM_ID, "mark": {"name": "turn-1"}}
)
ERROR = json.dumps(
    {
        "event": "error",
        "sequence_number": "7",
        "stream_id": STREAM_ID,
        "payload": {"code": 100003, "title": "malformed_frame", "detail": "The frame is not valid JSON"},
    }
)
STOP = json.dumps(
    {
        "event": "stop",
        "sequence_number": "8",
        "stream_id": STREAM_ID,
        "stop": {"user_id": USER_ID, "call_control_id": CALL_ID},
    }
)


def start_with(encoding: str, rate: int, channels: int = 1) -> str:
    doc = json.loads(START)
    doc["start"]["media_format"] = {"encoding": encoding, "sample_rate": rate, "channels": channels}
    return json.dumps(doc)


def streaming(start: str = START) -> TelnyxCodec:
    codec = TelnyxCodec()
    codec.receive_text(CONNECTED)
    codec.receive_text(start)
    return codec


# --- the stream -----------------------------------------------------------------------------------


def test_golden_stream_decodes_to_neutral_events() -> None:
    """Telnyx's documented frames decode: identity from start, audio, a key, a mark echo, the stop."""
    codec = TelnyxCodec()
    assert codec.receive_text(CONNECTED) == Connected("", "1.0.0")
    assert codec.state.value == "awaiting_start"
    started = codec.receive_text(START)
    assert started == CallStarted(
        STREAM_ID, CALL_ID, USER_ID, ("inbound",), {"customer_id": "customer_123"}, "PCMU", 8000, 1
    )
    assert (codec.caller, codec.callee) == ("+13122010094", "+13122123456")
    assert codec.audio == AudioFormat("ulaw", 8000)
    assert codec.receive_text(MEDIA) == CallerAudio(ULAW, 5, 2)
    assert codec.receive_media(MEDIA) == CallerAudio(ULAW, 5, 2)
    assert codec.receive_media(DTMF) is None
    assert codec.receive_text(DTMF) == DtmfPressed("1")
    assert codec.receive_text(MARK) == MarkReached("turn-1")
    assert codec.receive_text(STOP) == CallStopped(CALL_ID)
    assert codec.state is TelnyxState.STOPPED
    assert (codec.messages_in, codec.media_in, codec.bytes_in) == (7, 2, 320)


def test_start_without_connected_and_frames_without_stream_id_are_tolerated() -> None:
    """A stream opening with start, and media without stream_id or with inbound_track, are accepted."""
    codec = TelnyxCodec()
    assert isinstance(codec.receive_text(START), CallStarted)
    msg = json.loads(MEDIA)
    del msg["stream_id"]
    msg["media"]["track"] = "inbound_track"
    assert codec.receive_text(json.dumps(msg)) == CallerAudio(ULAW, 5, 2)


def test_l16_is_big_endian_on_the_wire_and_little_endian_inside() -> None:
    """L16 payloads are byte-swapped both ways: RTP's network order outside, the audio core's LE inside."""
    codec = streaming(start_with("L16", 16000))
    assert codec.audio == AudioFormat("l16", 16000)
    pcm = b"\x01\x02\x03\x04" * 160  # 320 samples: 20 ms at 16 kHz, LE
    on_wire = b"\x02\x01\x04\x03" * 160
    msg = json.loads(MEDIA)
    msg["media"]["payload"] = base64.b64encode(on_wire).decode()
    assert codec.receive_media(json.dumps(msg)) == CallerAudio(pcm, 5, 2)
    assert json.loads(codec.encode(PlayAudio(pcm))) == {
        "event": "media",
        "media": {"payload": base64.b64encode(on_wire).decode()},
    }
    msg["media"]["payload"] = base64.b64encode(on_wire[:-1]).decode()
    with pytest.raises(TelephonyProtocolError) as info:
        codec.receive_text(json.dumps(msg))
    assert info.value.close_code == 1007


def test_pcma_is_alaw() -> None:
    """A PCMA stream is A-law at 8 kHz, passed through unchanged."""
    codec = streaming(start_with("PCMA", 8000))
    assert codec.audio == AudioFormat("alaw", 8000)
    assert codec.receive_text(MEDIA) == CallerAudio(ULAW, 5, 2)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        pytest.param(start_with("G722", 8000), 1003, id="g722"),
        pytest.param(start_with("OPUS", 16000), 1003, id="opus"),
        pytest.param(start_with("PCMU", 16000), 1003, id="pcmu-16k"),
        pytest.param(start_with("L16", 11025), 1003, id="l16-odd-rate"),
        pytest.param(start_with("PCMU", 8000, channels=2), 1003, id="stereo"),
        pytest.param(start_with("PCMU", "8000"), 1007, id="rate-as-string"),  # type: ignore[arg-type]
        pytest.param(START.replace('"call_control_id"', '"call_id"'), 1007, id="no-call-control-id"),
        pytest.param(START.replace(CALL_ID, ""), 1007, id="empty-call-control-id"),
        pytest.param(START.replace(f'"stream_id": "{STREAM_ID}", ', ""), 1007, id="no-stream-id"),
        pytest.param(START.replace('"customer_123"', "123"), 1007, id="param-not-string"),
        pytest.param(START.replace('"+13122010094"', "13122010094"), 1007, id="from-not-string"),
        pytest.param('{"event": "start", "stream_id": "s", "start": []}', 1007, id="start-not-object"),
        pytest.param("not json", 1007, id="not-json"),
        pytest.param('["event"]', 1007, id="not-object"),
        pytest.param('{"event": 5}', 1007, id="event-not-string"),
    ],
)
def test_bad_start_is_refused_with_a_close_code(text: str, code: int) -> None:
    """Formats the gateway cannot take get 1003 (answer with stream_codec set); malformed frames 1007."""
    codec = TelnyxCodec()
    with pytest.raises(TelephonyProtocolError) as info:
        codec.receive_text(text)
    assert info.value.close_code == code
    assert codec.state is TelnyxState.AWAITING_CONNECTED


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        pytest.param([MEDIA], 1008, id="media-before-start"),
        pytest.param([CONNECTED, MARK], 1008, id="mark-before-start"),
        pytest.param([CONNECTED, CONNECTED], 1008, id="connected-twice"),
        pytest.param([CONNECTED, START, START], 1008, id="start-twice"),
        pytest.param([CONNECTED, START, STOP, MEDIA], 1008, id="media-after-stop"),
        pytest.param([CONNECTED, START, STOP, STOP], 1008, id="stop-twice"),
        pytest.param([CONNECTED, START, MARK.replace(STREAM_ID, "other")], 1008, id="other-stream"),
        pytest.param([CONNECTED, START, MEDIA.replace('"inbound"', '"outbound"')], 1008, id="outbound-track"),
        pytest.param(
            [CONNECTED, START, DTMF.replace('"dtmf", "stream_id"', '"hello", "stream_id"')],
            1008,
            id="unknown",
        ),
        pytest.param([CONNECTED, START, DTMF.replace('"1"', '"x"')], 1007, id="bad-digit"),
        pytest.param([CONNECTED, START, MARK.replace('"turn-1"', "null")], 1007, id="mark-name-null"),
        pytest.param(
            [CONNECTED, START, STOP.replace(f'"call_control_id": "{CALL_ID}"', '"call_control_id": 1')],
            1007,
            id="stop-id",
        ),
        pytest.param([CONNECTED, START, MEDIA.replace('"payload": "', '"payload": "!')], 1007, id="bad-b64"),
        pytest.param(
            [CONNECTED, START, MEDIA.replace('"chunk": "2"', '"chunk": "-2"')], 1007, id="negative-chunk"
        ),
        pytest.param([CONNECTED, START, ERROR], 1011, id="error-frame"),
    ],
)
def test_out_of_order_and_malformed_frames_are_refused(messages: list[str], code: int) -> None:
    """The state table holds; bad fields are 1007, order and identity 1008, Telnyx's own error 1011."""
    codec = TelnyxCodec()
    *legal, bad = messages
    for text in legal:
        codec.receive_text(text)
    with pytest.raises(TelephonyProtocolError) as info:
        codec.receive_text(bad)
    assert info.value.close_code == code


def test_error_frame_names_telnyxs_code_and_title() -> None:
    """Telnyx refusing our frame surfaces its code, title and detail, so the log says what broke."""
    with pytest.raises(TelephonyProtocolError, match="100003 malformed_frame The frame is not valid JSON"):
        streaming().receive_text(ERROR)


def test_commands_encode_as_telnyx_documents() -> None:
    """media, mark and clear frames carry no stream id; mark names are JSON-escaped."""
    codec = streaming()
    assert json.loads(codec.encode(PlayAudio(ULAW))) == {
        "event": "media",
        "media": {"payload": base64.b64encode(ULAW).decode()},
    }
    assert json.loads(codec.encode(SetMark('a "quoted" \\ name\n'))) == {
        "event": "mark",
        "mark": {"name": 'a "quoted" \\ name\n'},
    }
    assert json.loads(codec.encode(ClearPlayback())) == {"event": "clear"}
    assert (codec.media_out, codec.bytes_out) == (1, 160)
    codec.receive_text(STOP)
    assert json.loads(codec.encode(ClearPlayback())) == {"event": "clear"}  # racing the hang-up is fine


def test_encode_before_start_is_local_misuse() -> None:
    """Before start the format is unknown: encoding is our bug, close code 1011."""
    with pytest.raises(TelephonyProtocolError) as info:
        TelnyxCodec().encode(PlayAudio(b"\xff"))
    assert info.value.close_code == 1011


def test_the_codec_declares_what_the_bridge_may_rely_on() -> None:
    """TelnyxCodec is a MediaCodec; hang-up, transfer and DTMF go through the REST API."""
    codec: MediaCodec = TelnyxCodec()
    caps = codec.capabilities
    assert (caps.marks, caps.clear, caps.frames_per_message, caps.provider_buffers) == (
        True,
        True,
        None,
        True,
    )
    assert (caps.hangup, caps.transfer, caps.dtmf_out, caps.binary_audio) == ("rest", "rest", "rest", False)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_GOLDEN = [CONNECTED, START, MEDIA, DTMF, MARK, ERROR, STOP]


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    found: list[tuple[Any, ...]] = []
    for key, value in items:
        found += [(*prefix, key), *_paths(value, (*prefix, key))]
    return found


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text_parses_or_raises_protocol_error(text: str) -> None:
    """Arbitrary text either parses or raises TelephonyProtocolError, in every state and both formats."""
    for prefix in ([], [CONNECTED], [CONNECTED, START], [CONNECTED, start_with("L16", 16000)]):
        codec = TelnyxCodec()
        for good in prefix:
            codec.receive_text(good)
        try:
            codec.receive_text(text)
        except TelephonyProtocolError:
            pass


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(range(len(_GOLDEN))), st.data())
def test_fuzz_mutated_golden_frames_parse_or_raise_protocol_error(index: int, data: st.DataObject) -> None:
    """Golden frames with one field replaced by arbitrary JSON parse or raise TelephonyProtocolError."""
    msg = json.loads(_GOLDEN[index])
    *path, last = data.draw(st.sampled_from(_paths(msg)))
    target = msg
    for key in path:
        target = target[key]
    target[last] = data.draw(_JSON)
    codec = TelnyxCodec()
    for good in _GOLDEN[: min(index, 2)]:
        codec.receive_text(good)
    try:
        codec.receive_media(json.dumps(msg))
        codec.receive_text(json.dumps(msg))
    except TelephonyProtocolError:
        pass


# --- webhook signatures ----------------------------------------------------------------------------

PRIVATE = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC_B64 = base64.b64encode(PRIVATE.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
BODY = b'{"data":{"event_type":"call.initiated","payload":{"call_control_id":"v3:abc","to":"+15550001111"}}}'


def _signed(body: bytes, timestamp: int, key: Ed25519PrivateKey = PRIVATE) -> tuple[str, str]:
    return base64.b64encode(key.sign(f"{timestamp}|".encode() + body)).decode(), str(timestamp)


def _sdk_accepts(body: bytes, signature: str, timestamp: str) -> bool:
    headers = {"Telnyx-Signature-Ed25519": signature, "Telnyx-Timestamp": timestamp}
    try:
        verify_webhook_signature(body, headers, PUBLIC_B64)
    except WebhookVerificationError:
        return False
    return True


def test_signature_verifies_exactly_when_telnyxs_sdk_does() -> None:
    """A correct signature passes ours and Telnyx's SDK; a changed body, timestamp or key fails both."""
    key = load_public_key(PUBLIC_B64)
    now = int(time.time())
    signature, stamp = _signed(BODY, now)
    other_key_signature, _ = _signed(BODY, now, Ed25519PrivateKey.generate())
    cases = [
        (BODY, signature, stamp, True),
        (BODY + b" ", signature, stamp, False),
        (BODY, signature, str(now + 1), False),
        (BODY, other_key_signature, stamp, False),
        (BODY, signature[:-4] + "AAA=", stamp, False),
        (BODY, "", stamp, False),
        (BODY, "not base64!", stamp, False),
        (BODY, base64.b64encode(b"x" * 63).decode(), stamp, False),
    ]
    for body, sig, ts, ok in cases:
        assert verify_telnyx_signature(key, body, sig, ts, now=now) is ok, (body, sig, ts)
        assert _sdk_accepts(body, sig, ts) is ok, (body, sig, ts)


@pytest.mark.parametrize(("age", "ok"), [(0, True), (299, True), (-299, True), (301, False), (-301, False)])
def test_the_replay_window_is_300_seconds_either_way(age: int, ok: bool) -> None:
    """A signature older or newer than 300 s is refused, as Telnyx's SDK refuses it."""
    now = int(time.time())
    signature, stamp = _signed(BODY, now - age)
    assert verify_telnyx_signature(load_public_key(PUBLIC_B64), BODY, signature, stamp, now=now) is ok
    assert _sdk_accepts(BODY, signature, stamp) is ok


@pytest.mark.parametrize("stamp", ["", "abc", "-5", "1e9", "１２３", "9" * 40])
def test_malformed_timestamps_are_refused(stamp: str) -> None:
    """A timestamp that is not plain Unix seconds never verifies (and never raises)."""
    signature = base64.b64encode(PRIVATE.sign(f"{stamp}|".encode() + BODY)).decode()
    assert not verify_telnyx_signature(load_public_key(PUBLIC_B64), BODY, signature, stamp, now=time.time())


def test_public_key_loads_raw_or_spki_and_refuses_garbage() -> None:
    """The portal's base64 key and its DER SubjectPublicKeyInfo form load to the same key; others fail."""
    spki = PRIVATE.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert load_public_key(base64.b64encode(spki).decode()) == load_public_key(PUBLIC_B64)
    for bad in ("", "abc", base64.b64encode(b"x" * 31).decode(), base64.b64encode(b"\x00" * 44).decode()):
        with pytest.raises(ConfigError):
            load_public_key(bad)


# --- answers: TeXML, the stream token, Call Control -------------------------------------------------


def test_stream_url_with_token_adds_an_escaped_query_parameter() -> None:
    """The token is appended URL-encoded, keeping the URL's own query; a second token is refused."""
    url = stream_url_with_token("wss://gw.example.com/telnyx/media?region=eu", "a+b/c=&d")
    assert parse_qs(urlsplit(url).query) == {"region": ["eu"], "token": ["a+b/c=&d"]}
    for bad_url, token in (
        ("wss://h/m?token=x", "t"),
        ("https://h/m", "t"),
        ("wss://h/m", ""),
        ("wss://h/m#f", "t"),
    ):
        with pytest.raises(ConfigError):
            stream_url_with_token(bad_url, token)


def test_texml_answer_streams_both_ways_in_rtp_mode_with_the_token() -> None:
    """The TeXML answer is XML with <Connect><Stream bidirectionalMode="rtp"> and the token in the URL."""
    text = connect_stream_texml("wss://gw.example.com/telnyx/media", "tok/1", codec="PCMA")
    request = wire.parse_texml(text, "https://gw.example.com/telnyx/voice")
    assert request is not None
    assert parse_qs(urlsplit(request.url).query) == {"token": ["tok/1"]}
    assert (request.track, request.codec, request.bidirectional_mode, request.bidirectional_codec) == (
        "inbound_track",
        "PCMA",
        "rtp",
        "PCMA",
    )
    with pytest.raises(ConfigError):
        connect_stream_texml("wss://h/m", "t", codec="L16")  # type: ignore[arg-type]


def test_call_initiated_webhook_parses_into_the_call() -> None:
    """The simulated call.initiated webhook yields its call_control_id, numbers and direction."""
    call_id = wire.new_call_control_id()
    body = wire.call_initiated(
        call_control_id=call_id, call_leg_id="leg", call_session_id="session", connection_id="conn",
        from_="+15550001111", to="+15552223333", delivered_to="https://gw/telnyx/voice",
    )  # fmt: skip
    assert parse_call_control_event(body) == CallControlEvent(
        "call.initiated", call_id, "leg", "session", "conn", "+15550001111", "+15552223333", "incoming", None
    )
    for bad in (b"{", b"[]", b'{"data": {"payload": {}}}', b'{"data": {"event_type": "x", "payload": {}}}'):
        with pytest.raises(TelephonyProtocolError):
            parse_call_control_event(bad)


async def test_rest_requests_reach_a_stand_in_as_telnyx_expects() -> None:
    """answer, hangup, transfer, send_dtmf and the TeXML updates arrive with Bearer auth and their bodies."""
    seen: list[tuple[str, str, bytes, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(
            (request.path, request.headers["Authorization"], await request.read(), request.content_type)
        )
        return web.json_response({"data": {"result": "ok"}})

    app = web.Application()
    app.router.add_post("/v2/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    call_id = wire.new_call_control_id()
    rest = TelnyxRest("KEY0123_secret", base_url=str(server.make_url("/v2")))
    requests = [
        rest.answer(call_id, "wss://gw.example.com/telnyx/media", "tok-1", command_id="answer-1"),
        rest.hangup(call_id),
        rest.transfer(call_id, "+15554443333", from_="+15550001111"),
        rest.send_dtmf(call_id, "12#w3"),
        rest.texml_hangup(USER_ID, call_id),
        rest.texml_transfer(USER_ID, call_id, "+15554443333"),
    ]
    try:
        async with aiohttp.ClientSession() as http:
            for req in requests:
                async with http.request(req.method, req.url, headers=req.headers, data=req.body) as resp:
                    assert resp.status == 200
    finally:
        await server.close()
    assert {auth for _, auth, _, _ in seen} == {"Bearer KEY0123_secret"}
    assert "KEY0123_secret" not in repr(requests[0])
    actions = [wire.parse_action_path(path) for path, _, _, _ in seen[:4]]
    assert actions == [
        (call_id, "answer"),
        (call_id, "hangup"),
        (call_id, "transfer"),
        (call_id, "send_dtmf"),
    ]
    stream = wire.parse_answer(seen[0][2])
    assert parse_qs(urlsplit(stream.url).query) == {"token": ["tok-1"]}
    assert (stream.track, stream.codec, stream.bidirectional_mode, stream.bidirectional_codec) == (
        "inbound_track",
        "PCMU",
        "rtp",
        "PCMU",
    )
    assert json.loads(seen[0][2])["command_id"] == "answer-1"
    assert json.loads(seen[1][2]) == {}
    assert json.loads(seen[2][2]) == {"to": "+15554443333", "from": "+15550001111"}
    assert json.loads(seen[3][2]) == {"digits": "12#w3"}
    assert seen[4][0] == f"/v2/texml/Accounts/{USER_ID}/Calls/{call_id}"
    assert seen[4][2] == b"Status=completed"
    assert seen[5][3] == "application/x-www-form-urlencoded"
    assert parse_qs(seen[5][2].decode())["Texml"] == [
        '<?xml version="1.0" encoding="UTF-8"?><Response><Dial>+15554443333</Dial></Response>'
    ]


def test_dial_and_streaming_start_are_the_documented_requests() -> None:
    """Dial: ``POST {base}/calls`` with the call's own webhook URL and the AMD mode; no stream (it starts
    on ``call.answered``). ``streaming_start`` carries the stream fields ``answer`` does."""
    rest = TelnyxRest("KEY", base_url="https://api.example.com/v2/")
    dial = rest.dial(
        connection_id=" 1234567890 ", to="+15551230000", from_="+15550100100", timeout_s=25,
        webhook_url="https://gw.example.com/telnyx/outbound?t=abc", machine_detection="greeting_end",
    )  # fmt: skip
    assert (dial.method, dial.url) == ("POST", "https://api.example.com/v2/calls")
    assert dial.headers["Authorization"] == "Bearer KEY"
    assert json.loads(dial.body or b"") == {
        "connection_id": "1234567890",
        "to": "+15551230000",
        "from": "+15550100100",
        "webhook_url": "https://gw.example.com/telnyx/outbound?t=abc",
        "webhook_url_method": "POST",
        "timeout_secs": 25,
        "answering_machine_detection": "greeting_end",
    }
    call_id = wire.new_call_control_id()
    start = rest.streaming_start(
        call_id, "wss://gw.example.com/telnyx/media?outbound=o.1", "tok", codec="L16"
    )
    assert wire.parse_action_path(urlsplit(start.url).path) == (call_id, "streaming_start")
    stream = wire.parse_answer(start.body or b"")
    assert parse_qs(urlsplit(stream.url).query) == {"outbound": ["o.1"], "token": ["tok"]}
    assert (stream.codec, stream.bidirectional_mode, stream.bidirectional_codec) == ("L16", "rtp", "L16")
    for attempt in (
        lambda: rest.dial(connection_id=" ", to="+1", from_="+1", webhook_url="https://h", timeout_s=5,
                          machine_detection="detect"),
        lambda: rest.dial(connection_id="1", to="+1", from_="+1", webhook_url="https://h", timeout_s=5,
                          machine_detection="premium"),  # type: ignore[arg-type]
    ):  # fmt: skip
        with pytest.raises(ConfigError):
            attempt()


def test_outbound_webhooks_say_the_verdict_and_the_hangup_cause() -> None:
    """``call.machine.*`` carry ``result``; ``call.hangup`` its ``hangup_cause`` and ``hangup_source``."""

    def event(event_type: str, **payload: str) -> bytes:
        payload = {"call_control_id": "v3:abc", "from": "+15550100100", "to": "+15551230000"} | payload
        return json.dumps({"data": {"event_type": event_type, "payload": payload}}).encode()

    greeting = parse_call_control_event(event("call.machine.greeting.ended", result="beep_detected"))
    assert (greeting.event_type, greeting.result, greeting.caller) == (
        "call.machine.greeting.ended",
        "beep_detected",
        "+15550100100",
    )
    hangup = parse_call_control_event(event("call.hangup", hangup_cause="user_busy", hangup_source="callee"))
    assert (hangup.hangup_cause, hangup.hangup_source, hangup.result) == ("user_busy", "callee", "")
    assert len(parse_call_control_event(event("call.hangup", hangup_cause="x" * 500)).hangup_cause) == 64


def test_rest_refuses_bad_arguments_before_any_request() -> None:
    """Unknown codecs, odd call ids, empty targets and non-DTMF digits never become requests."""
    rest = TelnyxRest("k")
    for attempt in (
        lambda: rest.answer("v3:x", "wss://h/m", "t", codec="G722"),  # type: ignore[arg-type]
        lambda: rest.hangup("../../numbers"),
        lambda: rest.transfer("v3:x", " "),
        lambda: rest.send_dtmf("v3:x", "12x"),
        lambda: rest.texml_hangup("not/an/account", "v3:x"),
        lambda: TelnyxRest(" "),
    ):
        with pytest.raises(ConfigError):
            attempt()


# --- round trip with the simulated caller's wire --------------------------------------------------------


@pytest.mark.parametrize("encoding", ["PCMU", "PCMA", "L16"])
def test_the_callers_wire_decodes_into_the_expected_events(encoding: str) -> None:
    """Each frame the simulated Telnyx sends decodes; each command reads back as Telnyx takes it."""
    ids = {
        "stream_id": wire.new_id(),
        "call_control_id": wire.new_call_control_id(),
        "user_id": wire.new_id(),
    }
    codec = TelnyxCodec()
    assert codec.receive_text(wire.connected()) == Connected("", "1.0.0")
    started = codec.receive_text(
        wire.start(
            1,
            stream_id=ids["stream_id"],
            call_control_id=ids["call_control_id"],
            user_id=ids["user_id"],
            call_session_id=wire.new_id(),
            from_="+1555",
            to="+1666",
            encoding=encoding,
        )
    )
    assert started == CallStarted(
        ids["stream_id"],
        ids["call_control_id"],
        ids["user_id"],
        ("inbound",),
        {},
        encoding,
        wire.RATES[encoding],
        1,
    )
    frame = bytes(i % 251 for i in range(codec.audio.frame_bytes))  # what the bridge holds (LE for L16)
    on_wire = wire.l16_from_pcm16(frame) if encoding == "L16" else frame
    event = codec.receive_media(
        wire.media(2, stream_id=ids["stream_id"], chunk=1, timestamp_ms=20, payload=on_wire)
    )
    assert event == CallerAudio(frame, 20, 1)
    assert codec.receive_text(wire.dtmf(3, stream_id=ids["stream_id"], digit="#")) == DtmfPressed("#")
    assert codec.receive_text(wire.mark(4, stream_id=ids["stream_id"], name="m1")) == MarkReached("m1")
    assert wire.parse_command(codec.encode(PlayAudio(frame)), codec=encoding) == wire.Command(
        "media", payload=on_wire
    )
    assert wire.parse_command(codec.encode(SetMark("m2"))) == wire.Command("mark", name="m2")
    assert wire.parse_command(codec.encode(ClearPlayback())) == wire.Command("clear")
    stop = wire.stop(
        5, stream_id=ids["stream_id"], user_id=ids["user_id"], call_control_id=ids["call_control_id"]
    )
    assert codec.receive_text(stop) == CallStopped(ids["call_control_id"])


def test_the_wire_refuses_media_telnyx_would_not_play() -> None:
    """Less than 20 ms of audio, or half an L16 sample, is refused as Telnyx's RTP mode would."""
    codec = streaming()
    with pytest.raises(TelephonyProtocolError):
        wire.parse_command(codec.encode(PlayAudio(ULAW[:80])))
    with pytest.raises(TelephonyProtocolError):
        wire.parse_command(
            '{"event": "media", "media": {"payload": "' + base64.b64encode(b"\x00" * 641).decode() + '"}}',
            codec="L16",
        )


def test_the_callers_signed_webhook_verifies_and_a_forged_one_does_not() -> None:
    """The simulated Telnyx signs with its key; the gateway accepts it with the public half only."""
    key = wire.new_signing_key()
    body = wire.call_initiated(
        call_control_id="v3:x", call_leg_id="l", call_session_id="s", connection_id="c",
        from_="+1", to="+2", delivered_to="https://gw/telnyx/voice",
    )  # fmt: skip
    now = int(time.time())
    headers = wire.signed_headers(key, body, timestamp=now)
    public = load_public_key(wire.public_key_b64(key))
    assert verify_telnyx_signature(
        public, body, headers[wire.SIGNATURE_HEADER], headers[wire.TIMESTAMP_HEADER], now=now
    )
    forged = wire.signed_headers(wire.new_signing_key(), body, timestamp=now)
    assert not verify_telnyx_signature(
        public, body, forged[wire.SIGNATURE_HEADER], forged[wire.TIMESTAMP_HEADER], now=now
    )


@given(st.binary(max_size=800).map(lambda b: b[: len(b) & ~1]))
def test_fuzz_l16_audio_round_trips_through_both_wires(pcm: bytes) -> None:
    """Any LE PCM the gateway encodes arrives as the same samples at Telnyx, and back again."""
    codec = streaming(start_with("L16", 16000))
    played = json.loads(codec.encode(PlayAudio(pcm)))["media"]["payload"]
    assert wire.pcm16_from_l16(base64.b64decode(played)) == pcm
    event = codec.receive_text(
        wire.media(9, stream_id=STREAM_ID, chunk=3, timestamp_ms=60, payload=wire.l16_from_pcm16(pcm))
    )
    assert isinstance(event, CallerAudio)
    assert event.payload == pcm
