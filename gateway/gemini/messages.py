"""Gemini Live (BidiGenerateContent) wire messages: typed config and events in, JSON text out, and back.

Sans-I/O: this module turns a :class:`SessionConfig` into the ``setup`` message, encodes every client
message we send, and parses server frames into small frozen event objects. It never touches a socket.

Rules it follows (see docs/gemini-live.md):

* client messages are lowerCamel JSON with exactly one top-level key (§2.1);
* server messages may be binary or text frames of UTF-8 JSON; unknown keys and unknown message types are
  ignored so a newer server does not break an older gateway (§3.1);
* one server message can carry several things (audio, transcriptions, ``turnComplete`` and
  ``usageMetadata``); they come out as several events in protocol order (§3.3, §3.9).

:func:`encode_realtime_audio` is on the hot path (50 calls/s per phone call), so it fills a pre-split
JSON template instead of building and dumping a dict.
"""

from __future__ import annotations

import binascii
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from gateway.errors import AudioError, ConfigError, LiveProtocolError, ToolError
from gateway.gemini.models import THINKING_LEVELS, ThinkingLevel, capabilities
from gateway.jsonfast import loads

__all__ = [
    "LOCAL_CALL_ID_PREFIX",
    "FunctionCall",
    "FunctionDeclaration",
    "FunctionResponse",
    "GenerationComplete",
    "GoAway",
    "Grounding",
    "InputTranscription",
    "InteractionStatus",
    "Interrupted",
    "ModelAudio",
    "ModelText",
    "OutputTranscription",
    "ServerEvent",
    "SessionConfig",
    "SessionResumptionUpdate",
    "SetupComplete",
    "ToolCall",
    "ToolCallCancellation",
    "TurnComplete",
    "TurnCompleteReason",
    "UsageMetadata",
    "VadConfig",
    "VoiceActivity",
    "WaitingForInput",
    "encode_activity_end",
    "encode_activity_start",
    "encode_audio_stream_end",
    "encode_client_content",
    "encode_realtime_audio",
    "encode_realtime_text",
    "encode_tool_response",
    "parse_server_message",
    "setup_message",
]

Sensitivity = Literal["HIGH", "LOW"]
Scheduling = Literal["INTERRUPT", "WHEN_IDLE", "SILENT"]
ActivityHandling = Literal["START_OF_ACTIVITY_INTERRUPTS", "NO_INTERRUPTION"]
TurnCoverage = Literal[
    "TURN_INCLUDES_ONLY_ACTIVITY", "TURN_INCLUDES_ALL_INPUT", "TURN_INCLUDES_AUDIO_ACTIVITY_AND_ALL_VIDEO"
]

#: Model output is always 24 kHz PCM16 (§4); used when a part's mimeType omits ``;rate=``.
MODEL_AUDIO_RATE = 24000

_SENSITIVITIES = ("HIGH", "LOW")
_ACTIVITY_HANDLINGS = ("START_OF_ACTIVITY_INTERRUPTS", "NO_INTERRUPTION")
_TURN_COVERAGES = (
    "TURN_INCLUDES_ONLY_ACTIVITY",
    "TURN_INCLUDES_ALL_INPUT",
    "TURN_INCLUDES_AUDIO_ACTIVITY_AND_ALL_VIDEO",
)
_SCHEDULINGS = ("INTERRUPT", "WHEN_IDLE", "SILENT")
_ROLES = ("user", "model")


# --------------------------------------------------------------------------------------------------
# Configuration (client side)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FunctionDeclaration:
    """A tool the model may call. ``parameters`` is the OpenAPI-subset schema Gemini accepts (§6)."""

    name: str
    description: str
    parameters: Mapping[str, Any] | None = None
    non_blocking: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("function declaration: name must not be empty")


