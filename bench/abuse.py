"""Abuse bench: a burst of hostile connections beside healthy simulated calls (not a test: run it by hand).

    .venv/bin/python bench/abuse.py [--bad 2000] [--healthy 4] [--abusive 12] [--concurrency 64] [--json]

Runs the gateway as a real subprocess (``gateway serve``) against a Gemini Live emulator in this
process, all on loopback, the gateway reaching it over ``wss://`` as it reaches Google (a throw-away
CA, trusted through ``SSL_CERT_FILE`` in the gateway's environment), then at once:

* ``--healthy`` signed simulated Twilio calls (greeting, an utterance, the reply, hang-up);
* ``--bad`` unauthenticated hostile connections: malformed JSON, wrong types, huge payloads, invalid
  base64, events out of order, floods, missing/forged/oversized stream tokens, bad upgrade
  signatures, unsigned/forged/garbage webhooks (``gateway.security.probe``);
* ``--abusive`` authenticated calls that misbehave after ``start`` (flood, garbage, a second start,
  binary or huge frames): each may end only itself.

It prints bad attempts, how the gateway answered them, Gemini sessions opened by them (must be 0),
healthy calls disturbed (must be 0) and gateway process restarts (must be 0: the same PID answers
``/healthz`` throughout), plus tracebacks in the gateway's log. Exit status 1 if any must-be-0 is not.
Bounded: the run takes about as long as one healthy call (~15 s) plus start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from gateway.caller import CallOptions, place_call
from gateway.caller.call import CallReport
from gateway.emulator import Emulator
from gateway.emulator.pki import make_pki
from gateway.security import probe

ROOT = Path(__file__).resolve().parent.parent
AUTH_TOKEN = "b3nch" + "0" * 27
TO = "+15551230000"
CLOSE_CODES = {1003, 1007, 1008, 1009, 1013}
REFUSED_HTTP = {400, 403, 413, 503}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _healthz(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=2)) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def _disturbed(report: CallReport | BaseException) -> str:
    """Why a healthy call counts as disturbed, or ''."""
    if isinstance(report, BaseException):
        return f"{type(report).__name__}: {report}"
    if report.protocol_errors:
        return f"protocol errors: {report.protocol_errors[:2]}"
    if report.greeting_ms is None:
        return "no greeting"
    if not report.reply_ms:
        return "no reply"
    if report.ended_by != "caller":
        return f"ended by {report.ended_by}"
    return ""


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = tempfile.NamedTemporaryFile(prefix="abuse-gateway-", suffix=".log", delete=False)  # noqa: SIM115
    pki_dir = tempfile.TemporaryDirectory(prefix="abuse-pki-")
    pki = make_pki(Path(pki_dir.name))
    async with Emulator(ssl_context=pki.server_context()) as emulator:
        env = {
            **os.environ,
            "SSL_CERT_FILE": str(pki.ca_file),
            "GEMINI_API_KEY": "bench-key-not-secret",
            "GEMINI_BASE_URL": emulator.base_url,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "GATEWAY_SECRET": "bench-secret-" + "x" * 20,
            "GATEWAY_LOG_LEVEL": "WARNING",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; from gateway.cli import main; sys.exit(main())",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dialplans",
            str(ROOT / "dialplans"),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log_file,
        )
        pid = proc.pid
        try:
            return await _burst(args, url, emulator, proc, pid, Path(log_file.name))
        finally:
            if proc.returncode is None:
                proc.terminate()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(15):
                        await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            log_file.close()
            pki_dir.cleanup()


async def _burst(
    args: argparse.Namespace,
    url: str,
    emulator: Emulator,
    proc: asyncio.subprocess.Process,
    pid: int,
    log_path: Path,
) -> dict[str, Any]:
    rng = random.Random(args.seed)
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 20
        while not await _healthz(http, url):
            if proc.returncode is not None or time.monotonic() > deadline:
                raise SystemExit(f"gateway did not start; see {log_path}")
            await asyncio.sleep(0.1)

        health_failures = 0
        stop = asyncio.Event()

        async def watch() -> None:
            nonlocal health_failures
            while not stop.is_set():
                if proc.returncode is not None or not await _healthz(http, url):
                    health_failures += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.25):
                        await stop.wait()

        watcher = asyncio.create_task(watch())
        healthy = [
            asyncio.create_task(
                place_call(
                    CallOptions(
                        to=TO, gateway=url, play="builtin:hello", hangup_after_s=14.0, auth_token=AUTH_TOKEN
                    )
                )
            )
            for _ in range(args.healthy)
        ]
        await asyncio.sleep(0.5)
        started = time.monotonic()
        semaphore = asyncio.Semaphore(args.concurrency)

        async def send(p: probe.Probe) -> probe.ProbeResult:
            async with semaphore:
                return await probe.run_probe(http, url, p)

        kinds = [probe.ABUSIVE_KINDS[i % len(probe.ABUSIVE_KINDS)] for i in range(args.abusive)]
        tokens = [await probe.stream_token(http, url, to=TO, auth_token=AUTH_TOKEN) for _ in kinds]
        abusive = [
            probe.Probe(kind, probe.abusive_frames(kind, sid, token, rng))
            for kind, (sid, token) in zip(kinds, tokens, strict=True)
        ]
        hostile = probe.hostile_probes(rng, args.bad)
        results = await asyncio.gather(*(send(p) for p in [*hostile, *abusive]))
        burst_s = time.monotonic() - started
        reports = await asyncio.gather(*healthy, return_exceptions=True)
        stop.set()
        await watcher
        alive_same_pid = proc.returncode is None and proc.pid == pid and await _healthz(http, url)

    bad_results, abusive_results = results[: args.bad], results[args.bad :]
    answered = Counter(
        f"HTTP {r.http_status}" if r.http_status is not None else f"close {r.close_code}" for r in bad_results
    )
    unexpected = [
        r
        for r in bad_results
        if not (r.http_status in REFUSED_HTTP or r.close_code in CLOSE_CODES) or r.error
    ]
    sessions = len(emulator.sessions)
    disturbed = [reason for reason in map(_disturbed, reports) if reason]
    log_text = await asyncio.to_thread(log_path.read_text, errors="replace")
    return {
        "bad_attempts": args.bad,
        "bad_attempts_by_kind": dict(Counter(r.kind for r in bad_results)),
        "bad_attempts_answered": dict(answered),
        "bad_attempts_unexpected": [
            f"{r.kind}: {r.http_status or r.close_code} {r.error}" for r in unexpected
        ],
        "burst_s": round(burst_s, 2),
        "gemini_sessions_total": sessions,
        "gemini_sessions_by_bad_attempts": sessions - args.healthy - args.abusive,
        "abusive_authenticated_calls": args.abusive,
        "abusive_calls_closed_cleanly": sum(r.close_code in CLOSE_CODES for r in abusive_results),
        "healthy_calls": args.healthy,
        "healthy_calls_disturbed": len(disturbed),
        "healthy_disturbed_reasons": disturbed,
        "healthy_greeting_ms": [getattr(r, "greeting_ms", None) for r in reports],
        "healthy_reply_ms": [getattr(r, "reply_ms", None) for r in reports],
        "health_check_failures": health_failures,
        "process_restarts": 0 if alive_same_pid else 1,
        "gateway_tracebacks": log_text.count("Traceback"),
        "gateway_log": str(log_path),
    }


def _print(result: dict[str, Any]) -> None:
    rows = [
        ("bad attempts", result["bad_attempts"]),
        ("  answered", ", ".join(f"{k}: {v}" for k, v in sorted(result["bad_attempts_answered"].items()))),
        ("  answered unexpectedly", len(result["bad_attempts_unexpected"])),
        ("  burst duration (s)", result["burst_s"]),
        ("Gemini sessions opened by bad attempts (must be 0)", result["gemini_sessions_by_bad_attempts"]),
        ("abusive authenticated calls", result["abusive_authenticated_calls"]),
        ("  closed cleanly (1003/1007/1008/1009)", result["abusive_calls_closed_cleanly"]),
        ("healthy calls", result["healthy_calls"]),
        ("healthy calls disturbed (must be 0)", result["healthy_calls_disturbed"]),
        ("  greeting ms", result["healthy_greeting_ms"]),
        ("  reply ms", result["healthy_reply_ms"]),
        ("/healthz failures during the run", result["health_check_failures"]),
        ("process restarts (must be 0)", result["process_restarts"]),
        ("tracebacks in the gateway log", result["gateway_tracebacks"]),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for line in result["bad_attempts_unexpected"][:10]:
        print(f"  unexpected: {line}")
    for line in result["healthy_disturbed_reasons"]:
        print(f"  disturbed: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bad", type=int, default=2000, help="unauthenticated hostile connections")
    parser.add_argument("--healthy", type=int, default=4, help="healthy simulated calls alongside")
    parser.add_argument("--abusive", type=int, default=12, help="authenticated calls that misbehave")
    parser.add_argument("--concurrency", type=int, default=64, help="hostile connections at once")
    parser.add_argument("--seed", type=int, default=8, help="RNG seed for the hostile traffic")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    failed = (
        result["gemini_sessions_by_bad_attempts"]
        or result["healthy_calls_disturbed"]
        or result["process_restarts"]
        or result["bad_attempts_unexpected"]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
