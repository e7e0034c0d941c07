"""Per-model setup decisions (gateway/gemini/models.py) and the newer server fields, sans-I/O."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from gateway.errors import ConfigError, LiveSessionError
from gateway.gemini.messages import (
    FunctionDeclaration,
    FunctionResponse,
    Grounding,
    InteractionStatus,
    ModelAudio,
    ModelText,
    OutputTranscription,
    SessionConfig,
    TurnComplete,
    TurnCompleteReason,
    VadConfig,
    WaitingForInput,
    encode_activity_end,
    encode_activity_start,
    encode_tool_response,
    parse_server_message,
    setup_message,
)
from gateway.gemini.models import capabilities
from gateway.gemini.protocol import LiveProtocol

LIVE = "gemini-3.8-live"
THINKING = "gemini-3.8-live-extended-thinking"
FLASH_31 = "gemini-3.1-flash-live-preview"
NATIVE_25 = "gemini-2.5-flash-native-audio-preview-12-2025"
HALF_CASCADE = "gemini-live-2.5-flash"

TOOLS = (
    FunctionDeclaration("end_call", "Hang up"),
    FunctionDeclaration("report", "Background", non_blocking=True),
)


def _setup(model: str, **kwargs: Any) -> dict[str, Any]:
    return setup_message(SessionConfig(model=model, tools=TOOLS, **kwargs))["setup"]


def _behaviors(setup: dict[str, Any]) -> dict[str, str | None]:
    return {d["name"]: d.get("behavior") for d in setup["tools"][0]["functionDeclarations"]}


@pytest.mark.parametrize(
    ("model", "family"),
    [
        (LIVE, "3.8-live"),
        (f"models/{THINKING}", "3.8-live-extended-thinking"),
        (FLASH_31, "3.1-flash-live"),
        (NATIVE_25, "2.5-native-audio"),
        (
            "projects/p/locations/us-central1/publishers/google/models/gemini-live-2.5-flash-native-audio",
            "2.5-native-audio",
        ),
        (HALF_CASCADE, "2.5-half-cascade"),
        ("gemini-9-live-future", "3.8-live"),  # unknown: the newest generation's rules
    ],
)
def test_one_table_maps_every_id_spelling_to_its_generation(model: str, family: str) -> None:
    """Bare ids, models/ ids and Vertex resource paths all find their row."""
    assert capabilities(model).family == family


def test_blocking_tools_are_declared_blocking_on_38_live() -> None:
    """On 3.8 Live an omitted behavior means NON_BLOCKING, so end_call must say BLOCKING."""
    assert _behaviors(_setup(LIVE)) == {"end_call": "BLOCKING", "report": "NON_BLOCKING"}
    assert _behaviors(_setup(NATIVE_25)) == {"end_call": "BLOCKING", "report": "NON_BLOCKING"}


def test_extended_thinking_declares_everything_non_blocking_with_a_thinking_level() -> None:
    """BLOCKING is a hard error there; the level it needs defaults to LOW."""
    setup = _setup(THINKING)
    assert _behaviors(setup) == {"end_call": "NON_BLOCKING", "report": "NON_BLOCKING"}
    assert setup["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "LOW"}
    assert _setup(THINKING, thinking_level="HIGH")["generationConfig"]["thinkingConfig"] == {
        "thinkingLevel": "HIGH"
    }
    # MINIMAL is rejected by that model: the lowest level it takes is sent instead.
    assert _setup(THINKING, thinking_level="MINIMAL")["generationConfig"]["thinkingConfig"] == {
        "thinkingLevel": "LOW"
    }


def test_31_sends_no_behavior_field_and_thinks_only_when_asked() -> None:
    """3.1 is synchronous only and lacks the behavior field; its thinking level is the server's unless set."""
    setup = _setup(FLASH_31)
    assert _behaviors(setup) == {"end_call": None, "report": None}
    assert "thinkingConfig" not in setup["generationConfig"]
    assert _setup(FLASH_31, thinking_level="MINIMAL")["generationConfig"]["thinkingConfig"] == {
        "thinkingLevel": "MINIMAL"
    }


