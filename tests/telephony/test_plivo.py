"""PlivoCodec, Plivo's answer XML, X-Plivo-Signature-V3 and REST requests, against Plivo's docs and SDK."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import plivo
import pytest
from aiohttp import web
from hypothesis import given, settings, strategies as st
from multidict import MultiDict
from plivo import plivoxml
from plivo.utils.signature_v3 import construct_get_url, construct_post_url, validate_v3_signature

from gateway.caller import wire_plivo as wire
from gateway.errors import ConfigError, TelephonyProtocolError, ToolError
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
from gateway.telephony.plivo import (
    PlivoCodec,
    PlivoState,
    dial_xml,
    hangup_request,
    hangup_xml,
    make_call_request,
    plivo_signature_v3,
    stream_xml,
    transfer_request,
    verify_plivo_signature_v3,
)
from gateway.telephony.provider import PCMU_8K, AudioFormat, MediaCodec

CALL_ID = "12345678-1234-1234-1234-123456789abc"
STREAM_ID = "87654321-4321-4321-4321-cba987654321"
ACCOUNT_ID = "MAXXXXXXXXXXXXXXXXXX"

# Golden messages, laid out as Plivo's "Stream Event Protocol" page and support articles show them.
START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": CALL_ID,
            "streamId": STREAM_ID,
            "accountId": ACCOUNT_ID,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        },
        "extra_headers": "userId=12345;sessionId=abc-xyz",
    }
)
ULAW = bytes(range(160))


def media(payload: bytes = ULAW, *, chunk: Any = 1, timestamp: Any = "20", sid: str = STREAM_ID) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": 2,
            "streamId": sid,
            "media": {
                "track": "inbound",
                "timestamp": timestamp,
                "chunk": chunk,
                "payload": base64.b64encode(payload).decode(),
            },
            "extra_headers": "userId=12345;sessionId=abc-xyz",
        }
    )


DTMF = json.dumps(
    {
        "event": "dtmf",
        "sequenceNumber": 3,
        "streamId": STREAM_ID,
        "dtmf": {"track": "inbound", "digit": "5", "timestamp": "1600"},
    }
)
PLAYED = json.dumps({"event": "playedStream", "streamId": STREAM_ID, "name": "customer greeting audio"})
CLEARED = json.dumps({"sequenceNumber": 0, "event": "clearedAudio", "streamId": STREAM_ID})
STOP = json.dumps({"event": "stop", "sequenceNumber": 9, "streamId": STREAM_ID, "reason": "hangup"})


def streaming_codec(start: str = START) -> PlivoCodec:
    codec = PlivoCodec()
    codec.receive_text(start)
    return codec


def _start_with(fmt: dict[str, Any] | None = None, **changes: Any) -> str:
    msg = json.loads(START)
    msg["start"].update(changes)
    if fmt is not None:
        msg["start"]["mediaFormat"] = fmt
    return json.dumps(msg)


# --- inbound ---------------------------------------------------------------------------------------


def test_start_yields_call_started_with_ids_format_and_extra_headers() -> None:
    """start (Plivo's example) gives CallStarted with ids, tracks, μ-law 8 kHz and parsed extra_headers."""
    codec = PlivoCodec()
    started = codec.receive_text(START)
    assert isinstance(started, CallStarted)
    assert (started.stream_sid, started.call_sid, started.account_sid) == (STREAM_ID, CALL_ID, ACCOUNT_ID)
    assert started.tracks == ("inbound",)
    assert dict(started.custom_parameters) == {"userId": "12345", "sessionId": "abc-xyz"}
    assert (started.encoding, started.sample_rate, started.channels) == ("audio/x-mulaw", 8000, 1)
    assert codec.state is PlivoState.STREAMING
    assert codec.audio == PCMU_8K
    assert (codec.stream_id, codec.call_id, codec.account_id) == (STREAM_ID, CALL_ID, ACCOUNT_ID)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        pytest.param(
            {"encoding": "audio/x-l16", "sampleRate": 16000}, AudioFormat("l16", 16000), id="l16-16k"
        ),
        pytest.param(
            {"encoding": "audio/x-l16", "sampleRate": "8000"}, AudioFormat("l16", 8000), id="rate-string"
        ),
        pytest.param({"encoding": "audio/x-l16;rate=16000"}, AudioFormat("l16", 16000), id="rate-in-type"),
        pytest.param({"encoding": "AUDIO/X-MULAW", "sampleRate": 8000}, PCMU_8K, id="case"),
    ],
)
def test_start_takes_every_format_plivo_streams(fmt: dict[str, Any], expected: AudioFormat) -> None:
    """x-l16 at 8/16 kHz and x-mulaw at 8 kHz are taken; the codec's audio follows start."""
    codec = PlivoCodec()
    started = codec.receive_text(_start_with(fmt))
    assert isinstance(started, CallStarted)
    assert codec.audio == expected
    assert started.sample_rate == expected.rate


