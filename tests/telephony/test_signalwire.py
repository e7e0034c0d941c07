"""SignalWire: golden stream messages, L16 formats, DTMF out, signatures, cXML, REST and the caller's wire."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings, strategies as st
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from gateway.caller import wire_signalwire as wire
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
from gateway.telephony.signalwire import (
    SignalWireCodec,
    SignalWireRest,
    connect_stream_cxml,
    signalwire_json_signature,
    signalwire_signature,
    verify_signalwire_signature,
)
from gateway.telephony.twilio import TwilioState

STREAM_SID = "7d56cc11-536d-4a45-b4fb-ed3d55be843b"
ACCOUNT_SID = "b08dacad-2f6c-4de1-93d6-cc732e0c69c5"
CALL_SID = "76ac3c36-56da-4a3e-a0d6-b5f8df6da9ad"

# Golden messages: SignalWire's "Stream" page examples (cxml/voice/stream.mdx), field for field.
CONNECTED = '{"event": "connected", "protocol": "Call", "version": "0.2.0"}'
START_L16 = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "streamSid": STREAM_SID,
            "accountSid": ACCOUNT_SID,
            "callSid": CALL_SID,
            "tracks": ["inbound"],
            "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-L16", "sampleRate": 24000, "channels": 1},
        },
    }
)
PCM = bytes(range(256)) + bytes(range(256))[::-1] + bytes(448)  # 480 samples: 20 ms at 24 kHz
MEDIA = json.dumps(
    {
        "event": "media",
        "sequenceNumber": "42",
        "media": {
            "track": "inbound",
            "chunk": "1",
            "timestamp": "0",
            "payload": base64.b64encode(PCM).decode(),
        },
    }
)
DTMF = json.dumps(
    {
        "event": "dtmf",
        "sequenceNumber": "123",
        "streamSid": STREAM_SID,
        "dtmf": {"digit": "5", "duration": 2000},
    }
)
MARK = json.dumps({"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "my-custom-mark"}})
STOP = '{"event": "stop", "sequenceNumber": "999"}'


def start_with(encoding: str, rate: int, channels: int = 1, **params: str) -> str:
    msg = json.loads(START_L16)
    msg["start"]["mediaFormat"] = {"encoding": encoding, "sampleRate": rate, "channels": channels}
    msg["start"]["customParameters"] = params
    return json.dumps(msg)


def streaming(start: str = START_L16) -> SignalWireCodec:
    codec = SignalWireCodec()
    codec.receive_text(CONNECTED)
    codec.receive_text(start)
    return codec


# --- the stream ---------------------------------------------------------------------------------


def test_golden_l16_stream_decodes_to_neutral_events() -> None:
    """SignalWire's documented messages (version 0.2.0, L16 24 kHz, no top-level SIDs) all decode."""
    codec = SignalWireCodec()
    assert codec.receive_text(CONNECTED) == Connected("Call", "0.2.0")
    started = codec.receive_text(START_L16)
    assert isinstance(started, CallStarted)
    assert (started.stream_sid, started.call_sid, started.account_sid) == (STREAM_SID, CALL_SID, ACCOUNT_SID)
    assert (started.encoding, started.sample_rate, started.channels) == ("audio/x-L16", 24000, 1)
    assert codec.audio == AudioFormat("l16", 24000)
    assert codec.audio.frame_bytes == len(PCM)
    assert codec.receive_text(MEDIA) == CallerAudio(PCM, 0, 1)
    assert codec.receive_media(MEDIA) == CallerAudio(PCM, 0, 1)  # the fast path: L16 passes unchanged (LE)
    assert codec.receive_text(DTMF) == DtmfPressed("5")
    assert codec.receive_text(MARK) == MarkReached("my-custom-mark")
    assert codec.receive_text(STOP) == CallStopped(CALL_SID)
    assert codec.state is TwilioState.STOPPED