def test_thinking_settings_only_reach_the_models_that_take_them() -> None:
    """3.8 Live rejects any thinkingConfig; 2.5 takes a budget, never a level."""
    assert (
        "thinkingConfig" not in _setup(LIVE, thinking_level="HIGH", thinking_budget=100)["generationConfig"]
    )
    assert _setup(NATIVE_25, thinking_budget=0)["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}
    assert "thinkingConfig" not in _setup(NATIVE_25, thinking_level="LOW")["generationConfig"]


def test_language_code_only_for_the_half_cascade_model_transcription_languages_everywhere() -> None:
    """Native audio picks its own language (§2.2); every model gets the transcription hints."""
    for model in (LIVE, THINKING, FLASH_31, NATIVE_25):
        setup = _setup(model, voice="Kore", language="es-US", transcription_languages=("es-US", "en-US"))
        assert "languageCode" not in setup["generationConfig"]["speechConfig"], model
        assert setup["inputAudioTranscription"] == {"languageCodes": ["es-US", "en-US"]}
        assert setup["outputAudioTranscription"] == {"languageCodes": ["es-US", "en-US"]}
    speech = _setup(HALF_CASCADE, voice="Kore", language="es-US")["generationConfig"]["speechConfig"]
    assert speech["languageCode"] == "es-US"


def test_turn_control_and_search_land_in_the_setup() -> None:
    """activityHandling and turnCoverage sit beside automaticActivityDetection; search is its own tool."""
    setup = _setup(
        LIVE,
        vad=VadConfig(
            disabled=True, activity_handling="NO_INTERRUPTION", turn_coverage="TURN_INCLUDES_ALL_INPUT"
        ),
        google_search=True,
    )
    assert setup["realtimeInputConfig"] == {
        "automaticActivityDetection": {"disabled": True},
        "activityHandling": "NO_INTERRUPTION",
        "turnCoverage": "TURN_INCLUDES_ALL_INPUT",
    }
    assert setup["tools"][1] == {"googleSearch": {}}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"thinking_level": "EXTREME"},
        {"thinking_budget": -2},
        {"transcription_languages": ("",)},
    ],
)
def test_bad_new_settings_are_config_errors(kwargs: dict[str, Any]) -> None:
    """Unknown levels, budgets, languages and enum values fail when the config is built."""
    with pytest.raises(ConfigError):
        SessionConfig(model=LIVE, **kwargs)
    with pytest.raises(ConfigError):
        VadConfig(activity_handling="NEVER")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        VadConfig(turn_coverage="TURN_INCLUDES_EVERYTHING")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- protocol


def _ready(config: SessionConfig) -> LiveProtocol:
    proto = LiveProtocol(config)
    proto.setup()
    proto.receive(b'{"setupComplete": {}}')
    return proto


def test_activity_markers_only_in_manual_mode_and_stream_end_only_in_automatic() -> None:
    """Each realtime signal is only valid in one detection mode (§2.4): the wrong one is refused here."""
    manual = _ready(SessionConfig(model=LIVE, vad=VadConfig(disabled=True)))
    assert json.loads(manual.activity_start()) == {"realtimeInput": {"activityStart": {}}}
    assert json.loads(manual.activity_end()) == {"realtimeInput": {"activityEnd": {}}}
    assert manual.activity_start() == encode_activity_start()
    assert manual.activity_end() == encode_activity_end()
    with pytest.raises(LiveSessionError):
        manual.audio_stream_end()
    automatic = _ready(SessionConfig(model=LIVE))
    with pytest.raises(LiveSessionError):
        automatic.activity_start()
    with pytest.raises(LiveSessionError):
        automatic.activity_end()


