"""ExotelCodec, the Voicebot applet's dynamic answer and URL secret, against Exotel's documented messages."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings, strategies as st

from gateway.caller import wire_exotel as wire
from gateway.errors import ConfigError, TelephonyProtocolError
from gateway.security.tokens import StreamTokens
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
from gateway.telephony.exotel import (
    CHUNK_MULTIPLE,
    MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    RATES,
    ExotelCall,
    ExotelCodec,
    ExotelState,
    exotel_call,
    exotel_number,
    static_stream_url,
    verify_exotel_secret,
    voicebot_answer,
)
from gateway.telephony.provider import AudioFormat, MediaCodec

STREAM_SID = "MZ0123456789abcdef0123456789abcdef"
CALL_SID = "CA0123456789abcdef0123456789abcdef"
ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"

# Golden messages as Exotel's AgentStream "WebSocket protocol" page shows them (counters as strings).
CONNECTED = '{ "event": "connected" }'
START = json.dumps(
    {
        "event": "start",
        "sequence_number": "1",
        "stream_sid": STREAM_SID,
        "start": {
            "stream_sid": STREAM_SID,
            "call_sid": CALL_SID,
            "account_sid": ACCOUNT_SID,
            "from": "+919876543210",
            "to": "+918047491899",
            "custom_parameters": {"key1": "value1"},
            "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"},
        },
    }
)
# The same start as the "Stream & Voicebot applet" page shows it (numbers, encoding "raw", bit_rate "128").
START_APPLET_PAGE = json.dumps(
    {
        "event": "start",
        "sequence_number": 1,
        "stream_sid": STREAM_SID,
        "start": {
            "stream_sid": STREAM_SID,
            "call_sid": CALL_SID,
            "account_sid": ACCOUNT_SID,
            "from": "+919876543210",
            "to": "+911234567890",
            "custom_parameters": {"key1": "value1", "key2": "value2"},
            "media_format": {"encoding": "raw", "sample_rate": "8000", "bit_rate": "128"},
        },
    }
)
PCM = bytes(range(256)) * 6 + bytes(64)  # 1,600 bytes: the ~100 ms Exotel sends at 8 kHz


def media(payload: bytes = PCM, *, chunk: Any = "2", timestamp: Any = "200", sid: str = STREAM_SID) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequence_number": "3",
            "stream_sid": sid,
            "media": {"chunk": chunk, "timestamp": timestamp, "payload": base64.b64encode(payload).decode()},
        }
    )


DTMF = json.dumps(
    {
        "event": "dtmf",
        "sequence_number": "7",
        "stream_sid": STREAM_SID,
        "dtmf": {"digit": "5", "duration": "100"},
    }
)
MARK = json.dumps(
    {"event": "mark", "sequence_number": "15", "stream_sid": STREAM_SID, "mark": {"name": "my-label"}}
)
STOP = json.dumps(
    {
        "event": "stop",
        "sequence_number": "20",
        "stream_sid": STREAM_SID,
        "stop": {"call_sid": CALL_SID, "account_sid": ACCOUNT_SID, "reason": "callended"},
    }
)
CHUNK = bytes(MIN_CHUNK_BYTES)  # ten 20 ms frames at 8 kHz


def streaming_codec(start: str = START, sample_rate: int = 8000) -> ExotelCodec:
    codec = ExotelCodec(sample_rate)
    codec.receive_text(CONNECTED)
    codec.receive_text(start)
    return codec


def _start_with(fmt: Any = "keep", **changes: Any) -> str:
    msg = json.loads(START)
    msg["start"].update(changes)
    if fmt is None:
        del msg["start"]["media_format"]
    elif fmt != "keep":
        msg["start"]["media_format"] = fmt
    return json.dumps(msg)


# --- inbound ---------------------------------------------------------------------------------------


def test_connected_then_start_yield_ids_numbers_parameters_and_format() -> None:
    """connected and start give Connected and CallStarted; from/to, parameters and L16 8 kHz are read."""
    codec = ExotelCodec()
    assert codec.receive_text(CONNECTED) == Connected("", "")
    assert codec.state.name == "AWAITING_START"  # (an `is` check would narrow the attribute for mypy)
    started = codec.receive_text(START)
    assert isinstance(started, CallStarted)
    assert (started.stream_sid, started.call_sid, started.account_sid) == (STREAM_SID, CALL_SID, ACCOUNT_SID)
    assert dict(started.custom_parameters) == {"key1": "value1"}
    assert (started.encoding, started.sample_rate, started.channels, started.tracks) == (
        "audio/x-raw",
        8000,
        1,
        ("inbound",),
    )
    assert (codec.from_number, codec.to_number) == ("+919876543210", "+918047491899")
    assert codec.audio == AudioFormat("l16", 8000)
    assert codec.state is ExotelState.STREAMING


def test_the_applet_pages_start_and_numeric_counters_are_taken() -> None:
    """The applet page's spelling (numbers, encoding "raw", bit_rate "128") parses the same way."""
    codec = ExotelCodec()
    started = codec.receive_text(START_APPLET_PAGE)  # no connected: tolerated
    assert isinstance(started, CallStarted)
    assert started.sample_rate == 8000
    assert codec.receive_text(media(chunk=2, timestamp=10)) == CallerAudio(PCM, 10, 2)