@pytest.mark.parametrize(
    ("encoding", "rate", "audio"),
    [
        ("audio/x-mulaw", 8000, AudioFormat("ulaw", 8000)),
        ("audio/x-L16", 16000, AudioFormat("l16", 16000)),
        ("audio/x-l16", 24000, AudioFormat("l16", 24000)),  # media types are case-insensitive
    ],
)
def test_each_documented_codec_sets_the_audio_format(encoding: str, rate: int, audio: AudioFormat) -> None:
    """PCMU@8000h, L16@16000h and L16@24000h become the matching AudioFormat; the token parameter passes."""
    codec = SignalWireCodec()
    started = codec.receive_text(start_with(encoding, rate, token="t.o.k"))
    assert isinstance(started, CallStarted)
    assert codec.audio == audio
    assert dict(started.custom_parameters) == {"token": "t.o.k"}
    assert (started.encoding, started.sample_rate) == (encoding, rate)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        pytest.param(start_with("audio/x-alaw", 8000), 1003, id="pcma"),
        pytest.param(start_with("audio/x-L16", 8000), 1003, id="l16-8k"),
        pytest.param(start_with("audio/x-mulaw", 16000), 1003, id="mulaw-16k"),
        pytest.param(start_with("audio/x-L16", 16000, channels=2), 1003, id="stereo"),
        pytest.param(start_with("audio/x-L16", "16000"), 1007, id="rate-as-string"),  # type: ignore[arg-type]
        pytest.param(START_L16.replace('"mediaFormat"', '"mediaFmt"'), 1007, id="no-media-format"),
        pytest.param(START_L16.replace('"callSid"', '"callSID"'), 1007, id="no-call-sid"),
        pytest.param(START_L16.replace(STREAM_SID, 'a"b'), 1007, id="sid-not-plain"),
        pytest.param('{"event": "start", "start": []}', 1007, id="start-not-object"),
    ],
)
def test_bad_start_is_refused_with_a_close_code(text: str, code: int) -> None:
    """Formats SignalWire does not document get 1003; malformed start messages 1007; nothing changes."""
    codec = SignalWireCodec()
    with pytest.raises(TelephonyProtocolError) as info:
        codec.receive_text(text)
    assert info.value.close_code == code
    assert codec.state is TwilioState.AWAITING_CONNECTED
    assert codec.audio == AudioFormat("ulaw", 8000)


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        pytest.param([MEDIA], 1008, id="media-before-start"),
        pytest.param([CONNECTED, CONNECTED], 1008, id="connected-twice"),
        pytest.param([CONNECTED, START_L16, START_L16], 1008, id="start-twice"),
        pytest.param([CONNECTED, START_L16, STOP, MEDIA], 1008, id="media-after-stop"),
        pytest.param([CONNECTED, START_L16, MARK.replace(STREAM_SID, "other")], 1008, id="other-stream"),
        pytest.param(
            [CONNECTED, START_L16, MEDIA.replace('"42"', '"42", "event": "hello"')], 1008, id="unknown"
        ),
        pytest.param([CONNECTED, START_L16, DTMF.replace('"5"', '"x"')], 1007, id="bad-digit"),
        pytest.param(
            [CONNECTED, START_L16, MEDIA.replace('"payload": "', '"payload": "!')], 1007, id="bad-b64"
        ),
    ],
)
def test_out_of_order_and_malformed_messages_are_refused(messages: list[str], code: int) -> None:
    """The state machine and field checks are TwilioCodec's, with the same close codes."""
    codec = SignalWireCodec()
    *legal, bad = messages
    for text in legal:
        codec.receive_text(text)
    with pytest.raises(TelephonyProtocolError) as info:
        codec.receive_text(bad)
    assert info.value.close_code == code


def test_signalwires_clear_acknowledgement_needs_no_action() -> None:
    """SignalWire answers our clear with its own ``clear``: nothing to do mid-stream, refused before start."""
    ack = json.dumps({"event": "clear", "streamSid": STREAM_SID})
    codec = streaming()
    assert codec.receive_text(ack) is None
    assert codec.receive_text(MARK) == MarkReached("my-custom-mark")  # the stream carries on
    early = SignalWireCodec()
    early.receive_text(CONNECTED)
    with pytest.raises(TelephonyProtocolError) as info:
        early.receive_text(ack)
    assert info.value.close_code == 1008  # out of order, as TwilioCodec's other events


