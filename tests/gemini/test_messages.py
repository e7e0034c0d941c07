"""Live API wire messages: golden client messages, every server message type, and a parser fuzz."""

from __future__ import annotations

import base64
import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from gateway.errors import AudioError, ConfigError, LiveProtocolError, ToolError
from gateway.gemini.messages import (
    LOCAL_CALL_ID_PREFIX,
    FunctionCall,
    FunctionDeclaration,
    FunctionResponse,
    GenerationComplete,
    GoAway,
    InputTranscription,
    Interrupted,
    ModelAudio,
    ModelText,
    OutputTranscription,
    SessionConfig,
    SessionResumptionUpdate,
    SetupComplete,
    ToolCall,
    ToolCallCancellation,
    TurnComplete,
    UsageMetadata,
    VadConfig,
    VoiceActivity,
    encode_audio_stream_end,
    encode_client_content,
    encode_realtime_audio,
    encode_realtime_text,
    encode_tool_response,
    parse_server_message,
    setup_message,
)

# ------------------------------------------------------------------------------------------ setup


def test_minimal_setup_matches_the_documented_example() -> None:
    """A voice + instruction config yields the §2.2 example plus our explicit defaults."""
    cfg = SessionConfig(
        model="gemini-3.8-live",
        voice="Kore",
        system_instruction="You are a phone agent.",
        compression=False,
        resumption=False,
    )
    assert setup_message(cfg) == {
        "setup": {
            "model": "models/gemini-3.8-live",
            "generationConfig": {
                "responseModalities": ["AUDIO"],
                "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}}},
            },
            "systemInstruction": {"parts": [{"text": "You are a phone agent."}]},
            "realtimeInputConfig": {"automaticActivityDetection": {"disabled": False}},
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
        }
    }


def test_full_setup_has_every_field_in_canonical_spelling() -> None:
    """Tools, VAD, resumption handle, compression, language and temperature all land where §2.2 says.

    On a native-audio model the language goes to the transcriptions only (it takes no languageCode).
    """
    params = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    cfg = SessionConfig(
        model="gemini-2.5-flash-native-audio-preview-12-2025",
        voice="Puck",
        language="en-US",
        system_instruction="Be brief.",
        tools=(
            FunctionDeclaration("weather", "Current weather", params),
            FunctionDeclaration("log_note", "Log a note", non_blocking=True),
        ),
        vad=VadConfig(
            start_sensitivity="LOW",
            end_sensitivity="HIGH",
            prefix_padding_ms=20,
            silence_duration_ms=600,
            activity_handling="NO_INTERRUPTION",
            turn_coverage="TURN_INCLUDES_ONLY_ACTIVITY",
        ),
        resumption_handle="h-123",
        compression_trigger_tokens=25000,
        compression_target_tokens=8000,
        temperature=0.7,
        transcription_languages=("en-US",),
        thinking_budget=0,
        google_search=True,
    )
    setup = setup_message(cfg)["setup"]
    assert setup["model"] == "models/gemini-2.5-flash-native-audio-preview-12-2025"
    assert setup["generationConfig"] == {
        "responseModalities": ["AUDIO"],
        "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Puck"}}},
        "temperature": 0.7,
        "thinkingConfig": {"thinkingBudget": 0},
    }
    assert setup["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "weather",
                    "description": "Current weather",
                    "parameters": params,
                    "behavior": "BLOCKING",
                },
                {"name": "log_note", "description": "Log a note", "behavior": "NON_BLOCKING"},
            ]
        },
        {"googleSearch": {}},
    ]
    assert setup["realtimeInputConfig"] == {
        "automaticActivityDetection": {
            "disabled": False,
            "startOfSpeechSensitivity": "START_SENSITIVITY_LOW",
            "endOfSpeechSensitivity": "END_SENSITIVITY_HIGH",
            "prefixPaddingMs": 20,
            "silenceDurationMs": 600,
        },
        "activityHandling": "NO_INTERRUPTION",
        "turnCoverage": "TURN_INCLUDES_ONLY_ACTIVITY",
    }
    assert setup["sessionResumption"] == {"handle": "h-123"}
    assert setup["contextWindowCompression"] == {
        "slidingWindow": {"targetTokens": 8000},
        "triggerTokens": 25000,
    }
    assert setup["inputAudioTranscription"] == {"languageCodes": ["en-US"]}
    assert setup["outputAudioTranscription"] == {"languageCodes": ["en-US"]}
    json.dumps(setup, allow_nan=False)  # the whole thing is plain JSON


