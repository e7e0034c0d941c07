"""One emulated Live API connection: setup, the persona, scripted rules, tools, lifecycle.

The reader loop (:meth:`EmulatedSession.run`) parses each client frame and reacts at once; model
output is produced by one reply task per model turn, so a barge-in simply cancels that task and
sends ``interrupted`` → (``toolCallCancellation``) → ``turnComplete``. Timers (``goAway``, injected
closes) are tasks owned by the session and cancelled when it ends.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Protocol

from aiohttp import WSMsgType, web

from gateway.emulator import voice
from gateway.emulator.scenario import Rule, Scenario
from gateway.emulator.validation import SCHEDULINGS, SetupFacts, check_setup
from gateway.emulator.voice import SpeechDetector, VadEvent
from gateway.emulator.wire import (
    BAD_API_KEY,
    DEADLINE_EXPIRED,
    INVALID_ARGUMENT,
    SESSION_NOT_FOUND,
    CloseRequest,
    b64decode,
    b64encode,
    duration,
    encode,
    parse_client_message,
    pcm_rate,
    text_of,
    truncate_reason,
)

#: Tokens per second of audio, as the real service bills it.
AUDIO_TOKENS_PER_S = 25


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    """One frame seen by the emulator. ``payload`` is the normalised (lowerCamel) JSON for input."""

    direction: Literal["in", "out"]
    t: float
    kind: Literal["text", "binary", "close"]
    payload: dict[str, Any] | None
    raw: bytes | str
    close_code: int | None = None
    #: Index of the session that saw it (:attr:`EmulatedSession.index`), so a host can tell calls apart.
    session: int = -1


@dataclass(slots=True)
class Conversation:
    """What survives a reconnection with a resumption handle."""

    model: str
    #: ``{"role": "user"|"model"|"tool", "text": …}`` in order.
    history: list[dict[str, str]] = field(default_factory=list)
    user_turns: int = 0
    model_turns: int = 0
    fired_rules: set[int] = field(default_factory=set)
    audio_in_s: float = 0.0
    audio_out_s: float = 0.0
    text_in_chars: int = 0
    open_session: EmulatedSession | None = None
    ended_at: float | None = None


class SessionHost(Protocol):
    """What a session needs from the :class:`~gateway.emulator.server.Emulator` that owns it."""

    record: bool

    def notify(self, frame: RecordedFrame) -> None: ...

    def model_ok(self, model: str) -> bool: ...

    def new_handle(self, conversation: Conversation) -> str: ...

    def resolve_handle(self, handle: str) -> Conversation | None: ...


@dataclass(slots=True)
class _Say:
    text: str
    pcm: bytes | None = None


@dataclass(slots=True)
class _Call:
    name: str
    args: dict[str, Any]
    non_blocking: bool
    reply: str


@dataclass(slots=True)
class _Close:
    code: int
    reason: str


@dataclass(slots=True)
class _Search:
    query: str


@dataclass(slots=True)
class _Wait:
    """No answer: the model expects the caller to go on (waitingForInput)."""


@dataclass(slots=True)
class _EndReason:
    reason: str


_Step = _Say | _Call | _Close | _Search | _Wait | _EndReason


@dataclass(slots=True)
class _Pending:
    name: str
    turn: int
    reply: str
    future: asyncio.Future[dict[str, Any]] | None  # None for NON_BLOCKING calls


@lru_cache(maxsize=256)
def _speech_chunks(text: str, chunk_bytes: int) -> tuple[str, ...]:
    """The synthesised phrase, cut and base64-encoded once, shared by every session."""
    return _chunk(voice.speak(text), chunk_bytes)


def _chunk(pcm: bytes, chunk_bytes: int) -> tuple[str, ...]:
    view = memoryview(pcm)
    return tuple(b64encode(view[i : i + chunk_bytes]) for i in range(0, len(pcm), chunk_bytes))


#: What a client asks the model to say word for word: the gateway's ``say_prompt`` (gateway/bridge/guard.py,
#: ``[Say exactly this to the caller, and nothing else: "…"]``) or a greeting like ``Say: 'Thanks.'``.
#: The real model speaks the quoted text rather than reading the instruction aloud, so the emulator does too.
_SAY_EXACTLY = re.compile(
    r'^\s*\[\s*say exactly this[^:"]*:\s*"(?P<text>.*)"\s*\]\s*$', re.IGNORECASE | re.DOTALL
)
_SAY_QUOTED = re.compile(r"""^\s*say\s*:?\s*(?P<q>["'‘“])(?P<text>.+?)(?:(?P=q)|[’”])(?=\s|$|[.,;])""",
                         re.IGNORECASE | re.DOTALL)  # fmt: skip


def _asked_to_say(text: str | None) -> str | None:
    """The text a client instruction asks to be spoken verbatim, or None if it asks for nothing exact."""
    if not text:
        return None
    match = _SAY_EXACTLY.match(text) or _SAY_QUOTED.match(text)
    return match.group("text").strip() if match else None


def _is_instruction(text: str | None) -> bool:
    """A bracketed client-content turn is the client's note to the model (guard prompts, reconnect notes)."""
    stripped = (text or "").strip()
    return stripped.startswith("[") and stripped.endswith("]")


def _is_dtmf(text: str) -> bool:
    stripped = text.replace(" ", "")
    return bool(stripped) and all(c in "0123456789*#" for c in stripped)


class EmulatedSession:
    """One accepted WebSocket. Tests read :attr:`frames`, :attr:`setup`, :attr:`resumed_from`."""

    def __init__(
        self,
        *,
        index: int,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        host: SessionHost,
        scenario: Scenario,
        credential_ok: bool,
        api_version: str,
        dialect: Literal["gemini", "vertex"] = "gemini",
    ) -> None:
        self.index = index
        #: Speaking Vertex AI's dialect: tool calls without ids, ``candidates*`` usage field names.
        self.vertex = dialect == "vertex"
        self.frames: list[RecordedFrame] = []
        self.setup: dict[str, Any] | None = None
        self.resumed_from: str | None = None
        #: The upgrade request's path with its query string, and its headers (set by the server).
        self.handshake_path = ""
        self.handshake_headers: dict[str, str] = {}
        self.audio_in_bytes = 0
        self.conversation: Conversation | None = None
        #: The close code that ended the session (sent by us, or received from the client).
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._ws = ws
        self._transport = transport
        self._host = host
        self._scenario = scenario
        self._credential_ok = credential_ok
        self._api_version = api_version
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._reply_task: asyncio.Task[None] | None = None
        self._turn_open = False
        self._turn_id = 0
        self._turn_audio_s = 0.0
        self._playback_end = 0.0
        self._pending: dict[str, _Pending] = {}
        self._call_seq = 0
        self._queued: collections.deque[Callable[[], Awaitable[None]]] = collections.deque()
        self._buffered_text: list[str] = []
        self._detector: SpeechDetector | None = None
        #: What the accepted setup declared (validation.py): model rules, tool behaviours, turn control.
        self.facts: SetupFacts | None = None
        self._audio_in_s = 0.0
        self._no_interrupt = False
        self._input_tx = False
        self._output_tx = False
        self._resumption = False
        self._chunk_bytes = 2 * (voice.OUT_RATE * scenario.audio_chunk_ms // 1000)
        self._loop = asyncio.get_running_loop()

    # ------------------------------------------------------------------ recording and sending

    def _record(
        self,
        direction: Literal["in", "out"],
        kind: Literal["text", "binary", "close"],
        payload: dict[str, Any] | None,
        raw: bytes | str,
        close_code: int | None = None,
        t: float | None = None,
    ) -> None:
        t = time.monotonic() if t is None else t
        frame = RecordedFrame(direction, t, kind, payload, raw, close_code, self.index)
        if self._host.record:
            self.frames.append(frame)
        self._host.notify(frame)

    async def send(self, message: dict[str, Any]) -> None:
        """Send one server message (binary UTF-8 JSON unless the scenario asks for text frames)."""
        if self._closing:
            return
        raw = encode(message)
        # The frame's time is when it was handed to the socket: the send may yield to other tasks.
        t = time.monotonic()
        try:
            if self._scenario.text_frames:
                text = raw.decode("utf-8")
                await self._ws.send_str(text)
                self._record("out", "text", message, text, t=t)
            else:
                await self._ws.send_bytes(raw)
                self._record("out", "binary", message, raw, t=t)
        except (ConnectionError, RuntimeError):
            # The peer went away mid-send; the reader loop will notice and end the session.
            self._closing = True

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self, code: int, reason: str = "") -> None:
        """Close now with ``code`` (1006: drop the TCP connection without a close frame)."""
        if self._closing:
            return
        self._closing = True
        reason = truncate_reason(reason)
        self.close_code = code
        self._record("out", "close", None, reason, code)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        if code == 1006:
            if self._transport is not None:
                self._transport.abort()
            return
        try:
            await self._ws.close(code=code, message=reason.encode("utf-8"))
        except (ConnectionError, RuntimeError):
            pass

    def inject_close(self, code: int, reason: str = "") -> asyncio.Task[None]:
        """Schedule :meth:`close` from outside the session (tests, scenario timers)."""
        return self._spawn(self.close(code, reason))

    def go_away(self, time_left_s: float) -> asyncio.Task[None]:
        """Send ``goAway`` now, then close 1011 "Deadline expired…" when ``time_left_s`` runs out."""
        return self._spawn(self._go_away(0.0, time_left_s))

    async def _go_away(self, after_s: float, time_left_s: float) -> None:
        await asyncio.sleep(after_s)
        await self.send({"goAway": {"timeLeft": duration(time_left_s)}})
        await asyncio.sleep(time_left_s)
        await self.close(1011, DEADLINE_EXPIRED)

    async def _close_later(self, after_s: float, code: int, reason: str) -> None:
        await asyncio.sleep(after_s)
        await self.close(code, reason)

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        """Serve the connection until either side closes it."""
        try:
            first = await self._ws.receive()
            if first.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                self._client_closed()
                return
            kind, body = self._parse(first.data)
            if kind != "setup":
                raise CloseRequest(1007, BAD_API_KEY if not self._credential_ok else INVALID_ARGUMENT)
            await self._on_setup(body)
            async for msg in self._ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._dispatch(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
            self._client_closed()
        except CloseRequest as request:
            await self.close(request.code, request.reason)
        finally:
            await self._end()

    def _client_closed(self) -> None:
        if not self._closing:
            self._closing = True
            self.close_code = self._ws.close_code
            self._record("in", "close", None, "", self._ws.close_code)

    async def _end(self) -> None:
        self._closing = True
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for pending in self._pending.values():
            if pending.future is not None:
                pending.future.cancel()
        conversation = self.conversation
        if conversation is not None and conversation.open_session is self:
            conversation.open_session = None
            conversation.ended_at = time.monotonic()
        self.closed.set()

    def _parse(self, data: str | bytes) -> tuple[str, dict[str, Any]]:
        frame_kind: Literal["text", "binary"] = "text" if isinstance(data, str) else "binary"
        try:
            kind, body, message = parse_client_message(data)
        except CloseRequest:
            self._record("in", frame_kind, None, data)
            raise
        self._record("in", frame_kind, message, data)
        return kind, body

    async def _dispatch(self, data: str | bytes) -> None:
        kind, body = self._parse(data)
        if kind == "realtimeInput":
            await self._on_realtime(body)
        elif kind == "clientContent":
            await self._on_client_content(body)
        elif kind == "toolResponse":
            await self._on_tool_response(body)
        elif kind == "setup":
            raise CloseRequest(1007, INVALID_ARGUMENT)  # a second setup
        # contextUpdate is accepted and recorded; "" is the empty message, a no-op.

    # ------------------------------------------------------------------ setup

    async def _on_setup(self, body: dict[str, Any]) -> None:
        if not self._credential_ok:
            raise CloseRequest(1007, BAD_API_KEY)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise CloseRequest(1007, INVALID_ARGUMENT)
        if not self._host.model_ok(model):
            raise CloseRequest(
                1008,
                f"{model} is not found for API version {self._api_version}, or is not supported for "
                "bidiGenerateContent. Call ListModels to see the list of available models and their "
                "supported methods.",
            )
        facts = check_setup(body, model)  # closes 1007 for what the real service refuses
        resumption = body.get("sessionResumption")
        handle = resumption.get("handle") if isinstance(resumption, dict) else None
        if handle:
            conversation = self._host.resolve_handle(str(handle))
            if conversation is None:
                raise CloseRequest(1008, SESSION_NOT_FOUND)
            self.resumed_from = str(handle)
        else:
            conversation = Conversation(model=model)
        ric = body.get("realtimeInputConfig")
        ric = ric if isinstance(ric, dict) else {}
        aad = ric.get("automaticActivityDetection")
        aad = aad if isinstance(aad, dict) else {}
        try:
            silence_ms = int(aad.get("silenceDurationMs", self._scenario.silence_duration_ms))
        except (TypeError, ValueError) as exc:
            raise CloseRequest(1007, INVALID_ARGUMENT) from exc
        self._detector = SpeechDetector(
            threshold_rms=self._scenario.vad_threshold_rms,
            silence_ms=silence_ms if silence_ms > 0 else self._scenario.silence_duration_ms,
            confirm_ms=self._scenario.barge_in_ms,
            min_speech_ms=self._scenario.min_speech_ms,
            max_keep_s=self._scenario.max_echo_s,
            manual=facts.manual_activity,
            keep_outside=facts.all_input,
        )
        self.facts = facts
        self._no_interrupt = facts.no_interruption
        self._input_tx = isinstance(body.get("inputAudioTranscription"), dict)
        self._output_tx = isinstance(body.get("outputAudioTranscription"), dict)
        self._resumption = isinstance(resumption, dict)
        if self._scenario.setup_delay_s:
            await asyncio.sleep(self._scenario.setup_delay_s)
        self.setup = body
        self.conversation = conversation
        conversation.open_session = self
        await self.send({"setupComplete": {}})
        if self._resumption and self._scenario.resumption_update_on_setup:
            await self._send_resumption_update()
        if self._scenario.go_away_after_s is not None:
            self._spawn(self._go_away(self._scenario.go_away_after_s, self._scenario.go_away_time_left_s))
        if self._scenario.close_after_s is not None:
            s = self._scenario
            assert s.close_after_s is not None
            self._spawn(self._close_later(s.close_after_s, s.close_code, s.close_reason))

    # ------------------------------------------------------------------ input

    async def _on_realtime(self, body: dict[str, Any]) -> None:
        detector = self._detector
        assert detector is not None
        audio = body.get("audio")
        if audio is not None:
            await self._on_audio(audio, "realtime_input.audio.data")
        chunks = body.get("mediaChunks")
        if isinstance(chunks, list) and chunks:
            blob = chunks[0]  # deprecated field: only the first element counts
            if isinstance(blob, dict) and str(blob.get("mimeType", "")).startswith("audio/"):
                await self._on_audio(blob, "realtime_input.media_chunks[0].data")
        strict = self._scenario.strict_activity
        if strict and detector.manual and "audioStreamEnd" in body:
            raise CloseRequest(1007, INVALID_ARGUMENT)  # only valid with automatic activity detection
        if strict and not detector.manual and ("activityStart" in body or "activityEnd" in body):
            raise CloseRequest(1007, INVALID_ARGUMENT)  # only valid with automatic detection disabled
        if detector.manual:
            if "activityStart" in body:
                if self._turn_open and not self._no_interrupt:
                    await self._interrupt()
                detector.start()
            if "activityEnd" in body and detector.finish() is VadEvent.UTTERANCE_ENDED:
                await self._utterance_ended()
        elif body.get("audioStreamEnd") and detector.finish() is VadEvent.UTTERANCE_ENDED:
            await self._utterance_ended()
        text = body.get("text")
        if isinstance(text, str) and text.strip():
            await self._user_turn(text=text, realtime=True)

    async def _on_audio(self, blob: Any, field_name: str) -> None:
        if not isinstance(blob, dict):
            raise CloseRequest(1007, f"Invalid value at '{field_name}': expected a Blob")
        mime = blob.get("mimeType")
        if not isinstance(mime, str) or not mime.startswith("audio/"):
            raise CloseRequest(1007, f"Unsupported mime type {mime!r} for realtime audio")
        data = blob.get("data", "")
        if not isinstance(data, str):
            raise CloseRequest(1007, f"Invalid value at '{field_name}' (TYPE_BYTES)")
        pcm = b64decode(data, field_name)
        self.audio_in_bytes += len(pcm)
        rate = pcm_rate(mime)
        if rate is None:
            return  # compressed formats are accepted but not analysed
        conversation = self.conversation
        assert conversation is not None
        assert self._detector is not None
        conversation.audio_in_s += len(pcm) / (2 * rate)
        self._audio_in_s += len(pcm) / (2 * rate)
        event = self._detector.feed(pcm, rate)
        if event is VadEvent.SPEECH_CONFIRMED:
            await self._voice_activity("ACTIVITY_START")
            if self._turn_open and not self._no_interrupt:
                await self._interrupt()
        elif event is VadEvent.UTTERANCE_ENDED:
            await self._voice_activity("ACTIVITY_END")
            await self._utterance_ended()

    async def _voice_activity(self, kind: str) -> None:
        if self._scenario.voice_activity:
            await self.send(
                {"voiceActivity": {"type": kind, "audioOffset": duration(round(self._audio_in_s, 3))}}
            )

    async def _utterance_ended(self) -> None:
        assert self._detector is not None
        pcm, rate, seconds = self._detector.take()
        await self._user_turn(audio=(pcm, rate, seconds))

    async def _on_client_content(self, body: dict[str, Any]) -> None:
        conversation = self.conversation
        assert conversation is not None
        turns = body.get("turns", [])
        if not isinstance(turns, list):
            raise CloseRequest(1007, "Invalid value at 'client_content.turns': expected a list")
        for turn in turns:
            text = text_of(turn)
            role = turn.get("role", "user") if isinstance(turn, dict) else "user"
            if role == "model":
                conversation.history.append({"role": "model", "text": text})
            elif text:
                self._buffered_text.append(text)
        if body.get("turnComplete"):
            text = " ".join(self._buffered_text)
            self._buffered_text.clear()
            await self._user_turn(text=text, from_client=True)

    async def _on_tool_response(self, body: dict[str, Any]) -> None:
        responses = body.get("functionResponses", [])
        if not isinstance(responses, list):
            raise CloseRequest(1007, "Invalid value at 'tool_response.function_responses'")
        for item in responses:
            if not isinstance(item, dict):
                raise CloseRequest(1007, "Invalid value at 'tool_response.function_responses'")
            call_id = item.get("id")
            if self.vertex and not call_id:
                call_id = self._pending_named(item.get("name"))
            pending = self._pending.get(call_id) if isinstance(call_id, str) else None
            if pending is None or not isinstance(call_id, str):
                if self._scenario.strict_tool_ids:
                    raise CloseRequest(1007, INVALID_ARGUMENT)
                continue  # unknown or cancelled id: ignored (documented; strict_tool_ids to reject)
            response = item.get("response")
            response = dict(response) if isinstance(response, dict) else {}
            # The docs put `scheduling` on the FunctionResponse, the tools guide inside `response`.
            scheduling = item.get("scheduling") or response.pop("scheduling", None) or "WHEN_IDLE"
            if scheduling not in SCHEDULINGS:
                raise CloseRequest(
                    1007,
                    "Invalid value at 'tool_response.function_responses.scheduling' "
                    f"(type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionResponse.Scheduling), "
                    f"{json.dumps(scheduling)}",
                )
            if self.facts is not None and not self.facts.rules.scheduling:
                scheduling = "WHEN_IDLE"  # extended thinking: scheduling is not supported, so not read
            will_continue = item.get("willContinue")
            if will_continue is None:
                will_continue = response.pop("will_continue", response.pop("willContinue", False))
            result = json.dumps(response, ensure_ascii=False)
            conversation = self.conversation
            assert conversation is not None
            conversation.history.append({"role": "tool", "text": f"{pending.name}: {result}"})
            if pending.future is not None:
                del self._pending[call_id]
                if not pending.future.done():
                    pending.future.set_result(response)
                continue
            if not will_continue:
                del self._pending[call_id]
                if not response:
                    continue  # an empty last answer just ends a streaming call (SDK FunctionResponse docs)
            reply = pending.reply.replace("{result}", result)
            if scheduling == "SILENT":
                continue
            if scheduling == "INTERRUPT":
                await self._interrupt()
                self._start_reply([_Say(reply)])
            elif self._turn_open:
                self._queued.append(functools.partial(self._reply_now, [_Say(reply)]))
            else:
                self._start_reply([_Say(reply)])

    def _pending_named(self, name: Any) -> str | None:
        """Vertex answers carry no id: the oldest pending call of that name is the one answered."""
        return next((cid for cid, p in self._pending.items() if p.name == name), None)

    async def _reply_now(self, steps: list[_Step]) -> None:
        self._start_reply(steps)

    # ------------------------------------------------------------------ turns

    async def _user_turn(
        self,
        *,
        text: str | None = None,
        audio: tuple[bytes, int, float] | None = None,
        realtime: bool = False,
        from_client: bool = False,
    ) -> None:
        """A user turn. ``from_client``: sent as clientContent, which may be the client's own instruction."""
        if self._turn_open:
            if self._no_interrupt:
                self._queued.append(
                    functools.partial(
                        self._user_turn, text=text, audio=audio, realtime=realtime, from_client=from_client
                    )
                )
                return
            await self._interrupt()
        conversation = self.conversation
        assert conversation is not None
        earlier = len(conversation.history)
        # Rules number *caller* turns: the opening clientContent before the model has said anything (the
        # greeting instruction) and bracketed client notes are the client talking to the model, not a caller.
        said_before = any(h["role"] == "model" for h in conversation.history)
        instruction = from_client and (not said_before or _is_instruction(text))
        if not instruction:
            conversation.user_turns += 1
        if audio is not None:
            label = f"[speech {audio[2]:.1f} s]"
            conversation.history.append({"role": "user", "text": label})
            if self._input_tx:
                await self.send({"serverContent": {"inputTranscription": {"text": " " + label}}})
        else:
            conversation.text_in_chars += len(text or "")
            conversation.history.append({"role": "user", "text": text or ""})
            if realtime and self._input_tx and text:
                await self.send({"serverContent": {"inputTranscription": {"text": text}}})
        self._start_reply(self._plan(conversation, text, audio, earlier, instruction))

    def _plan(
        self,
        conversation: Conversation,
        text: str | None,
        audio: tuple[bytes, int, float] | None,
        earlier: int,
        instruction: bool = False,
    ) -> list[_Step]:
        for index, rule in enumerate(self._scenario.rules):
            if rule.once and index in conversation.fired_rules:
                continue
            if rule.turn is not None and instruction:
                continue  # turn rules answer the caller, never the client's own instructions
            if rule.matches(conversation.user_turns, text):
                conversation.fired_rules.add(index)
                return self._rule_steps(rule)
        verbatim = _asked_to_say(text) if audio is None else None
        if verbatim:
            return [_Say(verbatim)]
        if audio is not None:
            pcm, rate, seconds = audio
            echo = voice.chime() + voice.resample(pcm, rate)
            return [_Say(f"You said something {seconds:.1f} seconds long; here it is back.", echo)]
        said_before = any(h["role"] == "model" for h in conversation.history[:earlier])
        if not said_before:
            return [_Say(self._scenario.greeting)]
        if self._turn_id == 0 and self.resumed_from is not None:
            return [_Say(f"Welcome back! This conversation already has {earlier} turns.")]
        assert text is not None
        if instruction:
            return [_Say("Okay.")]  # a note to the model (e.g. a reconnect): acted on, never read aloud
        if _is_dtmf(text):
            return [_Say("You pressed " + " ".join(text.replace(" ", "")) + ".")]
        return [_Say(f"You said: {text}")]

    @staticmethod
    def _rule_steps(rule: Rule) -> list[_Step]:
        steps: list[_Step] = []
        if rule.say:
            steps.append(_Say(rule.say))
        if rule.tool:
            steps.append(_Call(rule.tool, rule.args, rule.non_blocking, rule.reply))
        if rule.search:
            steps.append(_Search(rule.search))
        if rule.wait_for_input:
            steps.append(_Wait())
        if rule.turn_complete_reason:
            steps.append(_EndReason(rule.turn_complete_reason))
        if rule.close is not None:
            steps.append(_Close(rule.close, rule.close_reason))
        return steps

    def _start_reply(self, steps: list[_Step]) -> None:
        self._turn_open = True
        self._turn_id += 1
        self._turn_audio_s = 0.0
        self._reply_task = self._spawn(self._reply(steps, self._turn_id))

    async def _reply(self, steps: list[_Step], turn_id: int) -> None:
        conversation = self.conversation
        assert conversation is not None
        if self._scenario.first_audio_delay_s:
            await asyncio.sleep(self._scenario.first_audio_delay_s)
        spoken: list[str] = []
        closing: _Close | None = None
        waiting = False
        end_reason: str | None = None
        for step in steps:
            if isinstance(step, _Say):
                await self._speak(step.text, step.pcm)
                spoken.append(step.text)
            elif isinstance(step, _Call):
                self._call_seq += 1
                call_id = f"function-call-{self._call_seq}"
                # A declared function runs as declared (or as the model's default); the rule decides only
                # for an undeclared one.
                declared = self.facts.non_blocking if self.facts is not None else {}
                non_blocking = declared.get(step.name, step.non_blocking)
                future: asyncio.Future[dict[str, Any]] | None = (
                    None if non_blocking else self._loop.create_future()
                )
                self._pending[call_id] = _Pending(step.name, turn_id, step.reply, future)
                call: dict[str, Any] = {"name": step.name, "args": step.args}
                if not self.vertex:  # Vertex sends no ids and matches answers by name
                    call = {"id": call_id, **call}
                await self.send({"toolCall": {"functionCalls": [call]}})
                if future is not None:
                    response = await future
                    text = step.reply.replace("{result}", json.dumps(response, ensure_ascii=False))
                    await self._speak(text, None)
                    spoken.append(text)
            elif isinstance(step, _Search):
                if self.facts is not None and self.facts.google_search:
                    await self.send({"serverContent": {"groundingMetadata": _grounding(step.query)}})
            elif isinstance(step, _Wait):
                waiting = True
            elif isinstance(step, _EndReason):
                end_reason = step.reason
            else:
                closing = step
        if spoken:
            conversation.history.append({"role": "model", "text": " ".join(spoken)})
        if waiting and not spoken:
            # Nothing generated: the model waits for the caller to go on.
            await self.send({"serverContent": {"waitingForInput": True}})
            end_reason = end_reason or "NEED_MORE_INPUT"
        else:
            await self.send({"serverContent": {"generationComplete": True}})
        if self._scenario.playback_wait:
            remaining = self._playback_end - self._loop.time()
            if remaining > 0:
                await asyncio.sleep(remaining)
        self._turn_open = False
        self._reply_task = None
        conversation.model_turns += 1
        done: dict[str, Any] = {"turnComplete": True, **self._interaction_status()}
        if end_reason is not None:
            done["turnCompleteReason"] = end_reason
        await self.send({"serverContent": done, **self._usage()})
        if closing is not None:
            await self.close(closing.code, closing.reason)
            return
        await self._after_turn(drain=True)

    async def _speak(self, text: str, pcm: bytes | None) -> None:
        """Stream one phrase: audio chunks faster than real time, transcription interleaved."""
        chunks = _speech_chunks(text, self._chunk_bytes) if pcm is None else _chunk(pcm, self._chunk_bytes)
        total_bytes = len(voice.speak(text)) if pcm is None else len(pcm)
        words = text.split() if self._output_tx else []
        count = len(chunks)
        if words and not count:
            await self.send({"serverContent": {"outputTranscription": {"text": text}}})
        speed = self._scenario.speed
        chunk_s = self._chunk_bytes / (2 * voice.OUT_RATE)
        start = self._loop.time()
        sent_s = 0.0
        conversation = self.conversation
        assert conversation is not None
        separator = ""
        for index, data in enumerate(chunks):
            if words:
                group = words[index * len(words) // count : (index + 1) * len(words) // count]
                if group:
                    piece = separator + " ".join(group)
                    separator = " "
                    await self.send({"serverContent": {"outputTranscription": {"text": piece}}})
            await self.send(
                {
                    "serverContent": {
                        "modelTurn": {"parts": [{"inlineData": {"mimeType": voice.OUT_MIME, "data": data}}]}
                    }
                }
            )
            this_s = min(chunk_s, (total_bytes - index * self._chunk_bytes) / (2 * voice.OUT_RATE))
            now = self._loop.time()
            self._playback_end = max(self._playback_end, now) + this_s
            sent_s += this_s
            self._turn_audio_s += this_s
            conversation.audio_out_s += this_s
            if speed > 0:
                delay = start + sent_s / speed - self._loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)

    async def _interrupt(self) -> None:
        """Barge-in: stop the current reply, cancel its tool calls, close the turn."""
        if not self._turn_open:
            return
        self._turn_open = False
        task, self._reply_task = self._reply_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._playback_end = self._loop.time()
        await self.send({"serverContent": {"interrupted": True}})
        cancelled = [cid for cid, p in self._pending.items() if p.turn == self._turn_id]
        for cid in cancelled:
            pending = self._pending.pop(cid)
            if pending.future is not None:
                pending.future.cancel()
        # Vertex's calls carry no ids, so there are none to cancel by [Unverified: what Vertex sends].
        if cancelled and not self.vertex:
            await self.send({"toolCallCancellation": {"ids": cancelled}})
        conversation = self.conversation
        assert conversation is not None
        # Only what was already said stays in the history; the emulator notes the cut.
        conversation.history.append({"role": "model", "text": "[interrupted]"})
        conversation.model_turns += 1
        await self.send(
            {"serverContent": {"turnComplete": True, **self._interaction_status()}, **self._usage()}
        )
        await self._after_turn(drain=False)

    async def _after_turn(self, *, drain: bool) -> None:
        if self._resumption:
            await self._send_resumption_update()
        while drain and self._queued and not self._turn_open and not self._closing:
            await self._queued.popleft()()

    async def _send_resumption_update(self) -> None:
        conversation = self.conversation
        assert conversation is not None
        if self._pending or self._turn_open or self._queued:
            # Resuming now would lose state: proto3 omits resumable=false and the empty handle.
            await self.send({"sessionResumptionUpdate": {}})
            return
        handle = self._host.new_handle(conversation)
        await self.send({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})

    def _interaction_status(self) -> dict[str, Any]:
        """Extended thinking: ``interactionStatus`` on every turnComplete. IN_PROGRESS while more output
        will follow without new input (a non-blocking call still out, an answer waiting to be spoken),
        else IDLE."""
        if self.facts is None or not self.facts.rules.interaction_status:
            return {}
        busy = bool(self._queued) or any(p.future is None for p in self._pending.values())
        return {"interactionStatus": "IN_PROGRESS" if busy else "IDLE"}

    def _usage(self) -> dict[str, Any]:
        conversation = self.conversation
        assert conversation is not None
        audio_in = int(conversation.audio_in_s * AUDIO_TOKENS_PER_S)
        text_in = conversation.text_in_chars // 4
        response = int(self._turn_audio_s * AUDIO_TOKENS_PER_S)
        prompt = audio_in + text_in + int(conversation.audio_out_s * AUDIO_TOKENS_PER_S) - response
        usage: dict[str, Any] = {}
        if prompt > 0:
            usage["promptTokenCount"] = prompt
            details = [
                {"modality": m, "tokenCount": n}
                for m, n in (("TEXT", text_in), ("AUDIO", prompt - text_in))
                if n > 0
            ]
            usage["promptTokensDetails"] = details
        if response > 0:
            usage["responseTokenCount"] = response
            usage["responseTokensDetails"] = [{"modality": "AUDIO", "tokenCount": response}]
        if prompt + response > 0:
            usage["totalTokenCount"] = prompt + response
        if self.vertex and response > 0:
            # Vertex names the response side "candidates" (google-genai _UsageMetadata_from_vertex).
            usage["candidatesTokenCount"] = usage.pop("responseTokenCount")
            usage["candidatesTokensDetails"] = usage.pop("responseTokensDetails")
        return {"usageMetadata": usage} if usage else {}


def _grounding(query: str) -> dict[str, Any]:
    """A ``groundingMetadata`` as search grounding reports it: the query and a source page."""
    slug = "-".join(query.lower().split())[:60] or "result"
    return {
        "webSearchQueries": [query],
        "groundingChunks": [{"web": {"uri": f"https://search.example/{slug}", "title": "search.example"}}],
    }