def test_extra_headers_with_commas_and_custom_parameters_merge() -> None:
    """extra_headers split on ',' as on the XML page; start.customParameters (Java SDK) are added."""
    msg = json.loads(START)
    msg["extra_headers"] = "a=1,b=2,,junk"
    msg["start"]["customParameters"] = {"c": "3"}
    started = PlivoCodec().receive_text(json.dumps(msg))
    assert isinstance(started, CallStarted)
    assert dict(started.custom_parameters) == {"a": "1", "b": "2", "c": "3"}


def test_media_decodes_payload_and_lenient_counters() -> None:
    """media yields the raw bytes; chunk and timestamp are read as numbers or decimal strings."""
    codec = streaming_codec()
    assert codec.receive_text(media(chunk=7, timestamp="140")) == CallerAudio(ULAW, 140, 7)
    assert codec.receive_text(media(chunk="8", timestamp=160)) == CallerAudio(ULAW, 160, 8)
    assert codec.receive_media(media(chunk=9)) == CallerAudio(ULAW, 20, 9)
    assert (codec.media_in, codec.bytes_in, codec.messages_in) == (3, 480, 4)


def test_receive_media_leaves_other_messages_alone() -> None:
    """receive_media returns None for a non-media message and does not change the codec."""
    codec = streaming_codec()
    assert codec.receive_media(DTMF) is None
    assert codec.messages_in == 1
    assert codec.receive_text(DTMF) == DtmfPressed("5")


def test_dtmf_checkpoint_echo_and_stop() -> None:
    """dtmf → DtmfPressed, playedStream (and its old name played) → MarkReached, stop → CallStopped."""
    codec = streaming_codec()
    assert codec.receive_text(DTMF) == DtmfPressed("5")
    assert codec.receive_text(PLAYED) == MarkReached("customer greeting audio")
    assert codec.receive_text(PLAYED.replace("playedStream", "played")) == MarkReached(
        "customer greeting audio"
    )
    assert codec.receive_text(STOP) == CallStopped(CALL_ID)
    assert codec.state is PlivoState.STOPPED
    assert codec.stop_reason == "hangup"


def test_cleared_audio_reports_the_newest_checkpoint_the_clear_dropped() -> None:
    """clearedAudio comes back as the newest unplayed checkpoint before the clear, as Twilio echoes marks."""
    codec = streaming_codec()
    codec.encode(SetMark("m1"))
    codec.encode(SetMark("m2"))
    codec.encode(SetMark("m3"))
    assert codec.receive_text(PLAYED.replace("customer greeting audio", "m1")) == MarkReached("m1")
    codec.encode(ClearPlayback())
    codec.encode(SetMark("after-clear"))  # belongs to new audio: not dropped by the earlier clear
    assert codec.receive_text(CLEARED) == MarkReached("m3")
    codec.encode(ClearPlayback())
    assert codec.receive_text(CLEARED) == MarkReached("after-clear")
    assert codec.receive_text(CLEARED) is None  # a clear that dropped no checkpoint needs no action


def test_l16_media_with_an_odd_byte_count_is_refused() -> None:
    """16-bit audio must hold whole samples."""
    codec = streaming_codec(_start_with({"encoding": "audio/x-l16", "sampleRate": 8000}))
    assert codec.receive_text(media(b"\x01\x02")) == CallerAudio(b"\x01\x02", 20, 1)
    with pytest.raises(TelephonyProtocolError) as info:
        codec.receive_text(media(b"\x01\x02\x03"))
    assert info.value.close_code == 1007


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([media()], id="media-before-start"),
        pytest.param([DTMF], id="dtmf-before-start"),
        pytest.param([PLAYED], id="played-before-start"),
        pytest.param([STOP], id="stop-before-start"),
        pytest.param([START, START], id="start-twice"),
        pytest.param([START, STOP, media()], id="media-after-stop"),
        pytest.param([START, STOP, STOP], id="stop-twice"),
        pytest.param([START, '{"event":"connected"}'], id="connected-is-not-plivo"),
        pytest.param([START, DTMF.replace('"dtmf"', '"hello"', 1)], id="unknown-event"),
        pytest.param([START, media(sid="other")], id="media-other-stream"),
        pytest.param([START, DTMF.replace(STREAM_ID, "other")], id="dtmf-other-stream"),
        pytest.param([START, media().replace('"inbound"', '"outbound"')], id="outbound-track"),
    ],
)
def test_out_of_order_or_foreign_messages_are_policy_violations(messages: list[str]) -> None:
    """Messages illegal in the current state, unknown events and other streams' messages close with 1008."""
    codec = PlivoCodec()
    *legal, bad = messages
    for text in legal:
        codec.receive_text(text)
    with pytest.raises(TelephonyProtocolError) as info:
        codec.receive_text(bad)
    assert info.value.close_code == 1008


