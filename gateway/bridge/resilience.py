"""Calls that outlive their Gemini connections: goAway hand-over, resumption and reconnects.

A :class:`ResilientSession` is what the bridge talks to (it implements ``LiveSessionLike``). Behind it,
one :class:`~gateway.gemini.session.LiveSession` at a time carries the call; when that connection has
to go, the next one takes over without the caller noticing.

Rules (docs/gemini-live.md §3.5, §3.6, §5.3):

* **One connection carries the call.** Caller audio goes to it; while there is none (a switch or an
  outage), caller audio is *held* in order, with the connection's own unsent queue, and delivered to
  the next one. Events of a connection that was let go are never relayed, so no bot audio is repeated.
* **Resume from the latest resumable handle** (the server only hands one out when nothing would be
  lost). Unknown handle (1008 "session not found") or none at all: start fresh, seeded with the call's
  transcript so far as one ``clientContent`` user turn (seeding ``model`` turns needs ``historyConfig``
  on some models and is rejected on others, a user note works everywhere). A clean 1000 close from
  the server is a loss like any other (resume, else fallback): never dead air.
* **goAway → switch at a safe point**: model idle, no unanswered tool call, and a handle issued since
  the last thing said. The replacement is opened *then* (a connection opened earlier would resume from
  a handle that is stale by the time we switch), make-before-break, and the old one closed after. If no
  safe point comes, the switch is forced ``switch_margin_s`` before the deadline; anything said since
  the handle is then given to the new connection as a note.
* **Unexpected close** (1011, 1006, any retryable code, a dropped socket): reconnect at once, then
  with :func:`~gateway.gemini.backoff.backoff`, at most ``max_attempts`` times within
  ``give_up_after_s``. A bot reply cut by the drop is closed with a synthetic ``TurnComplete`` and the
  new connection is asked to finish it without repeating what the caller heard.
* **Configuration errors are final**: a non-retryable setup failure (1007 bad key or config, 1008
  unknown model) is not retried. Giving up raises :class:`~gateway.errors.LiveConnectError` from
  :meth:`ResilientSession.events`, and the bridge plays the dialplan's fallback.

All of this runs inside the consumer of :meth:`ResilientSession.events` (the bridge's downlink task):
no task of its own, nothing per frame beyond one attribute check.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from gateway.errors import (
    GatewayError,
    LiveConnectError,
    LiveSessionClosed,
    LiveSessionError,
    LiveSessionNotFound,
)
from gateway.gemini.backoff import backoff
from gateway.gemini.messages import (
    FunctionResponse,
    GenerationComplete,
    GoAway,
    InputTranscription,
    InteractionStatus,
    Interrupted,
    ModelAudio,
    OutputTranscription,
    ServerEvent,
    SessionConfig,
    SessionResumptionUpdate,
    ToolCall,
    ToolCallCancellation,
    TurnComplete,
)
from gateway.gemini.session import LiveEndpoint, LiveSession
from gateway.log import CallLogger

__all__ = [
    "LiveConnection",
    "Reconnect",
    "ResiliencePolicy",
    "ResilienceStats",
    "ResilientSession",
    "live_session_for_call",
    "render_lines",
    "transcript_lines",
]

Cause = Literal["start", "go_away", "closed"]
Outcome = Literal["resumed", "fresh", "failed"]


class LiveConnection(Protocol):
    """One Live connection as :class:`ResilientSession` drives it (a LiveSession, or a test fake)."""

    @property
    def closed(self) -> bool: ...

    @property
    def resumption_handle(self) -> str | None: ...

    close_code: int | None
    close_reason: str

    def send_audio(self, pcm16k: bytes) -> None: ...

    def send_text(self, text: str) -> None: ...

    def send_client_content(self, turns: Sequence[tuple[str, str]], turn_complete: bool = True) -> None: ...

    def send_tool_response(self, responses: Sequence[FunctionResponse]) -> None: ...

    def send_activity_start(self) -> None: ...

    def send_activity_end(self) -> None: ...

    def take_unsent_audio(self) -> list[bytes]: ...

    @property
    def audio_queued(self) -> int: ...

    def send_audio_backlog(self, chunks: Iterable[bytes]) -> None: ...

    def events(self) -> AsyncIterator[ServerEvent]: ...

    async def close(self) -> None: ...


#: Opens a connection; ``None`` starts a fresh session, a handle resumes one.
Connector = Callable[[str | None], Awaitable[LiveConnection]]


@dataclass(frozen=True, slots=True)
class ResiliencePolicy:
    """How hard to try before the caller gets the fallback. Phone callers do not wait long."""

    #: Connection attempts per outage (the first is immediate).
    max_attempts: int = 5
    #: Per outage, including setup time: past this the call falls back.
    give_up_after_s: float = 8.0
    #: After goAway, switch at the latest this long before the server's deadline.
    switch_margin_s: float = 5.0
    #: Caller audio held while no connection carries the call (20 ms chunks: 750 = 15 s).
    hold_max_chunks: int = 750
    #: The transcript seeded into a fresh session keeps at most this many characters (newest).
    history_max_chars: int = 4000
    backoff: Callable[[], Iterator[float]] = field(default=backoff, repr=False)


@dataclass(frozen=True, slots=True)
class Reconnect:
    """One hand-over or outage of a call, for logs, metrics and call records."""

    cause: Cause
    #: Close code that started it (None for goAway and for the first connection).
    code: int | None
    reason: str
    outcome: Outcome
    attempts: int
    #: Time no connection carried the call (caller audio was held meanwhile).
    gap_ms: float
    #: Caller audio chunks held and delivered to the new connection.
    held_chunks: int
    #: The handle was older than the last thing said (a note carried the difference).
    stale: bool
    at: float

    def as_dict(self) -> dict[str, object]:
        return {
            "cause": self.cause,
            "code": self.code,
            "reason": self.reason,
            "outcome": self.outcome,
            "attempts": self.attempts,
            "gap_ms": round(self.gap_ms, 1),
            "held_chunks": self.held_chunks,
            "stale": self.stale,
            "at": round(self.at, 3),
        }


@dataclass(slots=True)
class ResilienceStats:
    """Counters across every connection of the call."""

    audio_dropped: int = 0
    #: Caller chunks dropped because the hold buffer was full (an outage longer than it).
    hold_dropped: int = 0
    connections: int = 0
    go_aways: int = 0


def transcript_lines(turns: Sequence[Mapping[str, object]]) -> list[tuple[str, str]]:
    """``Transcript.as_list()`` as ``(speaker, text)`` pairs; a cut bot turn counts as what was heard."""
    lines: list[tuple[str, str]] = []
    for turn in turns:
        role = turn.get("role")
        text = turn.get("heard") if turn.get("interrupted") else turn.get("text")
        if role == "bot":
            lines.append(("bot", str(text or "")))
        elif role == "caller":
            lines.append(("caller", str(text or "")))
        elif role == "dtmf":
            lines.append(("caller", f"[pressed {text}]"))
    return lines


def render_lines(lines: Sequence[tuple[str, str]], max_chars: int) -> str:
    """``(speaker, text)`` pairs as ``Caller: …`` / ``You: …`` lines, newest kept within ``max_chars``."""
    merged: list[list[str]] = []
    for speaker, text in lines:
        text = text.strip()
        if not text:
            continue
        if merged and merged[-1][0] == speaker:
            merged[-1][1] += " " + text
        else:
            merged.append([speaker, text])
    out: list[str] = []
    size = 0
    for speaker, text in reversed(merged):
        label = "You" if speaker == "bot" else "Caller"
        line = f"{label}: {text}"
        if size + len(line) > max_chars:
            if not out:
                out.append(line[-max_chars:])
            break
        out.append(line)
        size += len(line) + 1
    return "\n".join(reversed(out))


class ResilientSession:
    """A call's Live session that survives goAway, drops and server restarts (see the module doc).

    Args:
        connect: opens a connection given a resumption handle or None.
        first: a connection already being opened (the webhook's preconnect), used before ``connect``.
        history: the call's transcript so far as ``(speaker, text)`` pairs, speaker ``caller`` or
            ``bot``, used to seed a fresh session; bind it later with :meth:`bind_history`.
        on_reconnect: called with each :class:`Reconnect` (metrics, call records).
    """

    def __init__(
        self,
        connect: Connector,
        *,
        log: CallLogger,
        policy: ResiliencePolicy | None = None,
        first: asyncio.Future[Any] | None = None,
        history: Callable[[], Sequence[tuple[str, str]]] | None = None,
        on_reconnect: Callable[[Reconnect], None] | None = None,
    ) -> None:
        self._connect = connect
        self.log = log
        self.policy = policy or ResiliencePolicy()
        self._first = first
        self._history = history
        self.on_reconnect = on_reconnect
        #: The call's synchronous taker of server events (CallBridge's, for Gemini's audio): handed the
        #: events the current connection parses in its read callback while the call waits for the next
        #: one (``LiveSession.direct``); False leaves an event to :meth:`events`.
        self.direct: Callable[[ServerEvent], bool] | None = None
        self.reconnects: list[Reconnect] = []
        self._stats = ResilienceStats()
        self._live: LiveConnection | None = None
        self._stream: AsyncIterator[ServerEvent] | None = None
        self._held: deque[bytes] = deque()
        self._held_control: list[Callable[[LiveConnection], None]] = []
        self._closing = False
        self._consumed = False
        #: The first client content sent before the model said anything (the dialplan's greeting).
        self._opening: tuple[tuple[tuple[str, str], ...], bool] | None = None
        self._bot_spoke = False
        # Per connection: what a hand-over must know.
        self._handle: str | None = None
        self._fresh = False
        self._turn_open = False
        self._pending_tools: dict[str, str] = {}
        self._orphan_tools: dict[str, str] = {}
        self._reply: list[str] = []
        self._since_handle: list[tuple[str, str]] = []
        self._deadline: float | None = None
        # Manual activity detection: the caller is mid-utterance; an utterance touched an outage.
        self._activity = False
        self._activity_held = False
        #: Extended thinking: the model is still working on a request (interactionStatus IN_PROGRESS).
        self._in_progress = False

    # ------------------------------------------------------------------ state

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def resumption_handle(self) -> str | None:
        """The latest resumable handle of the call (survives connection changes)."""
        return self._handle

    @property
    def audio_queued(self) -> int:
        """Caller audio chunks not yet written to Gemini: held for the next connection, or queued on
        the current one (read at scrape time for ``gateway_queue_depth``)."""
        live = self._live
        queued = live.audio_queued if live is not None else 0
        return len(self._held) + queued

    @property
    def stats(self) -> ResilienceStats:
        """Counters over every connection so far, the current one included."""
        s = self._stats
        live = self._live
        current = int(getattr(getattr(live, "stats", None), "audio_dropped", 0)) if live is not None else 0
        return ResilienceStats(
            audio_dropped=s.audio_dropped + current + s.hold_dropped,
            hold_dropped=s.hold_dropped,
            connections=s.connections,
            go_aways=s.go_aways,
        )

    def bind_history(self, history: Callable[[], Sequence[tuple[str, str]]]) -> None:
        """Where the transcript comes from (the bridge is built after its session)."""
        self._history = history

    # ------------------------------------------------------------------ sending (never blocks)

    def send_audio(self, pcm16k: bytes) -> None:
        """Caller audio to the current connection, or held for the next one."""
        live = self._live
        if live is not None and not live.closed:
            live.send_audio(pcm16k)
            return
        self._hold(pcm16k)

    def _hold(self, pcm16k: bytes) -> None:
        if self._closing:
            return
        held = self._held
        if len(held) >= self.policy.hold_max_chunks:
            held.popleft()
            self._stats.hold_dropped += 1
        held.append(pcm16k)

    def _control(self, op: Callable[[LiveConnection], None]) -> None:
        live = self._live
        if live is not None and not live.closed:
            try:
                op(live)
                return
            except LiveSessionError:
                pass  # it closed a moment ago; the events loop is about to replace it
        if not self._closing:
            self._held_control.append(op)

    def send_text(self, text: str) -> None:
        self._fresh = False
        self._since_handle.append(("caller", text))
        self._control(lambda s: s.send_text(text))

    def send_client_content(self, turns: Sequence[tuple[str, str]], turn_complete: bool = True) -> None:
        turns = tuple(turns)
        if self._opening is None and not self._bot_spoke:
            self._opening = (turns, turn_complete)
        self._fresh = False
        self._control(lambda s: s.send_client_content(turns, turn_complete))

    def send_tool_response(self, responses: Sequence[FunctionResponse]) -> None:
        """Answer tool calls; answers to calls of a connection that is gone become a note for the new one."""
        current = [r for r in responses if r.id not in self._orphan_tools]
        orphans = [r for r in responses if r.id in self._orphan_tools]
        for r in current:
            if not r.will_continue:  # a streaming tool's call stays open until its last answer
                self._pending_tools.pop(r.id, None)
        if current:
            self._fresh = False
            self._control(lambda s: s.send_tool_response(current))
        if orphans:
            for r in orphans:
                self._orphan_tools.pop(r.id, None)
            results = "; ".join(f"{r.name} returned {dict(r.response)!r}" for r in orphans)
            note = (
                f"[The line was briefly interrupted while you waited for a tool. {results}. "
                "Tell the caller the outcome.]"
            )
            self._control(lambda s: s.send_client_content([("user", note)], True))

    def send_activity_start(self) -> None:
        """Manual activity detection: the caller started speaking (its audio follows)."""
        self._activity = True
        self._fresh = False
        self._activity_marker(lambda s: s.send_activity_start())

    def send_activity_end(self) -> None:
        """Manual activity detection: the caller's turn is over."""
        self._activity = False
        self._activity_marker(lambda s: s.send_activity_end())

    def _activity_marker(self, op: Callable[[LiveConnection], None]) -> None:
        live = self._live
        if live is not None and not live.closed:
            try:
                op(live)
                return
            except LiveSessionError:
                pass  # it closed a moment ago; the events loop is about to replace it
        # Not held with the other controls: a marker must keep its place among the held audio, so
        # _attach frames that audio with activityStart/activityEnd from the state instead.
        if not self._closing:
            self._activity_held = True

    # ------------------------------------------------------------------ receiving

    def events(self) -> AsyncIterator[ServerEvent]:
        """Server events of whichever connection carries the call; for one consumer.

        Raises:
            LiveSessionError: Gemini could not be reached within the policy, or closed for a reason
                reconnecting cannot fix. The call should fall back.
        """
        if self._consumed:
            raise LiveSessionError("ResilientSession.events() can be consumed once")
        self._consumed = True
        return self._run()

    async def _run(self) -> AsyncIterator[ServerEvent]:
        await self._establish()
        while not self._closing:
            stream = self._stream
            assert stream is not None
            try:
                if self._deadline is None:
                    event = await anext(stream)
                else:
                    async with asyncio.timeout_at(self._deadline):
                        event = await anext(stream)
            except TimeoutError:
                cut = self._turn_open
                await self._hand_over("go_away", None, "goAway deadline near, no safe point")
                if cut:
                    yield TurnComplete()
                continue
            except StopAsyncIteration:
                # Only our own close() ends a connection's events without an error (a server close,
                # 1000 included, raises LiveSessionClosed): the call is ending.
                return
            except LiveSessionClosed as exc:
                if self.closed:
                    return
                if not exc.retryable:
                    raise
                cut = self._turn_open
                await self._hand_over("closed", exc.code, exc.reason)
                if cut:
                    yield TurnComplete()
                continue
            self._observe(event)
            yield event
            if self._deadline is not None and self._safe():
                await self._hand_over("go_away", None, "goAway")

    def _observe(self, event: ServerEvent) -> None:
        kind = type(event)
        if kind is ModelAudio:
            self._turn_open = True
            self._fresh = False
            self._bot_spoke = True
        elif kind is OutputTranscription:
            assert isinstance(event, OutputTranscription)
            self._turn_open = True
            self._fresh = False
            self._bot_spoke = True
            self._reply.append(event.text)
            self._note_since(("bot", event.text))
        elif kind is InputTranscription:
            assert isinstance(event, InputTranscription)
            self._fresh = False
            self._note_since(("caller", event.text))
        elif kind is TurnComplete:
            self._turn_open = False
            self._fresh = False
            self._reply.clear()
        elif kind is SessionResumptionUpdate:
            assert isinstance(event, SessionResumptionUpdate)
            if event.resumable and event.new_handle:
                self._handle = event.new_handle
                self._fresh = True
                self._since_handle.clear()
            else:
                self._fresh = False
        elif kind is ToolCall:
            assert isinstance(event, ToolCall)
            self._turn_open = True
            self._fresh = False
            for call in event.calls:
                self._pending_tools[call.id] = call.name
        elif kind is ToolCallCancellation:
            assert isinstance(event, ToolCallCancellation)
            self._fresh = False
            for call_id in event.ids:
                self._pending_tools.pop(call_id, None)
        elif kind is GoAway:
            assert isinstance(event, GoAway)
            self._stats.go_aways += 1
            margin = min(self.policy.switch_margin_s, event.time_left_s / 2)
            deadline = asyncio.get_running_loop().time() + max(0.0, event.time_left_s - margin)
            self._deadline = deadline if self._deadline is None else min(self._deadline, deadline)
        elif kind is InteractionStatus:
            assert isinstance(event, InteractionStatus)
            self._in_progress = event.in_progress
            self._fresh = False  # it rides on a turnComplete: the next handle is the safe one
        elif kind is Interrupted or kind is GenerationComplete:
            self._fresh = False
            if kind is Interrupted:
                self._in_progress = False

    def _note_since(self, line: tuple[str, str]) -> None:
        since = self._since_handle
        since.append(line)
        if len(since) > 400:
            del since[:200]

    def _safe(self) -> bool:
        """Model idle, no unanswered tool call, and nothing said since the latest resumable handle.

        Without any handle yet there is no safe point: the server sends one right after a turn, and
        switching just before it would start a fresh session needlessly. The deadline forces it.
        """
        return (
            self._fresh
            and not self._turn_open
            and not self._pending_tools
            and not self._activity
            and not self._in_progress
        )

    # ------------------------------------------------------------------ connecting

    async def _establish(self) -> None:
        """The call's first connection: the preconnected one if it worked, else connect with retries."""
        started = time.monotonic()
        deadline = asyncio.get_running_loop().time() + self.policy.give_up_after_s
        first = self._first
        session: LiveConnection | None = None
        if first is not None:
            try:
                # Shielded: if the call ends meanwhile, close() disposes of the preconnect instead.
                async with asyncio.timeout_at(deadline):
                    session = await asyncio.shield(first)
            except TimeoutError:
                self._first = None
                first.cancel()
                self._record("start", None, "setup too slow", "failed", 1, started, 0, False)
                raise LiveConnectError(
                    f"no Live session within {self.policy.give_up_after_s}s", retryable=False
                ) from None
            except asyncio.CancelledError:
                if not first.cancelled():
                    raise  # this task is being cancelled, not the preconnect
                self.log.warning("preconnect was cancelled; connecting again")
            except GatewayError as exc:
                self.log.warning(
                    "preconnected Live session failed; connecting again", extra={"error": str(exc)}
                )
                if isinstance(exc, LiveSessionError) and not exc.retryable:
                    self._first = None
                    self._record("start", None, str(exc), "failed", 1, started, 0, False)
                    raise
            self._first = None
        attempts = 1
        if session is None:
            try:
                session, _, attempts = await self._open("start", None, deadline)
            except LiveSessionError as exc:
                self._record(
                    "start", None, str(exc), "failed", getattr(exc, "attempts", 1), started, 0, False
                )
                raise
        self._attach(session, "fresh", stale=False, cut=False, seeded=False)
        if attempts > 1:
            self._record("start", None, "", "fresh", attempts, started, 0, False)

    async def _open(
        self, cause: Cause, keep: LiveConnection | None, deadline: float | None = None
    ) -> tuple[LiveConnection, Outcome, int]:
        """Connect (resuming when a handle exists) with bounded retries; ``keep`` is closed on a failure.

        Raises:
            LiveConnectError: every attempt failed, the time ran out, or the failure is not retryable.
        """
        policy = self.policy
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + policy.give_up_after_s
        delays = policy.backoff()
        attempts = 0
        last: GatewayError | None = None
        while True:
            handle = self._handle
            attempts += 1
            try:
                async with asyncio.timeout_at(deadline):
                    session = await self._connect(handle)
                return session, ("resumed" if handle else "fresh"), attempts
            except LiveSessionNotFound as exc:
                # Unknown or expired handle: the conversation is gone; start fresh, seeded (not a retry).
                self.log.warning("resumption handle not found; starting a fresh session")
                self._handle = None
                last = exc
                continue
            except TimeoutError:
                last = LiveConnectError(f"no Live session within {policy.give_up_after_s}s", retryable=False)
                break
            except LiveSessionError as exc:
                last = exc
                if not exc.retryable:
                    break  # 1007/1008 at setup: configuration, retrying cannot help
            except GatewayError as exc:  # e.g. ConfigError for a bad endpoint
                last = exc
                break
            if keep is not None:
                # Resuming while the old socket is open has been seen rejected with 1011: close it first.
                await keep.close()
                keep = None
            if attempts >= policy.max_attempts:
                break
            delay = next(delays)
            if loop.time() + delay >= deadline:
                break
            self.log.info(
                "live reconnect retry",
                extra={"cause": cause, "attempt": attempts, "delay_s": round(delay, 2)},
            )
            await asyncio.sleep(delay)
        error = LiveConnectError(f"Gemini unreachable after {attempts} attempt(s): {last}", retryable=False)
        error.attempts = attempts  # type: ignore[attr-defined]  # read back when recording the failure
        raise error from last

    async def _hand_over(self, cause: Cause, code: int | None, reason: str) -> None:
        """Move the call to a new connection; the old one's unsent audio goes first."""
        old = self._live
        assert old is not None
        started = time.monotonic()
        self._live = None  # from here caller audio is held
        self._stream = None
        for chunk in reversed(old.take_unsent_audio()):
            self._held.appendleft(chunk)
        cut = self._turn_open
        stale = not self._fresh and self._handle is not None
        self._retire(old)
        for call_id, name in self._pending_tools.items():
            self._orphan_tools[call_id] = name
        self._pending_tools.clear()
        keep = old if cause == "go_away" and not old.closed else None
        if keep is None:
            await old.close()
        try:
            session, outcome, attempts = await self._open(cause, keep)
        except LiveSessionError as exc:
            await old.close()
            self._record(cause, code, reason, "failed", getattr(exc, "attempts", 1), started, 0, stale)
            raise
        await old.close()
        held = len(self._held)
        self._attach(session, outcome, stale=stale, cut=cut, seeded=True)
        self._record(cause, code, reason, outcome, attempts, started, held, stale and outcome == "resumed")

    def _retire(self, old: LiveConnection) -> None:
        self._stats.audio_dropped += int(getattr(getattr(old, "stats", None), "audio_dropped", 0))
        if isinstance(old, LiveSession):
            old.direct = None

    def _direct(self, event: ServerEvent) -> bool:
        """An event of the current connection, from its read callback, for the call's direct taker: only
        Gemini's audio, and never near a ``goAway`` deadline (the hand-over is decided in :meth:`_run`,
        after each event). Observed as :meth:`_run` observes what it yields."""
        direct = self.direct
        if direct is None or type(event) is not ModelAudio or self._deadline is not None or self._closing:
            return False
        if not direct(event):
            return False
        self._observe(event)
        return True

    def _attach(
        self, session: LiveConnection, outcome: Outcome, *, stale: bool, cut: bool, seeded: bool
    ) -> None:
        """Make ``session`` the call's connection: restore context, then deliver everything held."""
        if self._closing:
            self._close_later(session)
            return
        self._stats.connections += 1
        note = self._context_note(outcome, stale=stale, cut=cut) if seeded else None
        replay_opening = seeded and outcome == "fresh" and not self._bot_spoke and self._opening is not None
        self._live = session
        self._stream = session.events()
        if isinstance(session, LiveSession):
            session.direct = self._direct
        self._deadline = None
        self._turn_open = False
        self._in_progress = False
        self._fresh = outcome == "resumed" and not stale
        self._reply.clear()
        if outcome == "fresh":
            self._handle = None
        self._since_handle.clear()
        try:
            if note is not None:
                session.send_client_content([("user", note)], turn_complete=cut)
            if replay_opening and self._opening is not None:
                session.send_client_content(self._opening[0], self._opening[1])
            control, self._held_control = self._held_control, []
            for op in control:
                op(session)
            # Manual activity detection: the new connection knows nothing of an utterance in progress
            # or one spoken during the outage, and would discard audio outside an activity window.
            framed, self._activity_held = self._activity or self._activity_held, False
            if framed:
                session.send_activity_start()
            # All of it, in order: a per-chunk send_audio would keep only the newest second of a
            # slow setup's worth of speech (the connection's queue drops the oldest).
            session.send_audio_backlog(self._held)
            self._held.clear()  # only once it is sent: a connection that closed keeps it for the next
            if framed and not self._activity:
                session.send_activity_end()
        except LiveSessionError:
            pass  # closed already: the events loop sees it next and hands over again

    def _context_note(self, outcome: Outcome, *, stale: bool, cut: bool) -> str | None:
        """What the new connection must be told so the caller does not have to repeat anything."""
        tail = (
            "You were cut off in the middle of your reply: finish it briefly, without repeating what"
            " the caller already heard."
            if cut
            else ""
        )
        limit = self.policy.history_max_chars
        if outcome == "fresh":
            lines = list(self._history()) if self._history is not None else []
            if lines:
                history = render_lines(lines, limit)
                return (
                    "[The phone line to you was re-established mid-call; do not greet the caller again. "
                    f"The conversation so far:\n{history}\n{tail or 'Wait for the caller to speak.'}]"
                )
        elif stale and self._since_handle:
            since = render_lines(self._since_handle, limit)
            return f"[The line was briefly interrupted. Since then:\n{since}" + (
                f"\n{tail}]" if tail else "]"
            )
        return f"[The line was briefly interrupted. {tail}]" if cut else None

    def _record(
        self,
        cause: Cause,
        code: int | None,
        reason: str,
        outcome: Outcome,
        attempts: int,
        started: float,
        held: int,
        stale: bool,
    ) -> None:
        event = Reconnect(
            cause=cause,
            code=code,
            reason=reason,
            outcome=outcome,
            attempts=attempts,
            gap_ms=(time.monotonic() - started) * 1000.0,
            held_chunks=held,
            stale=stale,
            at=time.time(),
        )
        self.reconnects.append(event)
        log = self.log.warning if outcome == "failed" else self.log.info
        log("live reconnect", extra=event.as_dict())
        if self.on_reconnect is not None:
            self.on_reconnect(event)

    # ------------------------------------------------------------------ closing

    async def close(self) -> None:
        """End the call's Live session (and a preconnect nobody used). Idempotent."""
        self._closing = True
        self._held.clear()
        self._held_control.clear()
        first, self._first = self._first, None
        if first is not None:
            if first.done():
                if not first.cancelled() and first.exception() is None:
                    await first.result().close()
            else:
                first.cancel()
        live, self._live = self._live, None
        if live is not None:
            self._retire(live)
            await live.close()

    def _close_later(self, session: LiveConnection) -> None:
        task = asyncio.get_running_loop().create_task(session.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)


#: Close tasks of connections that arrived after the call ended, referenced until done.
_closing: set[asyncio.Task[None]] = set()


def live_session_for_call(
    endpoint: LiveEndpoint,
    config: SessionConfig,
    *,
    log: CallLogger,
    first: asyncio.Future[Any] | None = None,
    setup_timeout_s: float = 5.0,
    give_up_after_s: float = 8.0,
) -> ResilientSession:
    """The production wiring: every connection of the call uses ``config``, resuming when it can."""

    async def connect(handle: str | None) -> LiveConnection:
        cfg = replace(config, resumption=True, compression=True, resumption_handle=handle)
        return await LiveSession.connect(endpoint, cfg, logger=log, setup_timeout_s=setup_timeout_s)

    return ResilientSession(
        connect, log=log, first=first, policy=ResiliencePolicy(give_up_after_s=give_up_after_s)
    )