@pytest.mark.parametrize(
    ("url_rate", "fmt", "expected"),
    [
        pytest.param(8000, {"encoding": "raw", "sample_rate": "16000"}, 16000, id="start-says-16k"),
        pytest.param(24000, {"encoding": "audio/x-raw", "sample_rate": 24000}, 24000, id="24k-number"),
        pytest.param(16000, None, 16000, id="no-media-format-url-rate"),
        pytest.param(16000, {"encoding": "raw"}, 16000, id="no-rate-url-rate"),
    ],
)
def test_the_rate_comes_from_start_else_from_the_url(url_rate: int, fmt: Any, expected: int) -> None:
    """start.media_format.sample_rate decides the rate; without it, the URL's ?sample-rate= does."""
    codec = streaming_codec(_start_with(fmt), url_rate)
    assert codec.audio == AudioFormat("l16", expected)


def test_stream_sid_spelled_streamSid_is_taken() -> None:
    """Exotel's own bridges spell streamSid; inbound messages may use either spelling."""
    msg = json.loads(START)
    msg["streamSid"] = msg.pop("stream_sid")
    msg["start"]["streamSid"] = msg["start"].pop("stream_sid")
    codec = ExotelCodec()
    assert isinstance(codec.receive_text(json.dumps(msg)), CallStarted)
    assert codec.stream_sid == STREAM_SID
    camel = json.loads(media())
    camel["streamSid"] = camel.pop("stream_sid")
    assert codec.receive_text(json.dumps(camel)) == CallerAudio(PCM, 200, 2)


def test_media_dtmf_mark_stop() -> None:
    """media, dtmf, mark and stop become CallerAudio, DtmfPressed, MarkReached and CallStopped."""
    codec = streaming_codec()
    assert codec.receive_media(media()) == CallerAudio(PCM, 200, 2)
    assert codec.receive_media(DTMF) is None
    assert codec.receive_text(DTMF) == DtmfPressed("5")
    assert codec.receive_text(MARK) == MarkReached("my-label")
    assert codec.receive_text(STOP) == CallStopped(CALL_SID)
    assert (codec.state, codec.stop_reason) == (ExotelState.STOPPED, "callended")
    assert (codec.media_in, codec.bytes_in, codec.messages_in) == (1, 1600, 6)


def test_beta_dtmf_shape_and_stop_without_body() -> None:
    """The beta guide's top-level digit is read; a stop without a body ends the call with the start's SID."""
    codec = streaming_codec()
    assert codec.receive_text('{"event":"dtmf","digit":"#"}') == DtmfPressed("#")
    assert codec.receive_text('{"event":"stop"}') == CallStopped(CALL_SID)


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([media()], id="media-before-start"),
        pytest.param([CONNECTED, MARK], id="mark-before-start"),
        pytest.param([CONNECTED, CONNECTED], id="connected-twice"),
        pytest.param([CONNECTED, START, START], id="start-twice"),
        pytest.param([CONNECTED, START, STOP, media()], id="media-after-stop"),
        pytest.param([CONNECTED, STOP], id="stop-before-start"),
        pytest.param([CONNECTED, START, '{"event":"silence"}'], id="unknown-event"),
        pytest.param([CONNECTED, START, media(sid="MZother")], id="other-stream"),
        pytest.param([CONNECTED, START, MARK.replace(STREAM_SID, "MZother")], id="mark-other-stream"),
        pytest.param([CONNECTED, _start_with(stream_sid="MZother")], id="start-sids-differ"),
    ],
)
def test_out_of_order_or_foreign_messages_are_policy_violations(messages: list[str]) -> None:
    """Messages illegal in the current state, unknown events and other streams' messages close with 1008."""
    codec = ExotelCodec()
    *legal, bad = messages
    for text in legal:
        codec.receive_text(text)
    with pytest.raises(TelephonyProtocolError) as info:
        codec.receive_text(bad)
    assert info.value.close_code == 1008


