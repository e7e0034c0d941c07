"""Place one simulated phone call to a gateway: webhook, answer, media stream, report.

The provider's wire is a :class:`~gateway.caller.sides.CallerSide` (Twilio by default). As Twilio, for
example, it behaves like Twilio on an inbound call: POSTs the (signed) voice webhook, follows the
``<Connect><Stream>`` it gets back, sends ``connected``/``start``, streams the caller's audio as 20 ms
μ-law frames on a drift-free monotonic schedule, plays what the gateway sends on a real-time
playout clock (echoing marks when their audio has played, honouring ``clear``), presses keys, and
hangs up with ``stop``. It checks every message from the gateway is Twilio-shaped and reports the
problems instead of failing, as Twilio reports error 31951 and carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from yarl import URL

from gateway.caller import wire
from gateway.caller.audio import (
    FRAME_BYTES,
    RATE,
    SPEECH_RMS,
    is_audible,
    pcm16_to_ulaw,
    read_wav,
    to_pcm16_8k,
    ulaw_to_pcm16,
    write_wav,
)
from gateway.caller.playout import Playout
from gateway.caller.registry import side_for
from gateway.caller.samples import builtin
from gateway.caller.sides import CallerSide, Heard, Offer
from gateway.errors import AudioError, AuthError, ConfigError, TelephonyProtocolError

FRAME_S = 0.02
SILENCE_FRAME = b"\xff" * FRAME_BYTES
#: Bot audio after this long without any counts as a new utterance (for ``reply_ms``).
_BURST_GAP_S = 0.25
#: The greeting is over once its audio has played and the line has been quiet this long.
_GREETING_QUIET_S = 0.3
_MAX_PROTOCOL_ERRORS = 50


@dataclass
class CallOptions:
    """What the simulated caller does. Only ``to`` is required."""

    to: str
    from_: str = "+15550001111"
    gateway: str = "http://127.0.0.1:8080"
    #: A WAV file (any rate/width/channels) or ``builtin:hello``; spoken once, then silence.
    play: Path | str | None = None
    #: Where to write what the caller heard (8 kHz 16-bit mono, silence included).
    record: Path | None = None
    #: Keys to press after the greeting (and after ``play``), one per ``dtmf_interval_s``.
    dtmf: str = ""
    dtmf_interval_s: float = 0.3
    hangup_after_s: float | None = None
    #: Hang up once everything the caller had to do is done (every turn said, every key pressed, the
    #: last reply waited for has played) and the line has been quiet this long; None: wait for the
    #: gateway (or ``hangup_after_s``). ``gateway call`` sets it when given ``--play`` and no
    #: ``--hangup-after``, so a scripted conversation ends with itself rather than on silence timeouts.
    hangup_when_done_s: float | None = None
    #: The URL the provider would have used (the gateway's public URL, e.g. behind a load balancer):
    #: requests are signed over it but sent to ``gateway``, as if through that public front.
    public_url: str = ""
    #: Sign requests with ``X-Twilio-Signature`` when set (use the gateway's TWILIO_AUTH_TOKEN).
    auth_token: str = field(default="", repr=False)
    #: Start speaking this many seconds after the stream starts; None: once the greeting has played.
    speak_at_s: float | None = None
    #: Say ``play`` this many times, each once the bot's answer to the previous one has played.
    turns: int = 1
    #: Wait this long between reading the TwiML and opening the stream, as Twilio's media
    #: servers take a moment to connect (used to measure what preconnecting Gemini saves).
    stream_delay_s: float = 0.0
    #: Without a greeting, speak / press keys after this long anyway.
    greeting_timeout_s: float = 5.0
    #: Hard limit so a silent gateway cannot hold the caller forever.
    max_duration_s: float = 600.0
    #: The webhook path, when not the provider's default (``/twilio/voice`` for Twilio).
    voice_path: str = ""
    #: Which provider's side to play (gateway/caller/sides.py).
    provider: str = "twilio"
    #: Where the simulated provider serves its REST API for the gateway's commands, for providers that
    #: answer calls or take hang-ups there (Telnyx: the gateway's TELNYX_API_BASE, http://127.0.0.1:PORT/v2).
    provider_api: str = ""
    account_sid: str = ""
    #: Fills ``CallReport.transcript`` at the end, given the call SID (the gateway's admin API:
    #: Twilio's protocol carries no transcript). See :func:`admin_transcript`.
    transcript_source: Callable[[str], Awaitable[list[dict[str, str]]]] | None = None
    #: Live, human-readable progress lines.
    on_event: Callable[[str], None] | None = None
    #: Set it to hang up now (Ctrl-C in the CLI).
    hangup_event: asyncio.Event | None = None
    #: The call's SID when the provider already gave it one (an outbound call); else a new one.
    call_sid: str = ""
    #: The provider's side to play instead of ``provider``'s default one (the simulated phone network's
    #: callee answering an outbound call: gateway/caller/network.py).
    side: CallerSide | None = None


@dataclass
class CallReport:
    """What happened on the call, from the caller's side."""

    call_sid: str
    account_sid: str
    stream_sid: str = ""
    answered: bool = False
    stream_url: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)
    #: TwiML verbs Twilio would run after the stream ends (e.g. ["Say", "Hangup"]).
    after_stream: list[str] = field(default_factory=list)
    greeting_ms: float | None = None
    reply_ms: list[float] = field(default_factory=list)
    #: For each key press answered: the press → the first bot audio after it.
    dtmf_reply_ms: list[float] = field(default_factory=list)
    frames_sent: int = 0
    frames_received: int = 0
    bytes_received: int = 0
    #: Marks the gateway sent, and the echoes we sent back.
    marks_sent: int = 0
    marks_acked: int = 0
    clears: int = 0
    dtmf_sent: str = ""
    heard_ms: float = 0.0
    dropped_ms: float = 0.0
    duration_s: float = 0.0
    ended_by: str = ""
    protocol_errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    transcript: list[dict[str, str]] = field(default_factory=list)
    record: str | None = None
    #: How the gateway paced its audio, for providers that check it (Vonage: message sizes, spacing).
    pacing: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