def test_commands_encode_exactly_as_signalwire_documents() -> None:
    """media, mark, clear and dtmf frames are SignalWire's "Sending WebSocket messages" shapes."""
    codec = streaming()
    assert json.loads(codec.encode(PlayAudio(PCM))) == {
        "event": "media",
        "streamSid": STREAM_SID,
        "media": {"payload": base64.b64encode(PCM).decode()},
    }
    assert json.loads(codec.encode(SetMark('my "label"'))) == {
        "event": "mark",
        "streamSid": STREAM_SID,
        "mark": {"name": 'my "label"'},
    }
    assert json.loads(codec.encode(ClearPlayback())) == {"event": "clear", "streamSid": STREAM_SID}
    assert json.loads(codec.encode_dtmf("#")) == {
        "event": "dtmf",
        "streamSid": STREAM_SID,
        "dtmf": {"digit": "#"},
    }
    assert (codec.media_out, codec.bytes_out) == (1, len(PCM))


@pytest.mark.parametrize("digit", ["", "x", "12", '"', "E"])
def test_dtmf_out_refuses_what_is_not_one_key(digit: str) -> None:
    """Only one of 0-9 * # A-D can be sent; anything else is our bug (1011), never a malformed frame."""
    with pytest.raises(TelephonyProtocolError) as info:
        streaming().encode_dtmf(digit)
    assert info.value.close_code == 1011


def test_commands_before_start_are_local_misuse() -> None:
    """Encoding audio or DTMF before start raises with close code 1011."""
    codec = SignalWireCodec()
    codec.receive_text(CONNECTED)
    with pytest.raises(TelephonyProtocolError) as info:
        codec.encode(PlayAudio(b"\xff"))
    assert info.value.close_code == 1011
    with pytest.raises(TelephonyProtocolError) as info:
        codec.encode_dtmf("1")
    assert info.value.close_code == 1011


def test_the_codec_declares_what_the_bridge_may_rely_on() -> None:
    """SignalWireCodec is a MediaCodec with marks, clear, buffering and DTMF by stream command."""
    codec: MediaCodec = SignalWireCodec()
    caps = codec.capabilities
    assert (caps.marks, caps.clear, caps.frames_per_message, caps.provider_buffers) == (
        True,
        True,
        None,
        True,
    )
    assert (caps.hangup, caps.transfer, caps.dtmf_out, caps.binary_audio) == (
        "close",
        "rest",
        "command",
        False,
    )


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_GOLDEN = [CONNECTED, START_L16, MEDIA, DTMF, MARK, STOP]


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    found: list[tuple[Any, ...]] = []
    for key, value in items:
        found += [(*prefix, key), *_paths(value, (*prefix, key))]
    return found


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text_parses_or_raises_protocol_error(text: str) -> None:
    """Arbitrary text either parses or raises TelephonyProtocolError, in every state."""
    for prefix in ([], [CONNECTED], [CONNECTED, START_L16]):
        codec = SignalWireCodec()
        for good in prefix:
            codec.receive_text(good)
        try:
            codec.receive_text(text)
        except TelephonyProtocolError:
            pass


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(range(len(_GOLDEN))), st.data())
def test_fuzz_mutated_golden_messages_parse_or_raise_protocol_error(index: int, data: st.DataObject) -> None:
    """Golden messages with one field replaced by arbitrary JSON parse or raise TelephonyProtocolError."""
    msg = json.loads(_GOLDEN[index])
    *path, last = data.draw(st.sampled_from(_paths(msg)))
    target = msg
    for key in path:
        target = target[key]
    target[last] = data.draw(_JSON)
    codec = SignalWireCodec()
    for good in _GOLDEN[: min(index, 2)]:
        codec.receive_text(good)
    try:
        codec.receive_text(json.dumps(msg))
        codec.receive_media(json.dumps(msg))
    except TelephonyProtocolError:
        pass


# --- signatures ----------------------------------------------------------------------------------