@pytest.mark.parametrize(
    ("text", "code"),
    [
        pytest.param("{", 1007, id="not-json"),
        pytest.param('"start"', 1007, id="not-object"),
        pytest.param('{"event": null}', 1007, id="no-event"),
        pytest.param(
            json.dumps({"event": "start", "start": {"stream_sid": 'x"', "call_sid": "c"}}), 1007, id="sid"
        ),
        pytest.param(_start_with(call_sid=5), 1007, id="call-sid-not-string"),
        pytest.param(_start_with(**{"from": 5}), 1007, id="from-not-string"),
        pytest.param(_start_with(custom_parameters={"a": 1}), 1007, id="custom-not-strings"),
        pytest.param(_start_with("raw"), 1007, id="format-not-object"),
        pytest.param(_start_with({"encoding": "raw", "sample_rate": "8k"}), 1007, id="rate-not-number"),
        pytest.param(_start_with({"encoding": "audio/x-mulaw", "sample_rate": "8000"}), 1003, id="mulaw"),
        pytest.param(_start_with({"encoding": "raw", "sample_rate": "11025"}), 1003, id="odd-rate"),
    ],
)
def test_malformed_start_is_rejected(text: str, code: int) -> None:
    """Malformed JSON or start messages raise with 1007, and a format the applet does not stream with 1003."""
    codec = ExotelCodec()
    with pytest.raises(TelephonyProtocolError) as info:
        codec.receive_text(text)
    assert info.value.close_code == code
    assert codec.state is ExotelState.AWAITING_CONNECTED


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        pytest.param(lambda m: m["media"].update(payload="AAAA"), 1007, id="odd-byte-count"),
        pytest.param(lambda m: m["media"].update(payload="A"), 1007, id="truncated"),
        pytest.param(lambda m: m["media"].update(payload=None), 1007, id="no-payload"),
        pytest.param(lambda m: m["media"].update(chunk="x"), 1007, id="chunk-not-number"),
        pytest.param(lambda m: m.update(media="x"), 1007, id="media-not-object"),
        pytest.param(lambda m: m["media"].update(track="outbound"), 1008, id="outbound-track"),
    ],
)
def test_malformed_media_is_rejected(mutate: Any, code: int) -> None:
    """Bad base64, half samples and mistyped fields raise 1007; the bot's own track raises 1008."""
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
        DTMF.replace('"5"', '"55"'),
        '{"event":"dtmf","dtmf":"5"}',
        '{"event":"mark","mark":{}}',
        '{"event":"mark"}',
        '{"event":"stop","stop":[]}',
        '{"event":"stop","stop":{"reason":1}}',
    ],
)
def test_malformed_control_messages_are_rejected(text: str) -> None:
    """Bad digits, mark bodies or stop bodies raise with 1007 and leave the stream open."""
    codec = streaming_codec()
    with pytest.raises(TelephonyProtocolError) as info:
        codec.receive_text(text)
    assert info.value.close_code == 1007
    assert codec.state is ExotelState.STREAMING


# --- outbound --------------------------------------------------------------------------------------


def test_encode_media_mark_clear_with_both_spellings_of_the_stream_id() -> None:
    """media, mark and clear are Exotel's documented shapes, carrying stream_sid and Exotel's streamSid."""
    codec = streaming_codec()
    ids = {"stream_sid": STREAM_SID, "streamSid": STREAM_SID}
    assert json.loads(codec.encode(PlayAudio(CHUNK))) == {
        "event": "media",
        **ids,
        "media": {"payload": base64.b64encode(CHUNK).decode()},
    }
    name = 'turn "2" \\ é'
    assert json.loads(codec.encode(SetMark(name))) == {"event": "mark", **ids, "mark": {"name": name}}
    assert json.loads(codec.encode(ClearPlayback())) == {"event": "clear", **ids}
    assert (codec.media_out, codec.bytes_out) == (1, MIN_CHUNK_BYTES)


