"""The emulator's own wire-format helpers (pure functions)."""

from __future__ import annotations

import base64

import pytest

from gateway.emulator.wire import (
    CloseRequest,
    b64decode,
    duration,
    normalise,
    parse_client_message,
    pcm_rate,
    truncate_reason,
)


def test_normalise_rewrites_snake_case_but_not_user_data() -> None:
    """snake_case keys become lowerCamel at every level, except inside args/response payloads."""
    doc = {
        "tool_response": {
            "function_responses": [{"id": "1", "will_continue": False, "response": {"user_key": 1}}]
        }
    }
    assert normalise(doc) == {
        "toolResponse": {
            "functionResponses": [{"id": "1", "willContinue": False, "response": {"user_key": 1}}]
        }
    }


@pytest.mark.parametrize("encoder", [base64.b64encode, base64.urlsafe_b64encode])
@pytest.mark.parametrize("strip_padding", [False, True])
def test_b64decode_accepts_both_flavours_with_or_without_padding(encoder, strip_padding) -> None:
    """Standard and URL-safe base64 decode identically, padded or not."""
    payload = bytes(range(256)) * 3 + b"\xfb\xff"
    text = encoder(payload).decode()
    if strip_padding:
        text = text.rstrip("=")
    assert b64decode(text) == payload


def test_b64decode_rejects_garbage_with_1007() -> None:
    """Undecodable base64 is an invalid argument (1007)."""
    with pytest.raises(CloseRequest) as info:
        b64decode("not base64!!")
    assert info.value.code == 1007


def test_duration_is_proto3_json() -> None:
    """Durations print as proto3 JSON: whole seconds bare, fractions with 3/6/9 digits."""
    assert duration(50) == "50s"
    assert duration(5.5) == "5.500s"
    assert duration(0.000001) == "0.000001s"


def test_truncate_reason_never_splits_a_character() -> None:
    """Reasons are cut to 123 UTF-8 bytes on a character boundary."""
    reason = "é" * 100  # 200 bytes
    cut = truncate_reason(reason)
    assert len(cut.encode()) <= 123
    assert cut == "é" * 61
    assert truncate_reason("short") == "short"


@pytest.mark.parametrize(
    "raw",
    ['{"setup": {}, "clientContent": {}}', '{"config": {}}', "[1]", "{not json", '{"setup": 3}'],
)
def test_parse_client_message_rejects_invalid_envelopes(raw: str) -> None:
    """Several one-of members, unknown members, non-objects and bad JSON close with 1007."""
    with pytest.raises(CloseRequest) as info:
        parse_client_message(raw)
    assert info.value.code == 1007


def test_parse_client_message_accepts_snake_case_top_level() -> None:
    """The SDK's ``realtime_input`` spelling parses as ``realtimeInput``."""
    kind, body, _ = parse_client_message(b'{"realtime_input": {"audio_stream_end": true}}')
    assert kind == "realtimeInput"
    assert body == {"audioStreamEnd": True}


def test_pcm_rate_reads_the_mime_type() -> None:
    """The rate comes from ``;rate=``; raw PCM without it is 16 kHz; other formats are not PCM."""
    assert pcm_rate("audio/pcm;rate=8000") == 8000
    assert pcm_rate("audio/pcm") == 16000
    assert pcm_rate("audio/ogg") is None
