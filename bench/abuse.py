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

Media upgrades are signed as Twilio signs them: the signature covers only the URL, so one captured
signature opens any number of sockets, and the probes reach the checks behind it.

Then two starvation scenarios, each beside ``--scenario-calls`` real calls, with the gateway held to
``--nofile`` open files (1024, a common default):

* ``--idle-upgrades`` attackers hold signed media upgrades without ever sending ``start`` and reopen
  them whenever they are closed;
* ``--idle-tcp`` idle TCP connections and ``--slowloris`` webhooks trickling their headers or their
  body, held until the gateway closes them.

For each it prints the real calls admitted while the attack runs (must be all of them) and, for the
second, the gateway's sockets still held by the idle and slow connections once its timeouts have
passed (must be 0).

It prints bad attempts, how the gateway answered them, Gemini sessions opened by them (must be 0),
healthy calls disturbed (must be 0) and gateway process restarts (must be 0: the same PID answers
``/healthz`` throughout), plus tracebacks in the gateway's log. Exit status 1 if any must-be-0 is not.
Bounded: about a minute (the burst ~15 s, the scenarios ~15 s and ~25 s) plus start-up. Linux only
(the gateway's sockets are counted in /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import resource
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
from gateway.telephony.signature import twilio_signature

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
        nofile = args.nofile

        def limit_files() -> None:  # in the child, before exec: the gateway starts with this many files
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

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
            preexec_fn=limit_files,
        )
        pid = proc.pid
        try:
            result = await _burst(args, url, emulator, proc, pid, Path(log_file.name))
            if not args.skip_scenarios:
                result["scenarios"] = await _scenarios(args, url, port, pid, emulator)
                log_text = await asyncio.to_thread(Path(log_file.name).read_text, errors="replace")
                result["gateway_tracebacks"] = log_text.count("Traceback")
                result["process_restarts"] += 0 if proc.returncode is None else 1
            return result
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
        # `gateway serve` checks the key and model with a session of its own before it listens.
        sessions_at_start = len(emulator.sessions)

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
            async with semaphore:  # upgrades signed as Twilio signs them (see the module docstring)
                return await probe.run_probe(http, url, p, auth_token=AUTH_TOKEN)

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
    sessions = len(emulator.sessions) - sessions_at_start
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


def _gateway_sockets(pid: int, port: int, peers: set[int]) -> int:
    """Sockets the gateway process holds open on ``port`` whose other end is one of the ``peers`` ports
    (its file descriptors' inodes, matched in /proc/<pid>/net/tcp{,6})."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    held = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
                held += local == port and remote in peers and fields[9] in inodes
    return held


def _admitted(report: CallReport | BaseException) -> bool:
    """A real call got its stream: greeted, no protocol error, and it was the caller who hung up."""
    return not isinstance(report, BaseException) and not _disturbed(report)


async def _real_calls(url: str, count: int, hangup_after_s: float) -> list[CallReport | BaseException]:
    options = CallOptions(
        to=TO, gateway=url, play="builtin:hello", hangup_after_s=hangup_after_s, auth_token=AUTH_TOKEN
    )
    return await asyncio.gather(*(place_call(options) for _ in range(count)), return_exceptions=True)


async def _idle_upgrades(url: str, attackers: int, calls: int) -> dict[str, Any]:
    """Attackers hold signed media upgrades without ever sending start and reopen them about a second
    after each close; real calls are placed meanwhile."""
    ws_url = url.replace("http://", "ws://") + "/twilio/media"
    headers = {"X-Twilio-Signature": twilio_signature(AUTH_TOKEN, ws_url)}  # captured once, valid for ever
    outcomes: Counter[str] = Counter()
    rng = random.Random(16)

    async def attacker(http: aiohttp.ClientSession) -> None:
        while True:
            try:
                async with http.ws_connect(ws_url, headers=headers) as ws, asyncio.timeout(30):
                    async for _ in ws:
                        pass
                outcomes[f"close {ws.close_code}"] += 1
            except aiohttp.WSServerHandshakeError as exc:
                outcomes[f"HTTP {exc.status}"] += 1
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                outcomes[type(exc).__name__] += 1
            await asyncio.sleep(rng.uniform(0.5, 1.5))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        tasks = [asyncio.create_task(attacker(http)) for _ in range(attackers)]
        try:
            await asyncio.sleep(4.0)  # every attacker has had its socket closed and reopened at least once
            reports = await _real_calls(url, calls, hangup_after_s=12.0)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "attack": f"{attackers} idle media upgrades churning (signed, never sending start)",
        "real_calls": calls,
        "real_calls_admitted": sum(map(_admitted, reports)),
        "not_admitted_reasons": [_disturbed(r) for r in reports if not _admitted(r)],
        "attacker_sockets_answered": dict(outcomes),
    }


async def _idle_and_slow(url: str, port: int, pid: int, idle: int, slow: int, calls: int) -> dict[str, Any]:
    """Idle TCP connections and slowloris webhooks (half trickle their headers, half their body, a byte
    a second), held until the gateway closes them; real calls and health checks meanwhile; then the
    gateway's sockets to them are counted until none is left."""
    peers: set[int] = set()
    writers: list[asyncio.StreamWriter] = []
    health_failures = 0

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        peers.add(writer.get_extra_info("sockname")[1])
        writers.append(writer)
        return reader, writer

    async def slowloris(index: int) -> None:
        reader, writer = await connect()
        head = b"POST /twilio/voice HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if index % 2:  # a complete head announcing a body that then trickles
            writer.write(
                head + b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\n"
            )
        else:
            writer.write(head + b"X-Slow: ")
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(40):
                while not reader.at_eof():
                    writer.write(b"a")
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await reader.read(4096)

    started = time.monotonic()
    for _ in range(idle):
        await connect()
    slow_tasks = [asyncio.create_task(slowloris(i)) for i in range(slow)]
    async with aiohttp.ClientSession() as http:
        await asyncio.sleep(1.0)
        peak = _gateway_sockets(pid, port, peers)
        calls_task = asyncio.create_task(_real_calls(url, calls, hangup_after_s=12.0))
        while not calls_task.done():
            health_failures += not await _healthz(http, url)
            await asyncio.sleep(0.5)
        reports = await calls_task
    held, waited = peak, 0.0
    while held and waited < 40:
        await asyncio.sleep(1.0)
        waited = time.monotonic() - started
        held = _gateway_sockets(pid, port, peers)
    for task in slow_tasks:
        task.cancel()
    await asyncio.gather(*slow_tasks, return_exceptions=True)
    for writer in writers:
        writer.close()
    return {
        "attack": f"{idle} idle TCP connections + {slow} slowloris webhooks",
        "real_calls": calls,
        "real_calls_admitted": sum(map(_admitted, reports)),
        "not_admitted_reasons": [_disturbed(r) for r in reports if not _admitted(r)],
        "health_check_failures": health_failures,
        "held_by_them_at_peak": peak,
        "held_after_timeouts": held,
        "all_closed_after_s": round(waited, 1) if not held else None,
    }


