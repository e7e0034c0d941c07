"""Call records: what a finished (or still running) call looked like, as plain values. No I/O.

A record is written piecewise while the call runs, so a crash loses nothing already said:

* :class:`CallOpened` when the call starts (ids, numbers, dialplan name and version);
* :class:`TurnAdded` as each transcript turn finishes (caller, bot — with what the caller heard
  when cut off — DTMF, system lines);
* :class:`ToolCallDone` as each tool call finishes (arguments, result or error, duration);
* :class:`EventAdded` for Gemini sessions, reconnects with their cause, ``goAway``, barge-ins;
* :class:`CallClosed` at the end (how and why it ended, tokens, media counters).

The store applies these *operations* in order, in batches, one transaction per batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JsonDict = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """One finished turn. ``heard`` is set when the caller barged in over a bot reply."""

    seq: int
    role: str
    text: str
    started_at: float
    ended_at: float | None = None
    interrupted: bool = False
    heard: str | None = None

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "seq": self.seq,
            "role": self.role,
            "text": self.text,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }
        if self.interrupted:
            doc["interrupted"] = True
            doc["heard"] = self.heard or ""
        return doc


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """One tool call: ``status`` is ``ok``, ``error``, ``timeout``, ``cancelled`` or ``unavailable``."""

    seq: int
    tool_call_id: str
    name: str
    arguments: JsonDict
    status: str
    started_at: float
    duration_ms: float
    result: JsonDict | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.tool_call_id,
            "name": self.name,
            "arguments": dict(self.arguments),
            "status": self.status,
            "started_at": self.started_at,
            "duration_ms": self.duration_ms,
            "result": None if self.result is None else dict(self.result),
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class EventRecord:
    """Something that happened to the call besides speech: ``session``, ``reconnect``, ``go_away``…"""

    seq: int
    at: float
    kind: str
    detail: JsonDict = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at, "kind": self.kind, "detail": dict(self.detail)}


@dataclass(frozen=True, slots=True)
class Usage:
    """Token accounting Gemini reported for the call (the largest totals seen)."""

    prompt_tokens: int = 0
    response_tokens: int = 0
    total_tokens: int = 0


@dataclass(slots=True)
class CallRecord:
    """A whole call as the store returns it. Lists are empty in summaries (see ``turn_count``)."""

    call_id: str
    stream_id: str
    from_number: str
    to_number: str
    dialplan: str
    dialplan_version: str
    started_at: float
    instance: str = ""
    ended_at: float | None = None
    ended_by: str | None = None
    end_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    stats: dict[str, Any] = field(default_factory=dict)
    recording: str | None = None
    turn_count: int = 0
    turns: list[TurnRecord] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    @property
    def gemini_sessions(self) -> list[str]:
        """Ids of the Gemini Live sessions the call used, in order (one more per reconnect)."""
        return [str(e.detail.get("id", "")) for e in self.events if e.kind == "session"]

    @property
    def reconnects(self) -> list[EventRecord]:
        return [e for e in self.events if e.kind == "reconnect"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "stream_id": self.stream_id,
            "from": self.from_number,
            "to": self.to_number,
            "dialplan": self.dialplan,
            "dialplan_version": self.dialplan_version,
            "instance": self.instance,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "ended_by": self.ended_by,
            "end_reason": self.end_reason,
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "response_tokens": self.usage.response_tokens,
                "total_tokens": self.usage.total_tokens,
            },
            "stats": dict(self.stats),
            "recording": self.recording,
            "gemini_sessions": self.gemini_sessions,
            "turn_count": self.turn_count or len(self.turns),
            # In the order they were spoken: a turn is stored when it ends, so a bot turn cut by the
            # caller is stored after the caller's turn that began later.
            "turns": [t.as_dict() for t in sorted(self.turns, key=lambda t: (t.started_at, t.seq))],
            "tool_calls": [t.as_dict() for t in self.tool_calls],
            "events": [e.as_dict() for e in self.events],
        }


# --- write operations --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallOpened:
    call_id: str
    stream_id: str
    from_number: str
    to_number: str
    dialplan: str
    dialplan_version: str
    started_at: float
    instance: str = ""
    recording: str | None = None


@dataclass(frozen=True, slots=True)
class TurnAdded:
    call_id: str
    turn: TurnRecord


@dataclass(frozen=True, slots=True)
class ToolCallDone:
    call_id: str
    tool_call: ToolCallRecord


@dataclass(frozen=True, slots=True)
class EventAdded:
    call_id: str
    event: EventRecord


@dataclass(frozen=True, slots=True)
class CallClosed:
    call_id: str
    ended_at: float
    ended_by: str
    end_reason: str
    usage: Usage
    stats: JsonDict


RecordOp = CallOpened | TurnAdded | ToolCallDone | EventAdded | CallClosed
