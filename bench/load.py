#!/usr/bin/env python3
"""Capacity and latency of the gateway under N concurrent simulated calls, all on loopback.

Three kinds of processes, so the gateway's CPU and memory are measured alone:

* the **gateway** (``gateway serve``, optionally ``--workers N``), read from /proc: CPU seconds
  (utime+stime of it and its workers, also reported apart) over the steady-state window, and
  resident memory;
* the **Live server** (this script, ``--role emulator``): the lean load-test Live API server
  (:mod:`gateway.emulator.load`), which plays the echo persona (each thing the caller says comes
  back, so the bot talks about half the time) at a fraction of the full emulator's CPU; it finds the
  callers' probes in the audio the gateway forwards and notes when each reply's first audio left it;
* **load generators** (``--role loader``, one per 1000 calls): lean callers (:mod:`gateway.caller.load`),
  each call talking in bursts, barging in every 4th reply, echoing marks.

**Providers.** ``--provider NAME`` (default ``twilio``) picks whose protocol the calls speak: Twilio's
is the load caller's own pre-encoded path (the reference); the others (signalwire, telnyx,
telnyx-callcontrol, plivo, exotel, vonage, freeswitch, jambonz, asterisk, asterisk-json, audiosocket) go
through that provider's simulated side (gateway/caller/side_*.py), the same load pattern, with the
gateway configured to check their signatures. AudioSocket is plain TCP with no credential: the run
switches the gateway's listener on (``GATEWAY_AUDIOSOCKET_PORT``, loopback only) and the load
generators connect to it on a lean TCP socket (one write per frame; no marks, no clear). Each runs
its default stream format (μ-law 8 kHz; Exotel L16 8 kHz; AudioSocket slin 8 kHz); ``--env GATEWAY_SIGNALWIRE_CODEC=L16@16000h`` and the
like switch the gateway, and with it the simulated provider, to wideband. Telnyx Call Control is
answered through Telnyx's API: the load generator serves a stand-in (gateway/caller/telnyx_api.py) that
the gateway's ``TELNYX_API_BASE`` points at. ``--compare-providers`` runs each provider in turn
(alternating order across ``--repeat``) and prints one table.

**CPUs.** The gateway (and its workers) run pinned to ``--gateway-cpus`` (default: one CPU per
worker from CPU 0, always leaving one); the Live server and the load generators run on the other
CPUs, so they neither steal the gateway's core nor share it. Both peers use uvloop when installed
(``pip install '.[fast]'``); ``load_loop`` in the JSON says which. ``loadgen_lag_ms_p99`` is how late
the load generators ran on their 20 ms schedule: above 10 ms they were starved and the run says
little about the gateway (``--find-max`` retries it).

**TLS.** As production reaches Google, the gateway reaches the Live server over ``wss://`` and
verifies its certificate: the run makes a throw-away CA (:mod:`gateway.emulator.pki`) in its temp
dir, the Live server presents a certificate it signed, and the gateway trusts it only through
``SSL_CERT_FILE`` in its environment (OpenSSL's own variable, as a private CA is trusted; nothing
turns verification off). ``--plain-ws`` runs the old ``ws://`` path instead, to compare against;
``--compare-tls`` does that itself, alternating ws/wss runs in one session and quoting ratios.

Latency is timed on one clock (CLOCK_MONOTONIC is system-wide): uplink = a caller probe frame sent →
the same audio received by the Live server; downlink = a reply's first audio sent by the Live server
→ its first μ-law frame received by the caller. Each leg crosses loopback twice, so the median round
trip of a bare WebSocket message between a load generator and the Live server process, on the same
lean sockets (``transport_rtt_ms``), is subtracted; ``*_raw_ms`` keep the unsubtracted figures.
Latency, lateness and CPU are taken over the steady state (every call placed and greeted), not the
ramp-up.

    python bench/load.py --calls 100 --seconds 20 --json
    python bench/load.py --find-max --workers 2
    python bench/load.py --calls 500 --gateway-cpus 0 --json    # the default on a 2-CPU machine
    python bench/load.py --compare-tls --calls 100 --seconds 15 --repeat 3
    python bench/load.py --provider plivo --calls 100 --seconds 15 --json
    python bench/load.py --compare-providers --calls 100 --seconds 15 --repeat 1
    python bench/load.py --overload --calls 200 --seconds 15 --repeat 3   # twice the held capacity
    python bench/load.py --overload --calls 200 --arrivals 100            # all of it within two seconds

**Overload protection** (gateway/server/load.py) is off in every run except ``--overload``'s "on"
runs, so a capacity run measures every call it places.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import gc
import json
import math
import os
import pickle
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.caller import wire_telnyx  # noqa: E402 - after the path fix-up so a fresh clone runs as is
from gateway.caller.load import (  # noqa: E402
    analyse,
    echo_rtt,
    percentile,
    run_calls,
)
from gateway.caller.registry import SIDES  # noqa: E402
from gateway.workers import run_loop  # noqa: E402

AUTH_TOKEN = "bench-auth-token-not-a-secret"
TELNYX_API_KEY = "KEYbench-telnyx-api-key-not-a-secret"
#: The loader's signing secret, when not AUTH_TOKEN (Telnyx's private key): in its environment, not argv.
CALLER_SECRET_ENV = "BENCH_LOAD_CALLER_SECRET"
PROVIDERS = tuple(SIDES)
#: One load generator process up to this many calls: each process adds its own 500 wake-ups a
#: second, and one process was measured cheaper than three at 500 calls (26.5 vs 32.0 % of a core).
CALLS_PER_LOADER = 1000
PLAN = """
default = true
voice = "Puck"
language = "en-US"
system_instruction = "You are a helpful phone assistant."
greeting = "Greet the caller."
[vad]
silence_duration_ms = 300
"""
#: A load generator this late on its 20 ms schedule (p99) was starved of CPU: its run is retried.
LOADGEN_LAG_LIMIT_MS = 10.0
#: Steps of --find-max.
STEPS = (10, 25, 50, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1500, 2000)


# --------------------------------------------------------------------------- /proc


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the gateway's workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def _cpu_split(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pids``."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])  # utime
            system += int(fields[12])  # stime
        except (OSError, IndexError, ValueError):
            pass
    return user / _ticks(), system / _ticks()


def _cpu_s(pids: list[int]) -> float:
    return sum(_cpu_split(pids))


def cpu_plan(spec: str | None, workers: int) -> tuple[set[int] | None, set[int] | None]:
    """(the gateway's CPUs, the load side's CPUs); None: not pinned.

    ``spec`` is ``--gateway-cpus``: a list like ``0`` or ``0,2-3``, ``all`` for no pinning, or None for
    the default: as many CPUs as ``workers`` (from the lowest), always leaving at least one to the
    emulator and the load generators, which get all the others. On one CPU nothing is pinned.
    """
    allowed = sorted(os.sched_getaffinity(0))
    if spec == "all" or len(allowed) < 2:
        return None, None
    if spec is None:
        gateway = set(allowed[: max(1, min(workers, len(allowed) - 1))])
    else:
        gateway = set()
        for part in spec.split(","):
            first, _, last = part.strip().partition("-")
            gateway.update(range(int(first), int(last or first) + 1))
        if not gateway <= set(allowed):
            raise SystemExit(f"--gateway-cpus {spec}: this process may only use CPUs {allowed}")
    rest = set(allowed) - gateway
    return gateway, (rest or None)


def _pinned(cpus: set[int] | None) -> Any:
    """A ``preexec_fn`` that pins the child (and whatever it forks later) before it starts."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "python": sys.version.split()[0]}


