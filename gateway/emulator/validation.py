"""What the real Live service refuses in a ``setup``, and the per-model rules behind it.

The emulator is strict where Google is (setup fields, tools, per-model rules), so a client mistake
fails our tests instead of a production call: :func:`check_setup` raises :class:`CloseRequest` with the
close code and reason the service uses, and returns the :class:`SetupFacts` the session acts on.
Independent of ``gateway.gemini`` on purpose (its own model table), like the rest of the emulator.

Reasons: proto3 JSON parse errors use the service's wording (``Invalid JSON payload received. Unknown
name …`` for an unknown field, ``Invalid value at '…' (type.googleapis.com/…), "X"`` for a bad enum
value); documented rejections whose exact text is unknown use the generic "Request contains an invalid
argument." with 1007; "Cannot extract voices from a non-audio request." is the observed text.

Deliberately *not* rejected: ``speechConfig.languageCode`` on native-audio models. The docs only say
they "don't support explicitly setting the language code"; field reports show such sessions working
with the code ignored (livekit/livekit#4338 sends ``language="en-US"`` to
gemini-live-2.5-flash-native-audio; google/adk-python#5542 "does not constrain" the language), so the
emulator ignores it too and records it (tests can assert the client left it out).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gateway.emulator.wire import INVALID_ARGUMENT, CloseRequest

__all__ = ["NON_AUDIO_VOICES", "ModelRules", "SetupFacts", "check_setup", "model_rules"]

NON_AUDIO_VOICES = "Cannot extract voices from a non-audio request."

_PROTO = "type.googleapis.com/google.ai.generativelanguage.v1beta"

#: Every field of GenerationConfig (google-genai 3.3 ``types.GenerationConfig``), lowerCamel.
_GENERATION_FIELDS = frozenset(
    {
        "modelSelectionConfig", "responseJsonSchema", "audioTimestamp", "candidateCount",
        "enableAffectiveDialog", "frequencyPenalty", "logprobs", "maxOutputTokens", "mediaResolution",
        "presencePenalty", "responseLogprobs", "responseMimeType", "responseModalities", "responseSchema",
        "routingConfig", "seed", "speechConfig", "stopSequences", "temperature", "thinkingConfig", "topK",
        "topP", "enableEnhancedCivicAnswers", "responseFormat", "translationConfig",
        "audioTranscriptionConfig",
    }
)  # fmt: skip
#: Fields of GenerationConfig the Live API does not support (the BidiGenerateContentSetup proto comment).
_GENERATION_UNSUPPORTED = frozenset(
    {
        "responseLogprobs", "responseMimeType", "logprobs", "responseSchema", "responseJsonSchema",
        "stopSequences", "routingConfig", "audioTimestamp",
    }
)  # fmt: skip
_MODALITIES = ("MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "AUDIO")
_MEDIA_RESOLUTIONS = (
    "MEDIA_RESOLUTION_UNSPECIFIED",
    "MEDIA_RESOLUTION_LOW",
    "MEDIA_RESOLUTION_MEDIUM",
    "MEDIA_RESOLUTION_HIGH",
)
_THINKING_LEVELS = ("THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH", "XHIGH")
_START_SENSITIVITIES = ("START_SENSITIVITY_UNSPECIFIED", "START_SENSITIVITY_HIGH", "START_SENSITIVITY_LOW")
_END_SENSITIVITIES = ("END_SENSITIVITY_UNSPECIFIED", "END_SENSITIVITY_HIGH", "END_SENSITIVITY_LOW")
_ACTIVITY_HANDLINGS = ("ACTIVITY_HANDLING_UNSPECIFIED", "START_OF_ACTIVITY_INTERRUPTS", "NO_INTERRUPTION")
_TURN_COVERAGES = (
    "TURN_COVERAGE_UNSPECIFIED",
    "TURN_INCLUDES_ONLY_ACTIVITY",
    "TURN_INCLUDES_ALL_INPUT",
    "TURN_INCLUDES_AUDIO_ACTIVITY_AND_ALL_VIDEO",
)
_BEHAVIORS = ("UNSPECIFIED", "BLOCKING", "NON_BLOCKING")
#: ``FunctionResponse.scheduling`` values (checked when a toolResponse arrives).
SCHEDULINGS = ("SCHEDULING_UNSPECIFIED", "SILENT", "WHEN_IDLE", "INTERRUPT")


@dataclass(frozen=True, slots=True)
class ModelRules:
    """One model generation as the service treats it (tools, turn rules, voices)."""

    family: str
    #: What an omitted function ``behavior`` means.
    non_blocking_default: bool = False
    blocking: bool = True
    non_blocking: bool = True
    #: "none": thinkingConfig is an error; "level" / "budget": the knob it takes.
    thinking: str = "budget"
    thinking_levels: tuple[str, ...] = ()
    #: 3.8: proactive audio is always on and affective dialog is gone; both settings are errors.
    fixed_dialog: bool = False
    #: ``interactionStatus`` rides on every turnComplete (extended thinking).
    interaction_status: bool = False
    #: ``scheduling`` on a function response is read (not on extended thinking).
    scheduling: bool = True
    #: Native audio: a speechConfig needs AUDIO among the response modalities.
    native_audio: bool = True
    #: Tools other than functions and googleSearch are refused (3.8: no code execution, Maps, URLs).
    search_only: bool = False


_RULES_38 = ModelRules(
    "3.8-live", non_blocking_default=True, thinking="none", fixed_dialog=True, search_only=True
)
_RULES_38_THINKING = ModelRules(
    "3.8-live-extended-thinking",
    non_blocking_default=True,
    blocking=False,
    thinking="level",
    thinking_levels=("LOW", "MEDIUM", "HIGH"),
    fixed_dialog=True,
    interaction_status=True,
    scheduling=False,
    search_only=True,
)
_RULES_31 = ModelRules(
    "3.1-flash-live",
    non_blocking=False,
    thinking="level",
    thinking_levels=("MINIMAL", "LOW", "MEDIUM", "HIGH"),
)
_RULES_25 = ModelRules("2.5-native-audio")
_RULES_25_HALF_CASCADE = ModelRules("2.5-half-cascade", thinking="none", native_audio=False)


def model_rules(model: str) -> ModelRules:
    """The rules for ``model`` (``models/{id}`` or a Vertex resource path); unknown ids get 3.8's."""
    name = model.rsplit("/", 1)[-1]
    if "extended-thinking" in name:
        return _RULES_38_THINKING
    if name.startswith("gemini-3.1"):
        return _RULES_31
    if name == "gemini-live-2.5-flash":
        return _RULES_25_HALF_CASCADE
    if "2.5" in name:
        return _RULES_25
    return _RULES_38


