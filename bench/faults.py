"""Fault-injection benchmark: many goAways and dropped connections in a row, over loopback.

Each lane is one phone call: a minimal Twilio-side driver → its own gateway → its own emulator, all
in this process on 127.0.0.1, the gateway reaching the emulator over ``wss://`` as it reaches Google
(a throw-away CA, trusted through ``SSL_CERT_FILE``). A lane repeats an episode: the caller presses a key, the bot starts a
~2 s reply, and while it is talking a fault is injected at the emulator — a ``goAway`` (the gateway
must switch at the end of the reply), an abrupt TCP drop (1006) or a 1011 close (the gateway must
reconnect, resuming with its handle, and have the reply finished). Then it waits until the line is
quiet and the call sits on a new connection.

Printed (``--json`` for a machine-readable line):

* calls survived — calls that lived through every fault and ended by the caller hanging up;
* the longest gap in bot audio the caller heard — the longest silence between two bot frames on the
  caller's playout clock, inside an episode after its fault;
* caller audio frames lost — 20 ms frames the caller sent that no Gemini connection received;
* bot audio frames repeated — frames the caller received beyond what the emulator produced
  (20 ms frames, rounded up per model turn); any replay of a let-go connection would show here.

Run: ``.venv/bin/python bench/faults.py`` (defaults: 12 lanes × 18 faults = 108 goAways, 108 drops).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import math
import os
import random
import ssl
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.audio.transcode import Downlink
from gateway.caller import wire
from gateway.dialplan.store import DialplanStore
from gateway.emulator import Emulator, Rule, Scenario
from gateway.emulator.pki import make_pki
from gateway.server.app import create_app
from gateway.server.state import CALLS
from gateway.settings import DEFAULT_MODEL, Settings

PLAN = """
default = true
voice = "Puck"
system_instruction = "You are a helpful phone assistant."
greeting = "Greet the caller."
"""
REPLY = "Your order number four two has shipped and arrives tomorrow."
SILENCE = b"\xff" * 160
FRAME_S = 0.02
PCM_CHUNK = 640  # one caller frame as the gateway sends it to Gemini (PCM16, 16 kHz, 20 ms)
MODEL_FRAME = 960  # 20 ms of model audio (PCM16, 24 kHz)
#: The downlink resampler's tail, flushed at the end of each turn (may add one padded frame).
TAIL = int(Downlink().delay_ms * 48) + 2


@dataclass
class Lane:
    index: int
    faults: list[str]
    frames_sent: int = 0
    frames_received: int = 0
    play_starts: list[float] = field(default_factory=list)
    play_end: float = 0.0
    episodes: list[tuple[str, float, float, bool]] = field(default_factory=list)
    ended_by: str = ""
    record: dict[str, Any] = field(default_factory=dict)
    lost: int = 0
    repeated: int = 0
    survived: bool = False
    max_gap_s: float = 0.0


class Driver:
    """The Twilio side of one call: 20 ms silence frames, a real-time playout clock, mark echoes."""

    def __init__(self, lane: Lane, ws: aiohttp.ClientWebSocketResponse, stream_sid: str) -> None:
        self.lane, self.ws, self.sid = lane, ws, stream_sid
        self.seq = 2
        self.sending = True
        self.closed = asyncio.Event()
        self.audio = asyncio.Event()

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    async def tick(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while not self.closed.is_set():
            if self.sending:
                await self.ws.send_str(
                    wire.media(
                        self._next(), stream_sid=self.sid, chunk=n + 1, timestamp_ms=n * 20, payload=SILENCE
                    )
                )
                self.lane.frames_sent += 1
            n += 1
            await asyncio.sleep(max(0.0, start + n * FRAME_S - loop.time()))

    async def receive(self) -> None:
        loop = asyncio.get_running_loop()
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            event = data.get("event")
            now = time.monotonic()
            if event == "media":
                # A message may carry several 20 ms frames (the gateway sends 40 ms while ahead).
                frames = max(1, len(base64.b64decode(data["media"]["payload"])) // 160)
                lane = self.lane
                lane.frames_received += frames
                begin = max(now, lane.play_end)
                for i in range(frames):
                    lane.play_starts.append(begin + i * FRAME_S)
                lane.play_end = begin + frames * FRAME_S
                self.audio.set()
            elif event == "mark":
                name = data["mark"]["name"]
                loop.call_later(max(0.0, self.lane.play_end - now), self._echo, name)
            elif event == "clear":
                self.lane.play_end = now
        self.closed.set()
        if not self.lane.ended_by:
            self.lane.ended_by = "gateway"

    def _echo(self, name: str) -> None:
        if not self.ws.closed:
            task = asyncio.ensure_future(
                self.ws.send_str(wire.mark(self._next(), stream_sid=self.sid, name=name))
            )
            _pending.add(task)
            task.add_done_callback(_pending.discard)

    async def press(self, digit: str) -> None:
        await self.ws.send_str(wire.dtmf(self._next(), stream_sid=self.sid, digit=digit))

    async def hang_up(self, call_sid: str) -> None:
        self.sending = False
        await asyncio.sleep(0.5)  # let in-flight caller audio reach Gemini before the stream ends
        if not self.closed.is_set():
            self.lane.ended_by = "caller"
            await self.ws.send_str(
                wire.stop(self._next(), stream_sid=self.sid, call_sid=call_sid, account_sid="AC" + "0" * 32)
            )
        await asyncio.wait_for(self.closed.wait(), 10)


_pending: set[asyncio.Future[None]] = set()


async def _until(predicate: Any, timeout: float) -> bool:  # noqa: ASYNC109 - a bench helper
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def run_lane(lane: Lane, plan_dir: Path, rng: random.Random, speed: float, tls: ssl.SSLContext) -> None:
    scenario = Scenario(
        speed=speed,
        greeting="Hello! How can I help?",
        rules=[Rule(text_contains="interrupted", say="Sorry. " + REPLY), Rule(dtmf="5", say=REPLY)],
    )
    async with Emulator(scenario, ssl_context=tls) as emu:
        settings = Settings(
            host="127.0.0.1",
            gemini_url=emu.base_url,
            gemini_api_key="bench-key",
            gemini_model=DEFAULT_MODEL,
            dialplan_dir=plan_dir,
            gateway_secret="b" * 32,
            records=False,
            allow_unsigned_webhooks=True,
        )
        app = create_app(settings, dialplans=DialplanStore(plan_dir))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            await _drive(lane, emu, app, f"http://127.0.0.1:{port}", rng)
        finally:
            await runner.cleanup()
    _score(lane, emu)


async def _drive(lane: Lane, emu: Emulator, app: web.Application, base: str, rng: random.Random) -> None:
    call_sid = wire.new_sid("CA")
    form = wire.voice_webhook_form(
        call_sid=call_sid, account_sid="AC" + "0" * 32, from_="+15550001111", to="+15551230000"
    )
    async with aiohttp.ClientSession() as http:
        async with http.post(base + "/twilio/voice", data=form) as resp:
            twiml = await resp.text()
        stream = ET.fromstring(twiml).find("Connect/Stream")
        assert stream is not None, twiml
        params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        stream_sid = wire.new_sid("MZ")
        async with http.ws_connect(str(stream.get("url"))) as ws:
            await ws.send_str(wire.connected())
            await ws.send_str(
                wire.start(
                    1,
                    stream_sid=stream_sid,
                    call_sid=call_sid,
                    account_sid="AC" + "0" * 32,
                    parameters=params,
                )
            )
            driver = Driver(lane, ws, stream_sid)
            tasks = [asyncio.create_task(driver.tick()), asyncio.create_task(driver.receive())]
            try:
                # The greeting, then its resumable handle.
                await _until(
                    lambda: any(s.conversation and s.conversation.model_turns for s in emu.sessions), 10
                )
                await asyncio.sleep(0.3)
                for kind in lane.faults:
                    if driver.closed.is_set():
                        break
                    await _episode(lane, driver, emu, kind, rng)
                await driver.hang_up(call_sid)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    await _until(lambda: bool(app[CALLS].list()["recent"]), 5)
    recent = app[CALLS].list()["recent"]
    lane.record = dict(recent[0]) if recent else {}


async def _episode(lane: Lane, driver: Driver, emu: Emulator, kind: str, rng: random.Random) -> None:
    driver.audio.clear()
    await driver.press("5")
    try:
        await asyncio.wait_for(driver.audio.wait(), 10)
    except TimeoutError:
        lane.episodes.append((kind, time.monotonic(), time.monotonic(), False))
        return
    await asyncio.sleep(rng.uniform(0.1, 0.6))
    before = len(emu.sessions)
    t_fault = time.monotonic()
    if kind == "goaway":
        emu.send_go_away(10.0)
    elif kind == "drop":
        emu.inject_close(1006)
    else:
        emu.inject_close(1011, "Internal error encountered.")
    recovered = await _until(lambda: len(emu.sessions) > before and emu.sessions[-1].setup is not None, 15)
    # Settled: nothing left to play for a while.
    await _until(lambda: time.monotonic() > max(lane.play_end, t_fault) + 0.8, 20)
    lane.episodes.append((kind, t_fault, time.monotonic(), recovered))


def _model_frames(emu: Emulator) -> int:
    """20 ms frames of model audio the emulator produced, per turn as the gateway frames it: the audio
    plus the resampler's tail, the last frame padded."""
    total = 0
    for session in emu.sessions:
        acc = 0
        for f in session.frames:
            if f.direction != "out" or not f.payload:
                continue
            content = f.payload.get("serverContent") or {}
            for part in (content.get("modelTurn") or {}).get("parts", []):
                data = (part.get("inlineData") or {}).get("data")
                if data:
                    acc += len(base64.b64decode(data))
            if content.get("generationComplete") or content.get("turnComplete") or content.get("interrupted"):
                total += math.ceil((acc + TAIL) / MODEL_FRAME) if acc else 0
                acc = 0
        total += math.ceil((acc + TAIL) / MODEL_FRAME) if acc else 0
    return total