def test_scheduling_and_will_continue_are_dropped_for_models_that_do_not_read_them() -> None:
    """3.8 Live gets them; 3.1 and extended thinking get plain answers."""
    answer = [FunctionResponse("c1", "report", {"output": 1}, scheduling="SILENT", will_continue=True)]
    item = json.loads(_ready(SessionConfig(model=LIVE)).tool_response(answer))["toolResponse"][
        "functionResponses"
    ][0]
    assert (item["scheduling"], item["willContinue"]) == ("SILENT", True)
    for model in (THINKING, FLASH_31):
        sent = json.loads(_ready(SessionConfig(model=model)).tool_response(answer))
        assert sent == {
            "toolResponse": {"functionResponses": [{"id": "c1", "name": "report", "response": {"output": 1}}]}
        }


def test_will_continue_false_is_sent_explicitly() -> None:
    """The last answer of a stream says willContinue: false; a single answer leaves it out."""
    last = json.loads(encode_tool_response([FunctionResponse("c", "t", {}, "SILENT", False)]))
    assert last["toolResponse"]["functionResponses"][0]["willContinue"] is False
    single = json.loads(encode_tool_response([FunctionResponse("c", "t", {"output": 1})]))
    assert "willContinue" not in single["toolResponse"]["functionResponses"][0]


# ------------------------------------------------------------------------------------ server side


def test_thought_parts_never_become_audio_or_text() -> None:
    """A part marked thought (text or audio) is dropped; the spoken parts beside it are kept."""
    pcm = b"\x01\x00" * 4
    msg = {
        "serverContent": {
            "modelTurn": {
                "parts": [
                    {"text": "Let me reason about refunds...", "thought": True},
                    {
                        "inlineData": {
                            "mimeType": "audio/pcm;rate=24000",
                            "data": base64.b64encode(pcm).decode(),
                        },
                        "thought": True,
                    },
                    {
                        "inlineData": {
                            "mimeType": "audio/pcm;rate=24000",
                            "data": base64.b64encode(pcm).decode(),
                        }
                    },
                    {"text": "visible"},
                ]
            },
            "outputTranscription": {"text": "Sure."},
        }
    }
    assert parse_server_message(json.dumps(msg)) == [
        ModelAudio(pcm),
        ModelText("visible"),
        OutputTranscription("Sure."),
    ]


def test_interaction_status_and_turn_reason_come_before_their_turn_complete() -> None:
    """So a consumer knows, at turnComplete, whether the interaction goes on and why the turn ended."""
    msg = {
        "serverContent": {
            "turnComplete": True,
            "interactionStatus": "IN_PROGRESS",
            "turnCompleteReason": "NEED_MORE_INPUT",
            "waitingForInput": True,
        }
    }
    assert parse_server_message(json.dumps(msg)) == [
        WaitingForInput(),
        TurnCompleteReason("NEED_MORE_INPUT"),
        InteractionStatus(in_progress=True),
        TurnComplete(),
    ]
    idle = parse_server_message('{"serverContent": {"turnComplete": true, "interactionStatus": "IDLE"}}')
    assert idle == [InteractionStatus(in_progress=False), TurnComplete()]
    deprecated = parse_server_message('{"serverContent": {"interactionStatus": "REQUIRES_ACTION"}}')
    assert deprecated == [InteractionStatus(in_progress=False)]
    unspecified = {
        "turnComplete": True,
        "interactionStatus": "INTERACTION_STATUS_UNSPECIFIED",
        "turnCompleteReason": "TURN_COMPLETE_REASON_UNSPECIFIED",
    }
    assert parse_server_message(json.dumps({"serverContent": unspecified})) == [TurnComplete()]


def test_grounding_metadata_becomes_one_event_with_queries_and_sources() -> None:
    """Search grounding: the queries and (uri, title) of each web chunk; everything else stays in raw."""
    gm = {
        "webSearchQueries": ["opening hours acme"],
        "groundingChunks": [{"web": {"uri": "https://acme.example/hours", "title": "Acme"}}, {"other": {}}],
        "searchEntryPoint": {"renderedContent": "<div/>"},
    }
    [event] = parse_server_message(json.dumps({"serverContent": {"groundingMetadata": gm}}))
    assert isinstance(event, Grounding)
    assert event.queries == ("opening hours acme",)
    assert event.sources == (("https://acme.example/hours", "Acme"),)
    assert event.raw["searchEntryPoint"] == {"renderedContent": "<div/>"}