@pytest.mark.parametrize(
    ("text", "code"),
    [
        pytest.param("not json", 1007, id="not-json"),
        pytest.param("[1]", 1007, id="not-object"),
        pytest.param('{"event": 1}', 1007, id="event-not-string"),
        pytest.param(_start_with(streamId='x"}'), 1007, id="stream-id-not-plain"),
        pytest.param(_start_with(callId=None), 1007, id="no-call-id"),
        pytest.param(_start_with(callId="a/b"), 1007, id="call-id-not-plain"),
        pytest.param(_start_with(accountId=5), 1007, id="account-not-string"),
        pytest.param(_start_with(tracks="inbound"), 1007, id="tracks-not-list"),
        pytest.param(_start_with(customParameters={"a": 1}), 1007, id="custom-not-strings"),
        pytest.param(_start_with({"sampleRate": 8000}), 1007, id="no-encoding"),
        pytest.param(_start_with({"encoding": "audio/x-mulaw", "sampleRate": -1}), 1007, id="negative-rate"),
        pytest.param(_start_with({"encoding": "audio/x-mulaw", "sampleRate": 16000}), 1003, id="mulaw-16k"),
        pytest.param(_start_with({"encoding": "audio/opus", "sampleRate": 48000}), 1003, id="opus"),
        pytest.param(
            START.replace('"extra_headers": "', '"extra_headers": 1, "x": "'), 1007, id="headers-not-str"
        ),
    ],
)
def test_malformed_start_is_rejected(text: str, code: int) -> None:
    """Malformed JSON or start messages raise with 1007 (bad data) or 1003 (a format we cannot take)."""
    codec = PlivoCodec()
    with pytest.raises(TelephonyProtocolError) as info:
        codec.receive_text(text)
    assert info.value.close_code == code
    assert codec.state is PlivoState.AWAITING_START


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda m: m["media"].update(payload="ab=c"), id="bad-padding"),
        pytest.param(lambda m: m["media"].update(payload="a!bc"), id="bad-alphabet"),
        pytest.param(lambda m: m["media"].update(payload=5), id="payload-not-string"),
        pytest.param(lambda m: m["media"].update(chunk="-1"), id="negative-chunk"),
        pytest.param(lambda m: m["media"].update(timestamp=True), id="bool-timestamp"),
        pytest.param(lambda m: m.update(media=[]), id="media-not-object"),
    ],
)
def test_malformed_media_is_invalid_data(mutate: Any) -> None:
    """Bad base64 and mistyped fields in media raise with 1007 and count nothing."""
    codec = streaming_codec()
    msg = json.loads(media())
    mutate(msg)
    with pytest.raises(TelephonyProtocolError) as info:
        codec.receive_text(json.dumps(msg))
    assert info.value.close_code == 1007
    assert codec.media_in == 0


@pytest.mark.parametrize(
    "text",
    [
        DTMF.replace('"5"', '"x"'),
        DTMF.replace('"5"', "5"),
        json.dumps({"event": "dtmf", "streamId": STREAM_ID}),
        json.dumps({"event": "playedStream", "streamId": STREAM_ID}),
        json.dumps({"event": "stop", "stop": "now"}),
        json.dumps({"event": "stop", "reason": 3}),
    ],
)
def test_malformed_control_messages_are_rejected(text: str) -> None:
    """Bad digits, checkpoint names or stop bodies raise with 1007 and leave the stream open."""
    codec = streaming_codec()
    with pytest.raises(TelephonyProtocolError) as info:
        codec.receive_text(text)
    assert info.value.close_code == 1007
    assert codec.state is PlivoState.STREAMING


# --- outbound --------------------------------------------------------------------------------------


def test_encode_play_audio_checkpoint_and_clear_exactly_as_plivo_documents() -> None:
    """playAudio carries the stream's contentType and rate; checkpoint and clearAudio name the stream."""
    codec = streaming_codec()
    assert json.loads(codec.encode(PlayAudio(ULAW))) == {
        "event": "playAudio",
        "media": {
            "contentType": "audio/x-mulaw",
            "sampleRate": 8000,
            "payload": base64.b64encode(ULAW).decode(),
        },
    }
    name = 'turn "1" \\ é\n'
    assert json.loads(codec.encode(SetMark(name))) == {
        "event": "checkpoint",
        "streamId": STREAM_ID,
        "name": name,
    }
    assert json.loads(codec.encode(ClearPlayback())) == {"event": "clearAudio", "streamId": STREAM_ID}
    assert (codec.media_out, codec.bytes_out) == (1, 160)