def _mask(name: str, value: str) -> str:
    return "***" if any(w in name.lower() for w in ("token", "secret", "key", "auth")) else value


def _caller_frames(play: Path | str | None) -> list[tuple[bytes, bool]]:
    """The utterance to speak as (20 ms μ-law frame, is speech) pairs; empty when silent."""
    if play is None:
        return []
    text = str(play)
    if text.startswith("builtin:"):
        try:
            samples, rate = builtin(text.removeprefix("builtin:"), RATE), RATE
        except KeyError:
            raise ConfigError(f"unknown built-in sample {text!r}; try builtin:hello") from None
    else:
        path = Path(text)
        try:
            with path.open("rb") as f:
                head = f.read(12)
        except OSError as exc:
            raise AudioError(f"--play {text}: cannot open it: {exc.strerror or exc}") from exc
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise AudioError(f"--play {text}: not a WAV file (no RIFF/WAVE header); give a PCM .wav file")
        samples, rate = read_wav(path)
    pcm = to_pcm16_8k(samples, rate)
    pad = -len(pcm) % (FRAME_BYTES * 2)
    pcm += b"\x00" * pad
    ints = np.frombuffer(pcm, "<i2").reshape(-1, FRAME_BYTES).astype(np.float64)
    loud = np.sqrt((ints * ints).mean(axis=1)) > SPEECH_RMS
    ulaw = pcm16_to_ulaw(pcm)
    return [(ulaw[i * FRAME_BYTES : (i + 1) * FRAME_BYTES], bool(loud[i])) for i in range(len(loud))]


