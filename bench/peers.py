#!/usr/bin/env python3
"""The gateway and Pipecat side by side: the same callers, the same Live server, one core each.

    python bench/peers.py                      # N = 1, 10, 25, 50, 100, … until each system breaks
    python bench/peers.py --calls 1,25,50 --repeat 3 --seconds 20 --json

Both systems are measured by ``bench/load.py``'s harness (``run_once``): the server under test is
pinned to one CPU; the lean Live server (over ``wss://``, a throw-away CA trusted through
``SSL_CERT_FILE``) and the load generators run on the others; the callers speak in bursts with pauses,
echo marks when their playout clock reaches them, and barge in on every 4th reply. The systems
alternate at every N (gateway first on odd rounds, Pipecat first on even ones).

Pipecat is the canonical Twilio + Gemini Live phone bot (``bench/peers_pipecat_bot.py``: FastAPI,
``TwilioFrameSerializer``, ``FastAPIWebsocketTransport``, ``GeminiLiveLLMService``, uvicorn with
uvloop), installed at a pinned version into its own virtual environment under ``.bench-peers/``
(never a dependency of the gateway; the first run needs PyPI).

A system **holds** N when at most 1 % of its calls failed, its reply latency p99 (the Live server's
first reply audio → the caller hearing it) is at most 2 s, and its CPU stays under 95 % of the core.
Columns: CPU per call (% of one core), RSS per call, reply latency added (median), and audio gaps
heard per call-minute (the caller's playout ran dry mid-reply: milliseconds of silence a person hears).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import load  # noqa: E402 - bench/load.py, beside this file

PIPECAT = "1.14.0"
PIPECAT_PACKAGES = [f"pipecat-ai[google,websocket]=={PIPECAT}", "uvicorn[standard]", "uvloop", "fastapi"]
BOT = Path(__file__).resolve().parent / "peers_pipecat_bot.py"
DEFAULT_STEPS = (1, 10, 25, 50, 100, 150, 200, 300)
FAILED_LIMIT = 0.01
REPLY_P99_LIMIT_MS = 2000.0
CPU_LIMIT_PCT = 95.0


def pipecat_python(where: Path) -> Path:
    """The Pipecat venv's interpreter, created and installed on first use."""
    python = where / "bin" / "python"
    stamp = where / f".installed-{PIPECAT}"
    if not stamp.exists():
        print(f"installing Pipecat {PIPECAT} into {where} (once)", file=sys.stderr, flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(where)
        subprocess.run([python, "-m", "pip", "install", "--quiet", *PIPECAT_PACKAGES], check=True)
        stamp.touch()
    return python


def _pipecat_server(python: Path) -> Any:
    def command(port: int, tmp: Path) -> list[str]:
        return [str(python), str(BOT), "--port", str(port)]

    return command


def _row(r: dict[str, Any]) -> dict[str, Any]:
    """The comparison's figures from one ``run_once`` result."""
    calls = r["calls"]
    minutes = calls * r["seconds"] / 60
    failed = r["calls_failed"] / calls
    reply_p99 = r["downlink_ms_p99"]
    ok = (
        failed <= FAILED_LIMIT
        and reply_p99 is not None
        and not math.isnan(reply_p99)
        and reply_p99 <= REPLY_P99_LIMIT_MS
        and r["gateway_cpu_pct"] < CPU_LIMIT_PCT
    )
    return {
        "calls": calls,
        "held": ok,
        "cpu_per_call_pct": r["cpu_per_call_pct"],
        "server_cpu_pct": r["gateway_cpu_pct"],
        "rss_per_call_kib": r["rss_per_call_kib"],
        "reply_added_ms_p50": r["downlink_ms_p50"],
        "reply_added_ms_p99": reply_p99,
        "gaps_ms_per_call_minute": round(r["frames_late"] * 20 / minutes, 1) if minutes else None,
        "calls_failed": r["calls_failed"],
        "loadgen_lag_ms_p99": r["loadgen_lag_ms_p99"],
    }


def _median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over rounds; held when most rounds held."""
    out: dict[str, Any] = {"calls": rows[0]["calls"], "held": sum(r["held"] for r in rows) * 2 > len(rows)}
    for key in rows[0]:
        if key in out:
            continue
        values = sorted(v for r in rows if isinstance(v := r[key], int | float) and not math.isnan(v))
        out[key] = values[len(values) // 2] if values else None
    return out


def compare(args: argparse.Namespace) -> dict[str, Any]:
    python = pipecat_python(args.pipecat_venv)
    systems = {"gateway": None, "pipecat": _pipecat_server(python)}
    table: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    broke: dict[str, int | None] = dict.fromkeys(systems)
    for n in args.calls:
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
        for i in range(args.repeat):
            order = list(systems) if i % 2 == 0 else list(reversed(systems))
            for name in order:
                if broke[name] is not None:
                    continue
                result = load.run_once(
                    n,
                    args.seconds,
                    workers=1,
                    loop="auto",
                    log_level="WARNING",
                    keep=False,
                    server=systems[name],
                )
                row = _row(result)
                rounds[name].append(row)
                print(f"{name:8} {json.dumps(row)}", file=sys.stderr, flush=True)
        for name, rows in rounds.items():
            if not rows:
                continue
            median = _median(rows)
            table[name].append(median)
            if not median["held"]:
                broke[name] = n
        if all(b is not None for b in broke.values()):
            break
    held = {name: max((r["calls"] for r in rows if r["held"]), default=0) for name, rows in table.items()}
    return {
        "pipecat": PIPECAT,
        "seconds": args.seconds,
        "repeat": args.repeat,
        "machine": load.machine(),
        "table": table,
        "held": held,
        "broke_at": broke,
    }


def _print(summary: dict[str, Any]) -> None:
    print(
        f"gateway vs Pipecat {summary['pipecat']} (TwilioFrameSerializer, FastAPIWebsocketTransport, "
        f"GeminiLiveLLMService, uvicorn+uvloop), one core each, {summary['seconds']:g} s steady state, "
        f"median of {summary['repeat']}"
    )
    head = "| calls | CPU per call, ours / Pipecat | RSS per call | reply latency added (p50) | gaps per call-minute |"
    print(head)
    print("|---:|---|---|---|---|")
    by_n = {r["calls"]: r for r in summary["table"]["gateway"]}
    peer = {r["calls"]: r for r in summary["table"]["pipecat"]}

    def cell(row: dict[str, Any] | None, key: str, unit: str) -> str:
        """The figure, rounded for reading; marked where the system did not hold that N."""
        if row is None:
            return "—"
        value = row[key]
        text = "—" if value is None else f"{value:.3g}{unit}" if abs(value) < 100 else f"{value:.0f}{unit}"
        return text if row["held"] else f"{text} (broke)"

    for n in sorted(set(by_n) | set(peer)):
        ours, theirs = by_n.get(n), peer.get(n)
        print(
            f"| {n} | {cell(ours, 'cpu_per_call_pct', ' %')} / {cell(theirs, 'cpu_per_call_pct', ' %')} "
            f"| {cell(ours, 'rss_per_call_kib', ' KiB')} / {cell(theirs, 'rss_per_call_kib', ' KiB')} "
            f"| {cell(ours, 'reply_added_ms_p50', ' ms')} / {cell(theirs, 'reply_added_ms_p50', ' ms')} "
            f"| {cell(ours, 'gaps_ms_per_call_minute', ' ms')} / "
            f"{cell(theirs, 'gaps_ms_per_call_minute', ' ms')} |"
        )
    held = summary["held"]
    print(f"largest N held (≤1 % failed, reply p99 ≤ 2 s, CPU < 95 %): gateway {held['gateway']}, "
          f"Pipecat {held['pipecat']}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--calls",
        type=lambda v: [int(x) for x in v.split(",") if x.strip()],
        default=list(DEFAULT_STEPS),
        help="concurrent calls, comma-separated (default: %(default)s; stops once both broke)",
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="steady state per run (default 15)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per N, alternating order (default 3)")
    parser.add_argument(
        "--pipecat-venv",
        type=Path,
        default=ROOT / ".bench-peers" / f"pipecat-{PIPECAT}",
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    summary = compare(args)
    if args.json:
        print(json.dumps(summary))
    else:
        _print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