KEY = "PSK_6ef1c0b7f7fd4b8c9d0e1f2a3b4c5d6e"
FORM = wire.voice_webhook_form(
    call_sid=CALL_SID, account_sid=ACCOUNT_SID, from_="+15551230000", to="+15559870000"
)
# Produced by SignalWire's own Python SDK (signalwire 2.1.1: RequestValidator's
# build_signature_with_compatibility and build_signature, each also accepted by its validate).
# That SDK pins twilio==6.54, which conflicts with the twilio>=9 dev dependency, so the vectors
# are frozen here instead of recomputed.
SDK_VECTORS = [
    ("https://gw.example.com/signalwire/voice", "mkZfaRVf9rwAd0ETWi5JA67nmCo="),
    ("https://gw.example.com:8443/signalwire/voice?x=1", "UoLz6TBAh7DjQtmpIvVDn6aL6/8="),
]
JSON_BODY = b'{"event_type":"calling.call.state","params":{"call_id":"abc"}}'
JSON_URL = "https://gw.example.com/signalwire/events"
JSON_SDK_SIGNATURE = "e7f51daef24e4e43c0892b320d90faae08056399"


@pytest.mark.parametrize(("url", "signature"), SDK_VECTORS)
def test_form_signatures_match_signalwires_sdk(url: str, signature: str) -> None:
    """A cXML webhook's X-SignalWire-Signature, as SignalWire's SDK computes it, verifies on the raw body."""
    assert signalwire_signature(KEY, url, FORM) == signature
    assert signature == RequestValidator(KEY).compute_signature(url, FORM)  # the SDK delegates to Twilio's
    assert verify_signalwire_signature(KEY, url, urlencode(FORM).encode(), signature)


def test_json_signature_matches_signalwires_sdk() -> None:
    """Scheme A, hex HMAC-SHA1 of URL + raw body, matches the SDK and verifies; a changed body does not."""
    assert signalwire_json_signature(KEY, JSON_URL, JSON_BODY) == JSON_SDK_SIGNATURE
    assert verify_signalwire_signature(KEY, JSON_URL, JSON_BODY, JSON_SDK_SIGNATURE)
    assert not verify_signalwire_signature(KEY, JSON_URL, JSON_BODY + b" ", JSON_SDK_SIGNATURE)


def test_tampering_fails() -> None:
    """Another parameter value, URL, key, an added field or a mangled signature fails verification."""
    url, good = SDK_VECTORS[0]
    body = urlencode(FORM).encode()
    assert not verify_signalwire_signature(KEY, url, urlencode({**FORM, "To": "+15550000000"}).encode(), good)
    assert not verify_signalwire_signature(KEY, url, body + b"&Extra=1", good)
    assert not verify_signalwire_signature(KEY, url + "x", body, good)
    assert not verify_signalwire_signature(KEY[::-1], url, body, good)
    assert not verify_signalwire_signature(KEY, url, body, good[:-2] + "AA")
    assert not verify_signalwire_signature(KEY, url, body, "")
    assert not verify_signalwire_signature(KEY, url, body, "☎ not base64")


@pytest.mark.parametrize(
    ("signed", "checked", "ok"),
    [
        ("https://h.example.com/signalwire/voice", "https://h.example.com:443/signalwire/voice", True),
        ("https://h.example.com:443/signalwire/voice", "https://h.example.com/signalwire/voice", True),
        ("http://h.example.com/signalwire/voice", "http://h.example.com:80/signalwire/voice", True),
        ("https://h.example.com:8443/signalwire/voice", "https://h.example.com/signalwire/voice", False),
    ],
)
def test_only_the_default_port_is_interchangeable(signed: str, checked: str, ok: bool) -> None:
    """The URL may be signed with or without the scheme's default port, never with another port."""
    body = urlencode(FORM).encode()
    assert verify_signalwire_signature(KEY, checked, body, signalwire_signature(KEY, signed, FORM)) is ok