@pytest.mark.parametrize(
    ("size", "ok"),
    [
        (MIN_CHUNK_BYTES, True),
        (MIN_CHUNK_BYTES + CHUNK_MULTIPLE, True),
        (99_840, True),  # the largest multiple of 320 within 100,000
        (0, False),
        (320, False),
        (1600, False),  # Exotel's own sender's 100 ms at 8 kHz, below the documented minimum
        (3201, False),
        (3360, False),
        (MAX_CHUNK_BYTES + 160, False),
    ],
)
def test_encode_enforces_exotels_chunk_rule(size: int, ok: bool) -> None:
    """Audio must be 3,200-100,000 bytes in multiples of 320; anything else is our bug (1011)."""
    codec = streaming_codec()
    if ok:
        assert json.loads(codec.encode(PlayAudio(bytes(size))))["event"] == "media"
        return
    with pytest.raises(TelephonyProtocolError) as info:
        codec.encode(PlayAudio(bytes(size)))
    assert info.value.close_code == 1011
    assert codec.media_out == 0


def test_encode_before_start_is_local_misuse_and_after_stop_is_allowed() -> None:
    """Encoding before start raises with 1011; after stop it still works."""
    codec = ExotelCodec()
    codec.receive_text(CONNECTED)
    with pytest.raises(TelephonyProtocolError) as info:
        codec.encode(SetMark("x"))
    assert info.value.close_code == 1011
    codec = streaming_codec()
    codec.receive_text(STOP)
    assert json.loads(codec.encode(ClearPlayback()))["event"] == "clear"


@pytest.mark.parametrize("rate", RATES)
def test_the_declared_message_size_meets_the_chunk_rule_at_every_rate(rate: int) -> None:
    """frames_per_message whole 20 ms frames satisfy Exotel's byte rule at 8, 16 and 24 kHz."""
    codec: MediaCodec = streaming_codec(_start_with({"encoding": "raw", "sample_rate": str(rate)}))
    caps = codec.capabilities
    assert caps.frames_per_message is not None
    size = caps.frames_per_message * codec.audio.frame_bytes
    assert size % CHUNK_MULTIPLE == 0
    assert MIN_CHUNK_BYTES <= size <= MAX_CHUNK_BYTES
    assert json.loads(codec.encode(PlayAudio(bytes(size))))["event"] == "media"
    assert (caps.marks, caps.clear, caps.provider_buffers, caps.hangup, caps.transfer) == (
        True,
        True,
        False,
        "close",
        "none",
    )


def test_codec_refuses_a_rate_exotel_does_not_stream() -> None:
    """The URL's sample-rate must be one Exotel offers."""
    with pytest.raises(ConfigError):
        ExotelCodec(44100)


# --- fuzzing ---------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_GOLDEN = [CONNECTED, START, media(), DTMF, MARK, STOP]


def _paths(doc: Any, prefix: list[Any]) -> list[list[Any]]:
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    found: list[list[Any]] = []
    for key, value in items:
        found.append([*prefix, key])
        found.extend(_paths(value, [*prefix, key]))
    return found


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text_parses_or_raises_protocol_error(text: str) -> None:
    """Arbitrary text either parses or raises TelephonyProtocolError, in every state."""
    for prefix in ([], [CONNECTED], [CONNECTED, START]):
        codec = ExotelCodec()
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
    paths = _paths(msg, [])
    if not paths:
        return
    path = data.draw(st.sampled_from(paths))
    doc = msg
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = data.draw(_JSON)
    codec = ExotelCodec()
    for good in _GOLDEN[: min(index, 2)]:
        codec.receive_text(good)
    for method in (codec.receive_media, codec.receive_text):
        try:
            method(json.dumps(msg))
        except TelephonyProtocolError:
            pass