def test_encode_l16_16k_names_the_wideband_format() -> None:
    """On an L16 16 kHz stream playAudio says audio/x-l16 at 16000 and refuses half samples."""
    codec = streaming_codec(_start_with({"encoding": "audio/x-l16", "sampleRate": 16000}))
    media_body = json.loads(codec.encode(PlayAudio(b"\x00\x01" * 320)))["media"]
    assert (media_body["contentType"], media_body["sampleRate"]) == ("audio/x-l16", 16000)
    with pytest.raises(TelephonyProtocolError) as info:
        codec.encode(PlayAudio(b"\x00"))
    assert info.value.close_code == 1011


def test_encode_before_start_is_local_misuse_and_after_stop_is_allowed() -> None:
    """Encoding before start raises with 1011; after stop it still works (a bridge racing the hang-up)."""
    with pytest.raises(TelephonyProtocolError) as info:
        PlivoCodec().encode(ClearPlayback())
    assert info.value.close_code == 1011
    codec = streaming_codec()
    codec.receive_text(STOP)
    assert json.loads(codec.encode(SetMark("late")))["event"] == "checkpoint"


def test_the_codec_declares_what_the_bridge_may_rely_on() -> None:
    """PlivoCodec is a MediaCodec: checkpoints, clear, any message size, buffering, REST hang-up/transfer."""
    codec: MediaCodec = PlivoCodec()
    assert codec.audio == PCMU_8K
    caps = codec.capabilities
    assert (caps.marks, caps.clear, caps.frames_per_message, caps.provider_buffers) == (
        True,
        True,
        None,
        True,
    )
    assert (caps.hangup, caps.transfer, caps.binary_audio, caps.continuous_media) == (
        "rest",
        "rest",
        False,
        True,
    )


# --- fuzzing ---------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_GOLDEN = [START, media(), DTMF, PLAYED, CLEARED, STOP]


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
    """Arbitrary text either parses or raises TelephonyProtocolError, before and after start."""
    for prefix in ([], [START]):
        codec = PlivoCodec()
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
    path = data.draw(st.sampled_from(_paths(msg, [])))
    doc = msg
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = data.draw(_JSON)
    codec = PlivoCodec() if index == 0 else streaming_codec()
    for method in (codec.receive_media, codec.receive_text):
        try:
            method(json.dumps(msg))
        except TelephonyProtocolError:
            pass


@given(st.binary(max_size=400))
def test_fuzz_play_audio_round_trips_through_plivos_media_shape(payload: bytes) -> None:
    """Any μ-law payload we encode comes back byte for byte through Plivo's media shape."""
    codec = streaming_codec()
    sent = json.loads(codec.encode(PlayAudio(payload)))
    echoed = json.dumps(
        {"event": "media", "streamId": STREAM_ID, "media": {"payload": sent["media"]["payload"]}}
    )
    event = codec.receive_text(echoed)
    assert isinstance(event, CallerAudio)
    assert event.payload == payload


# --- X-Plivo-Signature-V3 against Plivo's own SDK ---------------------------------------------------

TOKEN = "MjY0ZmE0ZjRkYWFiZTJhZmQ5ODE5NzY5NWJjYmYz"
NONCE = "05429567804466091622"
FORM = {
    "CallUUID": CALL_ID,
    "From": "14155550100",
    "To": "14155550199",
    "CallStatus": "ringing",
    "Ünï": "välue ☎",
}
SIGNATURE_CASES = [
    ("POST", "https://gw.example.com/plivo/answer", FORM),
    ("POST", "https://gw.example.com/plivo/answer?b=2&a=1&a=0&e=", FORM),
    ("POST", "https://gw.example.com:8443/plivo/answer?x=%20y", {}),
    ("POST", "http://127.0.0.1:8080/plivo/answer", {}),
    ("GET", "https://gw.example.com/plivo/answer?CallUUID=url-wins&z=1", FORM),
    ("GET", "https://gw.example.com/plivo/answer", {}),
]


@pytest.mark.parametrize(("method", "url", "params"), SIGNATURE_CASES)
def test_signature_matches_plivos_validator(method: str, url: str, params: dict[str, str]) -> None:
    """Our V3 signature is the one plivo-python's validate_v3_signature accepts, and we accept it back."""
    ours = plivo_signature_v3(TOKEN, method=method, url=url, nonce=NONCE, params=params)
    assert validate_v3_signature(method, url, NONCE, TOKEN, ours, dict(params))
    assert verify_plivo_signature_v3(
        TOKEN, method=method, url=url, nonce=NONCE, signature=ours, params=params
    )
    sdk_base = (construct_post_url if method == "POST" else construct_get_url)(url, dict(params)).decode()
    assert url.partition("?")[0] in sdk_base  # the SDK signed this URL, so the comparison means something


