"""What a call reports while it runs: record operations, metrics and the optional recording.

The bridge holds one :class:`CallObserver` per call and calls it at turn boundaries, tool calls,
reconnects and the end of the call — never per frame, except for the recording legs when a
dialplan asks for them (see :mod:`gateway.records.recording`) and one attribute store when the
caller's audio is voiced (``last_voice_at``, for the reply-latency histogram).

Every method is synchronous and cheap: records go to the :class:`RecordWriter`'s queue, metrics
are in-memory increments. An observer with neither writer nor metrics (the bridge's default) lets
the bridge run without any of it (unit tests).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.metrics import GatewayMetrics
from gateway.records.model import (
    CallClosed,
    CallOpened,
    EventAdded,
    EventRecord,
    ToolCallDone,
    ToolCallRecord,
    TurnAdded,
    TurnRecord,
    Usage,
)
from gateway.records.recording import CallRecording
from gateway.records.writer import RecordWriter

with warnings.catch_warnings():
    # PEP 594 deprecation on 3.11/3.12; we depend on audioop-lts where it was removed.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

#: Longest gap counted as a reply latency; anything longer is the caller waiting, not the bot.
MAX_LATENCY_S = 30.0
#: A caller frame whose PCM16 peak exceeds this (about -30 dBFS) is speech, not line noise.
VOICE_PEAK = 1000
#: ``peak(pcm16, 2)``: the largest absolute sample, computed in C (~0.3 µs per 20 ms frame).
peak: Callable[[bytes, int], int] = audioop.max


class CallObserver:
    """Reports one call. ``clock`` is monotonic (latencies); wall times come from ``time.time``."""

    def __init__(
        self,
        *,
        call_id: str,
        dialplan: str,
        writer: RecordWriter | None = None,
        metrics: GatewayMetrics | None = None,
        recording: CallRecording | None = None,
        on_recording_done: Callable[[CallRecording], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.call_id = call_id
        self.dialplan = dialplan
        self.writer = writer
        self.metrics = metrics
        #: Set when the dialplan records audio: the bridge feeds it both legs.
        self.recording = recording
        self._on_recording_done = on_recording_done
        self._clock = clock
        self.started_mono = clock()
        #: Monotonic time of the caller's last voiced frame; the bridge stores it directly.
        self.last_voice_at: float | None = None
        self._voice_measured: float | None = None
        self._greeted = False
        self._turn_seq = 0
        self._tool_seq = 0
        self._event_seq = 0
        self._sessions = 0
        self._usage = Usage()
        self._closed = False
        self.greeting_s: float | None = None
        self.reply_s: list[float] = []

    def _submit(self, op: Any) -> None:
        if self.writer is not None:
            self.writer.submit(op)

    # --- lifecycle ----------------------------------------------------------------------------
    def opened(self, *, stream_id: str, from_number: str, to_number: str, dialplan_version: str) -> None:
        """The call started: write its record's header and count it active."""
        self._submit(
            CallOpened(
                call_id=self.call_id,
                stream_id=stream_id,
                from_number=from_number,
                to_number=to_number,
                dialplan=self.dialplan,
                dialplan_version=dialplan_version,
                started_at=time.time(),
                instance=self.writer.instance if self.writer is not None else "",
                recording=str(self.recording.path) if self.recording is not None else None,
            )
        )
        if self.metrics is not None:
            self.metrics.active_calls.inc()

    def closed(self, *, ended_by: str, reason: str, stats: Mapping[str, Any]) -> None:
        """The call ended: close its record and count the outcome. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._submit(
            CallClosed(
                call_id=self.call_id,
                ended_at=time.time(),
                ended_by=ended_by or "unknown",
                end_reason=reason,
                usage=self._usage,
                stats=dict(stats),
            )
        )
        if self.recording is not None and self._on_recording_done is not None:
            self._on_recording_done(self.recording)
        m = self.metrics
        if m is not None:
            m.active_calls.dec()
            m.calls.labels(ended_by or "unknown", self.dialplan).inc()
            m.media_frames.labels("in").inc(int(stats.get("frames_in", 0)))
            m.media_frames.labels("out").inc(int(stats.get("frames_out", 0)))
            dropped = int(stats.get("audio_dropped", 0))
            if dropped:
                m.frames_dropped.labels("gemini_queue_full").inc(dropped)
            u = self._usage
            if u.total_tokens:
                m.tokens.labels("prompt", self.dialplan).inc(u.prompt_tokens)
                m.tokens.labels("response", self.dialplan).inc(u.response_tokens)

    @property
    def saved_turns(self) -> int:
        """Turns of this call already committed to the store (0 without a store)."""
        return self.writer.saved_turns(self.call_id) if self.writer is not None else 0

    # --- transcript and latency -------------------------------------------------------------
    def turn(self, role: str, text: str, started_at: float, ended_at: float | None, **cut: Any) -> None:
        """A transcript turn finished (``interrupted``/``heard`` for a bot reply the caller cut off)."""
        self._turn_seq += 1
        record = TurnRecord(
            seq=self._turn_seq,
            role=role,
            text=text,
            started_at=started_at,
            ended_at=ended_at,
            interrupted=bool(cut.get("interrupted", False)),
            heard=cut.get("heard"),
        )
        self._submit(TurnAdded(self.call_id, record))

    def bot_audio_started(self) -> None:
        """The first audio of a bot reply is going to the caller: greeting or reply latency."""
        now = self._clock()
        m = self.metrics
        voice = self.last_voice_at
        if voice is not None and voice != self._voice_measured:
            self._voice_measured = voice
            self._greeted = True
            latency = now - voice
            if 0.0 <= latency <= MAX_LATENCY_S:
                self.reply_s.append(latency)
                if m is not None:
                    m.reply_latency.labels(self.dialplan).observe(latency)
                # Per reply in the record too (the call inspector's timeline): when the caller's speech
                # ended, in wall time, and how long the first bot audio took after it.
                wall = time.time()
                self.event(
                    "reply",
                    {"latency_ms": round(latency * 1000.0, 1), "speech_end_at": round(wall - latency, 3)},
                )
        elif not self._greeted:
            self._greeted = True
            self.greeting_s = now - self.started_mono
            if m is not None:
                m.greeting_latency.labels(self.dialplan).observe(self.greeting_s)
            self.event("greeting", {"latency_ms": round(self.greeting_s * 1000.0, 1)})

    def barge_in(self, unheard_frames: int) -> None:
        if self.recording is not None:
            self.recording.clear_bot()
        if self.metrics is not None:
            self.metrics.barge_ins.labels(self.dialplan).inc()
            if unheard_frames > 0:
                self.metrics.frames_dropped.labels("barge_in").inc(unheard_frames)
        self.event("barge_in", {"unheard_frames": unheard_frames})

    # --- tools, sessions, reconnects -------------------------------------------------------------
    def tool_call(
        self,
        *,
        tool_call_id: str,
        name: str,
        arguments: Mapping[str, Any],
        status: str,
        duration_s: float,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        started_at: float | None = None,
    ) -> None:
        """A tool call finished: ``status`` is ok, error, timeout, cancelled or unavailable."""
        self._tool_seq += 1
        record = ToolCallRecord(
            seq=self._tool_seq,
            tool_call_id=tool_call_id,
            name=name,
            arguments=dict(arguments),
            status=status,
            started_at=time.time() - duration_s if started_at is None else started_at,
            duration_ms=round(duration_s * 1000.0, 3),
            result=None if result is None else dict(result),
            error=error,
        )
        self._submit(ToolCallDone(self.call_id, record))
        if self.metrics is not None:
            self.metrics.tool_calls.labels(name, status).inc()
            self.metrics.tool_duration.labels(name).observe(max(0.0, duration_s))

    def tool_record(self, record: Any) -> None:
        """Adapter for the tool router's per-call observers (``ToolRouter.observers.append(...)``).

        Reads its ``ToolCallRecord`` by attribute (call_id, name, args, outcome, result, error,
        duration_s), so records do not import the tools package.
        """
        result = getattr(record, "result", None)
        duration_s = float(getattr(record, "duration_s", 0.0))
        started = float(getattr(record, "started_at", 0.0))
        self.tool_call(
            tool_call_id=str(getattr(record, "call_id", "")),
            name=str(getattr(record, "name", "")),
            arguments=dict(getattr(record, "args", {}) or {}),
            status=str(getattr(record, "outcome", "ok")),
            duration_s=duration_s,
            result=result if isinstance(result, Mapping) or result is None else {"value": result},
            error=getattr(record, "error", None),
            # The router's clock is monotonic; a wall-clock start is recognisable by its size.
            started_at=started if started > 1e9 else None,
        )

    def event(self, kind: str, detail: Mapping[str, Any] | None = None) -> None:
        self._event_seq += 1
        self._submit(
            EventAdded(self.call_id, EventRecord(self._event_seq, time.time(), kind, dict(detail or {})))
        )

    def session_started(self, session_id: str | None = None, *, resumed: bool = False) -> None:
        """A Gemini Live session now serves the call (the first one, or one more after a reconnect).

        The Gemini API gives sessions no id, so the default is ``<call id>#<n>``; pass Vertex's
        ``sessionId`` when there is one.
        """
        self._sessions += 1
        self.event("session", {"id": session_id or f"{self.call_id}#{self._sessions}", "resumed": resumed})

    def reconnect(self, cause: str, *, resumed: bool = False, **detail: Any) -> None:
        """The call's Gemini session was replaced; ``cause`` is e.g. go_away, closed_1011, network.

        Records the reconnect and the new session it led to.
        """
        if self.metrics is not None:
            self.metrics.reconnects.labels(cause).inc()
        self.event("reconnect", {"cause": cause, "resumed": resumed, **detail})
        self.session_started(resumed=resumed)

    def reconnect_record(self, event: Any) -> None:
        """Adapter for ``ResilientSession.on_reconnect`` (gateway/bridge/resilience.py), read by attribute.

        The first connection (cause ``start``) is not a reconnect: only its failure is recorded.
        A close becomes the cause ``closed_<code>`` so metrics tell 1011s from network drops.
        """
        cause, outcome = str(getattr(event, "cause", "")), str(getattr(event, "outcome", ""))
        detail = {
            "outcome": outcome,
            "attempts": getattr(event, "attempts", None),
            "gap_ms": round(float(getattr(event, "gap_ms", 0.0)), 1),
            "held_chunks": getattr(event, "held_chunks", None),
            "stale": getattr(event, "stale", None),
            "reason": getattr(event, "reason", ""),
        }
        if cause == "start":
            if outcome == "failed":
                self.event("connect_failed", detail)
            return
        code = getattr(event, "code", None)
        label = f"closed_{code}" if cause == "closed" and code is not None else cause
        if outcome == "failed":
            if self.metrics is not None:
                self.metrics.reconnects.labels(f"{label}_failed").inc()
            self.event("reconnect", {"cause": label, **detail})
            return
        self.reconnect(label, resumed=outcome == "resumed", **detail)

    def failure(self, task: str, error: BaseException) -> None:
        """An unexpected error ended the call (gateway/bridge/call.py): in the record and the metrics."""
        if self.metrics is not None:
            self.metrics.call_failures.labels(task).inc()
        self.event("failure", {"task": task, "error": f"{type(error).__name__}: {error}"[:500]})

    def grounding(self, queries: Sequence[str], sources: Sequence[tuple[str, str]]) -> None:
        """The model searched the web (Google Search grounding): what it asked and the pages it used,
        so a reviewer can see where an answer came from. Bounded: a record is not a search log."""
        self.event(
            "grounding",
            {
                "queries": [q[:200] for q in queries[:10]],
                "sources": [{"uri": uri[:500], "title": title[:200]} for uri, title in sources[:20]],
            },
        )

    def go_away(self, time_left_s: float | None) -> None:
        if self.metrics is not None:
            self.metrics.go_aways.inc()
        self.event("go_away", {"time_left_s": time_left_s})

    def usage(self, prompt_tokens: int, response_tokens: int, total_tokens: int) -> None:
        """Token counts Gemini reported; the largest seen are kept (they are cumulative per session)."""
        u = self._usage
        if total_tokens >= u.total_tokens:
            self._usage = Usage(
                max(u.prompt_tokens, prompt_tokens), max(u.response_tokens, response_tokens), total_tokens
            )