@given(
    st.integers(min_value=MIN_CHUNK_BYTES // 320, max_value=MAX_CHUNK_BYTES // 320), st.binary(max_size=320)
)
def test_fuzz_media_round_trips_through_exotels_media_shape(units: int, pattern: bytes) -> None:
    """Any lawful chunk we encode comes back byte for byte through Exotel's media shape."""
    payload = (
        (pattern * (320 * units // max(1, len(pattern)) + 1))[: 320 * units]
        if pattern
        else bytes(320 * units)
    )
    codec = streaming_codec()
    sent = json.loads(codec.encode(PlayAudio(payload)))
    event = codec.receive_text(
        json.dumps({"event": "media", "stream_sid": STREAM_SID, "media": sent["media"]})
    )
    assert isinstance(event, CallerAudio)
    assert event.payload == payload


# --- the dynamic answer, the static URL, the secret ---------------------------------------------------

SECRET = "s3cr3t-Value_0123456789"


def test_voicebot_answer_is_the_json_exotel_reads_with_the_token_and_rate() -> None:
    """The dynamic URL answers {"url": …} with the token (and sample-rate when not 8 kHz) in the query."""
    token = "v1.eyJjIjoiYWJjIn0.sig-_x"
    doc = json.loads(voicebot_answer("wss://gw.example.com/exotel/media?dp=sales", token, sample_rate=16000))
    assert list(doc) == ["url"]
    parts = urlsplit(doc["url"])
    assert (parts.scheme, parts.netloc, parts.path) == ("wss", "gw.example.com", "/exotel/media")
    assert parse_qs(parts.query) == {"dp": ["sales"], "sample-rate": ["16000"], "token": [token]}
    plain = json.loads(voicebot_answer("wss://gw.example.com/exotel/media", token))["url"]
    assert parse_qs(urlsplit(plain).query) == {"token": [token]}


def test_a_real_stream_token_fits_exotels_custom_parameter_budget() -> None:
    """A gateway token for an Exotel call (32-hex SID, Indian numbers) and sample-rate fit in 256 chars."""
    token = StreamTokens(b"k" * 32).issue(
        call_sid=CALL_SID[2:], to="+918047491899", from_="+919876543210", now=2e9
    )
    url = json.loads(voicebot_answer("wss://gw.example.com/exotel/media", token, sample_rate=24000))["url"]
    target = wire.stream_target(url)  # raises beyond 3 pairs or 256 characters
    assert target.custom_parameters == {"token": token}
    assert len(urlsplit(url).query) <= 256


def test_static_url_secret_reaches_the_gateway_as_exotel_sends_it() -> None:
    """Exotel turns the basic form into Authorization: Basic and the query form into ?secret=; both verify."""
    target = wire.stream_target(
        static_stream_url("wss://gw.example.com/exotel/media", SECRET, sample_rate=24000)
    )
    assert target.url == "wss://gw.example.com/exotel/media?sample-rate=24000"
    assert target.sample_rate == 24000
    assert verify_exotel_secret(SECRET, authorization=target.headers["Authorization"], query_secret=None)
    query_form = static_stream_url("wss://gw.example.com/exotel/media", SECRET, form="query")
    target = wire.stream_target(query_form)
    assert target.headers == {}
    assert verify_exotel_secret(SECRET, authorization=None, query_secret=target.custom_parameters["secret"])


@pytest.mark.parametrize(
    ("authorization", "query_secret"),
    [
        (None, None),
        ("Basic " + base64.b64encode(b"exotel:wrong").decode(), None),
        ("Bearer " + SECRET, None),
        ("Basic !!!", None),
        (None, SECRET + "x"),
        (None, "ü"),
    ],
)
def test_a_missing_or_wrong_secret_is_refused(authorization: str | None, query_secret: str | None) -> None:
    """No secret, a wrong one, another auth scheme or garbage base64 do not verify."""
    assert not verify_exotel_secret(SECRET, authorization=authorization, query_secret=query_secret)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: voicebot_answer("https://h/x", "t"), id="not-ws"),
        pytest.param(lambda: voicebot_answer("wss://u:p@h/x", "t"), id="credentials"),
        pytest.param(lambda: voicebot_answer("wss://h/x", ""), id="no-token"),
        pytest.param(lambda: voicebot_answer("wss://h/x", "t", sample_rate=44100), id="rate"),
        pytest.param(lambda: static_stream_url("wss://h/x", "short"), id="short-secret"),
        pytest.param(lambda: static_stream_url("wss://h/x", "x" * 20 + "@/"), id="unsafe-secret"),
        pytest.param(
            lambda: verify_exotel_secret("", authorization=None, query_secret=None), id="empty-secret"
        ),
    ],
)
def test_bad_configuration_is_a_config_error(call: Any) -> None:
    """Bad URLs, empty tokens, unknown rates and weak or URL-unsafe secrets raise ConfigError."""
    with pytest.raises(ConfigError):
        call()