async def _signed_webhook(http: aiohttp.ClientSession, url: str, call_sid: str) -> tuple[str, str]:
    """A signed voice webhook as Twilio sends it; the TwiML's stream URL and stream token."""
    webhook = f"{url}/twilio/voice"
    form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": "+15550001111", "To": TO}
    headers = {"X-Twilio-Signature": twilio_signature(AUTH_TOKEN, webhook, form)}
    async with http.post(webhook, data=form, headers=headers) as response:
        body = await response.text()
    if response.status != 200 or 'name="token" value="' not in body:
        raise RuntimeError(f"webhook answered {response.status}: {body[:200]}")
    return body.split('<Stream url="')[1].split('"')[0], body.split('name="token" value="')[1].split('"')[0]


async def _abandoned_webhooks(url: str, emulator: Emulator, count: int, after_s: float) -> dict[str, Any]:
    """Callers who hang up before the media stream opens: each signed webhook preconnects a Gemini
    session; none may still be open ``after_s`` after the traffic stops."""
    before = len(emulator.sessions)
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(_signed_webhook(http, url, f"CA{i:032x}") for i in range(count)))
    opened = emulator.sessions[before:]
    async with asyncio.timeout(10):
        while len(emulator.sessions) - before < count:  # noqa: ASYNC110 - the preconnects still set up
            await asyncio.sleep(0.05)
        opened = emulator.sessions[before:]
    peak = sum(not s.closed.is_set() for s in opened)
    await asyncio.sleep(after_s)
    return {
        "attack": f"{count} signed webhooks whose callers hang up before the stream opens",
        "gemini_sessions_opened": len(opened),
        "gemini_sessions_open_at_peak": peak,
        "gemini_sessions_open_after": sum(not s.closed.is_set() for s in opened),
        "after_s": after_s,
    }


