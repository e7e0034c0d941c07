"""Provider-neutral phone-call events (provider → gateway) and commands (gateway → provider).

A provider codec turns one wire message into one :data:`TelephonyEvent` and one
:data:`TelephonyCommand` into one wire message, so the call bridge never sees a provider's JSON.
All are frozen, slotted dataclasses: cheap to build on the media path and safe to share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

_EMPTY: Mapping[str, str] = MappingProxyType({})


# --- events: what the provider tells us ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The media socket is up (Twilio's first message); nothing needs to be sent back."""

    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class CallStarted:
    """The stream started: identities, the ``<Parameter>`` values and the audio format."""

    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    channels: int = 1
    #: The caller and the dialled number, where the provider's start message carries them (Telnyx,
    #: Exotel). Informational: the call's identity comes from the stream token's claims.
    from_: str = ""
    to: str = ""
    #: Caller audio that came with the start, in the stream's format: AudioSocket's first audio message
    #: both starts the stream and carries 20 ms of the call (empty for every other provider).
    audio: bytes = b""


@dataclass(frozen=True, slots=True)
class CallerAudio:
    """One chunk of the caller's audio: raw μ-law bytes, already base64-decoded."""

    payload: bytes
    timestamp_ms: int | None = None
    chunk: int | None = None


#: The keys a :class:`DtmfPressed` can carry (every provider checks against this one set).
DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")


@dataclass(frozen=True, slots=True)
class DtmfPressed:
    """The caller pressed a key (``0``–``9``, ``*``, ``#``, ``A``–``D``: :data:`DTMF_DIGITS`)."""

    digit: str


@dataclass(frozen=True, slots=True)
class MarkReached:
    """A mark we set came back: the audio sent before it was played, or playback was cleared."""

    name: str


@dataclass(frozen=True, slots=True)
class CallStopped:
    """The stream ended (for a bidirectional Twilio stream this means the call ended)."""

    call_sid: str


@dataclass(frozen=True, slots=True)
class FlowControl:
    """The provider's queue of our audio is full (``paused``: send nothing more) or has room again.

    Asterisk chan_websocket's ``MEDIA_XOFF``/``MEDIA_XON``: audio sent while paused would be dropped, so
    the playout holds its frames (nothing is lost) until the provider resumes.
    """

    paused: bool


TelephonyEvent = Connected | CallStarted | CallerAudio | DtmfPressed | MarkReached | CallStopped | FlowControl
"""Everything a provider codec's ``receive_text`` can return."""


# --- commands: what we tell the provider ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlayAudio:
    """Queue μ-law 8 kHz bytes (headerless) for playback to the caller."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class SetMark:
    """Ask to be told (:class:`MarkReached`) when everything queued so far has played."""

    name: str


@dataclass(frozen=True, slots=True)
class ClearPlayback:
    """Drop all queued, unplayed audio now (barge-in); pending marks come back at once."""


TelephonyCommand = PlayAudio | SetMark | ClearPlayback
"""Everything a provider codec's ``encode`` accepts."""