def test_setup_defaults_enable_resumption_and_compression() -> None:
    """By default resumption is on without a handle and compression is a bare sliding window."""
    setup = setup_message(SessionConfig(model="gemini-3.8-live"))["setup"]
    assert setup["sessionResumption"] == {}
    assert setup["contextWindowCompression"] == {"slidingWindow": {}}
    assert "speechConfig" not in setup["generationConfig"]
    assert "tools" not in setup
    assert "systemInstruction" not in setup


def test_disabled_vad_sends_only_the_disabled_flag() -> None:
    """With manual activity detection the sensitivities are irrelevant and are left out."""
    cfg = SessionConfig(model="m", vad=VadConfig(disabled=True, start_sensitivity="HIGH"))
    assert setup_message(cfg)["setup"]["realtimeInputConfig"] == {
        "automaticActivityDetection": {"disabled": True}
    }


def test_full_resource_model_path_is_used_verbatim() -> None:
    """A model given as a resource path (Vertex style) is not prefixed again."""
    assert setup_message(SessionConfig(model="models/x"))["setup"]["model"] == "models/x"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model": ""},
        {"model": " gemini "},
        {"model": "m", "compression_trigger_tokens": 0},
        {"model": "m", "compression_trigger_tokens": 100, "compression_target_tokens": 100},
        {"model": "m", "temperature": 3.0},
        {"model": "m", "tools": (FunctionDeclaration("a", "x"), FunctionDeclaration("a", "y"))},
    ],
)
def test_bad_session_config_is_a_config_error(kwargs: dict[str, object]) -> None:
    """Invalid settings fail when the config is built, not as a 1007 from Google mid-call."""
    with pytest.raises(ConfigError):
        SessionConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs", [{"start_sensitivity": "MEDIUM"}, {"silence_duration_ms": -1}, {"prefix_padding_ms": -5}]
)
def test_bad_vad_config_is_a_config_error(kwargs: dict[str, object]) -> None:
    """Unknown sensitivities and negative durations are rejected."""
    with pytest.raises(ConfigError):
        VadConfig(**kwargs)  # type: ignore[arg-type]


def test_empty_function_name_is_a_config_error() -> None:
    """A tool must have a name the model can call."""
    with pytest.raises(ConfigError):
        FunctionDeclaration("", "nothing")


# ------------------------------------------------------------------------------------ client msgs


def test_realtime_audio_is_the_documented_blob_with_standard_base64() -> None:
    """Audio goes as realtimeInput.audio with mimeType audio/pcm;rate=16000 and standard base64 (§4)."""
    pcm = bytes(range(256)) * 5  # includes bytes that base64 to '+' and '/'
    text = encode_realtime_audio(pcm)
    msg = json.loads(text)
    assert msg == {
        "realtimeInput": {
            "audio": {"mimeType": "audio/pcm;rate=16000", "data": base64.b64encode(pcm).decode()}
        }
    }
    assert "\n" not in text


def test_realtime_audio_declares_other_rates() -> None:
    """8 kHz (telephony without resampling) and arbitrary rates are declared in the mimeType."""
    assert (
        json.loads(encode_realtime_audio(b"\0\0", 8000))["realtimeInput"]["audio"]["mimeType"]
        == "audio/pcm;rate=8000"
    )
    assert (
        json.loads(encode_realtime_audio(b"\0\0", 22050))["realtimeInput"]["audio"]["mimeType"]
        == "audio/pcm;rate=22050"
    )


def test_realtime_audio_rejects_odd_byte_counts_and_silly_rates() -> None:
    """Half a sample or an out-of-range rate is an AudioError, not a corrupt stream."""
    with pytest.raises(AudioError):
        encode_realtime_audio(b"\0\0\0")
    with pytest.raises(AudioError):
        encode_realtime_audio(b"\0\0", 100)


def test_empty_audio_encodes_an_empty_blob() -> None:
    """A zero-length chunk still produces valid JSON."""
    assert json.loads(encode_realtime_audio(b""))["realtimeInput"]["audio"]["data"] == ""


