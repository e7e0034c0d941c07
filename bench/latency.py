#!/usr/bin/env python3
"""Greeting and reply latency of single calls with the Live API over ws:// vs wss://, on loopback.

Production reaches Google over ``wss://``; this prices the TLS in what a caller hears. The bench
process runs two full emulators (:class:`gateway.emulator.Emulator`, the echo persona), one plain
and one serving TLS with a certificate from a throw-away CA (:mod:`gateway.emulator.pki`), and four
``gateway serve`` subprocesses: ws:// and wss:// (trusting the CA through ``SSL_CERT_FILE``, as a
deployment trusts a private CA), each with the Gemini session opened at the voice webhook
(``GATEWAY_PRECONNECT=1``, the default) and at the media stream (``=0``, so the whole connect, TLS
handshake included, is on the greeting's path). Simulated Twilio calls (:func:`gateway.caller.place_call`)
go one at a time, the four kinds in turn and the ws/wss order swapped every round, so the machine's
drift lands on both alike. Each call waits for the greeting, says ``builtin:hello`` (1.5 s) and
hangs up at the reply's first audio.

Per kind it prints median and p90 of: the greeting as the caller hears it (media stream start → first
bot audio; with ``--stream-delay-ms`` the caller waits that long between the TwiML and opening the
stream, as Twilio's media servers do), the reply (end of the caller's speech → first bot audio; the
emulator's VAD waits 300 ms of silence and "thinks" 250 ms of that), and the gateway's own Live
connect time (socket open → ``setupComplete``, TLS handshake and WebSocket upgrade included: the
``setup_ms`` of its "live session ready" log line); then wss − ws, as the median of the per-round
differences. On loopback a TLS handshake costs CPU only: over the internet TLS 1.3 adds one round
trip to Google at connect, which this cannot show (``bench/preconnect.py`` models the network).

    python bench/latency.py [--calls 10] [--stream-delay-ms 0] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402 - after the path fix-up so a fresh clone runs as is

from gateway.caller import CallOptions, place_call  # noqa: E402
from gateway.emulator import Emulator, Scenario  # noqa: E402
from gateway.emulator.pki import make_pki  # noqa: E402

AUTH_TOKEN = "bench-auth-token-not-a-secret"
PLAN = """
default = true
voice = "Puck"
language = "en-US"
system_instruction = "You are a helpful phone assistant."
greeting = "Greet the caller."
[vad]
silence_duration_ms = 300
"""
_SETUP_MS = re.compile(r"live session ready.*?\bsetup_ms=([0-9.]+)")


@dataclass
class Kind:
    """One gateway subprocess: a scheme and a preconnect setting, and what its calls measured."""

    scheme: str
    preconnect: bool
    port: int = 0
    log: Path = Path()
    log_pos: int = 0
    proc: asyncio.subprocess.Process | None = None
    #: By round (-1: the warm-up call), so a failed call leaves its round out of the pairs.
    greeting_ms: dict[int, float] = field(default_factory=dict)
    reply_ms: dict[int, float] = field(default_factory=dict)
    setup_ms: dict[int, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.scheme} preconnect={'on' if self.preconnect else 'off'}"

    def new_setup_ms(self) -> list[float]:
        """``setup_ms`` of the Live sessions the gateway logged since the last look."""
        text = self.log.read_text(errors="replace")
        fresh, self.log_pos = text[self.log_pos :], len(text)
        return [float(m) for m in _SETUP_MS.findall(fresh)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


async def _start(kind: Kind, base_url: str, ca_file: Path | None, tmp: Path) -> None:
    kind.port = _free_port()
    kind.log = tmp / f"gateway-{kind.scheme}-{int(kind.preconnect)}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GATEWAY_", "SSL_CERT_"))}
    env |= {
        "GEMINI_API_KEY": "bench-key-not-a-secret",
        "GEMINI_BASE_URL": base_url,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{kind.port}",
        "GATEWAY_DATA_DIR": str(tmp / f"data-{kind.scheme}-{int(kind.preconnect)}"),
        "GATEWAY_LOG_LEVEL": "INFO",
        "GATEWAY_PRECONNECT": "1" if kind.preconnect else "0",
    }
    if ca_file is not None:
        env["SSL_CERT_FILE"] = str(ca_file)
    command = ["-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(kind.port)]
    command += ["--dialplans", str(tmp / "dialplans")]
    with open(kind.log, "wb") as log:  # noqa: ASYNC230 - start-up, before any call runs
        kind.proc = await asyncio.create_subprocess_exec(
            sys.executable, *command, env=env, cwd=tmp, stdout=log, stderr=asyncio.subprocess.STDOUT
        )
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{kind.port}/healthz") as resp:
                    if resp.status == 200:
                        return
            if kind.proc.returncode is not None or time.monotonic() > deadline:
                raise SystemExit(f"{kind.name}: the gateway did not start; see {kind.log}")
            await asyncio.sleep(0.1)


async def _call(kind: Kind, stream_delay_s: float, round_: int) -> None:
    hangup = asyncio.Event()

    def on_event(line: str) -> None:
        if "bot replies after" in line:
            hangup.set()  # the reply's first audio: all this bench measures

    opts = CallOptions(
        to="+15551230000",
        gateway=f"http://127.0.0.1:{kind.port}",
        play="builtin:hello",
        auth_token=AUTH_TOKEN,
        stream_delay_s=stream_delay_s,
        hangup_after_s=20.0,
        on_event=on_event,
        hangup_event=hangup,
    )
    report = await place_call(opts)
    await asyncio.sleep(0.3)  # let the gateway log the call's end before the next one
    setup = kind.new_setup_ms()
    if report.greeting_ms is None or not report.reply_ms or report.protocol_errors:
        kind.failures.append(
            f"greeting={report.greeting_ms} reply={report.reply_ms} {report.protocol_errors}"
        )
        return
    kind.greeting_ms[round_] = report.greeting_ms
    kind.reply_ms[round_] = report.reply_ms[0]
    if setup:
        kind.setup_ms[round_] = setup[0]


def _stats(by_round: dict[int, float]) -> dict[str, float | None]:
    values = [v for r, v in by_round.items() if r >= 0]
    median = statistics.median(values) if values else None
    return {"median": None if median is None else round(median, 1), "p90": percentile(values, 90)}


def _paired_diff(a: dict[int, float], b: dict[int, float]) -> float | None:
    """Median of b - a over the rounds both measured (the same round ran them back to back)."""
    diffs = [b[r] - a[r] for r in a.keys() & b.keys() if r >= 0]
    return round(statistics.median(diffs), 1) if diffs else None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gateway-latency-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "dialplans").mkdir()
        (tmp / "dialplans" / "default.toml").write_text(PLAN)
        pki = make_pki(tmp / "pki")
        kinds = {(scheme, pre): Kind(scheme, pre) for pre in (True, False) for scheme in ("ws", "wss")}
        # A short greeting (the default one speaks for 7 s): calls end sooner, latency is the same.
        short = Scenario(greeting="Hello! How can I help?")
        async with (
            Emulator(short, record=False) as plain,
            Emulator(short, record=False, ssl_context=pki.server_context()) as tls,
        ):
            assert tls.base_url.startswith("wss://")
            try:
                for (scheme, _), kind in kinds.items():
                    emulator, ca = (tls, pki.ca_file) if scheme == "wss" else (plain, None)
                    await _start(kind, emulator.base_url, ca, tmp)
                for kind in kinds.values():
                    await _call(kind, args.stream_delay_ms / 1000, -1)  # a warm-up call each, not counted
                for i in range(args.calls):
                    for pre in (True, False):
                        for scheme in ("ws", "wss") if i % 2 == 0 else ("wss", "ws"):
                            await _call(kinds[scheme, pre], args.stream_delay_ms / 1000, i)
                    print(f"round {i + 1}/{args.calls}", file=sys.stderr, flush=True)
            finally:
                for kind in kinds.values():
                    if kind.proc is not None and kind.proc.returncode is None:
                        kind.proc.terminate()
                        try:
                            await asyncio.wait_for(kind.proc.wait(), 15)
                        except TimeoutError:
                            kind.proc.kill()
                            await kind.proc.wait()
    out: dict[str, Any] = {"calls_per_kind": args.calls, "stream_delay_ms": args.stream_delay_ms, "kinds": {}}
    for kind in kinds.values():
        out["kinds"][kind.name] = {
            "greeting_ms": _stats(kind.greeting_ms),
            "reply_ms": _stats(kind.reply_ms),
            "live_setup_ms": _stats(kind.setup_ms),
            "failures": kind.failures,
            "raw": {
                "greeting_ms": list(kind.greeting_ms.values()),
                "reply_ms": list(kind.reply_ms.values()),
                "live_setup_ms": list(kind.setup_ms.values()),
            },
        }
    out["wss_minus_ws"] = {
        f"preconnect={'on' if pre else 'off'}": {
            metric: _paired_diff(getattr(kinds["ws", pre], metric), getattr(kinds["wss", pre], metric))
            for metric in ("greeting_ms", "reply_ms", "setup_ms")
        }
        for pre in (True, False)
    }
    return out


def _print(result: dict[str, Any]) -> None:
    print(
        f"single calls, ws:// vs wss:// (verified, test CA), {result['calls_per_kind']} per kind, "
        f"TwiML→stream {result['stream_delay_ms']:g} ms; ms, median / p90"
    )
    print(f"  {'':24} {'greeting':>15} {'reply':>15} {'Live connect':>15}  failures")
    for name, k in result["kinds"].items():
        cells = [f"{k[m]['median']} / {k[m]['p90']}" for m in ("greeting_ms", "reply_ms", "live_setup_ms")]
        failed = f"{len(k['failures'])} {k['failures'][0][:60]}" if k["failures"] else "0"
        print(f"  {name:24} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15}  {failed}")

    def signed(v: float | None) -> str:
        return "-" if v is None else f"{v:+}"

    for pre, d in result["wss_minus_ws"].items():
        print(
            f"  wss - ws, {pre:15} greeting {signed(d['greeting_ms'])} ms, reply {signed(d['reply_ms'])} ms, "
            f"Live connect {signed(d['setup_ms'])} ms (median of per-round differences)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=10, help="calls per kind (4 kinds; default 10)")
    parser.add_argument(
        "--stream-delay-ms", type=float, default=0.0, help="caller's gap between TwiML and stream open"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