@dataclass(frozen=True, slots=True)
class SetupFacts:
    """What a session needs to know from an accepted setup."""

    rules: ModelRules
    #: Declared functions: name → runs NON_BLOCKING (explicit behavior, else the model's default).
    non_blocking: dict[str, bool] = field(default_factory=dict)
    google_search: bool = False
    manual_activity: bool = False
    no_interruption: bool = False
    #: TURN_INCLUDES_ALL_INPUT: audio outside activity belongs to the next turn.
    all_input: bool = False


def _bad_enum(path: str, enum: str, value: Any) -> CloseRequest:
    shown = json.dumps(value) if isinstance(value, (str, int, float, bool)) else type(value).__name__
    return CloseRequest(1007, f"Invalid value at '{path}' ({_PROTO}.{enum}), {shown}")


def _enum(value: Any, allowed: tuple[str, ...], path: str, enum: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise _bad_enum(path, enum, value)
    return value


def _unknown(name: str, where: str) -> CloseRequest:
    return CloseRequest(
        1007, f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field."
    )


def _table(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CloseRequest(1007, f"Invalid value at '{path}': expected an object.")
    return value


def check_setup(body: dict[str, Any], model: str) -> SetupFacts:
    """Validate ``setup`` (normalised to lowerCamel) for ``model``; raise :class:`CloseRequest` as the
    service would close the socket, else return the facts the session acts on."""
    rules = model_rules(model)
    generation = _table(body.get("generationConfig"), "setup.generation_config")
    _generation(generation, rules)
    proactivity = _table(body.get("proactivity"), "setup.proactivity")
    if rules.fixed_dialog and proactivity.get("proactiveAudio") is False:
        raise CloseRequest(1007, INVALID_ARGUMENT)  # 3.8: proactive audio cannot be turned off
    for key in ("inputAudioTranscription", "outputAudioTranscription"):
        config = _table(body.get(key), f"setup.{key}")
        codes = config.get("languageCodes")
        if codes is not None and (not isinstance(codes, list) or not all(isinstance(c, str) for c in codes)):
            raise CloseRequest(1007, f"Invalid value at 'setup.{key}.language_codes': expected strings.")
    realtime = _table(body.get("realtimeInputConfig"), "setup.realtime_input_config")
    aad = _table(
        realtime.get("automaticActivityDetection"), "setup.realtime_input_config.automatic_activity_detection"
    )
    where = "setup.realtime_input_config.automatic_activity_detection"
    if "startOfSpeechSensitivity" in aad:
        _enum(
            aad["startOfSpeechSensitivity"],
            _START_SENSITIVITIES,
            f"{where}.start_of_speech_sensitivity",
            "StartSensitivity",
        )
    if "endOfSpeechSensitivity" in aad:
        _enum(
            aad["endOfSpeechSensitivity"],
            _END_SENSITIVITIES,
            f"{where}.end_of_speech_sensitivity",
            "EndSensitivity",
        )
    handling = realtime.get("activityHandling")
    if handling is not None:
        _enum(
            handling, _ACTIVITY_HANDLINGS, "setup.realtime_input_config.activity_handling", "ActivityHandling"
        )
    coverage = realtime.get("turnCoverage")
    if coverage is not None:
        _enum(coverage, _TURN_COVERAGES, "setup.realtime_input_config.turn_coverage", "TurnCoverage")
    non_blocking, search = _tools(body.get("tools"), rules)
    return SetupFacts(
        rules=rules,
        non_blocking=non_blocking,
        google_search=search,
        manual_activity=aad.get("disabled") is True,
        no_interruption=handling == "NO_INTERRUPTION",
        all_input=coverage == "TURN_INCLUDES_ALL_INPUT",
    )


def _generation(generation: dict[str, Any], rules: ModelRules) -> None:
    for key in generation:
        if key not in _GENERATION_FIELDS:
            raise _unknown(key, "setup.generation_config")
        if key in _GENERATION_UNSUPPORTED:
            raise CloseRequest(1007, INVALID_ARGUMENT)
    modalities = generation.get("responseModalities", [])
    if not isinstance(modalities, list):
        raise _bad_enum(
            "setup.generation_config.response_modalities", "GenerationConfig.Modality", modalities
        )
    for index, modality in enumerate(modalities):
        _enum(
            modality,
            _MODALITIES,
            f"setup.generation_config.response_modalities[{index}]",
            "GenerationConfig.Modality",
        )
    if "mediaResolution" in generation:
        _enum(
            generation["mediaResolution"],
            _MEDIA_RESOLUTIONS,
            "setup.generation_config.media_resolution",
            "MediaResolution",
        )
    # Native-audio models reject a voice for a request that does not ask for audio (mastra #17019).
    if "speechConfig" in generation and rules.native_audio and "AUDIO" not in modalities:
        raise CloseRequest(1007, NON_AUDIO_VOICES)
    if rules.fixed_dialog and "enableAffectiveDialog" in generation:
        raise CloseRequest(1007, INVALID_ARGUMENT)  # removed on 3.8: sending it fails
    thinking = _table(generation.get("thinkingConfig"), "setup.generation_config.thinking_config")
    if "thinkingConfig" not in generation:
        return
    if rules.thinking == "none":
        raise CloseRequest(1007, INVALID_ARGUMENT)  # 3.8 Live: thinkingConfig must be omitted
    level = thinking.get("thinkingLevel")
    if level is not None:
        path = "setup.generation_config.thinking_config.thinking_level"
        # Case-insensitive: Google's own examples spell it "low", the SDK sends "LOW".
        name = _enum(
            level.upper() if isinstance(level, str) else level, _THINKING_LEVELS, path, "ThinkingLevel"
        )
        if rules.thinking != "level" or name not in rules.thinking_levels:
            raise CloseRequest(1007, INVALID_ARGUMENT)
    budget = thinking.get("thinkingBudget")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise CloseRequest(
                1007,
                "Invalid value at 'setup.generation_config.thinking_config.thinking_budget' (TYPE_INT32)",
            )
        if rules.thinking != "budget":
            raise CloseRequest(1007, INVALID_ARGUMENT)


def _tools(tools: Any, rules: ModelRules) -> tuple[dict[str, bool], bool]:
    if tools is None:
        return {}, False
    if not isinstance(tools, list):
        raise CloseRequest(1007, "Invalid value at 'setup.tools': expected a list.")
    declared: dict[str, bool] = {}
    search = False
    for t_index, tool in enumerate(tools):
        tool = _table(tool, f"setup.tools[{t_index}]")
        for kind in tool:
            if kind == "googleSearch":
                search = True
            elif kind != "functionDeclarations" and rules.search_only:
                raise CloseRequest(1007, INVALID_ARGUMENT)  # 3.8: no code execution, Maps, URL context
        decls = tool.get("functionDeclarations", [])
        if not isinstance(decls, list):
            raise CloseRequest(1007, f"Invalid value at 'setup.tools[{t_index}].function_declarations'")
        for d_index, decl in enumerate(decls):
            decl = _table(decl, f"setup.tools[{t_index}].function_declarations[{d_index}]")
            name = decl.get("name")
            if not isinstance(name, str) or not name:
                raise CloseRequest(1007, INVALID_ARGUMENT)
            behavior = decl.get("behavior", "UNSPECIFIED")
            path = f"setup.tools[{t_index}].function_declarations[{d_index}].behavior"
            _enum(behavior, _BEHAVIORS, path, "FunctionDeclaration.Behavior")
            if behavior == "UNSPECIFIED":
                non_blocking = rules.non_blocking_default
            else:
                non_blocking = behavior == "NON_BLOCKING"
            if (non_blocking and not rules.non_blocking) or (not non_blocking and not rules.blocking):
                raise CloseRequest(
                    1007, INVALID_ARGUMENT
                )  # 3.1: synchronous only; extended thinking: async only
            declared[name] = non_blocking
    return declared, search