def test_repeated_names_keep_their_order_unlike_twilio() -> None:
    """SignalWire signs repeated form names in the order sent; Twilio sorts and de-duplicates the values."""
    pairs = [("b", "2"), ("a", "z"), ("a", "y"), ("a", "y")]
    ours = signalwire_signature(KEY, "https://h/v", pairs)
    text = b"https://h/v" + b"az" + b"ay" + b"ay" + b"b2"
    assert ours == base64.b64encode(hmac.new(KEY.encode(), text, hashlib.sha1).digest()).decode()
    assert ours != RequestValidator(KEY).compute_signature("https://h/v", MultiDict(pairs))
    assert verify_signalwire_signature(KEY, "https://h/v", urlencode(pairs).encode(), ours)
    assert not verify_signalwire_signature(KEY, "https://h/v", urlencode(pairs[::-1]).encode(), ours)


def test_body_sha256_must_match_the_body() -> None:
    """A URL carrying bodySHA256 verifies only with the body whose SHA-256 it names."""
    url = "https://h/v?bodySHA256=" + hashlib.sha256(JSON_BODY).hexdigest()
    signature = signalwire_signature(KEY, url, None)
    assert verify_signalwire_signature(KEY, url, JSON_BODY, signature)
    assert not verify_signalwire_signature(KEY, url, JSON_BODY + b"x", signature)


def test_an_empty_signing_key_is_a_configuration_error() -> None:
    """A signature under an empty key proves nothing, so it is refused as misconfiguration."""
    with pytest.raises(ConfigError):
        verify_signalwire_signature("", JSON_URL, JSON_BODY, JSON_SDK_SIGNATURE)


# --- the cXML answer ------------------------------------------------------------------------------


def test_cxml_answer_carries_url_codec_and_token_as_signalwire_reads_it() -> None:
    """The answer parses as XML with the stream URL, codec, realtime, bearer token and the token parameter."""
    text = connect_stream_cxml(
        "wss://gw.example.com/signalwire/media",
        {"token": "tok&<en>"},
        codec="L16@16000h",
        realtime=True,
        auth_bearer_token="bearer-1",
    )
    answer = wire.parse_cxml(text, "https://gw.example.com/signalwire/voice")
    assert answer is not None
    assert answer.url == "wss://gw.example.com/signalwire/media"
    assert answer.parameters == {"token": "tok&<en>"}
    assert (answer.codec, answer.realtime, answer.bearer_token, answer.after) == (
        "L16@16000h",
        True,
        "bearer-1",
        [],
    )
    default = wire.parse_cxml(connect_stream_cxml("wss://h/m", {"token": "t"}), "https://h/v")
    assert default is not None
    assert default.codec == "PCMU@8000h"
    assert 'codec="' not in connect_stream_cxml("wss://h/m", {})


@pytest.mark.parametrize(
    ("url", "codec"),
    [
        ("wss://h/m?token=t", "PCMU@8000h"),
        ("https://h/m", "PCMU@8000h"),
        ("wss://h/m", "PCMA@8000h"),
        ("wss://h/m", "L16@8000h"),
    ],
)
def test_cxml_refuses_what_signalwire_would_not_stream(url: str, codec: str) -> None:
    """A query string (SignalWire drops it), a non-WebSocket URL or an undocumented codec is a ConfigError."""
    with pytest.raises(ConfigError):
        connect_stream_cxml(url, {"token": "t"}, codec=codec)


# --- REST ------------------------------------------------------------------------------------------