def test_repeated_form_names_sign_as_plivos_sdk_signs_lists() -> None:
    """A multidict with a repeated name signs like the SDK given that name's list of values."""
    form = MultiDict([("Digits", "2"), ("CallUUID", CALL_ID), ("Digits", "1")])
    url = "https://gw.example.com/plivo/answer"
    ours = plivo_signature_v3(TOKEN, method="POST", url=url, nonce=NONCE, params=form)
    assert validate_v3_signature("POST", url, NONCE, TOKEN, ours, {"Digits": ["2", "1"], "CallUUID": CALL_ID})


def test_verification_accepts_any_listed_signature_and_refuses_tampering() -> None:
    """One of several comma-separated signatures suffices; a changed form, URL, nonce or token fails."""
    url = "https://gw.example.com/plivo/answer"
    good = plivo_signature_v3(TOKEN, method="POST", url=url, nonce=NONCE, params=FORM)
    other = plivo_signature_v3("another-token", method="POST", url=url, nonce=NONCE, params=FORM)

    def ok(**changes: Any) -> bool:
        args: dict[str, Any] = {
            "method": "POST",
            "url": url,
            "nonce": NONCE,
            "signature": good,
            "params": FORM,
        }
        return verify_plivo_signature_v3(TOKEN, **(args | changes))

    assert ok(signature=f"{other}, {good}")
    assert not ok(signature=other)
    assert not ok(params=FORM | {"To": "14155550000"})
    assert not ok(url=url + "x")
    assert not ok(nonce=NONCE + "1")
    assert not ok(
        nonce="", signature=plivo_signature_v3(TOKEN, method="POST", url=url, nonce="", params=FORM)
    )
    assert not ok(signature="ü")
    assert not ok(method="GET")
    with pytest.raises(ConfigError):
        verify_plivo_signature_v3("", method="POST", url=url, nonce=NONCE, signature=good, params=FORM)
    with pytest.raises(ConfigError):
        plivo_signature_v3(TOKEN, method="PUT", url=url, nonce=NONCE, params=FORM)


# --- the answer XML ---------------------------------------------------------------------------------


def _stream(xml: str) -> ET.Element:
    root = ET.fromstring(xml)
    assert root.tag == "Response"
    stream = root.find("Stream")
    assert stream is not None
    return stream


def test_stream_xml_carries_the_url_with_the_token_and_the_attributes_plivos_sdk_writes() -> None:
    """<Stream> holds the URL (query kept, token added, XML-escaped) and the attributes Plivo's SDK writes."""
    token = "v1.eyJjIjoiYWJjIn0.sig-_x"
    xml = stream_xml("wss://gw.example.com/plivo/media?a=1&b=x y", token)
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Stream ')
    ours = _stream(xml)
    query = parse_qs(urlsplit((ours.text or "").strip()).query)
    assert query == {"a": ["1"], "b": ["x y"], "token": [token]}
    sdk = plivoxml.ResponseElement().add(
        plivoxml.StreamElement(
            ours.text, bidirectional=True, keepCallAlive=True, contentType="audio/x-mulaw;rate=8000"
        )
    )
    theirs = _stream(sdk.to_string(False))
    assert ours.attrib == theirs.attrib
    assert ours.text == theirs.text


def test_stream_xml_options() -> None:
    """Wideband content type, timeout, status callback and alphanumeric extraHeaders are written for Plivo."""
    stream = _stream(
        stream_xml(
            "wss://h/plivo/media",
            "t",
            audio=AudioFormat("l16", 16000),
            extra_headers={"dialplan": "sales", "n": "2"},
            stream_timeout_s=3600,
            status_callback_url="https://h/plivo/status?a=1&b=2",
        )
    )
    assert stream.get("contentType") == "audio/x-l16;rate=16000"
    assert stream.get("streamTimeout") == "3600"
    assert (stream.get("statusCallbackUrl"), stream.get("statusCallbackMethod")) == (
        "https://h/plivo/status?a=1&b=2",
        "POST",
    )
    assert stream.get("extraHeaders") == "dialplan=sales,n=2"


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: stream_xml("https://h/m", "t"), id="not-ws"),
        pytest.param(lambda: stream_xml("wss://h/m#frag", "t"), id="fragment"),
        pytest.param(lambda: stream_xml("wss://h/m", ""), id="no-token"),
        pytest.param(lambda: stream_xml("wss://h/m", "t", audio=AudioFormat("l16", 24000)), id="24k"),
        pytest.param(lambda: stream_xml("wss://h/m", "t", audio=AudioFormat("alaw", 8000)), id="alaw"),
        pytest.param(lambda: stream_xml("wss://h/m", "t", extra_headers={"a": "x.y"}), id="header-dot"),
        pytest.param(lambda: stream_xml("wss://h/m", "t", extra_headers={"a": "x" * 600}), id="header-long"),
        pytest.param(lambda: stream_xml("wss://h/m", "t", stream_timeout_s=0), id="timeout-zero"),
        pytest.param(lambda: stream_xml("wss://h/m\x01", "t"), id="control-char"),
        pytest.param(lambda: dial_xml("call me"), id="dial-garbage"),
        pytest.param(lambda: dial_xml("+15550001111", caller_id="me"), id="caller-id-garbage"),
    ],
)
def test_documents_plivo_would_refuse_are_config_errors(call: Any) -> None:
    """Bad URLs, formats Plivo lacks, non-alphanumeric extraHeaders and bad dial targets raise ConfigError."""
    with pytest.raises(ConfigError):
        call()


