"""Lean simulated Twilio callers for load tests: hundreds of calls in one process, and their analysis.

:func:`gateway.caller.call.place_call` is the full-featured caller (recording, transcripts, reports);
this is its lean counterpart for ``bench/load.py``. It speaks Twilio's protocol field for field:
signed voice-webhook POST → TwiML ``<Connect><Stream>`` with its ``<Parameter>`` values → WebSocket →
``connected`` and ``start`` (custom parameters echoed) → one ``media`` message every 20 ms → each
``mark`` echoed once the audio queued before it has played (at once after a ``clear``, as Twilio
does) → ``stop``. All calls of a process share one drift-free 20 ms schedule: every call sits on one
of ten 2 ms phase slots, so a process wakes 500 times a second, not 50 times per call.

Measuring needs the same frame timed at both ends. Caller audio therefore carries *probes*: runs of
four 20 ms frames, each a constant level below any speech threshold, whose levels spell the call's
number and a sequence number. :class:`SessionProbe` (fed by the emulator side with the PCM16 the
gateway forwards) finds them again, and because ``CLOCK_MONOTONIC`` is one clock for every process
on a Linux machine, send and receive times compare directly. The emulator side also records when
each model turn's first audio left it; :func:`analyse` joins both sides.
"""

from __future__ import annotations

import array
import asyncio
import base64
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.caller import wire
from gateway.caller.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.caller.call import _parse_twiml, _ws_url

__all__ = [
    "PROBE_LEVELS",
    "CallPattern",
    "LoadCall",
    "SessionProbe",
    "analyse",
    "percentile",
    "run_calls",
]

FRAME_S = 0.020
FRAME_BYTES = 160
#: Phase slots per 20 ms: each call sends on one, so a process's sends are spread over the period.
SLOTS = 10
SLOT_S = FRAME_S / SLOTS
PROBE_FRAMES = 4
MAX_CALL_NUMBER = 16**3 - 1
#: PCM16 frame size the gateway forwards per 20 ms caller frame (16 kHz).
FORWARDED_FRAME_BYTES = 640


def _ulaw_frame(samples: list[int]) -> bytes:
    return pcm16_to_ulaw(array.array("h", samples).tobytes())


def _probe_levels() -> tuple[int, ...]:
    """The 16 probe levels as the gateway will see them: μ-law has no exact 80, 100, …, so decode back."""
    levels = []
    for digit in range(16):
        frame = _ulaw_frame([80 + 20 * digit] * FRAME_BYTES)
        levels.append(array.array("h", ulaw_to_pcm16(frame))[0])
    return tuple(levels)


#: PCM levels of probe digits 0..15; all below 400, far under a speech detector's threshold.
PROBE_LEVELS = _probe_levels()
_PROBE_PAYLOADS = tuple(
    base64.b64encode(_ulaw_frame([level] * FRAME_BYTES)).decode("ascii") for level in PROBE_LEVELS
)
_SILENCE_PAYLOAD = base64.b64encode(_ulaw_frame([0] * FRAME_BYTES)).decode("ascii")
#: Speech stand-in: a 400 Hz tone at about -21 dBFS RMS (whole periods per frame, so one payload).
_SPEECH_PAYLOAD = base64.b64encode(
    _ulaw_frame([round(4000 * math.sin(2 * math.pi * 400 * i / 8000)) for i in range(FRAME_BYTES)])
).decode("ascii")
_MEDIA_OUT = '{"event":"media"'

# Frame kinds in a call's plan.
_SILENCE, _SPEECH, _PROBE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class CallPattern:
    """What a load caller says: speech bursts the emulator echoes back, so the bot talks about half
    the time, and every ``barge_every``-th cycle the caller talks over the bot's reply (a barge-in)."""

    lead_silence_s: float = 3.0
    speak_s: float = 1.0
    silence_s: float = 2.6
    barge_every: int = 4
    barge_silence_s: float = 1.3
    probe_every_s: float = 0.3

    def kinds(self) -> tuple[bytes, bytes]:
        """(lead-in, repeating cycle) as one byte per frame: silence, speech or a probe's first frame."""

        def silence(seconds: float) -> bytearray:
            n = round(seconds / FRAME_S)
            out = bytearray(n)
            step = max(PROBE_FRAMES + 1, round(self.probe_every_s / FRAME_S))
            # Probes only where the caller is silent, never touching speech (its filter tail).
            for start in range(5, n - PROBE_FRAMES - 5, step):
                out[start] = _PROBE
            return out

        lead = silence(self.lead_silence_s)
        cycle = bytearray()
        for index in range(max(1, self.barge_every)):
            cycle += bytes([_SPEECH]) * round(self.speak_s / FRAME_S)
            last = self.barge_every > 0 and index == self.barge_every - 1
            cycle += silence(self.barge_silence_s if last else self.silence_s)
        return bytes(lead), bytes(cycle)