async def test_rest_requests_reach_a_stand_in_as_signalwire_expects() -> None:
    """hangup and redirect POST form bodies to the call resource with Basic ProjectID:APIToken."""
    seen: list[tuple[str, str, str, dict[str, str]]] = []

    async def handle(request: web.Request) -> web.Response:
        form = dict(parse_qsl((await request.read()).decode()))
        seen.append((request.method, request.path, request.headers["Authorization"], form))
        return web.json_response({"sid": request.match_info["sid"], "status": "completed"})

    app = web.Application()
    app.router.add_post("/api/laml/2010-04-01/Accounts/{pid}/Calls/{sid}.json", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        rest = SignalWireRest(
            base_url=str(server.make_url("")), project_id=ACCOUNT_SID, api_token="PT-secret"
        )
        async with aiohttp.ClientSession() as http:
            for req in (
                rest.hangup(CALL_SID),
                rest.redirect(CALL_SID, "https://gw.example.com/signalwire/dial"),
            ):
                async with http.request(req.method, req.url, headers=req.headers, data=req.body) as resp:
                    assert resp.status == 200
    finally:
        await server.close()
    basic = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:PT-secret".encode()).decode()
    path = f"/api/laml/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json"
    assert seen == [
        ("POST", path, basic, {"Status": "completed"}),
        ("POST", path, basic, {"Url": "https://gw.example.com/signalwire/dial", "Method": "POST"}),
    ]
    assert "PT-secret" not in repr(rest.hangup(CALL_SID))
    assert basic[6:] not in repr(rest.hangup(CALL_SID))


def test_rest_refuses_bad_identifiers() -> None:
    """A call SID that is not a SignalWire id, or missing credentials, is refused before any request."""
    rest = SignalWireRest(base_url="https://space.signalwire.com", project_id=ACCOUNT_SID, api_token="t")
    with pytest.raises(ConfigError):
        rest.hangup("../../Accounts")
    with pytest.raises(ConfigError):
        SignalWireRest(base_url="https://space.signalwire.com", project_id=ACCOUNT_SID, api_token="")


# --- round trip with the simulated caller's wire ----------------------------------------------------------


@pytest.mark.parametrize("codec_name", list(wire.MEDIA_FORMATS))
def test_the_callers_wire_decodes_into_the_expected_events(codec_name: str) -> None:
    """Each message the simulated SignalWire sends decodes; each command reads back as SignalWire reads it."""
    sid = wire.new_sid()
    codec = SignalWireCodec()
    fmt = wire.MEDIA_FORMATS[codec_name]
    assert codec.receive_text(wire.connected()) == Connected("Call", "0.2.0")
    started = codec.receive_text(
        wire.start(
            1,
            stream_sid=sid,
            call_sid=CALL_SID,
            account_sid=ACCOUNT_SID,
            parameters={"token": "x"},
            codec=codec_name,
        )
    )
    assert started == CallStarted(
        sid,
        CALL_SID,
        ACCOUNT_SID,
        ("inbound",),
        {"token": "x"},
        str(fmt["encoding"]),
        int(fmt["sampleRate"]),
        1,
    )
    frame = bytes(i % 251 for i in range(codec.audio.frame_bytes))
    assert codec.receive_media(wire.media(2, chunk=1, timestamp_ms=20, payload=frame)) == CallerAudio(
        frame, 20, 1
    )
    assert codec.receive_text(wire.dtmf(3, stream_sid=sid, digit="*")) == DtmfPressed("*")
    assert codec.receive_text(wire.mark(stream_sid=sid, name="m1")) == MarkReached("m1")
    assert wire.parse_command(codec.encode(PlayAudio(frame)), stream_sid=sid) == wire.Command(
        "media", payload=frame
    )
    assert wire.parse_command(codec.encode(SetMark("m2")), stream_sid=sid) == wire.Command("mark", name="m2")
    assert wire.parse_command(codec.encode(ClearPlayback()), stream_sid=sid) == wire.Command("clear")
    assert wire.parse_command(codec.encode_dtmf("9"), stream_sid=sid) == wire.Command("dtmf", name="9")
    assert codec.receive_text(wire.stop(4)) == CallStopped(CALL_SID)


def test_the_callers_signed_webhook_verifies() -> None:
    """The simulated SignalWire's webhook, signed its way and sent form-encoded, verifies at the gateway."""
    url = "https://gw.example.com/signalwire/voice"
    signature = wire.sign(KEY, url, FORM)
    assert verify_signalwire_signature(KEY, url, urlencode(FORM).encode(), signature)
    assert not verify_signalwire_signature("another-key", url, urlencode(FORM).encode(), signature)


@given(st.binary(max_size=960))
def test_fuzz_audio_round_trips_through_both_wires(payload: bytes) -> None:
    """Any audio the gateway encodes is what SignalWire plays, and any audio SignalWire sends is decoded."""
    codec = streaming()
    assert wire.parse_command(codec.encode(PlayAudio(payload)), stream_sid=STREAM_SID).payload == payload
    event = codec.receive_text(wire.media(5, chunk=2, timestamp_ms=40, payload=payload))
    assert isinstance(event, CallerAudio)
    assert event.payload == payload