def test_hangup_and_dial_xml() -> None:
    """Speak-then-Hangup, and Dial of a number (without '+') or of a SIP user."""
    root = ET.fromstring(hangup_xml("Sorry & goodbye"))
    assert [(e.tag, e.text) for e in root] == [("Speak", "Sorry & goodbye"), ("Hangup", None)]
    assert [e.tag for e in ET.fromstring(hangup_xml())] == ["Hangup"]
    dial = ET.fromstring(dial_xml("+14155550100", caller_id="+14155550199")).find("Dial")
    assert dial is not None
    assert dial.get("callerId") == "14155550199"
    assert [(e.tag, e.text) for e in dial] == [("Number", "14155550100")]
    user = ET.fromstring(dial_xml("sip:agent@phone.plivo.com")).find("Dial/User")
    assert user is not None
    assert user.text == "sip:agent@phone.plivo.com"


# --- REST requests, compared with the request Plivo's SDK builds ------------------------------------

AUTH_ID = "MAZDQ1ZDA0NTI4MWM2NT"


class _Sent(Exception):
    def __init__(self, request: Any) -> None:
        self.request = request


def _sdk_request(call: Any) -> Any:
    client = plivo.RestClient(AUTH_ID, TOKEN)

    def capture(request: Any, **_: Any) -> Any:
        raise _Sent(request)

    client.send_request = capture
    with pytest.raises(_Sent) as sent:
        call(client)
    return sent.value.request


def test_hangup_request_is_the_sdks_delete() -> None:
    """DELETE /v1/Account/{id}/Call/{uuid}/ with Basic auth, as plivo-python sends it; 204/404 mean done."""
    req = hangup_request(auth_id=AUTH_ID, auth_token=TOKEN, call_uuid=CALL_ID)
    sdk = _sdk_request(lambda c: c.calls.hangup(CALL_ID))
    assert (req.method, req.url) == (sdk.method, sdk.url)
    assert req.headers["Authorization"] == sdk.headers["Authorization"]
    assert req.body is None
    assert req.ok == {204, 404}
    assert TOKEN not in repr(req)
    assert base64.b64decode(req.headers["Authorization"].split()[1]).decode() == f"{AUTH_ID}:{TOKEN}"


def test_transfer_request_is_the_sdks_transfer() -> None:
    """POST legs=aleg with aleg_url/aleg_method as JSON to the call resource, as plivo-python sends it."""
    aleg = "https://gw.example.com/plivo/transfer?to=14155550100&sig=abc"
    req = transfer_request(
        auth_id=AUTH_ID, auth_token=TOKEN, call_uuid=CALL_ID, aleg_url=aleg, base_url="http://127.0.0.1:9/"
    )
    sdk = _sdk_request(lambda c: c.calls.transfer(CALL_ID, legs="aleg", aleg_url=aleg, aleg_method="POST"))
    assert req.method == sdk.method == "POST"
    assert req.url == sdk.url.replace("https://api.plivo.com", "http://127.0.0.1:9")
    assert req.body is not None
    sdk_body = json.loads(sdk.body)
    assert sdk_body.pop("call_uuid") == CALL_ID  # the SDK echoes its locals(); the API reads the path
    assert json.loads(req.body) == sdk_body
    assert req.headers["Content-Type"] == "application/json"
    assert req.ok == {202}


