"""What each Live model accepts: the one table every setup decision reads.

Live models share a wire format but not their rules (docs/gemini-live.md §6, §7.1): which function
``behavior`` values exist and which one is the default, whether ``scheduling`` is read, which thinking
knob (if any) is allowed, whether ``speechConfig.languageCode`` means anything, and whether a
``turnComplete`` ends the interaction. :func:`capabilities` maps a model id to a :class:`ModelCaps`;
:func:`gateway.gemini.messages.setup_message`, :class:`gateway.gemini.protocol.LiveProtocol` and the tool
registry ask it instead of testing model names themselves.

Sources per row (see the doc for details):

* ``gemini-3.8-live``: NON_BLOCKING is the default, BLOCKING still accepted; no ``thinkingConfig``
  (it must be omitted); proactive audio always on; search grounding yes. [Docs model page]
* ``gemini-3.8-live-extended-thinking``: NON_BLOCKING only (BLOCKING is a hard error); ``thinkingLevel``
  low/medium/high (minimal rejected); ``interactionStatus`` IN_PROGRESS/IDLE marks the real end of an
  interaction; ``scheduling`` "not supported" (3P reading of the docs), so it is not sent. [Docs]
* ``gemini-3.1-*``: synchronous functions only; pipecat (PR #4448) found that 3.x had not shipped the
  ``behavior`` field nor ``scheduling``, so neither is sent: BLOCKING is the only mode and also what an
  omitted field means. ``thinkingLevel`` minimal/low/medium/high, server default minimal. [Docs, 3P]
* 2.5 native audio: BLOCKING default, NON_BLOCKING opt-in, ``thinkingBudget``. [Docs]
* ``gemini-live-2.5-flash`` (Vertex half-cascade): the only model that takes ``speechConfig.languageCode``;
  native-audio models "don't support explicitly setting the language code" (they pick it themselves). [Docs]

An unknown id gets the profile of the newest generation (3.8 Live): every ``behavior`` sent
explicitly, no thinking settings, no ``languageCode`` — the choices least likely to be rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["THINKING_LEVELS", "ModelCaps", "ThinkingKind", "ThinkingLevel", "capabilities", "model_id"]

ThinkingKind = Literal["none", "level", "budget"]
ThinkingLevel = Literal["MINIMAL", "LOW", "MEDIUM", "HIGH"]

#: Every thinking level, in increasing effort (wire spelling: the SDK's enum names).
THINKING_LEVELS: tuple[ThinkingLevel, ...] = ("MINIMAL", "LOW", "MEDIUM", "HIGH")


@dataclass(frozen=True, slots=True)
class ModelCaps:
    """The rules of one Live model generation. ``family`` names the row, for logs and tests."""

    family: str
    #: ``functionDeclarations[].behavior`` exists for this model (False: never send it).
    behavior_field: bool = True
    #: NON_BLOCKING (asynchronous) functions are allowed.
    non_blocking: bool = True
    #: BLOCKING functions are allowed.
    blocking: bool = True
    #: ``FunctionResponse.scheduling`` (and ``willContinue``) are read for NON_BLOCKING calls.
    scheduling: bool = True
    #: Which thinking knob ``generationConfig.thinkingConfig`` takes; "none": send no thinkingConfig.
    thinking: ThinkingKind = "none"
    #: Levels the model accepts when ``thinking == "level"``.
    thinking_levels: tuple[ThinkingLevel, ...] = ()
    #: Level sent when the dialplan names none; ``None``: omit and let the server choose.
    default_thinking_level: ThinkingLevel | None = None
    #: ``speechConfig.languageCode`` is honoured (half-cascade only).
    speech_language_code: bool = False
    #: ``interactionStatus`` rides on ``turnComplete``; IN_PROGRESS means more output will follow.
    interaction_status: bool = False
    #: The ``googleSearch`` tool (search grounding) is available.
    google_search: bool = True

    def runs_non_blocking(self, wanted: bool) -> bool:
        """Whether a tool that wants ``wanted`` (True: NON_BLOCKING) actually runs non-blocking here.

        A model with one mode imposes it: extended thinking makes every tool non-blocking (the bridge
        then must not assume the model waits for the answer), 3.1 makes every tool blocking.
        """
        if not self.blocking:
            return True
        if not self.non_blocking:
            return False
        return wanted

    def behavior(self, non_blocking: bool) -> str | None:
        """The ``behavior`` value to declare, or ``None`` where the field does not exist (3.1)."""
        if not self.behavior_field:
            return None
        return "NON_BLOCKING" if self.runs_non_blocking(non_blocking) else "BLOCKING"


_LIVE_38 = ModelCaps(family="3.8-live")
_EXTENDED_THINKING = ModelCaps(
    family="3.8-live-extended-thinking",
    blocking=False,
    scheduling=False,
    thinking="level",
    thinking_levels=("LOW", "MEDIUM", "HIGH"),
    # The brief background reasoning this model exists for, at the cost least felt on a phone line.
    default_thinking_level="LOW",
    interaction_status=True,
)
_FLASH_31 = ModelCaps(
    family="3.1-flash-live",
    behavior_field=False,
    non_blocking=False,
    scheduling=False,
    thinking="level",
    thinking_levels=THINKING_LEVELS,
)
_NATIVE_25 = ModelCaps(family="2.5-native-audio", thinking="budget")
_HALF_CASCADE_25 = ModelCaps(family="2.5-half-cascade", speech_language_code=True)
_TRANSLATE = ModelCaps(family="translate", google_search=False)


def model_id(model: str) -> str:
    """The bare id of ``model``: without ``models/`` or a Vertex ``projects/…/models/`` prefix."""
    return model.rsplit("/", 1)[-1]


def capabilities(model: str) -> ModelCaps:
    """The rules for ``model`` (a bare id, ``models/{id}`` or a Vertex resource path)."""
    name = model_id(model)
    if "extended-thinking" in name:
        return _EXTENDED_THINKING
    if name.startswith("gemini-3.1"):
        return _FLASH_31
    if name == "gemini-live-2.5-flash":
        return _HALF_CASCADE_25
    if "native-audio" in name and "2.5" in name:
        return _NATIVE_25
    if "translate" in name:
        return _TRANSLATE
    return _LIVE_38