def test_realtime_text_and_stream_end() -> None:
    """realtimeInput.text escapes properly and audioStreamEnd is the documented constant."""
    assert json.loads(encode_realtime_text('say "hi"\n é')) == {"realtimeInput": {"text": 'say "hi"\n é'}}
    assert json.loads(encode_audio_stream_end()) == {"realtimeInput": {"audioStreamEnd": True}}


def test_client_content_matches_the_documented_example() -> None:
    """clientContent carries role/parts turns and turnComplete (§2.3)."""
    assert json.loads(encode_client_content([("user", "Hi")])) == {
        "clientContent": {"turns": [{"role": "user", "parts": [{"text": "Hi"}]}], "turnComplete": True}
    }
    seeded = json.loads(encode_client_content([("user", "a"), ("model", "b")], turn_complete=False))
    assert seeded == {
        "clientContent": {
            "turns": [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]}]
        }
    }


def test_client_content_rejects_unknown_roles() -> None:
    """Only user and model turns exist in Live history."""
    with pytest.raises(ConfigError, match="role"):
        encode_client_content([("system", "x")])


def test_tool_response_matches_the_documented_example() -> None:
    """toolResponse echoes id and name, with scheduling only when given (§2.5)."""
    text = encode_tool_response(
        [
            FunctionResponse("function-call-123", "lookup", {"result": "ok"}, scheduling="WHEN_IDLE"),
            FunctionResponse("c2", "other", {"error": "nope"}),
        ]
    )
    assert json.loads(text) == {
        "toolResponse": {
            "functionResponses": [
                {
                    "id": "function-call-123",
                    "name": "lookup",
                    "response": {"result": "ok"},
                    "scheduling": "WHEN_IDLE",
                },
                {"id": "c2", "name": "other", "response": {"error": "nope"}},
            ]
        }
    }


@pytest.mark.parametrize("bad", [{"when": object()}, {"x": math.nan}])
def test_unserialisable_tool_response_is_a_tool_error(bad: dict[str, object]) -> None:
    """A handler returning non-JSON data gets a ToolError naming the tool, not a TypeError."""
    with pytest.raises(ToolError, match="lookup"):
        encode_tool_response([FunctionResponse("1", "lookup", bad)])


def test_unknown_scheduling_is_a_tool_error() -> None:
    """Scheduling values outside the enum are refused before they reach the server."""
    with pytest.raises(ToolError):
        encode_tool_response([FunctionResponse("1", "f", {}, scheduling="SOON")])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ server msgs


def _audio_part(pcm: bytes, mime: str = "audio/pcm;rate=24000") -> dict[str, object]:
    return {"inlineData": {"mimeType": mime, "data": base64.b64encode(pcm).decode()}}


def test_setup_complete_from_a_binary_frame() -> None:
    """The real server sends binary frames; bytes parse like text."""
    assert parse_server_message(b'{"setupComplete": {}}') == [SetupComplete()]
    assert parse_server_message('{"setupComplete": {}}') == [SetupComplete()]


def test_model_audio_is_decoded_with_its_rate() -> None:
    """inlineData audio becomes ModelAudio with PCM bytes and the rate from the mimeType."""
    pcm = bytes(range(200))
    msg = {"serverContent": {"modelTurn": {"parts": [_audio_part(pcm), _audio_part(b"\1\2", "audio/pcm")]}}}
    assert parse_server_message(json.dumps(msg)) == [ModelAudio(pcm, 24000), ModelAudio(b"\1\2", 24000)]


def test_url_safe_and_unpadded_audio_base64_are_accepted() -> None:
    """Both base64 flavours, with or without padding, decode to the same PCM."""
    pcm = bytes([0xFB, 0xFF, 0xBF, 0x3E, 0x00, 0x01])
    for data in (base64.urlsafe_b64encode(pcm).decode(), base64.b64encode(pcm).decode().rstrip("=")):
        msg = {
            "serverContent": {
                "modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm", "data": data}}]}
            }
        }
        assert parse_server_message(json.dumps(msg)) == [ModelAudio(pcm, 24000)]


def test_bad_audio_payloads_are_protocol_errors() -> None:
    """Invalid base64, odd PCM byte counts and silly rates raise LiveProtocolError."""
    for part in (
        {"inlineData": {"mimeType": "audio/pcm", "data": "!!!!"}},
        _audio_part(b"\0\0\0"),
        _audio_part(b"\0\0", "audio/pcm;rate=abc"),
    ):
        with pytest.raises(LiveProtocolError):
            parse_server_message(json.dumps({"serverContent": {"modelTurn": {"parts": [part]}}}))