@pytest.mark.parametrize("amd", [False, True])
def test_make_call_request_is_the_sdks_create(amd: bool) -> None:
    """POST /v1/Account/{id}/Call/ as JSON, each field as plivo-python's ``calls.create`` sends it (numbers
    as Plivo writes them); asynchronous machine detection only when the plan cares about machines."""
    urls = {
        "answer_url": "https://gw.example.com/plivo/outbound/answer?t=T",
        "hangup_url": "https://gw.example.com/plivo/outbound/status?t=T",
        "ring_url": "https://gw.example.com/plivo/outbound/status?t=T",
    }
    machine_url = "https://gw.example.com/plivo/outbound/machine?t=T" if amd else None
    req = make_call_request(
        auth_id=AUTH_ID, auth_token=TOKEN, to="+14155550100", from_="+14155550199", ring_timeout_s=25,
        machine_detection_url=machine_url, **urls,
    )  # fmt: skip
    extra: dict[str, Any] = {"machine_detection": "true", "machine_detection_url": machine_url} if amd else {}
    sdk = _sdk_request(
        lambda c: c.calls.create(from_="14155550199", to_="14155550100", ring_timeout=25, **urls, **extra)
    )
    assert (req.method, req.url) == (sdk.method, sdk.url)
    assert req.headers["Authorization"] == sdk.headers["Authorization"]
    assert req.headers["Content-Type"] == "application/json"
    assert req.body is not None
    ours, theirs = json.loads(req.body), json.loads(sdk.body)
    assert {k: theirs[k] for k in ours} == ours
    # What the SDK adds are its defaults, which Plivo applies to a request without them.
    assert set(theirs) - set(ours) <= {
        "machine_detection_time",
        "error_if_parent_not_found",
        "send_on_preanswer",
        "fallback_method",
        "machine_detection_method",
    }
    assert ("machine_detection" in ours) is amd
    assert req.ok == {200, 201}
    assert TOKEN not in repr(req)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        pytest.param({"to": "14155550100"}, ConfigError, id="to-not-e164"),
        pytest.param({"from_": "+0123"}, ConfigError, id="from-not-e164"),
        pytest.param({"answer_url": "wss://x/y"}, ConfigError, id="answer-url"),
        pytest.param({"machine_detection_url": "ftp://x"}, ConfigError, id="machine-url"),
        pytest.param({"auth_id": "MA-1"}, ConfigError, id="auth-id"),
    ],
)
def test_bad_make_call_inputs_are_refused(changes: dict[str, str], error: type[Exception]) -> None:
    """Numbers that are not E.164, URLs that are not http(s) and bad credentials are ConfigErrors."""
    args: dict[str, Any] = {
        "auth_id": AUTH_ID, "auth_token": TOKEN, "to": "+14155550100", "from_": "+14155550199",
        "answer_url": "https://h/a", "hangup_url": "https://h/s", "ring_url": "https://h/s",
        "ring_timeout_s": 30,
    } | changes  # fmt: skip
    with pytest.raises(error):
        make_call_request(**args)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        pytest.param({"call_uuid": "../x"}, ToolError, id="call-id"),
        pytest.param({"auth_id": "MA-1"}, ConfigError, id="auth-id"),
        pytest.param({"auth_token": ""}, ConfigError, id="no-token"),
        pytest.param({"base_url": "ftp://x"}, ConfigError, id="base-url"),
        pytest.param({"aleg_url": "wss://x/y"}, ConfigError, id="aleg-url"),
        pytest.param({"aleg_method": "PUT"}, ConfigError, id="aleg-method"),
    ],
)
def test_bad_rest_inputs_are_refused(changes: dict[str, str], error: type[Exception]) -> None:
    """A call id that is not plain is a ToolError; bad credentials, URLs or methods are ConfigErrors."""
    args = {
        "auth_id": AUTH_ID,
        "auth_token": TOKEN,
        "call_uuid": CALL_ID,
        "aleg_url": "https://h/t",
    } | changes
    with pytest.raises(error):
        transfer_request(**args)


# --- the caller's wire against the codec -------------------------------------------------------------


def test_answer_request_signed_by_the_caller_wire_verifies() -> None:
    """The simulated Plivo's signed Answer URL request passes our verification, and a forged one fails."""
    url = "https://gw.example.com/plivo/answer"
    form = wire.answer_form(call_uuid=CALL_ID, from_="+14155550100", to="+14155550199")
    assert form["From"] == "14155550100"
    headers = wire.answer_headers(TOKEN, url, form)
    args: dict[str, Any] = {
        "method": "POST",
        "url": url,
        "nonce": headers["X-Plivo-Signature-V3-Nonce"],
        "params": form,
    }
    assert verify_plivo_signature_v3(TOKEN, signature=headers["X-Plivo-Signature-V3"], **args)
    assert validate_v3_signature("POST", url, args["nonce"], TOKEN, headers["X-Plivo-Signature-V3"], form)
    forged = wire.answer_headers("wrong-token", url, form)["X-Plivo-Signature-V3"]
    assert not verify_plivo_signature_v3(TOKEN, signature=forged, **args)