@dataclass(slots=True)
class LoadCall:
    """One simulated call: its plan, its socket and what it saw (times are ``time.monotonic()``)."""

    number: int
    start_at: float
    lead: bytes
    cycle: bytes
    call_sid: str = field(default_factory=lambda: wire.new_sid("CA"))
    stream_sid: str = field(default_factory=lambda: wire.new_sid("MZ"))
    ws: aiohttp.ClientWebSocketResponse | None = None
    frame: int = 0
    seq: int = 0
    probe_seq: int = 0
    probe_left: int = 0
    t_webhook: float = 0.0
    t_media: float = 0.0
    t_stop: float = 0.0
    error: str = ""
    play_end: float = 0.0
    marks_echoed: int = 0
    #: (sequence, send time, index of its first frame) per probe sent.
    probes: list[tuple[int, float, int]] = field(default_factory=list)
    sent: array.array[float] = field(default_factory=lambda: array.array("d"))
    arrivals: array.array[float] = field(default_factory=lambda: array.array("d"))
    clears: array.array[float] = field(default_factory=lambda: array.array("d"))
    marks: deque[tuple[float, str]] = field(default_factory=deque)

    def _kind(self, k: int) -> int:
        lead = self.lead
        return lead[k] if k < len(lead) else self.cycle[(k - len(lead)) % len(self.cycle)]

    def _payload(self, now: float) -> str:
        if self.probe_left:
            self.probe_left -= 1
            n, s = self.number, self.probe_seq - 1
            digit = (n >> 4 & 15, n & 15, s & 15)[2 - self.probe_left]
            return _PROBE_PAYLOADS[digit]
        kind = self._kind(self.frame)
        if kind == _SPEECH:
            return _SPEECH_PAYLOAD
        if kind == _PROBE:
            self.probes.append((self.probe_seq, now, self.frame))
            self.probe_seq += 1
            self.probe_left = PROBE_FRAMES - 1
            return _PROBE_PAYLOADS[self.number >> 8 & 15]
        return _SILENCE_PAYLOAD

    async def tick(self, now: float) -> None:
        """Send this call's next 20 ms frame, then any mark whose audio has played by now."""
        ws = self.ws
        if ws is None or ws.closed:
            return
        self.seq += 1
        payload = self._payload(now)
        chunk = self.frame + 1
        text = (
            f'{{"event":"media","sequenceNumber":"{self.seq}","media":{{"track":"inbound",'
            f'"chunk":"{chunk}","timestamp":"{self.frame * 20}","payload":"{payload}"}},'
            f'"streamSid":"{self.stream_sid}"}}'
        )
        self.frame = chunk
        await ws.send_str(text)
        self.sent.append(now)
        marks = self.marks
        while marks and marks[0][0] <= now:
            await self._echo(marks.popleft()[1])

    async def _echo(self, name: str) -> None:
        assert self.ws is not None
        self.seq += 1
        self.marks_echoed += 1
        await self.ws.send_str(wire.mark(self.seq, stream_sid=self.stream_sid, name=name))

    async def receive(self) -> None:
        """Read the gateway's messages until the socket closes: audio, marks, clears."""
        ws = self.ws
        assert ws is not None
        arrivals, clock = self.arrivals, time.monotonic
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            data: str = msg.data
            now = clock()
            if data.startswith(_MEDIA_OUT):
                # One message may carry several 20 ms frames (the gateway batches 40 ms): the payload
                # is the last field, so its base64 length is the tail after the last ':"'.
                frames = max(1, ((len(data) - data.rfind(':"') - 5) * 3 // 4) // FRAME_BYTES)
                for _ in range(frames):
                    arrivals.append(now)
                self.play_end = max(self.play_end, now) + FRAME_S * frames
                continue
            obj = json.loads(data)
            event = obj.get("event")
            if event == "mark":
                self.marks.append((self.play_end, obj["mark"]["name"]))
            elif event == "clear":
                self.clears.append(now)
                self.play_end = now
                while self.marks:
                    await self._echo(self.marks.popleft()[1])
            elif event == "media":
                frames = max(1, len(base64.b64decode(obj["media"]["payload"])) // FRAME_BYTES)
                for _ in range(frames):
                    arrivals.append(now)
                self.play_end = max(self.play_end, now) + FRAME_S * frames

    def result(self) -> dict[str, Any]:
        """What the analysis needs (arrays stay compact ``array('d')``)."""
        cutoff = self.t_stop - 0.5
        return {
            "number": self.number,
            "call_sid": self.call_sid,
            "error": self.error,
            "t_webhook": self.t_webhook,
            "t_media": self.t_media,
            "t_stop": self.t_stop,
            "frames_sent": self.frame,
            "frames_before_cutoff": sum(1 for t in self.sent if t <= cutoff),
            "marks_echoed": self.marks_echoed,
            "probes": self.probes,
            "arrivals": self.arrivals,
            "clears": self.clears,
        }


class _Ticker:
    """The process's one 20 ms schedule: slot ``k % SLOTS`` is due at ``base + k * SLOT_S``, always
    computed from ``k`` so lateness never accumulates; lateness is recorded, not hidden."""

    def __init__(self) -> None:
        self.slots: list[list[LoadCall]] = [[] for _ in range(SLOTS)]
        self.lag: array.array[float] = array.array("d")

    def add(self, call: LoadCall) -> None:
        self.slots[call.number % SLOTS].append(call)

    def remove(self, call: LoadCall) -> None:
        slot = self.slots[call.number % SLOTS]
        if call in slot:
            slot.remove(call)

    async def run(self) -> None:
        clock = time.monotonic
        base = clock()
        k = 0
        while True:
            due = base + k * SLOT_S
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            now = clock()
            self.lag.append(now - due)
            for call in list(self.slots[k % SLOTS]):
                try:
                    await call.tick(now)
                except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                    call.error = call.error or f"send failed: {exc}"
                    self.remove(call)
            k += 1


async def _one_call(
    http: aiohttp.ClientSession,
    call: LoadCall,
    ticker: _Ticker,
    *,
    gateway: str,
    auth_token: str,
    until: float,
) -> None:
    await asyncio.sleep(max(0.0, call.start_at - time.monotonic()))
    webhook_url = gateway.rstrip("/") + "/twilio/voice"
    form = wire.voice_webhook_form(
        call_sid=call.call_sid, account_sid="AC" + "0" * 32, from_="+15550000000", to="+15551230000"
    )
    headers = {"X-Twilio-Signature": wire.sign(auth_token, webhook_url, form)} if auth_token else {}
    call.t_webhook = time.monotonic()
    receiver: asyncio.Task[None] | None = None
    try:
        async with http.post(webhook_url, data=form, headers=headers) as resp:
            body = await resp.text()
            if resp.status != 200:
                call.error = f"webhook HTTP {resp.status}"
                return
        stream = _parse_twiml(body, webhook_url)
        if stream is None:
            call.error = "no <Stream> in the TwiML"
            return
        ws_url, _ = _ws_url(stream.url)
        ws_headers = {"X-Twilio-Signature": wire.sign(auth_token, ws_url, {})} if auth_token else {}
        call.ws = ws = await http.ws_connect(ws_url, headers=ws_headers, max_msg_size=1 << 20)
        await ws.send_str(wire.connected())
        call.seq = 1
        await ws.send_str(
            wire.start(
                call.seq,
                stream_sid=call.stream_sid,
                call_sid=call.call_sid,
                account_sid="AC" + "0" * 32,
                parameters=stream.parameters,
            )
        )
        call.t_media = time.monotonic()
        receiver = asyncio.create_task(call.receive(), name=f"load-rx:{call.number}")
        ticker.add(call)
        done, _ = await asyncio.wait({receiver}, timeout=max(0.0, until - time.monotonic()))
        ticker.remove(call)
        call.t_stop = time.monotonic()
        if not done and not ws.closed:
            call.seq += 1
            await ws.send_str(
                wire.stop(
                    call.seq, stream_sid=call.stream_sid, call_sid=call.call_sid, account_sid="AC" + "0" * 32
                )
            )
            await ws.close()
        elif done:
            call.error = call.error or f"gateway closed the stream early (code {ws.close_code})"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        call.error = call.error or f"{type(exc).__name__}: {exc}"
    finally:
        ticker.remove(call)
        if not call.t_stop:
            call.t_stop = time.monotonic()
        if receiver is not None:
            if not receiver.done():
                receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)


async def run_calls(
    gateway: str,
    numbers: list[int],
    *,
    start_at: float,
    ramp_s: float,
    until: float,
    auth_token: str = "",
    pattern: CallPattern | None = None,
) -> tuple[list[dict[str, Any]], array.array[float]]:
    """Place one call per number, started evenly over ``ramp_s`` from ``start_at``, all hung up at
    ``until`` (monotonic times). Returns each call's :meth:`LoadCall.result` and the schedule's lag."""
    if any(not 0 <= n <= MAX_CALL_NUMBER for n in numbers):
        raise ValueError(f"call numbers must be in 0..{MAX_CALL_NUMBER}")
    lead, cycle = (pattern or CallPattern()).kinds()
    count = max(1, len(numbers))
    calls = [
        LoadCall(number=n, start_at=start_at + ramp_s * i / count, lead=lead, cycle=cycle)
        for i, n in enumerate(numbers)
    ]
    ticker = _Ticker()
    timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_read=None)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as http:
        ticking = asyncio.create_task(ticker.run(), name="load-ticker")
        try:
            await asyncio.gather(
                *(
                    _one_call(http, c, ticker, gateway=gateway, auth_token=auth_token, until=until)
                    for c in calls
                )
            )
        finally:
            ticking.cancel()
            await asyncio.gather(ticking, return_exceptions=True)
    return [c.result() for c in calls], ticker.lag


# --------------------------------------------------------------------------- the emulator's side


class SessionProbe:
    """What one Live session saw, for the load analysis: probes in the caller audio the gateway
    forwarded, frames received, and when each model turn's first audio left the emulator."""

    __slots__ = ("_digits", "_first_t", "_frames_at", "frames_in", "number", "probes", "turn_open", "turns")

    def __init__(self) -> None:
        self.frames_in = 0
        self.number = -1
        #: (sequence, receive time, frames received before it) per probe found.
        self.probes: list[tuple[int, float, int]] = []
        #: [first audio time, audio bytes, interrupted] per model turn.
        self.turns: list[list[Any]] = []
        self.turn_open = False
        self._digits: list[int] = []
        self._first_t = 0.0
        self._frames_at = 0

    def audio_in(self, pcm: bytes, t: float) -> None:
        """Caller audio forwarded by the gateway (PCM16 at 16 kHz, whole 20 ms frames)."""
        samples = memoryview(pcm).cast("h") if len(pcm) % 2 == 0 else memoryview(pcm[:-1]).cast("h")
        per_frame = FORWARDED_FRAME_BYTES // 2
        for start in range(0, len(samples) - per_frame + 1, per_frame):
            digit = _probe_digit(samples, start)
            if digit >= 0:
                if not self._digits:
                    self._first_t, self._frames_at = t, self.frames_in
                self._digits.append(digit)
                if len(self._digits) == PROBE_FRAMES:
                    a, b, c, s = self._digits
                    self.number = a << 8 | b << 4 | c
                    self.probes.append((s, self._first_t, self._frames_at))
                    self._digits = []
            elif self._digits:
                self._digits = []  # a broken run (lost frames) is no probe
            self.frames_in += 1

    def model_audio(self, nbytes: int, t: float) -> None:
        if not self.turn_open:
            self.turn_open = True
            self.turns.append([t, 0, False])
        self.turns[-1][1] += nbytes

    def turn_end(self, interrupted: bool) -> None:
        if self.turn_open and interrupted:
            self.turns[-1][2] = True
        self.turn_open = False

    def result(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "frames_in": self.frames_in,
            "probes": self.probes,
            "turns": self.turns,
        }


_PROBE_POINTS = (100, 145, 190, 235, 280)


def _probe_digit(samples: memoryview, start: int) -> int:
    """The probe digit a forwarded frame carries, or -1. A probe frame is flat (past the resampler's
    edge ringing) at one of :data:`PROBE_LEVELS`; speech and silence never are."""
    level = samples[start + 190]
    if not 60 <= level <= 420:
        return -1
    for point in _PROBE_POINTS:
        if abs(samples[start + point] - level) > 2:
            return -1
    best = min(range(16), key=lambda d: abs(PROBE_LEVELS[d] - level))
    return best if abs(PROBE_LEVELS[best] - level) <= 6 else -1


# --------------------------------------------------------------------------- analysis


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(slots=True)
class Analysis:
    uplink_s: list[float] = field(default_factory=list)
    downlink_s: list[float] = field(default_factory=list)
    greeting_s: list[float] = field(default_factory=list)
    frames_lost_up: int = 0
    frames_lost_down: int = 0
    frames_late: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    probes_sent: int = 0
    probes_found: int = 0
    turns: int = 0
    barge_ins: int = 0
    failed: list[str] = field(default_factory=list)


def analyse(
    calls: list[dict[str, Any]],
    sessions: list[dict[str, Any]],
    window: tuple[float, float] = (-math.inf, math.inf),
) -> Analysis:
    """Join what the callers and the emulator saw: per-probe uplink times, per-turn downlink times,
    frames lost (uplink: counted up to each call's last probe, so the hang-up's in-flight frames do
    not count; downlink: a finished turn delivered short) and frames late (the caller's playout ran
    dry mid-turn, i.e. a frame arrived after the moment it should have started playing). Latency and
    lateness count inside ``window`` (monotonic from, to): the steady state, without the ramp-up."""
    out = Analysis()
    by_number = {s["number"]: s for s in sessions if s["number"] >= 0}
    for call in calls:
        if call["error"]:
            out.failed.append(f"call {call['number']}: {call['error']}")
        out.frames_sent += call["frames_sent"]
        arrivals = list(call["arrivals"])
        out.frames_received += len(arrivals)
        out.probes_sent += len(call["probes"])
        if arrivals and call["t_webhook"]:
            out.greeting_s.append(arrivals[0] - call["t_webhook"])
        session = by_number.get(call["number"])
        if session is None:
            continue
        sent = {seq_: (t, index) for seq_, t, index in call["probes"]}
        last_probe = None
        seen: set[int] = set()
        for s, t_recv, frames_before in session["probes"]:
            # Sequence digits wrap at 16: pair each found probe with the earliest unmatched send.
            match = next(
                (
                    q
                    for q, (t_sent, _) in sorted(sent.items())
                    if q % 16 == s and q not in seen and t_sent <= t_recv
                ),
                None,
            )
            if match is None:
                continue
            seen.add(match)
            out.probes_found += 1
            t_sent, index = sent[match]
            if window[0] <= t_sent <= window[1]:
                out.uplink_s.append(t_recv - t_sent)
            last_probe = (index, frames_before)
        if last_probe is not None:
            out.frames_lost_up += max(0, last_probe[0] - last_probe[1])
        _downlink(out, arrivals, sorted(call["clears"]), session["turns"], window)
    return out


def _downlink(
    out: Analysis,
    arrivals: list[float],
    clears: list[float],
    turns: list[list[Any]],
    window: tuple[float, float] = (-math.inf, math.inf),
) -> None:
    starts = [t for t, _, _ in turns]
    out.turns += len(turns)
    out.barge_ins += sum(1 for _, _, interrupted in turns if interrupted)
    # Latency: each turn's first audio out of the emulator → the first frame the caller got after it.
    j = 0
    for i, (t_start, nbytes, interrupted) in enumerate(turns):
        t_next = starts[i + 1] if i + 1 < len(starts) else math.inf
        while j < len(arrivals) and arrivals[j] < t_start:
            j += 1
        first = j
        while j < len(arrivals) and arrivals[j] < t_next:
            j += 1
        if first < len(arrivals) and arrivals[first] < t_next and window[0] <= t_start <= window[1]:
            out.downlink_s.append(arrivals[first] - t_start)
        # A finished turn of N bytes at 24 kHz is ceil(N / 960) frames at 8 kHz, +/- one for the filter.
        if not interrupted and t_next != math.inf:
            expected = math.ceil(nbytes / 960)
            out.frames_lost_down += max(0, expected - (j - first) - 1)
    # Lateness: replay the caller's playout; a new turn or a clear restarts it.
    play_end = -math.inf
    prev = -math.inf
    k = c = 0
    for t in arrivals:
        new_turn = False
        while k < len(starts) and starts[k] <= t:
            new_turn = new_turn or starts[k] > prev
            k += 1
        while c < len(clears) and clears[c] <= t:
            new_turn = True
            c += 1
        if not new_turn and t > play_end + 1e-4 and window[0] <= t <= window[1]:
            out.frames_late += 1
        play_end = max(play_end, t) + FRAME_S
        prev = t