def _score(lane: Lane, emu: Emulator) -> None:
    received = sum(s.audio_in_bytes for s in emu.sessions)
    lane.lost = max(0, round((lane.frames_sent * PCM_CHUNK - received) / PCM_CHUNK))
    lane.repeated = max(0, lane.frames_received - _model_frames(emu))
    starts = lane.play_starts
    for _, t_fault, t_end, _ in lane.episodes:
        inside = [t for t in starts if t_fault <= t < t_end]
        for a, b in itertools.pairwise(inside):
            lane.max_gap_s = max(lane.max_gap_s, b - a - FRAME_S)
    lane.survived = (
        lane.ended_by == "caller"
        and all(ok for *_, ok in lane.episodes)
        and len(lane.episodes) == len(lane.faults)
        and lane.record.get("fallback_ms") is None
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lanes", type=int, default=12, help="concurrent calls")
    parser.add_argument("--faults", type=int, default=18, help="faults per call (half goAways, half drops)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--speed", type=float, default=4.0, help="model audio speed vs real time (1: no buffer hides a gap)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    plan_dir = Path(tempfile.mkdtemp(prefix="faults-plans-"))
    (plan_dir / "default.toml").write_text(PLAN)
    # The gateways (created below, in this process) trust the emulators' CA as a deployment trusts a
    # private CA: SSL_CERT_FILE, read when each app builds its Live endpoint's TLS context.
    pki = make_pki(Path(tempfile.mkdtemp(prefix="faults-pki-")))
    os.environ["SSL_CERT_FILE"] = str(pki.ca_file)
    tls = pki.server_context()
    lanes = []
    for i in range(args.lanes):
        kinds = [
            "goaway" if k % 2 == 0 else ("drop" if k % 4 == 1 else "close1011") for k in range(args.faults)
        ]
        rng.shuffle(kinds)
        lanes.append(Lane(i, kinds))
    started = time.monotonic()
    await asyncio.gather(
        *(run_lane(lane, plan_dir, random.Random(rng.random()), args.speed, tls) for lane in lanes)
    )
    elapsed = time.monotonic() - started
    episodes = [e for lane in lanes for e in lane.episodes]
    summary = {
        "calls": len(lanes),
        "calls_survived": sum(lane.survived for lane in lanes),
        "go_aways": sum(1 for e in episodes if e[0] == "goaway"),
        "drops_1006": sum(1 for e in episodes if e[0] == "drop"),
        "closes_1011": sum(1 for e in episodes if e[0] == "close1011"),
        "faults_recovered": sum(1 for e in episodes if e[3]),
        "longest_bot_audio_gap_ms": round(max((lane.max_gap_s for lane in lanes), default=0.0) * 1000, 1),
        "caller_frames_sent": sum(lane.frames_sent for lane in lanes),
        "caller_frames_lost": sum(lane.lost for lane in lanes),
        "bot_frames_received": sum(lane.frames_received for lane in lanes),
        "bot_frames_repeated": sum(lane.repeated for lane in lanes),
        "reconnects_recorded": sum(len(lane.record.get("reconnects", [])) for lane in lanes),
        "model_audio_speed": args.speed,
        "elapsed_s": round(elapsed, 1),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"calls survived:                 {summary['calls_survived']}/{summary['calls']}")
        print(
            f"faults injected:                {summary['go_aways']} goAways, {summary['drops_1006']} drops (1006), "
            f"{summary['closes_1011']} closes (1011); recovered {summary['faults_recovered']}"
        )
        print(f"longest bot-audio gap heard:    {summary['longest_bot_audio_gap_ms']} ms")
        print(
            f"caller audio frames lost:       {summary['caller_frames_lost']} of {summary['caller_frames_sent']}"
        )
        print(
            f"bot audio frames repeated:      {summary['bot_frames_repeated']} of {summary['bot_frames_received']} received"
        )
        print(f"reconnects recorded by calls:   {summary['reconnects_recorded']}")
        print(f"elapsed:                        {summary['elapsed_s']} s")
    return 0 if summary["calls_survived"] == summary["calls"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