@pytest.mark.parametrize("audio", [PCMU_8K, AudioFormat("l16", 8000), AudioFormat("l16", 16000)])
def test_round_trip_between_the_caller_wire_and_the_codec(audio: AudioFormat) -> None:
    """The answer XML reads back, Plivo's messages decode, and our commands are what Plivo takes."""
    spec, tags = wire.parse_answer(stream_xml("wss://gw.example.com/plivo/media", "tok.en-1", audio=audio))
    assert spec is not None
    assert tags == ["Stream"]
    assert (spec.bidirectional, spec.keep_call_alive, spec.after) == (True, True, [])
    assert parse_qs(urlsplit(spec.url).query) == {"token": ["tok.en-1"]}
    codec = PlivoCodec(audio)
    start = wire.start(
        1, call_id=CALL_ID, stream_id=STREAM_ID, account_id=ACCOUNT_ID, content_type=spec.content_type
    )
    started = codec.receive_text(start)
    assert isinstance(started, CallStarted)
    assert (started.call_sid, started.stream_sid, codec.audio) == (CALL_ID, STREAM_ID, audio)
    chunk = bytes(range(256))[: audio.frame_bytes]
    assert codec.receive_media(
        wire.media(2, stream_id=STREAM_ID, chunk=1, timestamp_ms=20, payload=chunk)
    ) == (CallerAudio(chunk, 20, 1))
    assert codec.receive_text(wire.dtmf(3, stream_id=STREAM_ID, digit="#", timestamp_ms=40)) == DtmfPressed(
        "#"
    )
    sent = wire.parse_gateway_message(codec.encode(PlayAudio(chunk * 4)), stream_id=STREAM_ID)
    assert sent == wire.PlayAudioMsg(spec.content_type.split(";")[0], audio.rate, chunk * 4)
    mark = wire.parse_gateway_message(codec.encode(SetMark("turn-1")), stream_id=STREAM_ID)
    assert mark == wire.CheckpointMsg("turn-1")
    assert codec.receive_text(wire.played_stream(4, stream_id=STREAM_ID, name="turn-1")) == MarkReached(
        "turn-1"
    )
    codec.encode(SetMark("turn-2"))
    assert (
        wire.parse_gateway_message(codec.encode(ClearPlayback()), stream_id=STREAM_ID) == wire.ClearAudioMsg()
    )
    assert codec.receive_text(wire.cleared_audio(5, stream_id=STREAM_ID)) == MarkReached("turn-2")
    assert codec.receive_text(wire.stop(6, stream_id=STREAM_ID)) == CallStopped(CALL_ID)


def test_the_caller_wire_refuses_what_plivo_would() -> None:
    """The simulated Plivo rejects another stream's ids, unknown events and formats Plivo does not play."""
    with pytest.raises(ValueError, match="streamId"):
        wire.parse_gateway_message('{"event":"clearAudio","streamId":"other"}', stream_id=STREAM_ID)
    with pytest.raises(ValueError, match="unknown event"):
        wire.parse_gateway_message('{"event":"clear","streamId":"x"}', stream_id="x")
    bad = '{"event":"playAudio","media":{"contentType":"audio/x-mulaw","sampleRate":16000,"payload":""}}'
    with pytest.raises(ValueError, match="not one Plivo plays"):
        wire.parse_gateway_message(bad, stream_id=STREAM_ID)
    assert wire.parse_answer(hangup_xml("bye")) == (None, ["Speak", "Hangup"])


async def test_a_call_over_a_loopback_socket(aiohttp_client: Any) -> None:
    """Over a real WebSocket, Plivo's messages drive the codec and its replies parse on Plivo's side."""
    events: list[Any] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        codec = PlivoCodec()
        async for msg in ws:
            event = codec.receive_media(msg.data) or codec.receive_text(msg.data)
            events.append(event)
            if isinstance(event, CallerAudio):
                await ws.send_str(codec.encode(PlayAudio(event.payload)))
                await ws.send_str(codec.encode(SetMark("echo")))
            elif isinstance(event, CallStopped):
                break
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/plivo/media", handler)
    client = await aiohttp_client(app)
    async with client.ws_connect("/plivo/media?token=t") as ws:
        await ws.send_str(wire.start(1, call_id=CALL_ID, stream_id=STREAM_ID, account_id=ACCOUNT_ID,
                                     content_type="audio/x-mulaw;rate=8000"))  # fmt: skip
        await ws.send_str(wire.media(2, stream_id=STREAM_ID, chunk=1, timestamp_ms=20, payload=ULAW))
        play = wire.parse_gateway_message(await ws.receive_str(timeout=5), stream_id=STREAM_ID)
        checkpoint = wire.parse_gateway_message(await ws.receive_str(timeout=5), stream_id=STREAM_ID)
        assert play == wire.PlayAudioMsg("audio/x-mulaw", 8000, ULAW)
        assert checkpoint == wire.CheckpointMsg("echo")
        await ws.send_str(wire.played_stream(3, stream_id=STREAM_ID, name="echo"))
        await ws.send_str(wire.stop(4, stream_id=STREAM_ID))
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert [type(e) for e in events] == [CallStarted, CallerAudio, MarkReached, CallStopped]
