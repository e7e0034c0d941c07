"""Outbound audio pacing and playback bookkeeping, clock-free (the caller passes ``now``).

Why pace at all: Twilio buffers whatever we send and plays it in order. If we forwarded Gemini's
audio as fast as it arrives (several times real time), a barge-in ``clear`` would still have to
throw away seconds of queued speech that the model already considers said, and marks would say
nothing about what the caller heard. So we keep the provider's buffer short: frames go out only
while the provider holds less than ``lead_s`` of unplayed audio.

While enough audio is queued, frames leave ``batch`` at a time (default 4, so one 80 ms Twilio
``media`` message instead of four 20 ms ones): the provider then holds between ``lead_s - (batch-1)
* frame`` and ``lead_s`` (60-120 ms with the bridge's 120 ms lead), a cushion well above the event
loop's worst wake-up delay. A reply's first frames still leave at once (the buffer is empty), so
greeting and reply latency don't grow; only the number of messages, JSON encodes, wake-ups and
``write()`` calls falls (README, Performance).

Marks go out every ``mark_every`` frames and at the end of every reply; an echoed mark proves the
audio before it was played, except after a ``clear`` (Twilio then echoes every pending mark at
once), which is why marks pending at a clear are remembered and discounted.

Rules: this module does no I/O and reads no clock. Everything that changes playback state is here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

FRAME_S = 0.020
#: While the provider has paused us, how often the playout looks again (a rare state: no per-frame cost).
PAUSED_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class MarkOut:
    """A mark to send; its echo means the caller heard ``turn`` up to frame ``frames``."""

    name: str
    turn: int
    frames: int


Outgoing = bytes | MarkOut


@dataclass(slots=True)
class TurnPlayback:
    """How much of one bot reply was queued, sent and heard."""

    turn: int
    queued: int = 0
    sent: int = 0
    heard: int = 0
    finished: bool = False


@dataclass(slots=True)
class Playout:
    lead_s: float = 0.10
    mark_every: int = 10
    frame_s: float = FRAME_S
    #: frames per wake-up (and per provider message) while at least this many are queued
    batch: int = 4
    _queue: deque[Outgoing] = field(default_factory=deque)
    #: monotonic time at which everything sent so far will have finished playing at the provider
    _play_until: float = 0.0
    _pending: dict[str, MarkOut] = field(default_factory=dict)
    _cleared: set[str] = field(default_factory=set)
    _turns: dict[int, TurnPlayback] = field(default_factory=dict)
    _turn: TurnPlayback | None = None
    _next_turn: int = 1
    _since_mark: int = 0
    _nframes: int = 0  # frames (not marks) in _queue
    frames_sent: int = 0
    marks_sent: int = 0
    marks_acked: int = 0
    clears: int = 0
    #: The provider asked for no more audio for now (flow control, Asterisk's MEDIA_XOFF): frames stay
    #: queued here, nothing is lost, and they go on once it resumes.
    paused: bool = False

    # --- producer side -------------------------------------------------------------------------
    def _current(self) -> TurnPlayback:
        if self._turn is None or self._turn.finished:
            self._turn = TurnPlayback(self._next_turn)
            self._turns[self._turn.turn] = self._turn
            self._next_turn += 1
            self._since_mark = 0
        return self._turn

    def enqueue(self, frames: list[bytes]) -> None:
        """Queue 20 ms frames of the current bot reply, with a mark every ``mark_every`` frames."""
        if not frames:
            return
        turn = self._current()
        self._nframes += len(frames)
        for frame in frames:
            self._queue.append(frame)
            turn.queued += 1
            self._since_mark += 1
            if self._since_mark >= self.mark_every:
                self._queue.append(self._mark(turn))

    def end_turn(self) -> TurnPlayback | None:
        """The reply is complete: queue a final mark. Returns the turn, or None if nothing played."""
        turn = self._turn
        if turn is None or turn.finished:
            return None
        if self._since_mark:
            self._queue.append(self._mark(turn))
        turn.finished = True
        return turn

    def _mark(self, turn: TurnPlayback) -> MarkOut:
        self._since_mark = 0
        return MarkOut(f"t{turn.turn}f{turn.queued}", turn.turn, turn.queued)

    # --- consumer side -------------------------------------------------------------------------
    def due(self, now: float) -> list[Outgoing]:
        """Frames and marks to send now so the provider holds at most ``lead_s`` of audio."""
        out: list[Outgoing] = []
        if self._play_until < now:
            self._play_until = now
        if self.paused:
            return out
        while self._queue:
            item = self._queue[0]
            if isinstance(item, MarkOut):
                self._queue.popleft()
                self._pending[item.name] = item
                self.marks_sent += 1
                out.append(item)
                continue
            if self._play_until + self.frame_s - now > self.lead_s + 1e-9:
                break
            self._queue.popleft()
            self._nframes -= 1
            self._play_until += self.frame_s
            self.frames_sent += 1
            if self._turn is not None:
                self._sent_in_turn()
            out.append(item)
        return out

    def _sent_in_turn(self) -> None:
        # Frames leave in turn order; attribute each to the oldest turn with unsent frames.
        for tp in self._turns.values():
            if tp.sent < tp.queued:
                tp.sent += 1
                return

    def next_wakeup(self, now: float) -> float | None:
        """When ``due`` will next have something to send, or None when the queue is empty."""
        if not self._queue:
            return None
        if self.paused:  # look again shortly; resuming also sends at once (the bridge's flow control)
            return now + PAUSED_POLL_S
        ahead = self.batch if self._nframes >= self.batch else 1
        return max(now, self._play_until + ahead * self.frame_s - self.lead_s)

    @property
    def queued_frames(self) -> int:
        return self._nframes

    def buffered_s(self, now: float) -> float:
        """Audio sent but not yet played at the provider."""
        return max(0.0, self._play_until - now)

    def mark_echoed(self, name: str) -> TurnPlayback | None:
        """The provider echoed a mark. Returns the turn whose heard count advanced, if any.

        Providers play and acknowledge in order, so every mark sent before this one is done too: a
        provider that acknowledges only the newest mark a clear dropped (Plivo's ``clearedAudio``) must
        not leave older ones pending for ever (the goodbye would never count as heard).
        """
        if name in self._pending:
            for earlier in list(self._pending):
                if earlier == name:
                    break
                del self._pending[earlier]
                self._cleared.discard(earlier)
                self.marks_acked += 1
        self.marks_acked += 1
        mark = self._pending.pop(name, None)
        if mark is None or name in self._cleared:
            self._cleared.discard(name)
            return None
        tp = self._turns.get(mark.turn)
        if tp is None:
            return None
        tp.heard = max(tp.heard, mark.frames)
        return tp

    def clear(self, now: float) -> TurnPlayback | None:
        """Barge-in: drop everything unsent. Returns the cut turn with ``heard`` estimated from the clock."""
        self.clears += 1
        self._queue.clear()
        self._nframes = 0
        unplayed = int(max(0.0, self._play_until - now) / self.frame_s + 0.5)
        self._play_until = now
        self._cleared.update(self._pending)
        turn = self._turn
        if turn is not None:
            turn.heard = max(turn.heard, turn.sent - unplayed)
            turn.finished = True
        return turn

    def forget(self, turn: int) -> None:
        """Drop bookkeeping of a reply that is fully accounted for."""
        self._turns.pop(turn, None)