@dataclass(frozen=True, slots=True)
class VadConfig:
    """``realtimeInputConfig``: server-side voice activity detection and turn control.

    Sensitivities are sent explicitly because the server defaults are contested across sources (§2.2).
    With ``disabled`` the client marks turns itself (``activityStart``/``activityEnd``) and the
    detection settings are not sent; ``activity_handling`` and ``turn_coverage`` apply either way
    (``None`` leaves the model's default: barge-in, and the coverage of its generation).
    """

    disabled: bool = False
    start_sensitivity: Sensitivity | None = None
    end_sensitivity: Sensitivity | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    activity_handling: ActivityHandling | None = None
    turn_coverage: TurnCoverage | None = None

    def __post_init__(self) -> None:
        for name in ("start_sensitivity", "end_sensitivity"):
            value = getattr(self, name)
            if value is not None and value not in _SENSITIVITIES:
                raise ConfigError(f"vad: {name} must be HIGH or LOW, not {value!r}")
        if self.activity_handling is not None and self.activity_handling not in _ACTIVITY_HANDLINGS:
            raise ConfigError(f"vad: unknown activity_handling {self.activity_handling!r}")
        if self.turn_coverage is not None and self.turn_coverage not in _TURN_COVERAGES:
            raise ConfigError(f"vad: unknown turn_coverage {self.turn_coverage!r}")
        for name in ("prefix_padding_ms", "silence_duration_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"vad: {name} must be >= 0, not {value}")


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Everything fixed for the life of one Live connection (the ``setup`` message, §2.2)."""

    model: str
    voice: str | None = None
    language: str | None = None
    system_instruction: str | None = None
    tools: tuple[FunctionDeclaration, ...] = ()
    vad: VadConfig = VadConfig()
    input_transcription: bool = True
    output_transcription: bool = True
    resumption: bool = True
    resumption_handle: str | None = None
    compression: bool = True
    compression_trigger_tokens: int | None = None
    compression_target_tokens: int | None = None
    temperature: float | None = None
    #: Sample rate of the caller audio sent (``audio/pcm;rate=N``): 16 kHz is the model's native rate;
    #: 8 kHz sends telephone audio as it is and lets the service resample it (§4).
    input_rate: int = 16000
    #: BCP-47 hints for both transcriptions (``languageCodes``), so transcripts come in the caller's
    #: language rather than whatever auto-detection guesses from a few words of phone audio.
    transcription_languages: tuple[str, ...] = ()
    #: ``thinkingLevel`` for models that take one (3.1, extended thinking); ignored by the others.
    thinking_level: ThinkingLevel | None = None
    #: ``thinkingBudget`` in tokens for 2.5 native audio (0 turns thinking off); ignored by the others.
    thinking_budget: int | None = None
    #: Declare the ``googleSearch`` tool (search grounding, answered by Google, not by the gateway).
    google_search: bool = False

    def __post_init__(self) -> None:
        if not self.model or self.model.strip() != self.model:
            raise ConfigError(f"session config: model must be a non-empty id, not {self.model!r}")
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise ConfigError(f"session config: duplicate tool names in {names}")
        trigger, target = self.compression_trigger_tokens, self.compression_target_tokens
        if trigger is not None and trigger <= 0:
            raise ConfigError("session config: compression_trigger_tokens must be > 0")
        if target is not None and target <= 0:
            raise ConfigError("session config: compression_target_tokens must be > 0")
        if trigger is not None and target is not None and target >= trigger:
            raise ConfigError("session config: compression_target_tokens must be below the trigger")
        if self.temperature is not None and not 0.0 <= self.temperature <= 2.0:
            raise ConfigError(f"session config: temperature must be in [0, 2], not {self.temperature}")
        if not 8000 <= self.input_rate <= 48000:
            raise ConfigError(f"session config: input_rate must be in [8000, 48000], not {self.input_rate}")
        if self.thinking_level is not None and self.thinking_level not in THINKING_LEVELS:
            raise ConfigError(f"session config: unknown thinking_level {self.thinking_level!r}")
        if self.thinking_budget is not None and not -1 <= self.thinking_budget <= 32768:
            raise ConfigError(
                f"session config: thinking_budget must be in [-1, 32768], not {self.thinking_budget}"
            )
        for code in self.transcription_languages:
            if not code or code.strip() != code:
                raise ConfigError(f"session config: bad transcription language {code!r}")


def _model_path(model: str) -> str:
    # Gemini API ids need the "models/" prefix; a full resource path (Vertex) is used verbatim.
    return model if "/" in model else f"models/{model}"


def setup_message(cfg: SessionConfig) -> dict[str, Any]:
    """Build the ``{"setup": …}`` message for ``cfg`` (lowerCamel, canonical spelling).

    ``responseModalities`` is always explicit: native-audio models reject a ``speechConfig`` without it.
    What depends on the model (function ``behavior``, thinking, ``languageCode``) is decided by
    :func:`gateway.gemini.models.capabilities`, so a setting a model would reject is never sent.
    """
    caps = capabilities(cfg.model)
    generation: dict[str, Any] = {"responseModalities": ["AUDIO"]}
    speech: dict[str, Any] = {}
    if cfg.voice:
        speech["voiceConfig"] = {"prebuiltVoiceConfig": {"voiceName": cfg.voice}}
    # Native-audio models choose the language themselves and do not take a language code (§2.2).
    if cfg.language and caps.speech_language_code:
        speech["languageCode"] = cfg.language
    if speech:
        generation["speechConfig"] = speech
    if cfg.temperature is not None:
        generation["temperature"] = cfg.temperature
    thinking = _thinking_config(cfg)
    if thinking:
        generation["thinkingConfig"] = thinking

    setup: dict[str, Any] = {"model": _model_path(cfg.model), "generationConfig": generation}
    if cfg.system_instruction:
        setup["systemInstruction"] = {"parts": [{"text": cfg.system_instruction}]}
    tools: list[dict[str, Any]] = []
    if cfg.tools:
        decls: list[dict[str, Any]] = []
        for tool in cfg.tools:
            decl: dict[str, Any] = {"name": tool.name, "description": tool.description}
            if tool.parameters is not None:
                decl["parameters"] = dict(tool.parameters)
            # Explicit wherever the field exists: on 3.8 Live an omitted behavior means NON_BLOCKING.
            behavior = caps.behavior(tool.non_blocking)
            if behavior is not None:
                decl["behavior"] = behavior
            decls.append(decl)
        tools.append({"functionDeclarations": decls})
    if cfg.google_search and caps.google_search:
        tools.append({"googleSearch": {}})
    if tools:
        setup["tools"] = tools

    vad = cfg.vad
    aad: dict[str, Any] = {"disabled": vad.disabled}
    if not vad.disabled:
        if vad.start_sensitivity:
            aad["startOfSpeechSensitivity"] = f"START_SENSITIVITY_{vad.start_sensitivity}"
        if vad.end_sensitivity:
            aad["endOfSpeechSensitivity"] = f"END_SENSITIVITY_{vad.end_sensitivity}"
        if vad.prefix_padding_ms is not None:
            aad["prefixPaddingMs"] = vad.prefix_padding_ms
        if vad.silence_duration_ms is not None:
            aad["silenceDurationMs"] = vad.silence_duration_ms
    realtime: dict[str, Any] = {"automaticActivityDetection": aad}
    if vad.activity_handling is not None:
        realtime["activityHandling"] = vad.activity_handling
    if vad.turn_coverage is not None:
        realtime["turnCoverage"] = vad.turn_coverage
    setup["realtimeInputConfig"] = realtime

    # languageCodes: the SDK passes AudioTranscriptionConfig.language_codes to the Gemini API as is
    # (google-genai 3.3 _live_converters.py refuses only Vertex-only fields there), so it is accepted.
    transcription: dict[str, Any] = (
        {"languageCodes": list(cfg.transcription_languages)} if cfg.transcription_languages else {}
    )
    if cfg.input_transcription:
        setup["inputAudioTranscription"] = dict(transcription)
    if cfg.output_transcription:
        setup["outputAudioTranscription"] = dict(transcription)
    # A handle only means something with resumption on, so a handle turns it on.
    if cfg.resumption or cfg.resumption_handle:
        setup["sessionResumption"] = {"handle": cfg.resumption_handle} if cfg.resumption_handle else {}
    if cfg.compression:
        window: dict[str, Any] = {}
        if cfg.compression_target_tokens is not None:
            window["targetTokens"] = cfg.compression_target_tokens
        compression: dict[str, Any] = {"slidingWindow": window}
        if cfg.compression_trigger_tokens is not None:
            compression["triggerTokens"] = cfg.compression_trigger_tokens
        setup["contextWindowCompression"] = compression
    return {"setup": setup}


def _thinking_config(cfg: SessionConfig) -> dict[str, Any]:
    """``thinkingConfig`` as the model takes it: a level (3.x), a budget (2.5), or nothing (3.8 Live).

    A setting meant for another generation is dropped rather than sent: 3.8 Live rejects any
    thinkingConfig, and the dialplan loader already refuses a mismatch when the plan names its model.
    On extended thinking ``MINIMAL`` (rejected there) becomes the lowest level it accepts.
    """
    caps = capabilities(cfg.model)
    if caps.thinking == "budget":
        return {"thinkingBudget": cfg.thinking_budget} if cfg.thinking_budget is not None else {}
    if caps.thinking != "level":
        return {}
    level = cfg.thinking_level or caps.default_thinking_level
    if level is None:
        return {}
    if level not in caps.thinking_levels:
        level = caps.thinking_levels[0]
    return {"thinkingLevel": level}


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """One call the model asks us to run. ``id`` must be echoed in the response.

    Vertex sends calls without ids: those get a local id (:data:`LOCAL_CALL_ID_PREFIX`) so answers and
    cancellations can be routed, and :func:`encode_tool_response` leaves such an id out.
    """

    id: str
    name: str
    args: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class FunctionResponse:
    """Our answer to a :class:`FunctionCall`. ``scheduling`` only matters for NON_BLOCKING tools (§6).

    ``will_continue=True`` says more answers to the same call follow (a streaming NON_BLOCKING tool);
    ``False`` ends such a stream; ``None`` (a single answer) leaves the field out.
    """

    id: str
    name: str
    response: Mapping[str, Any]
    scheduling: Scheduling | None = None
    will_continue: bool | None = None


# --------------------------------------------------------------------------------------------------
# Client → server encoders
# --------------------------------------------------------------------------------------------------


def _dumps(obj: Any) -> str:
    # allow_nan=False: NaN is not JSON and the server would reject the whole message.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# The audio message, split around the two variable parts. Only the base64 payload changes per frame.
_AUDIO_HEAD = '{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=%d","data":"'
_AUDIO_TAIL = '"}}}'
_audio_heads: dict[int, str] = {16000: _AUDIO_HEAD % 16000, 8000: _AUDIO_HEAD % 8000}
_b2a = binascii.b2a_base64


def encode_realtime_audio(pcm16k: bytes, rate: int = 16000) -> str:
    """Encode one chunk of PCM16 little-endian mono as a ``realtimeInput.audio`` text message.

    Standard base64 (§4). Raises :class:`~gateway.errors.AudioError` for an odd byte count, which
    would shift every later sample by one byte.
    """
    if len(pcm16k) & 1:
        raise AudioError(f"PCM16 audio must have an even byte count, got {len(pcm16k)}")
    head = _audio_heads.get(rate)
    if head is None:
        if not 8000 <= rate <= 48000:
            raise AudioError(f"unsupported input sample rate {rate}")
        head = _audio_heads[rate] = _AUDIO_HEAD % rate
    return head + _b2a(pcm16k, newline=False).decode("ascii") + _AUDIO_TAIL


def encode_realtime_text(text: str) -> str:
    """``realtimeInput.text``: text treated like speech (the model infers the end of the turn)."""
    return _dumps({"realtimeInput": {"text": text}})


_AUDIO_STREAM_END = '{"realtimeInput":{"audioStreamEnd":true}}'


def encode_audio_stream_end() -> str:
    """``realtimeInput.audioStreamEnd``: the caller's audio paused (e.g. hold); the server flushes."""
    return _AUDIO_STREAM_END


_ACTIVITY_START = '{"realtimeInput":{"activityStart":{}}}'
_ACTIVITY_END = '{"realtimeInput":{"activityEnd":{}}}'


def encode_activity_start() -> str:
    """``realtimeInput.activityStart``: the caller started speaking (manual activity detection only)."""
    return _ACTIVITY_START


def encode_activity_end() -> str:
    """``realtimeInput.activityEnd``: the caller stopped; the server ends the user turn and answers."""
    return _ACTIVITY_END


def encode_client_content(turns: Sequence[tuple[str, str]], turn_complete: bool = True) -> str:
    """``clientContent`` with ``(role, text)`` turns appended to history in order (§2.3).

    Raises :class:`~gateway.errors.ConfigError` for a role other than ``user`` or ``model``.
    """
    contents = []
    for role, text in turns:
        if role not in _ROLES:
            raise ConfigError(f"client content: role must be 'user' or 'model', not {role!r}")
        contents.append({"role": role, "parts": [{"text": text}]})
    body: dict[str, Any] = {"turns": contents}
    if turn_complete:
        body["turnComplete"] = True
    return _dumps({"clientContent": body})


def encode_tool_response(responses: Sequence[FunctionResponse]) -> str:
    """``toolResponse`` echoing each call id (§2.5).

    Raises :class:`~gateway.errors.ToolError` when a response is not JSON-serialisable or has an
    unknown ``scheduling``, naming the function, so a bad handler result cannot kill the session.
    """
    items: list[dict[str, Any]] = []
    for r in responses:
        item: dict[str, Any] = {"name": r.name, "response": r.response}
        if r.id and not r.id.startswith(LOCAL_CALL_ID_PREFIX):  # Vertex matches id-less answers by name
            item = {"id": r.id, **item}
        if r.scheduling is not None:
            if r.scheduling not in _SCHEDULINGS:
                raise ToolError(f"tool {r.name!r}: unknown scheduling {r.scheduling!r}")
            item["scheduling"] = r.scheduling
        if r.will_continue is not None:
            item["willContinue"] = r.will_continue
        items.append(item)
    try:
        return _dumps({"toolResponse": {"functionResponses": items}})
    except (TypeError, ValueError) as exc:
        names = ", ".join(r.name for r in responses)
        raise ToolError(f"tool response for {names} is not JSON-serialisable: {exc}") from exc


# --------------------------------------------------------------------------------------------------
# Server → client events
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetupComplete:
    """The server accepted ``setup``; other messages may now be sent."""


@dataclass(frozen=True, slots=True)
class ModelAudio:
    """A chunk of model speech: PCM16 little-endian mono at ``rate`` Hz (24 kHz in practice)."""

    pcm: bytes = field(repr=False)
    rate: int = MODEL_AUDIO_RATE


@dataclass(frozen=True, slots=True)
class ModelText:
    """A text part of the model's turn (not a thought summary)."""

    text: str


@dataclass(frozen=True, slots=True)
class InputTranscription:
    """An incremental transcript chunk of the caller's speech (often with a leading space)."""

    text: str


@dataclass(frozen=True, slots=True)
class OutputTranscription:
    """An incremental transcript chunk of the model's speech."""

    text: str


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The caller barged in: drop all queued model audio now."""


@dataclass(frozen=True, slots=True)
class GenerationComplete:
    """No more model audio for this turn (``turnComplete`` may follow much later)."""


@dataclass(frozen=True, slots=True)
class TurnComplete:
    """The model's turn is over; it waits for new input."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for one or more function calls."""

    calls: tuple[FunctionCall, ...]


@dataclass(frozen=True, slots=True)
class ToolCallCancellation:
    """These pending calls should not have run (barge-in); undo their effects if possible."""

    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GoAway:
    """The server will end this connection in ``time_left_s`` seconds; resume on a new one."""

    time_left_s: float


@dataclass(frozen=True, slots=True)
class SessionResumptionUpdate:
    """A resumption point. Only a ``resumable`` update's handle may be used to resume."""

    new_handle: str | None
    resumable: bool


@dataclass(frozen=True, slots=True)
class UsageMetadata:
    """Token accounting, usually riding on the ``turnComplete`` message. ``raw`` keeps all fields."""

    prompt_tokens: int
    response_tokens: int
    total_tokens: int
    raw: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class VoiceActivity:
    """Server VAD saw the caller start (``start=True``) or stop speaking, when the server reports it."""

    start: bool


@dataclass(frozen=True, slots=True)
class InteractionStatus:
    """Whether the model is still working on the caller's request (extended thinking, §3.3).

    Yielded just before the :class:`TurnComplete` it rides on: a ``turnComplete`` while ``in_progress``
    ends one spoken segment (a filler, a tool's first answer), not the interaction; more output follows
    without new input. ``IDLE`` (and the deprecated ``REQUIRES_ACTION``) mean the interaction is over.
    """

    in_progress: bool


@dataclass(frozen=True, slots=True)
class WaitingForInput:
    """The model is not generating because it expects the caller to go on speaking."""


@dataclass(frozen=True, slots=True)
class TurnCompleteReason:
    """Why the turn ended, yielded just before its :class:`TurnComplete` (e.g. ``NEED_MORE_INPUT``,
    ``MALFORMED_FUNCTION_CALL``, ``RESPONSE_REJECTED``, a safety reason)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Grounding:
    """Search grounding of the model's answer: the web queries it ran and the pages it drew on.

    ``sources`` are ``(uri, title)`` pairs from ``groundingChunks[].web``; ``raw`` keeps everything.
    """

    queries: tuple[str, ...]
    sources: tuple[tuple[str, str], ...]
    raw: Mapping[str, Any] = field(repr=False)


ServerEvent: TypeAlias = (
    SetupComplete
    | ModelAudio
    | ModelText
    | InputTranscription
    | OutputTranscription
    | Interrupted
    | GenerationComplete
    | TurnComplete
    | ToolCall
    | ToolCallCancellation
    | GoAway
    | SessionResumptionUpdate
    | UsageMetadata
    | VoiceActivity
    | InteractionStatus
    | WaitingForInput
    | TurnCompleteReason
    | Grounding
)
"""Everything :func:`parse_server_message` can yield."""

# Stateless events are shared singletons: one less allocation per message.
_SETUP_COMPLETE = SetupComplete()
_INTERRUPTED = Interrupted()
_GENERATION_COMPLETE = GenerationComplete()
_TURN_COMPLETE = TurnComplete()
_IN_PROGRESS = InteractionStatus(in_progress=True)
_IDLE = InteractionStatus(in_progress=False)
_WAITING_FOR_INPUT = WaitingForInput()
#: ``interactionStatus`` values; anything else (UNSPECIFIED, a future name) yields no event.
_INTERACTION_STATUSES = {"IN_PROGRESS": _IN_PROGRESS, "IDLE": _IDLE, "REQUIRES_ACTION": _IDLE}

_a2b = binascii.a2b_base64
_URLSAFE = str.maketrans("-_", "+/")


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise LiveProtocolError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise LiveProtocolError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _int(value: Any, where: str) -> int:
    # proto3 JSON may send int64 as a string; int32 arrives as a number.
    if isinstance(value, bool):
        raise LiveProtocolError(f"{where}: expected an integer, got a boolean")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LiveProtocolError(f"{where}: expected an integer, got {value!r:.40}") from exc


def _duration(value: Any, where: str) -> float:
    """A proto3 JSON Duration (``"50s"``, ``"5.5s"``); a bare number is taken as seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.endswith("s"):
        try:
            seconds = float(value[:-1])
        except ValueError as exc:
            raise LiveProtocolError(f"{where}: bad duration {value!r:.40}") from exc
    else:
        raise LiveProtocolError(f"{where}: bad duration {value!r:.40}")
    if not 0.0 <= seconds < 1e9:  # also rejects NaN
        raise LiveProtocolError(f"{where}: duration out of range {value!r:.40}")
    return seconds


def _audio_rate(mime: str) -> int:
    i = mime.find("rate=")
    if i < 0:
        return MODEL_AUDIO_RATE
    digits = mime[i + 5 :].split(";", 1)[0].strip()
    if not digits.isdigit() or not 1000 <= int(digits) <= 192000:
        raise LiveProtocolError(f"modelTurn audio: bad mimeType {mime!r:.60}")
    return int(digits)


def _decode_audio(data: str) -> bytes:
    if "-" in data or "_" in data:  # URL-safe flavour; the server uses standard but tolerate both
        data = data.translate(_URLSAFE)
    try:
        pcm = _a2b(data, strict_mode=True) if data else b""
    except (binascii.Error, ValueError):
        try:  # missing padding is common in the wild
            pcm = _a2b(data + "=" * (-len(data) % 4), strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise LiveProtocolError("modelTurn audio: data is not valid base64") from exc
    if len(pcm) & 1:
        raise LiveProtocolError(f"modelTurn audio: odd PCM16 byte count {len(pcm)}")
    return pcm


def _server_content(sc: dict[str, Any], out: list[ServerEvent]) -> None:
    tr = sc.get("inputTranscription")
    if tr is not None:
        text = _obj(tr, "inputTranscription").get("text")
        if text:
            out.append(InputTranscription(_str(text, "inputTranscription.text")))
    turn = sc.get("modelTurn")
    if turn is not None:
        parts = _obj(turn, "modelTurn").get("parts") or ()
        if not isinstance(parts, list):
            raise LiveProtocolError("modelTurn.parts: expected a list")
        for part in parts:
            part = _obj(part, "modelTurn.parts[]")
            if part.get("thought"):
                continue  # a thought summary: never spoken, never transcribed for the caller
            inline = part.get("inlineData")
            if inline is not None:
                inline = _obj(inline, "modelTurn.parts[].inlineData")
                mime = _str(inline.get("mimeType", "audio/pcm"), "inlineData.mimeType")
                if mime.startswith("audio/"):
                    pcm = _decode_audio(_str(inline.get("data", ""), "inlineData.data"))
                    if pcm:
                        out.append(ModelAudio(pcm, _audio_rate(mime)))
                continue
            text = part.get("text")
            if text:
                out.append(ModelText(_str(text, "modelTurn.parts[].text")))
    tr = sc.get("outputTranscription")
    if tr is not None:
        text = _obj(tr, "outputTranscription").get("text")
        if text:
            out.append(OutputTranscription(_str(text, "outputTranscription.text")))
    gm = sc.get("groundingMetadata")
    if gm is not None:
        out.append(_grounding(_obj(gm, "groundingMetadata")))
    if sc.get("interrupted"):
        out.append(_INTERRUPTED)
    if sc.get("waitingForInput"):
        out.append(_WAITING_FOR_INPUT)
    if sc.get("generationComplete"):
        out.append(_GENERATION_COMPLETE)
    reason = sc.get("turnCompleteReason")
    if reason and reason != "TURN_COMPLETE_REASON_UNSPECIFIED":
        out.append(TurnCompleteReason(_str(reason, "turnCompleteReason")))
    status = sc.get("interactionStatus")
    if status is not None:
        event = _INTERACTION_STATUSES.get(_str(status, "interactionStatus"))
        if event is not None:
            out.append(event)
    if sc.get("turnComplete"):
        out.append(_TURN_COMPLETE)


def _grounding(gm: dict[str, Any]) -> Grounding:
    queries = gm.get("webSearchQueries") or ()
    if not isinstance(queries, list):
        raise LiveProtocolError("groundingMetadata.webSearchQueries: expected a list")
    chunks = gm.get("groundingChunks") or ()
    if not isinstance(chunks, list):
        raise LiveProtocolError("groundingMetadata.groundingChunks: expected a list")
    sources: list[tuple[str, str]] = []
    for chunk in chunks:
        web = _obj(chunk, "groundingChunks[]").get("web")
        if isinstance(web, dict):
            sources.append((str(web.get("uri", "")), str(web.get("title", ""))))
    return Grounding(
        queries=tuple(_str(q, "groundingMetadata.webSearchQueries[]") for q in queries),
        sources=tuple(sources),
        raw=gm,
    )


#: Prefix of the ids given to function calls the server sent without one (Vertex, docs/gemini-live.md §2.5).
LOCAL_CALL_ID_PREFIX = "local-call-"
_local_ids = itertools.count(1)


def _tool_call(tc: dict[str, Any]) -> ToolCall:
    calls = tc.get("functionCalls") or ()
    if not isinstance(calls, list):
        raise LiveProtocolError("toolCall.functionCalls: expected a list")
    parsed = []
    for fc in calls:
        fc = _obj(fc, "toolCall.functionCalls[]")
        args = fc.get("args")
        call_id = _str(fc.get("id") or f"{LOCAL_CALL_ID_PREFIX}{next(_local_ids)}", "functionCalls[].id")
        parsed.append(
            FunctionCall(
                id=call_id,
                name=_str(fc.get("name"), "functionCalls[].name"),
                args=_obj(args, "functionCalls[].args") if args is not None else {},
            )
        )
    return ToolCall(tuple(parsed))


def _usage(um: dict[str, Any]) -> UsageMetadata:
    # Vertex says candidatesTokenCount where the Gemini API says responseTokenCount.
    response = um.get("responseTokenCount", um.get("candidatesTokenCount", 0))
    return UsageMetadata(
        prompt_tokens=_int(um.get("promptTokenCount", 0), "usageMetadata.promptTokenCount"),
        response_tokens=_int(response, "usageMetadata.responseTokenCount"),
        total_tokens=_int(um.get("totalTokenCount", 0), "usageMetadata.totalTokenCount"),
        raw=um,
    )


def parse_server_message(data: str | bytes) -> list[ServerEvent]:
    """Parse one server frame (binary or text, UTF-8 JSON) into events, in protocol order.

    Unknown keys and message types yield nothing. Raises :class:`~gateway.errors.LiveProtocolError`
    for anything that is not a JSON object or has a known field of the wrong shape.
    """
    try:
        msg = loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise LiveProtocolError(f"server message is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(msg, dict):
        raise LiveProtocolError(f"server message: expected a JSON object, got {type(msg).__name__}")

    out: list[ServerEvent] = []
    if "setupComplete" in msg:
        out.append(_SETUP_COMPLETE)
    sc = msg.get("serverContent")
    if sc is not None:
        _server_content(_obj(sc, "serverContent"), out)
    tc = msg.get("toolCall")
    if tc is not None:
        out.append(_tool_call(_obj(tc, "toolCall")))
    tcc = msg.get("toolCallCancellation")
    if tcc is not None:
        ids = _obj(tcc, "toolCallCancellation").get("ids") or ()
        if not isinstance(ids, list):
            raise LiveProtocolError("toolCallCancellation.ids: expected a list")
        out.append(ToolCallCancellation(tuple(_str(i, "toolCallCancellation.ids[]") for i in ids)))
    ga = msg.get("goAway")
    if ga is not None:
        left = _obj(ga, "goAway").get("timeLeft")
        out.append(GoAway(_duration(left, "goAway.timeLeft") if left is not None else 0.0))
    sru = msg.get("sessionResumptionUpdate")
    if sru is not None:
        sru = _obj(sru, "sessionResumptionUpdate")
        handle = sru.get("newHandle")
        out.append(
            SessionResumptionUpdate(
                new_handle=_str(handle, "newHandle") if handle else None,
                resumable=sru.get("resumable") is True,
            )
        )
    va = msg.get("voiceActivity")
    if va is not None:
        kind = _obj(va, "voiceActivity").get("type")
        if kind in ("ACTIVITY_START", "ACTIVITY_END"):
            out.append(VoiceActivity(start=kind == "ACTIVITY_START"))
    vads = msg.get("voiceActivityDetectionSignal")
    if vads is not None:
        kind = _obj(vads, "voiceActivityDetectionSignal").get("vadSignalType")
        if kind in ("VAD_SIGNAL_TYPE_SOS", "VAD_SIGNAL_TYPE_EOS"):
            out.append(VoiceActivity(start=kind == "VAD_SIGNAL_TYPE_SOS"))
    um = msg.get("usageMetadata")
    if um is not None:
        out.append(_usage(_obj(um, "usageMetadata")))
    return out