def calibrate(cpus: set[int] | None, frames: int = 3000) -> float:
    """µs of CPU one 20 ms caller frame costs through the Twilio codec, the 8→16 kHz resampler and the
    Live audio encoder, alone on the gateway's CPU (median of 5 rounds): a yardstick for comparing runs
    across hours and machines. The shared VM of the README drifts by 1.5× from one day to the next
    (8.6 µs for the resampler alone one day, 13.9 µs another), so a figure means little without it."""
    import base64
    import timeit

    from gateway.audio.transcode import Uplink
    from gateway.gemini.messages import encode_realtime_audio
    from gateway.telephony.twilio import TwilioCodec

    sid = "MZ" + "1" * 32
    codec = TwilioCodec()
    codec.receive_text('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    fmt = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    start = {"accountSid": "AC" + "0" * 32, "streamSid": sid, "callSid": "CA" + "2" * 32, "mediaFormat": fmt}
    codec.receive_text(
        json.dumps({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": sid})
    )
    payload = base64.b64encode(bytes(range(96, 256))).decode()
    media = {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": payload}
    text = json.dumps({"event": "media", "sequenceNumber": "3", "media": media, "streamSid": sid})
    uplink = Uplink()

    def frame() -> None:
        event = codec.receive_media(text)
        assert event is not None
        encode_realtime_audio(uplink.process(event.payload)).encode()

    before = os.sched_getaffinity(0)
    try:
        if cpus:
            os.sched_setaffinity(0, cpus)
        rounds = timeit.repeat(frame, number=frames, repeat=5)
    finally:
        os.sched_setaffinity(0, before)
    return round(sorted(rounds)[2] / frames * 1e6, 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- roles


def _loop_kind() -> str:
    """The running event loop: the peers use uvloop when installed (``pip install '.[fast]'``)."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


def _quiet_gc() -> None:
    """The peers are measuring instruments: a cyclic-GC pass over their heap (a full one took tens of
    ms once probe records piled up) would show up as gateway latency. They make little cyclic garbage
    in one run, so collect once and switch the collector off."""
    gc.collect()
    gc.freeze()
    gc.disable()


def emulator_role(pki_dir: str | None) -> int:
    """The Live server process: serve (TLS with the PKI in ``pki_dir``), then on ``dump`` print what
    every session saw."""
    from gateway.emulator.load import LoadLiveServer
    from gateway.emulator.pki import TestPKI

    _quiet_gc()
    tls = None
    if pki_dir is not None:
        d = Path(pki_dir)
        tls = TestPKI(d / "ca.pem", d / "cert.pem", d / "key.pem").server_context()

    async def main() -> None:
        # Echo persona: every caller burst comes back after 300 ms of silence + 250 ms "thinking".
        server = LoadLiveServer(greeting="Hello, how can I help?", ssl_context=tls)
        await server.start("127.0.0.1", 0)
        # The echo (the subtracted round trip) is plain ws:// even under TLS: see gateway.emulator.load.
        ready = {"base_url": server.base_url, "echo_url": server.echo_url, "loop": _loop_kind()}
        print(json.dumps(ready), flush=True)
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, sys.stdin.readline)
        while line.strip() == "count":  # messages received so far, to rate the window
            print(json.dumps({"messages_in": server.messages_in}), flush=True)
            line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() == "dump":
            print(json.dumps({"sessions": server.results()}), flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)
        await server.stop()

    run_loop(main(), "auto")
    return 0


def loader_role(args: argparse.Namespace) -> int:
    first, last = (int(x) for x in args.numbers.split(":"))
    _quiet_gc()

    async def main() -> dict[str, Any]:
        rtt = await echo_rtt(args.echo_url)
        calls, lag = await run_calls(
            args.gateway,
            list(range(first, last)),
            start_at=args.start_at,
            ramp_s=args.ramp,
            until=args.until,
            auth_token=os.environ.get(CALLER_SECRET_ENV) or AUTH_TOKEN,
            provider=args.provider,
            provider_api=args.provider_api or "",
        )
        return {"calls": calls, "lag": lag, "rtt": rtt}

    result = run_loop(main(), "auto")
    with open(args.out, "wb") as f:
        pickle.dump(result, f)
    return 0


# --------------------------------------------------------------------------- one run


def _emulator_count(emulator: subprocess.Popen[bytes]) -> int:
    """Messages the Live server has received so far."""
    assert emulator.stdin is not None
    assert emulator.stdout is not None
    emulator.stdin.write(b"count\n")
    emulator.stdin.flush()
    return int(json.loads(emulator.stdout.readline())["messages_in"])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode} during start-up")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the gateway did not answer {url} within {timeout} s")


def provider_setup(provider: str) -> tuple[dict[str, str], str, str]:
    """(the gateway's environment for ``provider``'s signatures, the callers' signing secret, the
    address the load generator serves the provider's API at, or "").

    Every provider is checked as in production: a throw-away Ed25519 key stands in for Telnyx's.
    AudioSocket has no credential (its listener serves loopback only, ``GATEWAY_AUDIOSOCKET_ALLOW``'s
    default): the listener is switched on at a free port, which the load generators connect to."""
    if provider == "audiosocket":
        return {"GATEWAY_AUDIOSOCKET_PORT": str(_free_port())}, "", ""
    if provider in ("asterisk", "asterisk-json"):  # the PBX secret, as websocket_client.conf's password
        return {"GATEWAY_PBX_SECRET": AUTH_TOKEN}, AUTH_TOKEN, ""
    if provider in ("freeswitch", "jambonz"):  # the PBX secret: ?token= (FreeSWITCH), wsAuth (jambonz)
        return {"GATEWAY_PBX_SECRET": AUTH_TOKEN}, AUTH_TOKEN, ""
    if provider in ("twilio", "signalwire", "plivo", "exotel", "vonage"):
        name = {
            "twilio": "TWILIO_AUTH_TOKEN",
            "signalwire": "SIGNALWIRE_SIGNING_KEY",
            "plivo": "PLIVO_AUTH_TOKEN",
            "exotel": "EXOTEL_STREAM_SECRET",
            "vonage": "VONAGE_SIGNATURE_SECRET",
        }[provider]
        return {name: AUTH_TOKEN}, AUTH_TOKEN, ""
    if provider not in ("telnyx", "telnyx-callcontrol"):
        raise SystemExit(f"--provider {provider}: one of {', '.join(PROVIDERS)}")
    key = wire_telnyx.new_signing_key()
    env = {"TELNYX_PUBLIC_KEY": wire_telnyx.public_key_b64(key)}
    api = ""
    if provider == "telnyx-callcontrol":
        api = f"http://127.0.0.1:{_free_port()}/v2"
        env |= {"TELNYX_API_KEY": TELNYX_API_KEY, "TELNYX_API_BASE": api}
    return env, wire_telnyx.private_key_b64(key), api


def _ms(value: float) -> float | None:
    return None if math.isnan(value) else round(value * 1000, 2)


def run_once(
    n: int,
    seconds: float,
    *,
    workers: int,
    loop: str,
    log_level: str,
    keep: bool,
    profile: str | None = None,
    extra_env: dict[str, str] | None = None,
    gateway_cpus: str | None = None,
    tls: bool = True,
    provider: str = "twilio",
    protected: bool = False,
    server: Callable[[int, Path], list[str]] | None = None,
    arrivals_per_s: float = 100.0,
) -> dict[str, Any]:
    """Start emulator and gateway, run ``n`` calls for ``seconds`` of steady state, return the figures.

    ``protected``: the gateway's overload protection on, at its defaults (gateway/server/load.py);
    off otherwise, so a capacity run measures every call it places. ``server``: another voice server
    to measure in the gateway's place (``bench/peers.py``), as its command given the port and the run's
    temporary directory; it must answer ``GET /healthz`` and the Twilio voice webhook. ``arrivals_per_s``:
    how fast the calls are placed (the ramp-up lasts ``n / arrivals_per_s`` seconds, at least one).

    ``tls``: the gateway reaches the Live server over ``wss://``, trusting a throw-away CA through
    ``SSL_CERT_FILE`` (as production reaches Google); False: plain ``ws://``. ``provider``: whose
    protocol the calls speak."""
    me = str(Path(__file__).resolve())
    provider_env, caller_secret, provider_api = provider_setup(provider)
    if provider == "audiosocket" and workers > 1:
        raise SystemExit(
            "--provider audiosocket: one worker only (the AudioSocket listener binds its port once)"
        )
    if provider_api and n > CALLS_PER_LOADER:
        raise SystemExit(
            f"--provider {provider}: one load generator serves the API, so at most {CALLS_PER_LOADER} calls"
        )
    gw_cpus, load_cpus = cpu_plan(gateway_cpus, workers)
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="gateway-load-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "dialplans").mkdir()
        (tmp / "dialplans" / "default.toml").write_text(PLAN)
        procs: list[subprocess.Popen[bytes]] = []
        tls_env: dict[str, str] = {}
        emulator_cmd = [py, me, "--role", "emulator"]
        if tls:
            from gateway.emulator.pki import make_pki

            pki = make_pki(tmp / "pki")
            tls_env = {"SSL_CERT_FILE": str(pki.ca_file)}
            emulator_cmd += ["--pki-dir", str(tmp / "pki")]
        try:
            emulator = subprocess.Popen(
                emulator_cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                preexec_fn=_pinned(load_cpus),
            )
            procs.append(emulator)
            assert emulator.stdout is not None
            assert emulator.stdin is not None
            ports = json.loads(emulator.stdout.readline())
            port = _free_port()
            env = {
                **os.environ,
                "GEMINI_API_KEY": "bench-key-not-a-secret",
                "GEMINI_BASE_URL": ports["base_url"],
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
                "GATEWAY_MAX_CALLS": "0",
                "GATEWAY_MAX_PENDING_STREAMS": "100000",
                "GATEWAY_MAX_STREAM_RATE": "1000",
                **({} if protected else {"GATEWAY_MAX_CPU_PERCENT": "0", "GATEWAY_MAX_LOOP_LAG_MS": "0"}),
                "GATEWAY_DATA_DIR": str(tmp / "data"),
                "GATEWAY_LOG_LEVEL": log_level,
                **provider_env,
                **tls_env,
                **(extra_env or {}),
            }
            command = [py, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)]
            command += ["--dialplans", str(tmp / "dialplans")]
            if workers > 1:
                command += ["--workers", str(workers)]
            if loop != "default":
                command += ["--loop", loop]
            if server is not None:
                command = server(port, tmp)
            log_path = tmp / "gateway.log"
            with open(log_path, "wb") as log:
                gateway = subprocess.Popen(
                    command,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=tmp,
                    preexec_fn=_pinned(gw_cpus),  # its workers inherit the mask
                )
            procs.append(gateway)
            _wait_http(f"http://127.0.0.1:{port}/healthz", gateway)
            time.sleep(1.0)  # let every worker come up and settle
            gw_pids = _tree(gateway.pid)
            rss_idle = _rss_kib(gw_pids)

            loaders = max(1, math.ceil(n / CALLS_PER_LOADER))
            # Where the callers dial: the web server, or AudioSocket's TCP listener (plain TCP, no webhook).
            target = f"http://127.0.0.1:{port}"
            if provider == "audiosocket":
                target = f"tcp://127.0.0.1:{env['GATEWAY_AUDIOSOCKET_PORT']}"
            ramp = max(1.0, n / arrivals_per_s)
            start_at = time.monotonic() + 2.0 + 0.3 * loaders
            steady_from = start_at + ramp + 3.0  # every call placed and greeted
            until = steady_from + seconds
            outs = []
            loader_procs = []
            for i in range(loaders):
                first, last = n * i // loaders, n * (i + 1) // loaders
                out = tmp / f"loader{i}.pickle"
                outs.append(out)
                cmd = [py, me, "--role", "loader", "--numbers", f"{first}:{last}", "--gateway"]
                cmd += [target, "--start-at", repr(start_at), "--ramp", repr(ramp)]
                cmd += ["--until", repr(until), "--out", str(out)]
                cmd += ["--echo-url", ports["echo_url"], "--provider", provider]
                if provider_api:
                    cmd += ["--provider-api", provider_api]
                loader_env = {**os.environ, CALLER_SECRET_ENV: caller_secret}
                p = subprocess.Popen(cmd, env=loader_env, preexec_fn=_pinned(load_cpus))
                procs.append(p)
                loader_procs.append(p)

            time.sleep(max(0.0, steady_from - time.monotonic()))
            gw_pids = _tree(gateway.pid)
            peer_pids = [emulator.pid] + [p.pid for p in loader_procs]
            split0, peer0, t0 = _cpu_split(gw_pids), [_cpu_s([p]) for p in peer_pids], time.monotonic()
            msgs0 = _emulator_count(emulator)
            if profile:
                # py-spy samples the gateway from outside (pip install py-spy); folded stacks for flame
                # graphs. On the peers' CPUs and without pausing the gateway, so it costs the gateway nothing.
                spy = ["taskset", "-c", ",".join(map(str, load_cpus)), str(Path(py).parent / "py-spy")]
                spy += ["record", "--nonblocking", "--pid", str(gw_pids[-1]), "--format"]
                spy += ["raw", "--duration", str(int(seconds - 1)), "--rate", "200", "--output", profile]
                procs.append(subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(max(0.0, until - 0.5 - time.monotonic()))
            split1, peer1, t1 = _cpu_split(gw_pids), [_cpu_s([p]) for p in peer_pids], time.monotonic()
            msgs1 = _emulator_count(emulator)
            rss_loaded = _rss_kib(gw_pids)
            for p in loader_procs:
                p.wait(timeout=120)
            emulator.stdin.write(b"dump\n")
            emulator.stdin.flush()
            sessions = json.loads(emulator.stdout.readline())["sessions"]
            emulator.stdin.write(b"quit\n")
            emulator.stdin.flush()
            results = [pickle.loads(o.read_bytes()) for o in outs]
            if keep:
                print((log_path.read_text(errors="replace"))[-4000:], file=sys.stderr)
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in reversed(procs):
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()

    calls = [c for r in results for c in r["calls"]]
    if os.environ.get("LOAD_DUMP"):  # raw data for debugging the analysis
        Path(os.environ["LOAD_DUMP"]).write_bytes(pickle.dumps({"calls": calls, "sessions": sessions}))
    lag: array.array[float] = array.array("d")
    for r in results:
        lag.extend(r["lag"])
    rtt = percentile([r["rtt"] for r in results], 50)
    a = analyse(calls, sessions, window=(steady_from, until))
    window = t1 - t0
    user_pct = 100 * (split1[0] - split0[0]) / window
    sys_pct = 100 * (split1[1] - split0[1]) / window
    cpu_pct = user_pct + sys_pct
    up_raw, down_raw = a.uplink_s, a.downlink_s
    up = [v - rtt for v in up_raw]
    down = [v - rtt for v in down_raw]
    lag_list = list(lag)
    return {
        "provider": provider,
        "calls": n,
        "seconds": seconds,
        "workers": workers,
        "loop": loop,
        "live_url": ports["base_url"].split(":", 1)[0] + "://",
        "cpu_per_call_pct": round(cpu_pct / n, 4),
        "gateway_cpu_pct": round(cpu_pct, 1),
        "gateway_user_pct": round(user_pct, 1),
        "gateway_sys_pct": round(sys_pct, 1),
        "rss_per_call_kib": round((rss_loaded - rss_idle) / n, 1),
        "rss_idle_kib": rss_idle,
        "rss_loaded_kib": rss_loaded,
        "uplink_ms_p50": _ms(percentile(up, 50)),
        "uplink_ms_p99": _ms(percentile(up, 99)),
        "uplink_ms_max": _ms(max(up, default=math.nan)),
        "downlink_ms_p50": _ms(percentile(down, 50)),
        "downlink_ms_p99": _ms(percentile(down, 99)),
        "downlink_ms_max": _ms(max(down, default=math.nan)),
        "uplink_raw_ms_p50": _ms(percentile(up_raw, 50)),
        "downlink_raw_ms_p50": _ms(percentile(down_raw, 50)),
        "transport_rtt_ms": _ms(rtt),
        "frames_lost": a.frames_lost_up + a.frames_lost_down,
        "frames_lost_uplink": a.frames_lost_up,
        "frames_lost_downlink": a.frames_lost_down,
        "frames_late": a.frames_late,
        "greeting_ms_p50": _ms(percentile(a.greeting_s, 50)),
        "greeting_ms_p99": _ms(percentile(a.greeting_s, 99)),
        "calls_failed": len(a.failed),
        "failures": a.failed[:5],
        "calls_refused": a.refused,
        "calls_accepted": n - a.refused - len(a.failed),
        "overload_protection": protected,
        "uplink_samples": len(up),
        "downlink_samples": len(down),
        "probes_sent": a.probes_sent,
        "turns": a.turns,
        "barge_ins": a.barge_ins,
        "bot_talk_fraction": round(a.frames_received / a.frames_sent, 2) if a.frames_sent else None,
        "loadgen_lag_ms_p99": _ms(percentile(lag_list, 99)),
        "loadgen_cpu_pct": round(
            100 * sum(b - a_ for a_, b in zip(peer0[1:], peer1[1:], strict=True)) / window, 1
        ),
        "emulator_cpu_pct": round(100 * (peer1[0] - peer0[0]) / window, 1),
        # Below calls × 50 when the gateway coalesced a backlog (several frames per message).
        "emulator_msgs_in_per_s": round((msgs1 - msgs0) / window),
        "gateway_cpus": sorted(gw_cpus) if gw_cpus is not None else None,
        "load_cpus": sorted(load_cpus) if load_cpus is not None else None,
        "load_loop": ports.get("loop"),
        "loaders": loaders,
        "machine": machine(),
        "calibration_us_per_frame": calibrate(gw_cpus),
    }


def _attempts(n: int, args: argparse.Namespace, opts: dict[str, Any]) -> dict[str, Any]:
    """One run at ``n`` calls, retried (up to 3 times) while the load generator was starved."""
    for _attempt in range(3):
        result = run_once(n, args.seconds, **opts)
        ok = held(result, args.limit_ms)
        # A starved load generator (a shared, busy machine) says nothing about the gateway: retry.
        starved = (result["loadgen_lag_ms_p99"] or 0.0) > LOADGEN_LAG_LIMIT_MS
        if ok or not starved:
            break
        print("retry (load generator starved) " + _short(result), file=sys.stderr, flush=True)
    result["loadgen_starved"] = starved
    result["held"] = ok
    return result


def _worse_p99(r: dict[str, Any]) -> float:
    return max(r["uplink_ms_p99"] or math.inf, r["downlink_ms_p99"] or math.inf)


def held(r: dict[str, Any], limit_ms: float) -> bool:
    """The target: no call failed, nothing lost or late, p99 added latency within ``limit_ms`` both ways."""
    return (
        r["calls_failed"] == 0
        and r["frames_lost"] == 0
        and r["frames_late"] == 0
        and r["uplink_ms_p99"] is not None
        and r["uplink_ms_p99"] <= limit_ms
        and r["downlink_ms_p99"] is not None
        and r["downlink_ms_p99"] <= limit_ms
    )


def _short(r: dict[str, Any]) -> str:
    keys = (
        "provider",
        "calls",
        "cpu_per_call_pct",
        "gateway_cpu_pct",
        "rss_per_call_kib",
        "uplink_ms_p50",
        "uplink_ms_p99",
        "downlink_ms_p50",
        "downlink_ms_p99",
        "frames_lost",
        "frames_late",
        "calls_failed",
        "loadgen_lag_ms_p99",
        "loadgen_cpu_pct",
        "emulator_cpu_pct",
    )
    return " ".join(f"{k}={r[k]}" for k in keys)


#: What --compare-tls sets side by side: (key, unit, how a pair compares: "ratio" wss/ws or "diff" wss-ws).
COMPARED = (
    ("cpu_per_call_pct", "% core", "ratio"),
    ("gateway_cpu_pct", "% core", "ratio"),
    ("gateway_sys_pct", "% core", "ratio"),
    ("rss_per_call_kib", "KiB", "ratio"),
    ("uplink_ms_p50", "ms", "diff"),
    ("uplink_ms_p99", "ms", "diff"),
    ("downlink_ms_p50", "ms", "diff"),
    ("downlink_ms_p99", "ms", "diff"),
    ("greeting_ms_p50", "ms", "diff"),
    ("emulator_cpu_pct", "% core", "ratio"),
)


def compare_overload(args: argparse.Namespace, opts: dict[str, Any]) -> dict[str, Any]:
    """--overload: ``--calls`` (meant as about twice what one process holds) with the gateway's overload
    protection off and on, alternating over ``--repeat`` rounds. Off, every call is taken and all degrade
    together; on, the calls past the threshold are refused at the webhook and the accepted ones should
    keep the 20 ms p99 target. Figures: median over rounds (counts: the median round's)."""
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for i in range(args.repeat):
        for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
            result = run_once(
                args.calls, args.seconds, **opts, protected=mode == "on", arrivals_per_s=args.arrivals or 20.0
            )
            print(f"{mode:3} " + _short(result), file=sys.stderr, flush=True)
            runs[mode].append(result)
    keys = (
        "calls_accepted", "calls_refused", "calls_failed", "uplink_ms_p99", "downlink_ms_p99",
        "frames_late", "frames_lost", "gateway_cpu_pct", "greeting_ms_p99", "loadgen_lag_ms_p99",
    )  # fmt: skip
    summary: dict[str, Any] = {
        "calls": args.calls,
        "seconds": args.seconds,
        "rounds": args.repeat,
        "arrivals_per_s": args.arrivals or 20.0,
    }
    for mode, results in runs.items():
        results.sort(key=_worse_p99)
        median = results[len(results) // 2]
        summary[mode] = {k: median[k] for k in keys}
    summary["runs"] = runs
    return summary


def _print_overload(summary: dict[str, Any]) -> None:
    print(
        f"{summary['calls']} calls placed at {summary['arrivals_per_s']:g} a second, {summary['seconds']:g} s "
        f"steady state, {summary['rounds']} round(s) each, alternating; median round"
    )
    print(f"{'overload protection':<22}{'off':>12}{'on':>12}")
    rows = (
        ("calls accepted", "calls_accepted"), ("calls refused", "calls_refused"),
        ("calls failed", "calls_failed"), ("uplink p99 ms", "uplink_ms_p99"),
        ("downlink p99 ms", "downlink_ms_p99"), ("frames late", "frames_late"),
        ("frames lost", "frames_lost"), ("gateway CPU %", "gateway_cpu_pct"),
        ("greeting p99 ms", "greeting_ms_p99"), ("loadgen lag p99 ms", "loadgen_lag_ms_p99"),
    )  # fmt: skip
    for label, key in rows:
        print(f"{label:<22}{summary['off'][key]!s:>12}{summary['on'][key]!s:>12}")


def compare_pairs(
    args: argparse.Namespace,
    opts: dict[str, Any],
    base: tuple[str, dict[str, Any]],
    other: tuple[str, dict[str, Any]],
) -> dict[str, Any]:
    """``--repeat`` pairs of runs at ``--calls``: ``base`` and ``other`` (a name and the run's options),
    back to back in alternating order (base, other, then other, base, ...), so the machine's drift lands
    on both sides alike. Each pair gives a ratio other/base (CPU, memory) or a difference other-base
    (latency); the medians of those are the figures to quote, more than the medians of either side."""
    (a_name, a_opts), (b_name, b_opts) = base, other
    pairs: list[dict[str, dict[str, Any]]] = []
    for i in range(args.repeat):
        pair: dict[str, dict[str, Any]] = {}
        for name, side in (
            ((a_name, a_opts), (b_name, b_opts)) if i % 2 == 0 else ((b_name, b_opts), (a_name, a_opts))
        ):
            result = run_once(args.calls, args.seconds, **{**opts, **side})
            pair[name] = result
            print(f"pair {i + 1} {name:7} " + _short(result), file=sys.stderr, flush=True)
        pairs.append(pair)
    table: dict[str, dict[str, Any]] = {}
    for key, unit, how in COMPARED:
        a_values = [p[a_name][key] for p in pairs if p[a_name][key] is not None]
        b_values = [p[b_name][key] for p in pairs if p[b_name][key] is not None]
        both = [(p[a_name][key], p[b_name][key]) for p in pairs]
        both = [(a, b) for a, b in both if a is not None and b is not None and (how == "diff" or a > 0)]
        per_pair = [b / a if how == "ratio" else b - a for a, b in both]
        table[key] = {
            "unit": unit,
            f"{a_name}_median": round(statistics.median(a_values), 4) if a_values else None,
            f"{b_name}_median": round(statistics.median(b_values), 4) if b_values else None,
            how: round(statistics.median(per_pair), 3) if per_pair else None,
            f"{how}_per_pair": [round(v, 3) for v in per_pair],
        }
    names = (a_name, b_name)
    return {
        "calls": args.calls,
        "seconds": args.seconds,
        "pairs": len(pairs),
        "sides": list(names),
        "compared": table,
        "calls_failed": {m: sum(p[m]["calls_failed"] for p in pairs) for m in names},
        "frames_lost": {m: sum(p[m]["frames_lost"] for p in pairs) for m in names},
        "loadgen_lag_ms_p99_max": max(p[m]["loadgen_lag_ms_p99"] or 0.0 for p in pairs for m in p),
        "calibration_us_per_frame": [p[m]["calibration_us_per_frame"] for p in pairs for m in names],
        "machine": machine(),
        "runs": pairs,
    }


def compare_tls(args: argparse.Namespace, opts: dict[str, Any]) -> dict[str, Any]:
    """--compare-tls: what TLS to the Live server costs, ws:// against wss:// (verified)."""
    return compare_pairs(args, opts, ("ws", {"tls": False}), ("wss", {"tls": True}))


def floor_server(features: Sequence[str] = ()) -> Callable[[int, Path], list[str]]:
    """The I/O floor (bench/floor.py) as the voice server: the gateway's sockets and messages, no more;
    with ``features``, those of the gateway's components put back (bench/floor.py's ladder)."""

    def command(port: int, tmp: Path) -> list[str]:
        floor = [sys.executable, str(Path(__file__).resolve().parent / "floor.py"), "--port", str(port)]
        return floor + (["--with", ",".join(features)] if features else [])

    return command


def compare_floor(args: argparse.Namespace, opts: dict[str, Any]) -> dict[str, Any]:
    """--compare-floor: the gateway against the I/O floor of the same harness (bench/floor.py)."""
    name = "floor+" + "+".join(args.floor_with) if args.floor_with else "floor"
    return compare_pairs(args, opts, (name, {"server": floor_server(args.floor_with)}), ("gateway", {}))


#: The --ladder table's columns: (key, heading, how runs combine: "median" or "sum").
LADDER_COLUMNS = (
    ("cpu_per_call_pct", "CPU/call %", "median"),
    ("rss_per_call_kib", "RSS/call KiB", "median"),
    ("uplink_ms_p99", "up p99 ms", "median"),
    ("downlink_ms_p99", "down p99 ms", "median"),
    ("frames_lost", "lost", "sum"),
    ("calls_failed", "failed", "sum"),
)


def _rounds(
    args: argparse.Namespace, opts: dict[str, Any], sides: Sequence[tuple[str, dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """``--repeat`` rounds of one run per side at ``--calls``, the order reversed every other round (as
    ``--compare-tls`` alternates), so the machine's drift does not favour whoever runs first."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in sides}
    for i in range(args.repeat):
        for name, side in sides if i % 2 == 0 else sides[::-1]:
            result = run_once(args.calls, args.seconds, **{**opts, **side})
            runs[name].append(result)
            print(f"round {i + 1} {name:8} " + _short(result), file=sys.stderr, flush=True)
    return runs


def _combine(results: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    """One table row from a side's runs: per column the median over runs, or the sum ("sum")."""
    row: dict[str, Any] = {}
    for key, _, how in columns:
        values = [r[key] for r in results if r[key] is not None]
        if how == "sum":
            row[key] = sum(values)
        else:
            row[key] = round(statistics.median(values), 4) if values else None
    return row


def ladder(args: argparse.Namespace, opts: dict[str, Any]) -> dict[str, Any]:
    """--ladder: the floor, the floor with the gateway's components put back one at a time (bench/floor.py,
    ``--with``), and the gateway, ``--repeat`` rounds in alternating order. Per rung: the median CPU and
    memory per call, and the median over rounds of its CPU as a ratio to the same round's bare floor
    (drift cancels) and of the step up from the rung below."""
    from floor import FEATURES  # bench/floor.py: the steps, in order

    rungs: list[tuple[str, dict[str, Any]]] = [("floor", {"server": floor_server()})]
    for i in range(len(FEATURES)):
        rungs.append(("+" + FEATURES[i], {"server": floor_server(FEATURES[: i + 1])}))
    rungs.append(("gateway", {}))
    runs = _rounds(args, opts, rungs)
    table: dict[str, dict[str, Any]] = {}
    below: str | None = None
    for name, _ in rungs:
        row = _combine(runs[name], LADDER_COLUMNS)
        floor_cpu = [r["cpu_per_call_pct"] for r in runs["floor"]]
        cpu = [r["cpu_per_call_pct"] for r in runs[name]]
        row["vs_floor"] = round(statistics.median(c / f for c, f in zip(cpu, floor_cpu, strict=True)), 3)
        if below is not None:
            under = [r["cpu_per_call_pct"] for r in runs[below]]
            row["step_pct"] = round(statistics.median(c - u for c, u in zip(cpu, under, strict=True)), 4)
        table[name] = row
        below = name
    return {
        "calls": args.calls,
        "seconds": args.seconds,
        "repeat": args.repeat,
        "rungs": table,
        "calibration_us_per_frame": [r["calibration_us_per_frame"] for rs in runs.values() for r in rs],
        "machine": machine(),
        "runs": runs,
    }


def _print_ladder(summary: dict[str, Any]) -> None:
    print(
        f"the floor, the gateway's components put back one at a time, the gateway: {summary['calls']} calls, "
        f"{summary['seconds']:g} s steady state, {summary['repeat']} round(s) in alternating order; medians "
        "over rounds (lost, failed: totals); x floor and step: per round, against that round's runs"
    )
    headings = "".join(f"{heading:>14}" for _, heading, _ in LADDER_COLUMNS)
    print(f"  {'rung':10}{headings}{'x floor':>10}{'step %':>10}")
    for name, row in summary["rungs"].items():
        cells = "".join(f"{'-' if row[k] is None else f'{row[k]:.4g}':>14}" for k, _, _ in LADDER_COLUMNS)
        step = f"{row['step_pct']:+.4f}" if "step_pct" in row else ""
        print(f"  {name:10}{cells}{row['vs_floor']:>9.3f}x{step:>10}")
    print(f"  calibration µs/frame {summary['calibration_us_per_frame']}")


def _print_comparison(summary: dict[str, Any], title: str) -> None:
    a, b = summary["sides"]
    print(
        f"{title}, {summary['calls']} calls, {summary['seconds']:g} s steady state, {summary['pairs']} "
        f"alternating pairs; per-pair ratio {b}/{a} or difference {b}-{a}, median"
    )
    print(f"  {'':20} {'unit':>7} {a:>10} {b:>10} {b + ' vs ' + a:>16}   per pair")
    for key, row in summary["compared"].items():
        ratio = row.get("ratio")
        versus = f"{ratio:.3f}x" if ratio is not None else ""
        if "diff" in row and row["diff"] is not None:
            versus = f"{row['diff']:+.2f}"
        per_pair = row.get("ratio_per_pair", row.get("diff_per_pair", []))

        def cell(v: float | None) -> str:
            return "-" if v is None else f"{v:.4g}"

        print(
            f"  {key:20} {row['unit']:>7} {cell(row[a + '_median']):>10} {cell(row[b + '_median']):>10} "
            f"{versus:>16}   {per_pair}"
        )
    print(
        f"  calls failed {summary['calls_failed']}, frames lost {summary['frames_lost']}, "
        f"load generator lag p99 max {summary['loadgen_lag_ms_p99_max']} ms, "
        f"calibration µs/frame {summary['calibration_us_per_frame']}"
    )


#: The --compare-providers table: (key, heading, how runs combine: "median" or "sum").
PROVIDER_COLUMNS = (
    ("cpu_per_call_pct", "CPU/call %", "median"),
    ("gateway_cpu_pct", "gateway %", "median"),
    ("uplink_ms_p50", "up p50 ms", "median"),
    ("uplink_ms_p99", "up p99 ms", "median"),
    ("downlink_ms_p50", "down p50 ms", "median"),
    ("downlink_ms_p99", "down p99 ms", "median"),
    ("frames_late", "late", "sum"),
    ("frames_lost", "lost", "sum"),
    ("calls_failed", "failed", "sum"),
    ("loadgen_lag_ms_p99", "loader lag p99", "median"),
    ("loadgen_cpu_pct", "loader %", "median"),
)


def compare_providers(args: argparse.Namespace, opts: dict[str, Any]) -> dict[str, Any]:
    """``--repeat`` rounds of one run per provider at ``--calls`` (:func:`_rounds`). Per provider: the median over its runs of CPU and latency, the sum of frames late or lost and calls
    failed (a failure in any run shows)."""
    runs = _rounds(args, opts, [(p, {"provider": p}) for p in args.providers])
    table: dict[str, dict[str, Any]] = {}
    for provider, results in runs.items():
        row = _combine(results, PROVIDER_COLUMNS)
        row["failures"] = [f for r in results for f in r["failures"]][:3]
        table[provider] = row
    return {
        "calls": args.calls,
        "seconds": args.seconds,
        "repeat": args.repeat,
        "providers": table,
        "calibration_us_per_frame": [r["calibration_us_per_frame"] for rs in runs.values() for r in rs],
        "machine": machine(),
        "runs": runs,
    }


def _print_providers(summary: dict[str, Any]) -> None:
    print(
        f"providers, {summary['calls']} calls, {summary['seconds']:g} s steady state, {summary['repeat']} "
        "round(s) in alternating order; CPU and latency: median over rounds; late, lost, failed: total"
    )
    print(f"  {'provider':19}" + "".join(f"{heading:>15}" for _, heading, _ in PROVIDER_COLUMNS))
    for provider, row in summary["providers"].items():
        cells = "".join(
            f"{'-' if row[key] is None else f'{row[key]:.4g}':>15}" for key, _, _ in PROVIDER_COLUMNS
        )
        print(f"  {provider:19}{cells}")
        for failure in row["failures"]:
            print(f"      {failure}")
    print(f"  calibration µs/frame {summary['calibration_us_per_frame']}")


def _report(
    args: argparse.Namespace, summary: dict[str, Any], table: Callable[[dict[str, Any]], None]
) -> int:
    """Print a comparison: one JSON object with --json, else its table."""
    if args.json:
        print(json.dumps(summary))
    else:
        table(summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=50, help="concurrent calls (default 50)")
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="steady-state seconds measured (default 20)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--find-max", action="store_true", help="raise the calls until the target breaks")
    parser.add_argument(
        "--arrivals",
        type=float,
        help="calls placed per second during the ramp-up (default 100; --overload: 20, a busy contact "
        "centre's burst, rather than a whole load at once)",
    )
    parser.add_argument(
        "--overload",
        action="store_true",
        help="--calls (about twice the held capacity) with overload protection off and on, alternating "
        "--repeat rounds: calls accepted and refused, and the accepted calls' p99 and late frames",
    )
    parser.add_argument("--limit-ms", type=float, default=20.0, help="p99 added latency allowed (--find-max)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per --find-max step; most must hold (default 1)"
    )
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes (default 1)")
    parser.add_argument(
        "--gateway-cpus",
        metavar="LIST",
        help="CPUs the gateway and its workers run on, e.g. 0 or 0-1 (default: one per worker from CPU 0, "
        "leaving at least one CPU); the emulator and load generators get the others; 'all': no pinning",
    )
    parser.add_argument(
        "--loop", choices=("default", "asyncio", "uvloop"), default="default", help="gateway event loop"
    )
    parser.add_argument("--log-level", default="INFO", help="the gateway's GATEWAY_LOG_LEVEL (default INFO)")
    parser.add_argument("--show-log", action="store_true", help="print the tail of the gateway's log")
    parser.add_argument(
        "--profile", metavar="FILE", help="py-spy the gateway in steady state (folded stacks)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra gateway environment (repeatable)",
    )
    parser.add_argument(
        "--plain-ws",
        action="store_true",
        help="reach the Live server over plain ws:// instead of wss:// (production is wss:// to Google): "
        "only to compare what TLS costs; --compare-tls does that in one session",
    )
    parser.add_argument(
        "--compare-tls",
        action="store_true",
        help="--repeat alternating pairs of runs at --calls, ws:// and wss://: a table of medians and "
        "per-pair ratios (--json: the figures and every run)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="measure the I/O floor (bench/floor.py: the gateway's sockets and messages, nothing else) in "
        "the gateway's place",
    )
    parser.add_argument(
        "--compare-floor",
        action="store_true",
        help="--repeat alternating pairs of runs at --calls, the I/O floor and the gateway: the gateway's "
        "CPU and memory per call as ratios to the floor's, and latency differences",
    )
    parser.add_argument(
        "--floor-with",
        type=lambda v: [f for f in v.split(",") if f],
        default=[],
        metavar="LIST",
        help="with --floor or --compare-floor: the floor with these of the gateway's components put back "
        "(bench/floor.py --with: codec, audio, pacing, live)",
    )
    parser.add_argument(
        "--ladder",
        action="store_true",
        help="the floor, then the floor with the gateway's components put back one at a time (codec, audio, "
        "pacing, live), then the gateway, --repeat rounds alternating: what each costs per call",
    )
    parser.add_argument(
        "--provider",
        choices=PROVIDERS,
        default="twilio",
        help="whose protocol the simulated calls speak (default twilio, the reference)",
    )
    parser.add_argument(
        "--compare-providers",
        action="store_true",
        help="--repeat rounds of one run per provider at --calls, alternating order: one table "
        "(--json: the figures and every run)",
    )
    parser.add_argument(
        "--providers",
        type=lambda v: [p.strip() for p in v.split(",") if p.strip()],
        default=list(PROVIDERS),
        metavar="LIST",
        help=f"the providers --compare-providers runs, comma-separated (default: all, {','.join(PROVIDERS)})",
    )
    parser.add_argument(
        "--role", choices=("bench", "emulator", "loader"), default="bench", help=argparse.SUPPRESS
    )
    parser.add_argument("--pki-dir", help=argparse.SUPPRESS)
    parser.add_argument("--numbers", help=argparse.SUPPRESS)
    parser.add_argument("--gateway", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--ramp", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--until", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--echo-url", help=argparse.SUPPRESS)
    parser.add_argument("--provider-api", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.role == "emulator":
        return emulator_role(args.pki_dir)
    if args.role == "loader":
        return loader_role(args)
    opts = {"workers": args.workers, "loop": args.loop, "log_level": args.log_level, "keep": args.show_log}
    opts["profile"] = args.profile
    opts["extra_env"] = dict(item.split("=", 1) for item in args.env)
    opts["gateway_cpus"] = args.gateway_cpus
    if args.compare_providers:
        if args.find_max or args.compare_tls:
            parser.error("--compare-providers runs every provider at --calls; drop --find-max/--compare-tls")
        unknown = [p for p in args.providers if p not in PROVIDERS]
        if unknown or not args.providers:
            parser.error(f"--providers: one or more of {', '.join(PROVIDERS)}")
        return _report(args, compare_providers(args, {**opts, "tls": not args.plain_ws}), _print_providers)
    opts["provider"] = args.provider
    if args.compare_tls:
        if args.find_max or args.plain_ws or args.compare_floor or args.floor:
            parser.error(
                "--compare-tls runs both ws:// and wss:// at --calls; drop --find-max/--plain-ws/--floor"
            )
        title = "ws:// vs wss:// (verified, test CA)"
        return _report(args, compare_tls(args, opts), lambda summary: _print_comparison(summary, title))
    opts["tls"] = not args.plain_ws
    if args.ladder:
        if args.find_max or args.floor or args.compare_floor or args.provider != "twilio":
            parser.error(
                "--ladder runs its own rungs at --calls (Twilio); drop --find-max/--floor/--compare-floor"
            )
        return _report(args, ladder(args, opts), _print_ladder)
    if args.compare_floor:
        if args.find_max or args.floor or args.provider != "twilio":
            parser.error(
                "--compare-floor runs the floor and the gateway at --calls (Twilio); drop --find-max/--floor"
            )
        title = f"I/O floor (bench/floor.py) vs gateway, {'ws' if args.plain_ws else 'wss'}:// to Live"
        return _report(args, compare_floor(args, opts), lambda summary: _print_comparison(summary, title))
    if args.floor:
        if args.provider != "twilio":
            parser.error("--floor speaks Twilio's protocol only")
        opts["server"] = floor_server(args.floor_with)
    if args.arrivals and not args.overload:
        opts["arrivals_per_s"] = args.arrivals
    if args.overload:
        if args.find_max:
            parser.error("--overload runs --calls with protection off and on; drop --find-max")
        return _report(args, compare_overload(args, opts), _print_overload)
    if not args.find_max:
        result = run_once(args.calls, args.seconds, **opts)
        print(json.dumps(result) if args.json else json.dumps(result, indent=2))
        return 0
    best: dict[str, Any] | None = None
    runs: list[dict[str, Any]] = []

    def step(n: int) -> bool:
        # --repeat K: a step holds when most of its K runs hold (a shared machine's noise decides
        # single runs near the edge); the run kept is the median one by its worse p99.
        nonlocal best
        results = [_attempts(n, args, opts) for _ in range(args.repeat)]
        for result in results:
            print(("held  " if result["held"] else "broke ") + _short(result), file=sys.stderr, flush=True)
        ok = sum(r["held"] for r in results) * 2 > len(results)
        results.sort(key=_worse_p99)
        kept = results[len(results) // 2]
        kept["step_held"] = f"{sum(r['held'] for r in results)}/{len(results)}"
        runs.append(kept)
        if ok:
            best = kept
        return ok

    broke_at = None
    for n in (s for s in STEPS if s >= args.calls or s == STEPS[0]):
        if not step(n):
            broke_at = n
            break
    # Between the last step that held and the first that broke, halve the gap down to ~10 %.
    low = best["calls"] if best else 0
    while broke_at is not None and broke_at - low > max(10, broke_at // 10):
        mid = (low + broke_at) // 2 // 5 * 5
        if step(mid):
            low = mid
        else:
            broke_at = mid
    summary = {
        "max_calls": best["calls"] if best else 0,
        "workers": args.workers,
        "max_calls_per_worker": round(best["calls"] / args.workers, 1) if best else 0,
        "limit_ms": args.limit_ms,
        "at_max": best,
        # The smallest step that broke: where the bisection ended.
        "first_failure": next((r for r in runs if r["calls"] == broke_at), None),
        "machine": machine(),
    }
    print(json.dumps(summary) if args.json else json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