async def _dead_callers(url: str, count: int, media_s: float) -> dict[str, Any]:
    """Callers that vanish mid-call without closing their sockets: they stop sending media and the TCP
    connection stays up. How long until the gateway ends each call?"""
    silence = json.dumps(
        {
            "event": "media",
            "streamSid": "MZ" + "d" * 32,
            "media": {"payload": base64.b64encode(b"\xff" * 160).decode()},
        }
    )  # 20 ms of μ-law silence

    async def one(http: aiohttp.ClientSession, index: int) -> float:
        call_sid = f"CA{index + 0xDEAD:032x}"
        stream_url, token = await _signed_webhook(http, url, call_sid)
        headers = {"X-Twilio-Signature": twilio_signature(AUTH_TOKEN, stream_url)}
        async with http.ws_connect(stream_url, headers=headers) as ws:
            await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            start = {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": "MZ" + "d" * 32,
                "start": {
                    "streamSid": "MZ" + "d" * 32,
                    "accountSid": "AC" + "0" * 32,
                    "callSid": call_sid,
                    "tracks": ["inbound"],
                    "customParameters": {"token": token},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
            await ws.send_str(json.dumps(start))
            for _ in range(int(media_s / 0.02)):
                await ws.send_str(silence)
                await asyncio.sleep(0.02)
            gone = time.monotonic()
            async with asyncio.timeout(120):
                async for _ in ws:  # the bot's audio and marks, until the gateway hangs up
                    pass
            return time.monotonic() - gone

    async with aiohttp.ClientSession() as http:
        waited = await asyncio.gather(*(one(http, i) for i in range(count)))
    return {
        "attack": f"{count} callers who vanish mid-call, socket left open",
        "dead_caller_ended_after_s": [round(w, 2) for w in sorted(waited)],
    }


async def _scenarios(
    args: argparse.Namespace, url: str, port: int, pid: int, emulator: Emulator
) -> list[dict[str, Any]]:
    return [
        await _idle_upgrades(url, args.idle_upgrades, args.scenario_calls),
        await _idle_and_slow(url, port, pid, args.idle_tcp, args.slowloris, args.scenario_calls),
        await _abandoned_webhooks(url, emulator, args.abandoned, args.abandoned_wait_s),
        await _dead_callers(url, args.dead_callers, media_s=2.0),
    ]


def _print(result: dict[str, Any]) -> None:
    rows = [
        ("bad attempts", result["bad_attempts"]),
        ("  answered", ", ".join(f"{k}: {v}" for k, v in sorted(result["bad_attempts_answered"].items()))),
        ("  answered unexpectedly", len(result["bad_attempts_unexpected"])),
        ("  burst duration (s)", result["burst_s"]),
        ("Gemini sessions opened by bad attempts (must be 0)", result["gemini_sessions_by_bad_attempts"]),
        ("abusive authenticated calls", result["abusive_authenticated_calls"]),
        ("  closed cleanly (1003/1007/1008/1009/1013)", result["abusive_calls_closed_cleanly"]),
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
    for scenario in result.get("scenarios", []):
        rows = [(f"scenario: {scenario['attack']}", "")]
        if "real_calls" in scenario:
            rows.append(
                (
                    "  real calls admitted while it runs (must be all)",
                    f"{scenario['real_calls_admitted']}/{scenario['real_calls']}",
                )
            )
        if "gemini_sessions_opened" in scenario:
            rows += [
                (
                    "  Gemini sessions opened / open at peak",
                    f"{scenario['gemini_sessions_opened']} / {scenario['gemini_sessions_open_at_peak']}",
                ),
                (
                    f"  Gemini sessions left open {scenario['after_s']:g} s after traffic stops (must be 0)",
                    scenario["gemini_sessions_open_after"],
                ),
            ]
        if "dead_caller_ended_after_s" in scenario:
            rows.append(("  seconds until a dead caller's call ends", scenario["dead_caller_ended_after_s"]))
        if "attacker_sockets_answered" in scenario:
            answered = scenario["attacker_sockets_answered"]
            rows.append(
                ("  attackers' sockets ended by", ", ".join(f"{k}: {v}" for k, v in sorted(answered.items())))
            )
        if "held_after_timeouts" in scenario:
            rows += [
                ("  /healthz failures during the attack", scenario["health_check_failures"]),
                ("  gateway sockets held by them at peak", scenario["held_by_them_at_peak"]),
                (
                    "  file handles held by idle sockets after the timeouts (must be 0)",
                    scenario["held_after_timeouts"],
                ),
                ("  all closed after (s)", scenario["all_closed_after_s"]),
            ]
        for name, value in rows:
            print(f"{name:<{width}}  {value}")
        for line in scenario.get("not_admitted_reasons", ()):
            print(f"  not admitted: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bad", type=int, default=2000, help="unauthenticated hostile connections")
    parser.add_argument("--healthy", type=int, default=4, help="healthy simulated calls alongside")
    parser.add_argument("--abusive", type=int, default=12, help="authenticated calls that misbehave")
    parser.add_argument("--concurrency", type=int, default=64, help="hostile connections at once")
    parser.add_argument("--seed", type=int, default=8, help="RNG seed for the hostile traffic")
    parser.add_argument("--idle-upgrades", type=int, default=200, help="attackers churning idle upgrades")
    parser.add_argument("--idle-tcp", type=int, default=500, help="idle TCP connections")
    parser.add_argument("--slowloris", type=int, default=200, help="webhooks trickling head or body")
    parser.add_argument("--scenario-calls", type=int, default=4, help="real calls during each scenario")
    parser.add_argument("--abandoned", type=int, default=60, help="webhooks whose stream never opens")
    parser.add_argument(
        "--abandoned-wait-s", type=float, default=30.0, help="how long after them no session may be open"
    )
    parser.add_argument("--dead-callers", type=int, default=4, help="callers that vanish mid-call")
    parser.add_argument("--nofile", type=int, default=1024, help="the gateway's open-file limit (0: as is)")
    parser.add_argument("--skip-scenarios", action="store_true", help="only the burst")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # this process holds every attacker's socket
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
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
        or any(
            s.get("real_calls_admitted", 0) < s.get("real_calls", 0)
            or s.get("held_after_timeouts")
            or s.get("gemini_sessions_open_after")
            for s in result.get("scenarios", [])
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
