"""CallBridge: one phone call ⇄ one Gemini Live session.

Three tasks per call, each with one job and owned by :meth:`CallBridge.run`:

* **uplink** — consumes the provider's events (the media handler is the socket's only reader):
  caller audio is transcoded and handed to the session without ever waiting on it; DTMF becomes
  text for the model; mark echoes update what the caller has heard; ``stop`` ends the call.
* **downlink** — consumes the session's events: model audio is transcoded into 20 ms frames and
  queued for playout; ``interrupted`` clears the provider's buffer at once; turn ends flush the
  resampler so no tail is lost; transcriptions build the transcript.
* **playout** — sends queued frames and marks, paced so the provider never holds more than a
  short lead of unplayed audio (see :mod:`gateway.bridge.playout`).

Whichever of uplink or downlink finishes first ends the call; teardown closes the Live session,
then the caller-side socket is closed by the media handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.audio.formats import LIVE_INPUT_RATE
from gateway.audio.transcode import Downlink, Uplink
from gateway.audio.vad import LocalVad, VadEdge
from gateway.bridge.guard import CallGuard
from gateway.bridge.playout import MarkOut, Playout
from gateway.bridge.resilience import ResilientSession
from gateway.bridge.setup import manual_vad
from gateway.bridge.transcript import Transcript, Turn
from gateway.dialplan.model import Dialplan
from gateway.errors import LiveSessionError, TelephonyProtocolError
from gateway.gemini.messages import (
    FunctionResponse,
    GenerationComplete,
    GoAway,
    Grounding,
    InputTranscription,
    InteractionStatus,
    Interrupted,
    ModelAudio,
    OutputTranscription,
    ServerEvent,
    SessionResumptionUpdate,
    ToolCall,
    ToolCallCancellation,
    TurnComplete,
    TurnCompleteReason,
    UsageMetadata,
    WaitingForInput,
)
from gateway.log import CallLogger
from gateway.metrics import CallDepths
from gateway.records.observer import VOICE_PEAK, CallObserver, peak
from gateway.telephony.events import (
    CallerAudio,
    CallStarted,
    CallStopped,
    ClearPlayback,
    Connected,
    DtmfPressed,
    FlowControl,
    MarkReached,
    PlayAudio,
    SetMark,
    TelephonyCommand,
    TelephonyEvent,
)
from gateway.telephony.provider import PCMU_8K, AudioFormat, Capabilities, Frame

if TYPE_CHECKING:
    from gateway.tools.router import ToolRouter

#: Lead of a stream paced in real time (``frames_per_message=1``, ``provider_buffers=False``): a reply's
#: first two frames leave at once, then one every 20 ms, so a wake-up up to 20 ms late leaves no gap.
PACED_LEAD_S = 0.04

#: Teardowns in flight, referenced until done (see :meth:`CallBridge.run`).
_teardowns: set[asyncio.Future[None]] = set()


class LiveSessionLike(Protocol):
    """What the bridge needs of a Live session (tests may pass an in-memory fake)."""

    def send_audio(self, pcm16k: bytes) -> None: ...

    def send_text(self, text: str) -> None: ...

    def send_client_content(self, turns: Sequence[tuple[str, str]], turn_complete: bool = True) -> None: ...

    def send_tool_response(self, responses: Sequence[FunctionResponse]) -> None: ...

    def send_activity_start(self) -> None: ...

    def send_activity_end(self) -> None: ...

    def events(self) -> AsyncIterator[ServerEvent]: ...

    async def close(self) -> None: ...


class CommandEncoder(Protocol):
    def encode(self, command: TelephonyCommand) -> Frame: ...


class DirectSend(Protocol):
    """A caller connection that can take messages synchronously (a WebSocket's ``MediaSender``,
    gateway/server/media_out.py; an AudioSocket connection): what lets a reply's first audio leave from
    the Live socket's read callback (``CallBridge._audio_now``)."""

    def writable(self) -> bool:
        """True when :meth:`write` would not need to wait (open, the peer keeping up)."""
        ...

    def write(self, texts: Sequence[Frame]) -> None:
        """Write ``texts`` now, in one write; only when :meth:`writable`."""
        ...


@dataclass(frozen=True, slots=True)
class CallInfo:
    call_sid: str
    stream_sid: str
    from_: str
    to: str