def test_text_parts_skip_thoughts_and_non_audio_blobs() -> None:
    """Text parts become ModelText; thought summaries and images are not spoken."""
    msg = {
        "serverContent": {
            "modelTurn": {
                "parts": [
                    {"text": "thinking...", "thought": True},
                    {"text": "Hello"},
                    {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                ]
            }
        }
    }
    assert parse_server_message(json.dumps(msg)) == [ModelText("Hello")]


def test_multi_event_message_comes_out_in_protocol_order() -> None:
    """Input transcript, audio, output transcript, then the turn flags, then usage."""
    msg = {
        "usageMetadata": {"promptTokenCount": 10, "responseTokenCount": 5, "totalTokenCount": 15},
        "serverContent": {
            "turnComplete": True,
            "generationComplete": True,
            "outputTranscription": {"text": " there"},
            "modelTurn": {"parts": [_audio_part(b"\1\0")]},
            "inputTranscription": {"text": " hi"},
        },
    }
    events = parse_server_message(json.dumps(msg))
    assert events == [
        InputTranscription(" hi"),
        ModelAudio(b"\1\0", 24000),
        OutputTranscription(" there"),
        GenerationComplete(),
        TurnComplete(),
        UsageMetadata(10, 5, 15, msg["usageMetadata"]),  # type: ignore[arg-type]
    ]


def test_interrupted_then_turn_complete() -> None:
    """A barge-in message yields Interrupted before TurnComplete, with no GenerationComplete."""
    events = parse_server_message('{"serverContent": {"interrupted": true, "turnComplete": true}}')
    assert events == [Interrupted(), TurnComplete()]


def test_false_flags_and_empty_transcriptions_yield_nothing() -> None:
    """Explicit false flags and empty text chunks are no-ops (proto3 would omit them anyway)."""
    msg = {"serverContent": {"interrupted": False, "turnComplete": False, "outputTranscription": {}}}
    assert parse_server_message(json.dumps(msg)) == []


def test_tool_call_with_several_calls() -> None:
    """functionCalls become FunctionCalls; missing args mean {}, a missing id (Vertex) a local one."""
    msg = {
        "toolCall": {
            "functionCalls": [
                {"id": "c1", "name": "weather", "args": {"city": "Paris"}},
                {"name": "hangup"},
            ]
        }
    }
    [event] = parse_server_message(json.dumps(msg))
    assert isinstance(event, ToolCall)
    first, second = event.calls
    assert first == FunctionCall("c1", "weather", {"city": "Paris"})
    assert (second.name, second.args) == ("hangup", {})
    assert second.id.startswith(LOCAL_CALL_ID_PREFIX)


def test_tool_call_cancellation() -> None:
    """toolCallCancellation lists ids."""
    assert parse_server_message('{"toolCallCancellation": {"ids": ["a", "b"]}}') == [
        ToolCallCancellation(("a", "b"))
    ]


@pytest.mark.parametrize(("left", "seconds"), [('"50s"', 50.0), ('"5.5s"', 5.5), ("12", 12.0), ('"0s"', 0.0)])
def test_go_away_durations(left: str, seconds: float) -> None:
    """goAway.timeLeft is a proto3 Duration string (or a bare number)."""
    assert parse_server_message(f'{{"goAway": {{"timeLeft": {left}}}}}') == [GoAway(seconds)]


def test_go_away_without_time_left() -> None:
    """proto3 omits a zero Duration."""
    assert parse_server_message('{"goAway": {}}') == [GoAway(0.0)]


@pytest.mark.parametrize("left", ['"soon"', '"-1s"', "true", '"nans"', "[1]"])
def test_bad_go_away_durations_are_protocol_errors(left: str) -> None:
    """Unparseable or negative durations are LiveProtocolError."""
    with pytest.raises(LiveProtocolError):
        parse_server_message(f'{{"goAway": {{"timeLeft": {left}}}}}')


def test_session_resumption_updates() -> None:
    """Resumable updates carry a handle; proto3 sends a non-resumable one as an empty object."""
    assert parse_server_message('{"sessionResumptionUpdate": {"newHandle": "h1", "resumable": true}}') == [
        SessionResumptionUpdate("h1", True)
    ]
    assert parse_server_message('{"sessionResumptionUpdate": {}}') == [SessionResumptionUpdate(None, False)]


def test_usage_metadata_accepts_string_ints_and_vertex_names() -> None:
    """int64 counts may be strings; Vertex says candidatesTokenCount."""
    events = parse_server_message('{"usageMetadata": {"promptTokenCount": "7", "candidatesTokenCount": 3}}')
    assert events == [UsageMetadata(7, 3, 0, {"promptTokenCount": "7", "candidatesTokenCount": 3})]


def test_voice_activity_signals() -> None:
    """voiceActivity and voiceActivityDetectionSignal map to VoiceActivity start/end."""
    assert parse_server_message('{"voiceActivity": {"type": "ACTIVITY_START"}}') == [VoiceActivity(True)]
    assert parse_server_message('{"voiceActivity": {"type": "ACTIVITY_END"}}') == [VoiceActivity(False)]
    assert parse_server_message(
        '{"voiceActivityDetectionSignal": {"vadSignalType": "VAD_SIGNAL_TYPE_EOS"}}'
    ) == [VoiceActivity(False)]


def test_unknown_fields_and_messages_are_tolerated() -> None:
    """A future message type yields nothing; unknown fields beside known ones are ignored."""
    assert parse_server_message('{"futureThing": {"x": 1}}') == []
    assert parse_server_message("{}") == []
    msg = {"serverContent": {"turnComplete": True, "futureFlag": True}, "x": 1}
    assert parse_server_message(json.dumps(msg)) == [TurnComplete()]


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe\x00garbage",
        b"not json",
        "",
        "[1, 2]",
        '"setupComplete"',
        '{"serverContent": []}',
        '{"serverContent": {"modelTurn": {"parts": {}}}}',
        '{"serverContent": {"modelTurn": {"parts": [1]}}}',
        '{"serverContent": {"outputTranscription": {"text": 5}}}',
        '{"toolCall": {"functionCalls": [{"id": "1"}]}}',
        '{"toolCall": {"functionCalls": [{"name": "f", "args": []}]}}',
        '{"toolCallCancellation": {"ids": "a"}}',
        '{"usageMetadata": {"totalTokenCount": "many"}}',
        '{"usageMetadata": {"totalTokenCount": true}}',
        '{"sessionResumptionUpdate": {"newHandle": 5, "resumable": true}}',
        "[" * 100_000,
    ],
)
def test_malformed_messages_are_protocol_errors(data: str | bytes) -> None:
    """Invalid UTF-8/JSON, non-objects and known fields of the wrong shape raise LiveProtocolError."""
    with pytest.raises(LiveProtocolError):
        parse_server_message(data)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_known = st.sampled_from(
    [
        "setupComplete",
        "serverContent",
        "toolCall",
        "toolCallCancellation",
        "goAway",
        "sessionResumptionUpdate",
        "usageMetadata",
        "voiceActivity",
        "voiceActivityDetectionSignal",
    ]
)
_inner_keys = st.sampled_from(
    [
        "modelTurn",
        "parts",
        "inlineData",
        "mimeType",
        "data",
        "text",
        "thought",
        "inputTranscription",
        "outputTranscription",
        "interrupted",
        "turnComplete",
        "generationComplete",
        "functionCalls",
        "id",
        "name",
        "args",
        "ids",
        "timeLeft",
        "newHandle",
        "resumable",
        "promptTokenCount",
        "type",
    ]
)
_shaped = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12) | st.just("audio/pcm;rate=24000"),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_inner_keys, children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes_parse_or_raise_live_protocol_error(data: bytes) -> None:
    """Any bytes either parse to a list of events or raise LiveProtocolError, never anything else."""
    try:
        assert isinstance(parse_server_message(data), list)
    except LiveProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_fuzz_arbitrary_json_parse_or_raise_live_protocol_error(value: object) -> None:
    """Any JSON document either parses or raises LiveProtocolError."""
    try:
        assert isinstance(parse_server_message(json.dumps(value)), list)
    except LiveProtocolError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_known, _shaped, min_size=1, max_size=3))
def test_fuzz_protocol_shaped_json_parse_or_raise_live_protocol_error(value: dict[str, object]) -> None:
    """Messages built from real key names but random shapes either parse or raise LiveProtocolError."""
    try:
        assert isinstance(parse_server_message(json.dumps(value).encode()), list)
    except LiveProtocolError:
        pass