class _Call:
    """One live media stream; two tasks share it: the 20 ms ticker and the receiver."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        opts: CallOptions,
        report: CallReport,
        side: CallerSide,
        utterance: list[tuple[bytes, bool]],
    ) -> None:
        self.ws = ws
        self.side = side
        self.opts = opts
        self.report = report
        self.loop = asyncio.get_running_loop()
        self.t0 = 0.0
        self.playout = Playout()
        self.utterance = utterance
        self.turn = 0
        self.utterance_at: float | None = opts.speak_at_s
        self.utterance_pos = 0
        self.turns_left = max(1, opts.turns) - 1
        self.dtmf_queue = list(opts.dtmf)
        self.dtmf_next_at: float | None = None
        self.first_audible_at: float | None = None
        self.last_audible_at = -math.inf
        self.speaking = False
        #: The caller's last input (an utterance's end or a key press): what a reply answers.
        self.input_at: float | None = None
        self.input_label = ""
        self.input_is_key = False
        self.awaiting_reply = False
        #: Where the last audible bot audio queued ends (8 kHz samples): when the caller stops hearing it.
        self.audible_end = 0
        #: Marks echoed in the current bot turn: the live log shows the first and then a count.
        self.turn_marks = 0
        #: The last "waiting for ..." line, so each is said once.
        self.waiting_for = ""
        self.ended_at = 0.0

    def _say(self, text: str) -> None:
        if self.opts.on_event is not None:
            self.opts.on_event(f"[{self._now():7.3f}s] {text}")

    def _now(self) -> float:
        return self.loop.time() - self.t0 if self.t0 else 0.0

    def _sample(self) -> int:
        return int((self.loop.time() - self.t0) * RATE)

    def _error(self, problem: str) -> None:
        if len(self.report.protocol_errors) < _MAX_PROTOCOL_ERRORS:
            self.report.protocol_errors.append(problem)
            self._say(f"protocol error from gateway: {problem}")

    async def run(self, offer: Offer) -> None:
        r = self.report
        for message in self.side.opening(r, offer):
            await (self.ws.send_str(message) if isinstance(message, str) else self.ws.send_bytes(message))
        self.t0 = self.loop.time()
        self._say(f"stream {r.stream_sid} started")
        ticker = asyncio.create_task(self._tick())
        receiver = asyncio.create_task(self._receive())
        try:
            done, _ = await asyncio.wait({ticker, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (ticker, receiver):
                task.cancel()
            results = await asyncio.gather(ticker, receiver, return_exceptions=True)
        self.ended_at = self.loop.time() - self.t0
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
        del done

    # --- the 20 ms ticker: caller audio, DTMF, mark echoes, hang-up ------------------------------

    async def _tick(self) -> None:
        opts, r = self.opts, self.report
        n = 0
        while True:
            delay = self.t0 + n * FRAME_S - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.ws.closed:
                return
            now = self._now()
            sample = self._sample()
            hangup_due = opts.hangup_after_s is not None and now >= opts.hangup_after_s
            if (
                hangup_due
                or now >= opts.max_duration_s
                or (opts.hangup_event and opts.hangup_event.is_set())
                or (opts.hangup_when_done_s is not None and self._done(opts.hangup_when_done_s, sample))
            ):
                await self._hang_up()
                return
            for name in self.playout.due_marks(sample):
                await self._echo_mark(name)
            if self.turn_marks and sample - self.audible_end >= _GREETING_QUIET_S * RATE:
                self._marks_summary()
            frame, speech = self._next_frame(now, sample)
            message = self.side.media(r, n, frame)
            if message is not None:
                await self._send(message)
            r.frames_sent += 1
            if speech:
                if not self.speaking:
                    self._say("caller speaking")
                self.speaking = True
                self.input_at = now + FRAME_S
                self.input_label, self.input_is_key = f"turn {self.turn}", False
                self.awaiting_reply = True
            elif self.speaking:
                self.speaking = False
                self._say(f"caller utterance ended (turn {self.turn})")
            await self._maybe_dtmf(now)
            n += 1

    def _greeting_over(self, now: float, sample: int) -> bool:
        if self.first_audible_at is None:
            return now >= self.opts.greeting_timeout_s
        return sample - self.playout.end >= _GREETING_QUIET_S * RATE

    def _next_frame(self, now: float, sample: int) -> tuple[bytes, bool]:
        if self.utterance_pos >= len(self.utterance):
            if not self.turns_left or self.awaiting_reply or not self.utterance:
                return SILENCE_FRAME, False
            # The previous utterance was answered: speak again once the answer has played.
            self.turns_left -= 1
            self.utterance_pos = 0
            self.utterance_at = None
        if self.utterance_at is None and self._greeting_over(now, sample):
            self.utterance_at = now
        if self.utterance_at is None or now < self.utterance_at:
            return SILENCE_FRAME, False
        if self.utterance_pos == 0:
            self.turn += 1
        frame = self.utterance[self.utterance_pos]
        self.utterance_pos += 1
        return frame

    def _done(self, quiet_s: float, sample: int) -> bool:
        """Whether the caller has done all it was asked and the last reply it waited for has played.

        Says, once each, what it is still waiting for, so a quiet line is never a mystery.
        """
        if not self.utterance and not self.opts.dtmf:
            return False  # nothing scripted: the call is the gateway's to end
        if self.speaking or self.utterance_pos < len(self.utterance) or self.turns_left or self.dtmf_queue:
            return False
        if self.awaiting_reply:
            self._waiting(f"waiting for the bot's reply to {self.input_label} (Ctrl-C hangs up)")
            return False
        self._waiting(
            f"all done; hanging up once the reply has played and the line is quiet for {quiet_s:g} s"
        )
        # Played means every mark echoed too: a reply's last mark follows its trailing silence (the
        # echo of an utterance ends with the pause that ended it), which can outlast ``quiet_s``.
        return sample - self.audible_end >= quiet_s * RATE and self.playout.idle(sample)

    def _waiting(self, what: str) -> None:
        if what != self.waiting_for:
            self.waiting_for = what
            self._say(what)

    async def _maybe_dtmf(self, now: float) -> None:
        if not self.dtmf_queue or self.speaking or self.utterance_pos < len(self.utterance):
            return  # keys come after the utterance, if there is one
        if not self.input_is_key and self.input_at is not None:
            # After an utterance, the first key waits for its reply to play (as a person would), so each
            # reply is put down to what it answers; a reply that never comes holds keys only so long.
            waited = self.awaiting_reply and now - self.input_at >= self.opts.greeting_timeout_s
            if not waited and (
                self.awaiting_reply or self._sample() - self.audible_end < _GREETING_QUIET_S * RATE
            ):
                return
        if self.dtmf_next_at is None:
            if not self._greeting_over(now, self._sample()):
                return
            self.dtmf_next_at = now
        if now < self.dtmf_next_at:
            return
        digit = self.dtmf_queue.pop(0)
        await self._send(self.side.dtmf(self.report, digit))
        self.report.dtmf_sent += digit
        self.dtmf_next_at = now + self.opts.dtmf_interval_s
        self.input_at, self.input_label, self.input_is_key = now, f"key {digit}", True
        self.awaiting_reply = True
        self._say(f"pressed {digit}")

    async def _hang_up(self) -> None:
        r = self.report
        r.ended_by = r.ended_by or "caller"
        self._marks_summary()
        self._say("caller hangs up")
        stop = self.side.stop(r)
        if stop is not None:
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                await (self.ws.send_str(stop) if isinstance(stop, str) else self.ws.send_bytes(stop))
        await self.ws.close()

    async def _send(self, text: str | bytes) -> None:
        try:
            await (self.ws.send_str(text) if isinstance(text, str) else self.ws.send_bytes(text))
        except (ConnectionError, aiohttp.ClientError):
            # The gateway went away between our check and the write; the receiver reports it.
            pass

    async def _echo_mark(self, name: str, why: str = "played", *, quiet: bool = False) -> None:
        await self._send(self.side.mark_played(self.report, name))
        self.report.marks_acked += 1
        if quiet:
            return
        if not self.turn_marks:
            # Marks come several a second: the first of a bot turn shows they flow, a count follows.
            self._say(f"mark {name!r} {why} (echoing this bot turn's marks as they play)")
        self.turn_marks += 1

    def _marks_summary(self) -> None:
        if self.turn_marks:
            self._say(f"bot turn played: {self.turn_marks} mark(s) echoed")
            self.turn_marks = 0

    # --- the receiver: what the gateway sends -----------------------------------------------------

    async def _receive(self) -> None:
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                await self._on_text(msg.data)
            elif msg.type is aiohttp.WSMsgType.BINARY:
                try:
                    heard = self.side.receive_binary(self.report, msg.data)
                except ValueError as exc:
                    self._error(str(exc))
                else:
                    await self._on_heard(heard)
            else:
                break
        if not self.report.ended_by:
            self.report.ended_by = "gateway"
            self._say(f"gateway ended the call (close code {self.ws.close_code})")

    async def _on_text(self, text: str) -> None:
        r = self.report
        try:
            heard = self.side.receive(r, text)
        except ValueError as exc:
            self._error(str(exc))
            return
        await self._on_heard(heard)

    async def _on_heard(self, heard: Heard) -> None:
        r = self.report
        sample = self._sample()
        if heard.kind == "control":
            return  # call control the side has noted (Asterisk's ANSWER, HANGUP)
        if heard.kind == "media":
            audio = heard.audio
            r.frames_received += max(
                1, -(-len(audio) // FRAME_BYTES)
            )  # 20 ms frames; a message may hold more
            r.bytes_received += len(audio)
            start = self.playout.media(sample, audio)
            if is_audible(audio):
                self.audible_end = start + len(audio)
                self._on_bot_audio(sample / RATE)
        elif heard.kind == "mark":
            r.marks_sent += 1
            if self.playout.mark(sample, heard.name):
                await self._echo_mark(heard.name)
        else:
            r.clears += 1
            dropped = self.playout.dropped_samples
            pending = self.playout.clear(sample)
            self.audible_end = min(self.audible_end, sample)
            self.last_audible_at = -math.inf
            # The same measure as the report's dropped_ms: queued, unplayed bot audio, in ms.
            ms = round((self.playout.dropped_samples - dropped) * 1000 / RATE)
            echoed = (
                f"; {len(pending)} pending mark(s) echoed" if self.side.clear_echoes_marks and pending else ""
            )
            self._say(f"clear: dropped {ms} ms of unplayed bot audio{echoed}")
            if self.side.clear_echoes_marks:
                for name in pending:
                    await self._echo_mark(name, "cleared", quiet=True)
            if (ack := self.side.cleared(r)) is not None:
                await self._send(ack)

    def _on_bot_audio(self, t: float) -> None:
        r = self.report
        if (
            self.awaiting_reply
            and not self.speaking
            and self.input_at is not None
            and t >= self.input_at
            and t - self.last_audible_at > _BURST_GAP_S
        ):
            # A reply answers the caller's latest input: a key pressed after an utterance, not the utterance.
            self.awaiting_reply = False
            ms = round((t - self.input_at) * 1000, 1)
            (r.dtmf_reply_ms if self.input_is_key else r.reply_ms).append(ms)
            self._marks_summary()
            self._say(f"bot replies to {self.input_label} after {ms:.0f} ms")
        if self.first_audible_at is None:
            self.first_audible_at = t
            r.greeting_ms = round(t * 1000, 1)
            self._say(f"bot audio starts (greeting after {r.greeting_ms:.0f} ms)")
        self.last_audible_at = t


def _via(public: str, gateway: str) -> aiohttp.ClientMiddlewareType:
    """A client middleware sending requests for the public URL (and its ws/wss form) to the gateway.

    The request keeps its Host header, as a reverse proxy in front of the gateway would forward it.
    """
    pub, gw = URL(public.rstrip("/")), URL(gateway.rstrip("/"))
    as_ws = {"http": "ws", "https": "wss"}
    pairs = [(pub, gw)]
    if pub.scheme in as_ws and gw.scheme in as_ws:
        pairs.append((pub.with_scheme(as_ws[pub.scheme]), gw.with_scheme(as_ws[gw.scheme])))

    async def middleware(
        req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        for src, dst in pairs:
            if (req.url.scheme, req.url.host, req.url.port) == (src.scheme, src.host, src.port):
                base = src.path.rstrip("/")
                if req.url.path.startswith(base):
                    tail = req.url.path[len(base) :]
                    req.url = dst.with_path(dst.path.rstrip("/") + tail).with_query(req.url.query)
                    break
        return await handler(req)

    return middleware


async def place_call(opts: CallOptions) -> CallReport:
    """Call the gateway as the provider (``opts.provider``, Twilio by default) would; what happened.

    Raises:
        ConfigError: the gateway cannot be reached, or the options are wrong.
        AuthError: the gateway refused the webhook or the stream (401/403).
        TelephonyProtocolError: the gateway answered with something the provider could not follow.
        AudioError: the ``play`` file cannot be read.
    """
    side = opts.side if opts.side is not None else side_for(opts.provider)
    # Before the call is placed: a bad --play must not ring the gateway first.
    utterance = _caller_frames(opts.play)
    account_sid = opts.account_sid or wire.new_sid("AC")
    report = CallReport(call_sid=opts.call_sid or wire.new_sid("CA"), account_sid=account_sid)
    say = opts.on_event or (lambda _line: None)
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=15)
    middlewares: tuple[aiohttp.ClientMiddlewareType, ...] = ()
    if opts.public_url:
        # The sides sign over opts.gateway; make that the public URL and route its requests to the gateway.
        middlewares = (_via(opts.public_url, opts.gateway),)
        opts = replace(opts, gateway=opts.public_url)
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout, middlewares=middlewares) as http:
        offer = await side.request_call(http, opts, report)
        say(f"webhook answered {opts.to}")
        if offer is None:
            report.ended_by = "gateway"
            say(f"no stream in the answer; the provider would run {report.after_stream}")
            return report
        report.answered = True
        report.warnings.extend(offer.warnings)
        if opts.stream_delay_s > 0:
            await asyncio.sleep(opts.stream_delay_s)
        report.stream_url = offer.url.split("?", 1)[0]  # a token in the query is a credential
        # Reports get printed and pasted: keep credentials the gateway put in parameters out of them.
        report.custom_parameters = {k: _mask(k, v) for k, v in offer.parameters.items()}
        report.after_stream = offer.after
        try:
            ws = await side.connect(http, offer) or await http.ws_connect(
                offer.url, headers=offer.headers, timeout=aiohttp.ClientWSTimeout(ws_close=5.0)
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise AuthError(f"media stream refused: HTTP {exc.status}") from exc
            raise TelephonyProtocolError(f"media stream handshake failed: HTTP {exc.status}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConfigError(f"cannot open the media stream {report.stream_url}: {exc}") from exc
        call = _Call(ws, opts, report, side, utterance)
        try:
            await side.stream_status(http, offer, opts, report, "stream-started")
            await call.run(offer)
        finally:
            if not ws.closed:
                await ws.close()
        await side.stream_status(http, offer, opts, report, "stream-stopped")
    total = int(call.ended_at * RATE)
    report.heard_ms = round(call.playout.heard_samples(total) * 1000 / RATE, 1)
    report.dropped_ms = round(call.playout.dropped_samples * 1000 / RATE, 1)
    report.duration_s = round(time.monotonic() - started, 3)
    if opts.record is not None:
        write_wav(opts.record, ulaw_to_pcm16(call.playout.render(total)))
        report.record = str(opts.record)
    if opts.transcript_source is not None:
        report.transcript = list(await opts.transcript_source(report.call_sid))
    return report


def admin_transcript(
    gateway: str, *, token: str = "", wait_s: float = 3.0
) -> Callable[[str], Awaitable[list[dict[str, str]]]]:
    """A ``transcript_source`` reading the gateway's admin API (``GET /admin/calls/{sid}``).

    The gateway finishes its record a moment after the caller hangs up, so this polls briefly
    until the call shows as ended. An unreachable or refusing admin API gives an empty transcript.
    """

    async def fetch(call_sid: str) -> list[dict[str, str]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = f"{gateway.rstrip('/')}/admin/calls/{call_sid}"
        deadline = time.monotonic() + wait_s
        doc: dict[str, Any] = {}
        async with aiohttp.ClientSession(headers=headers) as http:
            while True:
                try:
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            doc = await resp.json()
                except (aiohttp.ClientError, ValueError):
                    return []
                if doc.get("state") == "ended" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        # In memory (the call's own replica, just ended) it is ``transcript``; from the record store
        # (another replica, or later) it is ``turns``, where ``heard`` is null for a turn heard whole.
        listed = doc.get("transcript") or doc.get("turns") or []
        turns = [t for t in listed if isinstance(t, dict)]
        return [
            {"role": str(t.get("role", "")), "text": str(t.get("text", ""))}
            | ({"heard": str(t["heard"])} if t.get("heard") is not None else {})
            for t in turns
        ]

    return fetch