def test_exotel_call_reads_the_applet_request() -> None:
    """CallSid, CallFrom and CallTo are read from the dynamic URL's query, whatever their case."""
    query = wire.voicebot_request(call_sid=CALL_SID, from_="09876543210", to="08047491899")
    assert exotel_call(query) == ExotelCall(CALL_SID, "09876543210", "08047491899")
    assert exotel_call({"callsid": CALL_SID, "Callfrom": "1"}) == ExotelCall(CALL_SID, "1", "")
    with pytest.raises(TelephonyProtocolError):
        exotel_call({"CallFrom": "1"})


# --- the caller's wire against the codec -------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
def test_round_trip_between_the_caller_wire_and_the_codec(rate: int) -> None:
    """The dynamic answer reads back, Exotel's messages decode, and our commands are what Exotel takes."""
    url = wire.parse_voicebot_reply(
        voicebot_answer("wss://gw.example.com/exotel/media", "tok.en", sample_rate=rate)
    )
    target = wire.stream_target(url)
    assert (target.sample_rate, target.custom_parameters) == (rate, {"token": "tok.en"})
    codec = ExotelCodec(target.sample_rate)
    assert codec.receive_text(wire.connected()) == Connected("", "")
    start = wire.start(
        1,
        stream_sid=STREAM_SID,
        call_sid=CALL_SID,
        account_sid=ACCOUNT_SID,
        from_="+919876543210",
        to="+918047491899",
        custom_parameters=target.custom_parameters,
        sample_rate=target.sample_rate,
    )
    started = codec.receive_text(start)
    assert isinstance(started, CallStarted)
    assert dict(started.custom_parameters) == {"token": "tok.en"}
    assert (codec.audio, codec.from_number, codec.to_number) == (
        AudioFormat("l16", rate),
        "+919876543210",
        "+918047491899",
    )
    chunk = bytes(range(200)) * (codec.audio.frame_bytes // 40)
    assert codec.receive_media(
        wire.media(2, stream_sid=STREAM_SID, chunk=1, timestamp_ms=100, payload=chunk)
    ) == (CallerAudio(chunk, 100, 1))
    assert codec.receive_text(wire.dtmf(3, stream_sid=STREAM_SID, digit="*")) == DtmfPressed("*")
    caps = codec.capabilities
    assert caps.frames_per_message is not None
    audio = bytes(caps.frames_per_message * codec.audio.frame_bytes)
    assert wire.parse_gateway_message(codec.encode(PlayAudio(audio)), stream_sid=STREAM_SID) == wire.MediaMsg(
        audio
    )
    assert wire.parse_gateway_message(codec.encode(SetMark("m")), stream_sid=STREAM_SID) == wire.MarkMsg("m")
    assert wire.parse_gateway_message(codec.encode(ClearPlayback()), stream_sid=STREAM_SID) == wire.ClearMsg()
    assert codec.receive_text(wire.mark(4, stream_sid=STREAM_SID, name="m")) == MarkReached("m")
    stop = wire.stop(5, stream_sid=STREAM_SID, call_sid=CALL_SID, account_sid=ACCOUNT_SID, reason="stopped")
    assert codec.receive_text(stop) == CallStopped(CALL_SID)
    assert codec.stop_reason == "stopped"


def test_the_caller_wire_refuses_what_exotel_would() -> None:
    """The simulated applet rejects undersized chunks, another stream, unknown events and bad replies."""
    small = json.dumps({"event": "media", "stream_sid": STREAM_SID, "media": {"payload": "AAAA"}})
    with pytest.raises(ValueError, match="3200-100000"):
        wire.parse_gateway_message(small, stream_sid=STREAM_SID)
    with pytest.raises(ValueError, match="stream ids"):
        wire.parse_gateway_message('{"event":"clear","stream_sid":"a","streamSid":"b"}', stream_sid="a")
    with pytest.raises(ValueError, match="unknown event"):
        wire.parse_gateway_message('{"event":"hangup","stream_sid":"a"}', stream_sid="a")
    with pytest.raises(TelephonyProtocolError):
        wire.parse_voicebot_reply('{"url": "https://h/x"}')
    with pytest.raises(TelephonyProtocolError):
        wire.stream_target("wss://h/x?a=1&b=2&c=3&d=4")


async def test_a_call_over_a_loopback_socket(aiohttp_client: Any) -> None:
    """Over a real WebSocket, Exotel's messages drive the codec and its replies parse on Exotel's side."""
    events: list[Any] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        if not verify_exotel_secret(
            SECRET,
            authorization=request.headers.get("Authorization"),
            query_secret=request.query.get("secret"),
        ):
            raise web.HTTPForbidden()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        codec = ExotelCodec(int(request.query.get("sample-rate", "8000")))
        pending = b""
        async for msg in ws:
            event = codec.receive_media(msg.data) or codec.receive_text(msg.data)
            events.append(event)
            if isinstance(event, CallerAudio):
                pending += event.payload
                if len(pending) >= MIN_CHUNK_BYTES:
                    await ws.send_str(codec.encode(PlayAudio(pending[:MIN_CHUNK_BYTES])))
                    await ws.send_str(codec.encode(SetMark("echo")))
                    pending = pending[MIN_CHUNK_BYTES:]
            elif isinstance(event, CallStopped):
                break
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/exotel/media", handler)
    client = await aiohttp_client(app)
    base = str(client.make_url("/exotel/media")).replace("http://", "ws://")
    target = wire.stream_target(static_stream_url(base, SECRET))
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await client.session.ws_connect(target.url)  # no secret: refused before the upgrade
    async with client.session.ws_connect(target.url, headers=target.headers) as ws:
        await ws.send_str(wire.connected())
        await ws.send_str(
            wire.start(
                1,
                stream_sid=STREAM_SID,
                call_sid=CALL_SID,
                account_sid=ACCOUNT_SID,
                from_="+91",
                to="+92",
                custom_parameters={},
            )
        )
        for n in (1, 2):
            await ws.send_str(
                wire.media(1 + n, stream_sid=STREAM_SID, chunk=n, timestamp_ms=100 * n, payload=PCM)
            )
        play = wire.parse_gateway_message(await ws.receive_str(timeout=5), stream_sid=STREAM_SID)
        mark = wire.parse_gateway_message(await ws.receive_str(timeout=5), stream_sid=STREAM_SID)
        assert play == wire.MediaMsg((PCM * 2)[:MIN_CHUNK_BYTES])
        assert mark == wire.MarkMsg("echo")
        await ws.send_str(wire.mark(4, stream_sid=STREAM_SID, name="echo"))
        await ws.send_str(wire.stop(5, stream_sid=STREAM_SID, call_sid=CALL_SID, account_sid=ACCOUNT_SID))
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert [type(e) for e in events] == [
        Connected,
        CallStarted,
        CallerAudio,
        CallerAudio,
        MarkReached,
        CallStopped,
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("09876543210", "+919876543210"),  # the applet request's national form
        ("080-472-59725", "+918047259725"),  # as Exotel's dashboard writes ExoPhones
        ("+919876543210", "+919876543210"),
        ("+91 98765 43210", "+919876543210"),
        ("0065 6123 4567", "+6561234567"),
        ("919876543210", "919876543210"),  # no prefix: which country cannot be told
        ("Anonymous", "Anonymous"),
        ("", ""),
    ],
)
def test_exotel_numbers_become_e164_where_the_form_tells(raw: str, expected: str) -> None:
    """National (0…) and international (00…) forms become E.164 so dialplans match; others stay."""
    assert exotel_number(raw) == expected


def test_start_carries_the_numbers_for_a_stream_without_a_token() -> None:
    """CallStarted has start's from/to: the static URL's stream takes the call's identity from them."""
    codec = ExotelCodec()
    start = wire.start(
        1,
        stream_sid=STREAM_SID,
        call_sid=CALL_SID,
        account_sid=ACCOUNT_SID,
        from_="+919876543210",
        to="+918047491899",
        custom_parameters={},
    )
    started = codec.receive_text(start)
    assert isinstance(started, CallStarted)
    assert (started.from_, started.to) == ("+919876543210", "+918047491899")