@dataclass(slots=True)
class CallResult:
    """How a call went: what the record and the logs say at the end."""

    call_sid: str
    dialplan: str
    dialplan_version: str
    started_at: float
    ended_at: float = 0.0
    ended_by: str = ""
    reason: str = ""
    transcript: list[dict[str, object]] = field(default_factory=list)
    frames_in: int = 0
    frames_out: int = 0
    audio_dropped: int = 0
    marks_sent: int = 0
    marks_acked: int = 0
    clears: int = 0
    usage_tokens: int = 0
    resumption_handle: str | None = None
    #: Hand-overs and outages of the Gemini connection (see gateway/bridge/resilience.py).
    reconnects: list[dict[str, object]] = field(default_factory=list)
    #: Milliseconds from the start of the call to the fallback line, when Gemini was unreachable.
    fallback_ms: float | None = None
    #: Where a limit or the fallback transferred the call.
    transfer_to: str | None = None
    #: The provider already ended the call or took it elsewhere (a REST hang-up or transfer that
    #: succeeded): the media handler need not hang it up at the provider again.
    released: bool = False


@dataclass(frozen=True, slots=True)
class CallFailure:
    """The first unexpected error of a call: which task raised it, and what."""

    task: str
    error: BaseException


class CallBridge:
    """Runs one call. Construct with a connected Live session; :meth:`run` returns when the call ends."""

    def __init__(
        self,
        *,
        info: CallInfo,
        dialplan: Dialplan,
        session: LiveSessionLike,
        encoder: CommandEncoder,
        send: Callable[[Sequence[Frame]], Awaitable[None]],
        log: CallLogger,
        clock: Callable[[], float] = time.monotonic,
        playout_lead_s: float = 0.12,
        observer: CallObserver | None = None,
        tools: Callable[[CallBridge], ToolRouter] | None = None,
        uplink_rate: int = LIVE_INPUT_RATE,
        media_timeout_s: float = 0.0,
        audio: AudioFormat = PCMU_8K,
        capabilities: Capabilities | None = None,
        direct_send: DirectSend | None = None,
    ) -> None:
        self.info = info
        self.dialplan = dialplan
        self.session = session
        self._encode = encoder.encode
        self._send = send
        #: ``send``'s synchronous side, where it has one: see :meth:`_audio_now`.
        self._direct_send = direct_send
        self.log = log
        self._clock = clock
        #: The stream's audio, converted once at the edge (Uplink/Downlink, fallback frames).
        self.audio = audio
        #: What the provider's stream can do (gateway/telephony/provider.py): read, never assumed.
        self.capabilities = caps = capabilities if capabilities is not None else Capabilities()
        self.uplink = Uplink(audio.codec, in_rate=audio.rate, out_rate=uplink_rate)
        #: The caller is gone when no media frame arrived for this long (0: never checked). Only for
        #: providers that stream continuously; others may fall silent on purpose.
        self.media_timeout_s = media_timeout_s if caps.continuous_media else 0.0
        #: Frames per media message: any number (None) or exactly this many (Vonage, AudioSocket: 1), or
        #: whole multiples of it (Exotel: 10): a short run waits for more (``_carry``) or is padded.
        self._per_message = caps.frames_per_message
        self._carry: list[bytes] = []
        #: When the carried run must go out, padded, if the reply's next frames have not come (see _hold).
        self._carry_until = 0.0
        self.downlink = Downlink(audio.codec, out_rate=audio.rate)
        if caps.frames_per_message == 1 and not caps.provider_buffers:
            # One 20 ms frame per message, paced in real time (Vonage): one message per wake-up, a
            # short lead so the provider's queue never runs dry on a late wake-up and stays barge-in short.
            self.playout = Playout(lead_s=min(playout_lead_s, PACED_LEAD_S), batch=1)
        else:
            self.playout = Playout(lead_s=playout_lead_s)
        #: ``[vad] disabled``: the gateway marks the caller's turns itself (see :meth:`_manual_turns`).
        self._vad = manual_vad(dialplan, uplink_rate)
        # Audio outside an activity only counts with turn_coverage = "all_input" (§2.2): else not sent.
        self._audio_between_turns = dialplan.vad.turn_coverage == "all_input"
        #: Extended thinking: the model is still working on the request (``interactionStatus``).
        self._in_progress = False
        #: Records, metrics and the optional recording; a bare one (no store) when not given.
        self.observer = observer or CallObserver(call_id=info.call_sid, dialplan=dialplan.name, clock=clock)
        self.transcript = Transcript(on_turn=self._turn_finished)
        self._wake = asyncio.Event()
        #: The playout task waits on ``_wake`` with nothing queued (see :meth:`_on_server_event`).
        self._parked = False
        self._sending = asyncio.Lock()
        #: Live levels for the call inspector (gateway/server/inspector.py samples and resets them): the
        #: caller's loudest PCM16 peak since the last sample, and the peak of Gemini's latest audio chunk.
        self.level_in = 0
        self.level_out = 0
        self._turn_flushed = False
        self._bot_audio = False
        self._uplink_task: asyncio.Task[None] | None = None
        #: The first unexpected error of the call's tasks (see :meth:`_owned`).
        self._failure: CallFailure | None = None
        self._failed: asyncio.Future[None] | None = None  # set by run(): done once a task failed
        self._protocol_error: TelephonyProtocolError | None = None
        #: Model turns ended (complete or interrupted): call control waits for the goodbye's turn.
        self.turns_ended = 0
        #: The model's reply is under way: from its first content to its ``turnComplete``.
        self.model_turn_open = False
        #: Caller audio reaches Gemini as silence (set once the gateway ends the call with a last line).
        self.caller_muted = False
        self.result = CallResult(
            call_sid=info.call_sid,
            dialplan=dialplan.name,
            dialplan_version=dialplan.version,
            started_at=time.time(),
        )
        #: Fallback when Gemini is unreachable; silence and duration limits (gateway/bridge/guard.py).
        self.guard = CallGuard(self)
        #: The call's tool router (gateway/tools/router.py) and the call control its tools act through.
        self.tools = tools(self) if tools is not None else None
        self.control = self.tools.context.control if self.tools is not None else None
        if self.tools is not None:
            self.tools.observers.append(self.observer.tool_record)
        if isinstance(session, ResilientSession):
            # Hand-overs of a resilient session go to the call record and metrics as they happen.
            if session.on_reconnect is None:
                session.on_reconnect = self.observer.reconnect_record
            session.direct = self._audio_now  # Gemini's audio from the socket's read callback

    # --- lifecycle ---------------------------------------------------------------------------
    async def run(self, inbound: AsyncIterator[TelephonyEvent]) -> CallResult:
        """Bridge until either side ends the call; ``inbound`` protocol errors propagate after teardown.

        The call owns its tasks: each runs under :meth:`_owned`, so no task's error can be dropped.
        An unexpected one is logged once (traceback and call ids), ends the call as ``gateway`` with
        the reason, and the caller hears the fallback line then the dialplan's fallback action, as
        for a Gemini outage (:meth:`_recover`).
        """
        tasks: dict[str, asyncio.Task[None]] = {}
        self._failed = asyncio.get_running_loop().create_future()
        try:
            if self.dialplan.greeting:
                self.session.send_client_content([("user", self.dialplan.greeting)], turn_complete=True)
            tasks["uplink"] = self._uplink_task = self._spawn("uplink", self._uplink(inbound))
            tasks["downlink"] = self._spawn("downlink", self._downlink())
            tasks["playout"] = self._spawn("playout", self._playout())
            tasks["limits"] = self._spawn("limits", self.guard.watch())
            if self.media_timeout_s > 0:
                tasks["media watchdog"] = self._spawn("media watchdog", self._media_watchdog())
            # The playout task only ever ends by failing; the other three end the call when they return.
            # ``_failed`` completes when any task of the call failed, the call-control ones included.
            await asyncio.wait([*tasks.values(), self._failed], return_when=asyncio.FIRST_COMPLETED)
            if self._failure is not None:
                await self._recover(tasks)
        except Exception as exc:  # e.g. the greeting could not be sent
            self._task_failed("start", exc)
            await self._recover(tasks)
        finally:
            # Teardown must finish even if this task is cancelled (aiohttp may cancel a handler
            # whose client vanished): the Gemini session is closed in a shielded task.
            for task in tasks.values():
                task.cancel()
            teardown = asyncio.ensure_future(self._teardown(*tasks.values()))
            _teardowns.add(teardown)
            teardown.add_done_callback(_teardowns.discard)
            try:
                await asyncio.shield(teardown)
            finally:
                self._finish()
        # Surface a malformed-input error to the media handler so it closes with the right code.
        if self._protocol_error is not None:
            raise self._protocol_error
        return self.result

    def spawn(self, name: str, work: Awaitable[None]) -> asyncio.Task[None]:
        """Start a task that belongs to this call: its unexpected error ends the call through the
        fallback (see :meth:`run`). The caller keeps the task to cancel it; it never raises."""
        return self._spawn(name, work)

    def _spawn(self, name: str, work: Awaitable[None]) -> asyncio.Task[None]:
        return asyncio.create_task(self._owned(name, work), name=f"{name}:{self.info.call_sid}")

    async def _owned(self, name: str, work: Awaitable[None]) -> None:
        """Run one of the call's tasks; its unexpected error is reported, never lost."""
        try:
            await work
        except TelephonyProtocolError as exc:
            self._protocol_error = exc  # the caller's side broke its protocol: not our failure
        except Exception as exc:
            self._task_failed(name, exc)

    def _task_failed(self, task: str, exc: BaseException) -> None:
        """Log an unexpected error once with its traceback, and make it the call's end reason."""
        if self._failure is not None:
            self.log.error(
                "call task failed during recovery", exc_info=exc, extra={"task": task, "error": repr(exc)}
            )
            return
        self._failure = CallFailure(task, exc)
        reason = f"internal error in {task}: {type(exc).__name__}: {exc}"
        self.log.error("call task failed", exc_info=exc, extra={"task": task, "error": repr(exc)})
        self._end("gateway", reason[:300])
        self.observer.failure(task, exc)
        if self._failed is not None and not self._failed.done():
            self._failed.set_result(None)

    async def _recover(self, tasks: dict[str, asyncio.Task[None]]) -> None:
        """After an unexpected error: the caller hears the fallback line, then its action runs.

        Gemini's output and the timers stop; the uplink keeps reading (a hang-up still ends the call)
        and playout keeps sending, restarted once if it was the task that failed.
        """
        for name in ("downlink", "limits"):
            if name in tasks:
                tasks[name].cancel()
        playout = tasks.get("playout")
        if playout is None or playout.done():
            self.playout.clear(self._clock())
            tasks["playout"] = self._spawn("playout", self._playout())
        failure = self._failure
        error = failure.error if failure is not None else RuntimeError("unknown failure")
        tasks["fallback"] = fallback = self._spawn("fallback", self.guard.fall_back(error))
        waiting = {fallback, tasks["playout"]}
        if "uplink" in tasks and not tasks["uplink"].done():
            waiting.add(tasks["uplink"])
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)

    async def _teardown(self, *tasks: asyncio.Task[None]) -> None:
        await asyncio.gather(*tasks, return_exceptions=True)  # _owned has reported every error already
        try:
            if self.tools is not None:
                await self.tools.close()  # running handlers are cancelled; nothing more is sent
        finally:
            await self.session.close()

    def _finish(self) -> None:
        r = self.result
        self.transcript.close()
        r.ended_at = time.time()
        r.transcript = self.transcript.as_list()
        r.frames_out = self.playout.frames_sent
        r.marks_sent = self.playout.marks_sent
        r.marks_acked = self.playout.marks_acked
        r.clears = self.playout.clears
        stats = getattr(self.session, "stats", None)
        r.audio_dropped = int(getattr(stats, "audio_dropped", 0))
        r.reconnects = [event.as_dict() for event in getattr(self.session, "reconnects", ())]
        self.observer.closed(
            ended_by=r.ended_by,
            reason=r.reason,
            stats={
                "frames_in": r.frames_in,
                "frames_out": r.frames_out,
                "audio_dropped": r.audio_dropped,
                "marks_sent": r.marks_sent,
                "marks_acked": r.marks_acked,
                "clears": r.clears,
                "duration_s": round(r.ended_at - r.started_at, 3),
            },
        )
        self.log.info(
            "call ended",
            extra={
                "ended_by": r.ended_by,
                "reason": r.reason,
                "duration_s": round(r.ended_at - r.started_at, 2),
                "frames_in": r.frames_in,
                "frames_out": r.frames_out,
                "marks": f"{r.marks_acked}/{r.marks_sent}",
                "clears": r.clears,
                "audio_dropped": r.audio_dropped,
            },
        )

    def _end(self, by: str, reason: str) -> None:
        if not self.result.ended_by:
            self.result.ended_by = by
            self.result.reason = reason

    def hang_up(self, by: str, reason: str) -> bool:
        """End the call from outside (admin API): the bridge tears down as if the caller left.

        Returns False when the call is not running. Closing the media stream ends Twilio's
        ``<Connect>``; with no TwiML after it, Twilio hangs up the phone call.
        """
        task = self._uplink_task
        if task is None or task.done():
            return False
        self._end(by, reason)
        task.cancel()
        return True

    def wind_down(self, goodbye: str, reason: str, *, quiet_s: float = 0.0, within_s: float = 0.0) -> bool:
        """End the call politely from outside (the gateway is shutting down, a machine answered): the
        model says ``goodbye``, and once the caller has heard it (bounded) the call hangs up as
        ``gateway``. With ``quiet_s``, first wait until the caller's side has made no sound that long, at
        most ``within_s``: an answering machine whose provider reports no beep has ended its greeting
        then, and a message said earlier would be said over it.

        Returns False when the call is not running.
        """
        task = self._uplink_task
        if task is None or task.done():
            return False
        self.spawn("wind down", self._wind_down(goodbye, reason, quiet_s, within_s))
        return True

    async def _wind_down(self, goodbye: str, reason: str, quiet_s: float, within_s: float) -> None:
        if quiet_s > 0:
            started = self._clock()
            quiet = await self._caller_quiet(quiet_s, within_s)
            waited = {"waited_s": round(self._clock() - started, 2), "quiet": quiet}
            self.observer.event("line_quiet", waited)  # when, and whether, the wait ended: in the record
            if not quiet:
                self.log.info("the line never went quiet: winding down anyway", extra=waited)
        await self.guard.wind_down(goodbye, reason)

    async def _caller_quiet(self, quiet_s: float, within_s: float) -> bool:
        """Wait until no caller frame has been above ``VOICE_PEAK`` for ``quiet_s``, at most ``within_s``;
        whether the line went quiet."""
        deadline = self._clock() + within_s
        while True:
            now = self._clock()
            last = self.observer.last_voice_at
            wait = 0.0 if last is None else quiet_s - (now - last)
            if wait <= 0:
                return True
            if now >= deadline:
                return False
            await asyncio.sleep(min(wait, deadline - now))

    def _turn_finished(self, turn: Turn) -> None:
        self.observer.turn(
            turn.role,
            turn.text,
            turn.started_at,
            turn.ended_at,
            interrupted=turn.interrupted,
            heard=turn.heard,
        )

    # --- uplink: caller → Gemini ------------------------------------------------------------------
    def caller_audio(self, event: CallerAudio) -> None:
        """One frame of caller audio to Gemini. Synchronous, so the media socket can call it as soon
        as the frame is parsed (gateway/server/media_in.py) as well as from the uplink task."""
        self.result.frames_in += 1
        pcm = self.uplink.process(event.payload)
        # Muted (the gateway is ending the call): Gemini hears the line go quiet, so nothing the
        # caller says now starts a turn over the last line. The meters and the recording still hear it.
        sent = pcm if not self.caller_muted else bytes(len(pcm))
        vad = self._vad
        if vad is None:
            self.session.send_audio(sent)
        else:
            self._manual_turns(vad, sent)
        # For the reply-latency histogram: when the caller last made a sound.
        level = peak(pcm, 2)
        if level > self.level_in:  # the call inspector's live meter (one integer, read 5 times a second)
            self.level_in = level
        if level > VOICE_PEAK:
            # Also feeds the silence timeout, so it works with input transcription off.
            self.observer.last_voice_at = now = self._clock()
            self.guard.caller_active_at(now)
        recording = self.observer.recording
        if recording is not None:
            recording.caller(event.payload)

    def _manual_turns(self, vad: LocalVad, pcm: bytes) -> None:
        """Manual activity detection: ``activityStart``, the pre-roll and the speech, ``activityEnd``.

        The server discards audio outside an activity (docs/gemini-live.md §2.4) unless the plan's turns
        cover all input, so between turns nothing is sent: a silent line costs no bandwidth. The pre-roll
        (the onset and the audio just before it) follows ``activityStart`` so no syllable is clipped.
        """
        session = self.session
        edge = vad.feed(pcm)
        try:
            if edge is VadEdge.NONE:
                if vad.active or self._audio_between_turns:
                    session.send_audio(pcm)
            elif edge is VadEdge.START:
                session.send_activity_start()
                preroll = vad.take_preroll()
                for chunk in preroll if not self._audio_between_turns else preroll[-1:]:
                    session.send_audio(chunk)
            else:
                session.send_activity_end()
                if self._audio_between_turns:
                    session.send_audio(pcm)
        except LiveSessionError:
            pass  # the session just ended; the downlink task is ending the call

    async def _uplink(self, inbound: AsyncIterator[TelephonyEvent]) -> None:
        session, caller_audio = self.session, self.caller_audio
        try:
            async for event in inbound:
                if isinstance(event, CallerAudio):
                    caller_audio(event)
                elif isinstance(event, MarkReached):
                    turn = self.playout.mark_echoed(event.name)
                    if turn is not None and turn.finished and turn.heard >= turn.queued:
                        self.playout.forget(turn.turn)
                elif isinstance(event, DtmfPressed):
                    key_text = f"[The caller pressed the phone key {event.digit}]"
                    # One transcript entry per key: the model's transcription of key_text is dropped.
                    self.transcript.note("dtmf", event.digit, sent_as=key_text)
                    self.log.info("dtmf", extra={"digit": event.digit})
                    self.guard.caller_active()
                    try:
                        session.send_text(key_text)
                    except LiveSessionError:
                        pass  # the session just ended; the downlink task is ending the call
                elif isinstance(event, FlowControl):
                    # The provider's queue is full (Asterisk MEDIA_XOFF): hold frames until it has room.
                    self.playout.paused = event.paused
                    self.log.info("provider flow control", extra={"paused": event.paused})
                    if not event.paused:
                        with contextlib.suppress(ConnectionError):  # gone: the stream's end follows
                            await self._pump()
                elif isinstance(event, CallStopped):
                    self._end("caller", "stop")
                    return
                elif isinstance(event, Connected | CallStarted):
                    raise TelephonyProtocolError(f"unexpected {type(event).__name__} mid-call")
            self._end("caller", "socket closed")
        except TelephonyProtocolError as exc:
            self._end("gateway", f"protocol error: {exc}")
            raise

    async def _media_watchdog(self) -> None:
        """End the call when the caller's media stops: a vanished caller must not hold a line.

        Providers send audio continuously, silence included (Twilio: 50 messages a second), so a stream
        with no media frame for ``media_timeout_s`` has a dead caller behind it even if its TCP
        connection was never closed. Checked twice per timeout against the frame counter: nothing is
        added to the per-frame path.
        """
        step = self.media_timeout_s / 2
        seen, quiet = self.result.frames_in, 0
        while True:
            await asyncio.sleep(step)
            frames = self.result.frames_in
            quiet = quiet + 1 if frames == seen else 0
            seen = frames
            if quiet >= 2:
                self.log.warning(
                    "no media from the caller: ending the call", extra={"for_s": self.media_timeout_s}
                )
                self._end("caller", f"no media from the caller for {self.media_timeout_s:g} s")
                return

    # --- downlink: Gemini → caller ------------------------------------------------------------------
    async def _downlink(self) -> None:
        try:
            async for event in self.session.events():
                await self._on_server_event(event)
            self._end("gemini", "session closed")
        except ConnectionError:
            # The caller's socket went away under a send (a reply's first audio, a clear).
            self._end("caller", "socket closed")
        except LiveSessionError as exc:
            self.log.warning("live session failed", extra={"error": str(exc)})
            # Never dead air: the caller hears the dialplan's fallback, then its action runs.
            await self.guard.fall_back(exc)
            self._end("gemini", f"live session failed: {exc}")

    def _audio_now(self, event: ServerEvent) -> bool:
        """Gemini's audio, handled in the Live socket's read callback (``LiveSession.direct``, through
        the resilient session) rather than by :meth:`_downlink` a task wake-up later, a wait behind all
        the loop has ready (README, Performance). A reply's first frames go to the caller from here, when
        the caller's socket takes a write now and no send is under way; later chunks only join the
        playout, which paces them. False (anything else, or a call failing): the usual way."""
        if type(event) is not ModelAudio or self._failure is not None:
            return False
        assert isinstance(event, ModelAudio)
        sender = self._direct_send
        parked = self._parked
        if parked and (sender is None or self._sending.locked() or self._carry or not sender.writable()):
            return False
        try:
            if self._queue_audio(event):
                if parked:
                    texts = self._due()
                    if texts:
                        assert sender is not None
                        sender.write(texts)
                self._wake.set()
        except Exception as exc:  # as any of the call's tasks: logged once, the call falls back
            self._task_failed("downlink", exc)
        return True

    def _queue_audio(self, event: ModelAudio) -> bool:
        """Gemini's audio into the playout; True when it made frames (the playout then has work)."""
        self._turn_flushed = False
        self.model_turn_open = True
        if not self._bot_audio:
            self._bot_audio = True
            self.observer.bot_audio_started()
        self.level_out = peak(event.pcm, 2)  # per chunk from Gemini, not per frame sent
        frames = self.downlink.process(event.pcm)
        if not frames:
            return False
        self.playout.enqueue(frames)
        return True

    async def _on_server_event(self, event: ServerEvent) -> None:
        if isinstance(event, ModelAudio):
            if self._queue_audio(event):
                if self._parked:
                    # A reply's first audio: send it from here rather than wake the playout task, a
                    # task switch (one more turn of a busy event loop) later. It paces from then on.
                    await self._pump()
                self._wake.set()
        elif isinstance(event, OutputTranscription):
            self.model_turn_open = True
            self.transcript.bot_text(event.text)
        elif isinstance(event, InputTranscription):
            self.transcript.caller_text(event.text)
            self.guard.caller_active()
        elif isinstance(event, Interrupted):
            self._in_progress = False
            self.guard.interrupted()
            await self._barge_in()
        elif isinstance(event, GenerationComplete):
            self._flush_turn()
        elif isinstance(event, TurnComplete):
            self._flush_turn()
            if self._in_progress:
                # Extended thinking, interactionStatus IN_PROGRESS: one spoken segment (a filler, a first
                # answer) of an interaction that goes on without new input. Not the end of the bot's
                # turn for call control (a goodbye waits for the real end) or for a spoken limit line;
                # the silence clock restarts, as the caller is waiting for the bot, not silent.
                self.guard.timers.bot_active(self._clock())
            else:
                self.model_turn_open = False
                self.turns_ended += 1
                self.guard.turn_complete()
            turn = self.transcript.end_bot()
            if turn is not None:
                self.log.info("bot said", extra={"text": turn.text})
        elif isinstance(event, InteractionStatus):
            self._in_progress = event.in_progress  # rides on the TurnComplete that follows
        elif isinstance(event, WaitingForInput):
            self._in_progress = False
        elif isinstance(event, TurnCompleteReason):
            if event.reason != "NEED_MORE_INPUT":  # anything else means the model's turn went wrong
                self.log.warning("gemini turn ended abnormally", extra={"reason": event.reason})
                self.observer.event("turn_end_reason", {"reason": event.reason})
        elif isinstance(event, Grounding):
            self.observer.grounding(event.queries, event.sources)
        elif isinstance(event, ToolCall):
            if self.tools is not None:
                self.tools.handle(event)  # answers follow as handlers finish (gateway/tools/router.py)
                return
            # A bridge without a router (bare test set-ups): every call still gets exactly one answer.
            self.session.send_tool_response(
                [
                    FunctionResponse(
                        id=c.id, name=c.name, response={"error": f"tool {c.name!r} is not available"}
                    )
                    for c in event.calls
                ]
            )
            for c in event.calls:
                self.observer.tool_call(
                    tool_call_id=c.id, name=c.name, arguments=c.args, status="unavailable", duration_s=0.0
                )
        elif isinstance(event, ToolCallCancellation):
            if self.tools is not None:
                self.tools.cancel(event.ids)
        elif isinstance(event, SessionResumptionUpdate):
            if event.resumable and event.new_handle:
                self.result.resumption_handle = event.new_handle
        elif isinstance(event, UsageMetadata):
            self.result.usage_tokens = max(self.result.usage_tokens, event.total_tokens)
            self.observer.usage(event.prompt_tokens, event.response_tokens, event.total_tokens)
        elif isinstance(event, GoAway):
            self.log.info("gemini goAway", extra={"time_left_s": event.time_left_s})
            self.observer.go_away(event.time_left_s)

    def _flush_turn(self) -> None:
        """End of a reply: hand out the resampler's tail and close the turn's playback."""
        if self._turn_flushed:
            return
        self._turn_flushed = True
        self._bot_audio = False
        frames = self.downlink.flush()
        if frames:
            self.playout.enqueue(frames)
        if self.playout.end_turn() is not None:
            self._wake.set()

    async def _barge_in(self) -> None:
        """The caller spoke over the bot: silence it now and drop everything queued."""
        turn = self.playout.clear(self._clock())
        self.downlink.reset()
        self._turn_flushed = True
        self._bot_audio = False
        self.turns_ended += 1
        async with self._sending:  # after any send in progress, never in the middle of one
            self._carry = []  # frames held back for a whole message are the cut reply's too
            if self.capabilities.clear:  # without one (AudioSocket) only the paced lead was ahead
                await self._send([self._encode(ClearPlayback())])
        self.observer.barge_in(turn.queued - turn.heard if turn is not None else 0)
        fraction = (turn.heard / turn.queued) if turn is not None and turn.queued else 0.0
        cut = self.transcript.end_bot(heard_fraction=min(fraction, 0.999))
        self.log.info(
            "barge-in",
            extra={"heard_frames": turn.heard if turn else 0, "cut": cut.heard if cut is not None else ""},
        )

    # --- playout: paced frames and marks to the caller ---------------------------------------------
    async def _playout(self) -> None:
        playout, clock = self.playout, self._clock
        while True:
            await self._pump()
            wake_at = playout.next_wakeup(clock())
            self._wake.clear()
            if wake_at is None:
                self._parked = True
                try:
                    if self._carry:  # a short run waits for the reply's next frames, not past its time
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), max(0.0, self._carry_until - clock()))
                    else:
                        await self._wake.wait()
                finally:
                    self._parked = False
                continue
            # Frames are queued, so pacing alone decides the next send (at most one frame away): a plain
            # sleep, not a timeout around the wake event, which cost ~3 µs more per frame (a Timeout, an
            # Event future and a caught TimeoutError, 50 times a second per call).
            delay = wake_at - clock()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _pump(self) -> None:
        """Send what is due now: consecutive frames as one media message where the provider plays any
        size (Twilio), exactly ``frames_per_message`` per message where it does not (Vonage: one), and
        everything due at once (media, marks) in one send, i.e. one write() on the socket."""
        async with self._sending:  # two senders must not interleave (a send waits on a slow peer)
            texts = self._due()
            if texts:
                await self._send(texts)

    def _due(self) -> list[Frame]:
        """The messages due now (the playout's frames and marks), encoded; see :meth:`_pump`."""
        encode, recording, per = self._encode, self.observer.recording, self._per_message
        marks = self.capabilities.marks
        texts: list[Frame] = []
        now = self._clock()
        run, self._carry = self._carry, []
        fresh = not run  # the run left after the loop began in this pump (not carried from before)
        for item in self.playout.due(now):
            if isinstance(item, MarkOut):
                if not marks:
                    continue  # the provider has none: what was heard comes from the playout clock
                if run:
                    texts.append(encode(PlayAudio(b"".join(self._padded(run)))))
                    run, fresh = [], True
                texts.append(encode(SetMark(item.name)))
            else:
                run.append(item)
                if recording is not None:
                    recording.bot(item)
                if per is not None and len(run) == per:
                    texts.append(encode(PlayAudio(run[0] if per == 1 else b"".join(run))))
                    run, fresh = [], True
        if run:
            if per is not None and per > 1 and self._hold(now, fresh):
                self._carry = run  # whole messages only: wait for the frames that follow
            else:
                texts.append(encode(PlayAudio(run[0] if len(run) == 1 else b"".join(self._padded(run)))))
        return texts

    def _hold(self, now: float, fresh: bool) -> bool:
        """Whether a short run waits for the frames that follow rather than going out padded now: while
        more are queued, or while the reply goes on (its audio trickles in) and the run's first frame can
        still wait, up to the playout lead it was released early by. Padding mid-reply would put silence
        into the speech and hold more at the provider than the playout clock knows (a longer barge-in)."""
        if fresh:
            self._carry_until = now + self.playout.lead_s
        return bool(self.playout.queued_frames) or (not self._turn_flushed and now < self._carry_until)

    def _padded(self, run: list[bytes]) -> list[bytes]:
        """``run`` padded with silence to a whole number of messages, where the provider wants that."""
        per = self._per_message
        if per is None or per == 1 or len(run) % per == 0:
            return run
        return run + [self.audio.silence] * (per - len(run) % per)

    def snapshot(self) -> dict[str, Any]:
        """Live view of the call for the admin API."""
        return {
            "call_sid": self.info.call_sid,
            "from": self.info.from_,
            "to": self.info.to,
            "dialplan": self.dialplan.name,
            "dialplan_version": self.dialplan.version,
            "started_at": self.result.started_at,
            "transcript": self.transcript.as_list(),
            "frames_in": self.result.frames_in,
            "frames_out": self.playout.frames_sent,
            "turns_saved": self.observer.saved_turns,
            "recording": str(self.observer.recording.path) if self.observer.recording else None,
        }

    def depths(self) -> CallDepths:
        """Buffer depths for the metrics collector (read at scrape time, never on the media path)."""
        session = self.session
        return CallDepths(
            playout_frames=self.playout.queued_frames,
            downlink_pending_ms=self.downlink.pending_ms,
            # Typed, not duck-typed: a getattr of a name that existed nowhere kept this metric at 0.
            gemini_audio_queue=session.audio_queued if isinstance(session, ResilientSession) else None,
        )
