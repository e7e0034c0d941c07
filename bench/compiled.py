#!/usr/bin/env python3
"""What mypyc-compiled hot paths buy the gateway: pure vs compiled trees under bench/load.py, paired.

Why. The README (Performance) ends on "halving CPU per call again would take a compiled media path".
mypyc compiles mypy-typed modules to C extensions without changing them, and gateway/ is
``mypy --strict`` clean, so this measures what compiling the per-frame, sans-I/O modules (codec,
Live protocol encode/decode, playout, reframer, WebSocket frame headers) saves, before anyone ships
compiled wheels.

How. The script copies ``gateway/``, ``bench/`` and ``pyproject.toml`` of this checkout twice to a
temporary directory (both sides from one snapshot: a checkout someone edits during the run would
otherwise compare two different trees), compiles ``--modules`` in the second copy with mypyc
(``build_ext --inplace``, from a build directory of its own: setuptools would otherwise read this
project's ``pyproject.toml``, whose SPDX ``license`` string older setuptools refuse), checks that every
compiled module imports as a ``.so`` with ``PYTHONPATH`` pointing at the copy, then runs
``bench/load.py --json`` alternately on the pure and the compiled copy, each from its own tree with
``PYTHONPATH`` set to it (the gateway subprocess inherits it, so it imports that tree's modules and
not the editable install's).
It prints one table: per pair CPU per call, uplink/downlink p99 and the compiled/pure ratios, then
medians (``--json``: one object). Note that ``calibration_us_per_frame`` is measured by each tree's
own code, so the compiled tree's is itself a compiled figure, not a machine-speed reference.

    .venv/bin/python bench/compiled.py --repeat 3 --calls 100 --seconds 10 --lock /tmp/bench.lock
    .venv/bin/python bench/compiled.py --build-only --keep          # just compile; prints the trees
    .venv/bin/python bench/compiled.py --extended --lock /tmp/bench.lock     # + resampler, Live session
    .venv/bin/python bench/compiled.py --modules gateway/bridge/playout.py gateway/telephony/twilio.py

``--lock FILE`` takes an exclusive ``flock`` on FILE around each load.py run (a machine shared with
other benchmarks); builds run outside it.

Measured 2026-12-06 (shared 2-vCPU AMD EPYC VM, Python 3.11.7, mypy/mypyc 2.4.1, gcc -O3, uvloop,
orjson), ``bench/load.py --calls 100 --seconds 10 --json`` (Twilio, 16 kHz uplink, wss://), runs
alternating pure / compiled in one session, each under ``flock /tmp/bench.lock`` while another
engineer's benchmarks took turns on the same lock. Module sets: *set 1* is ``DEFAULT_MODULES`` (12
sans-I/O modules); *set 2* adds ``EXTENDED_MODULES`` (``--extended``: the resampler, the Live session
and the Twilio write path); *set 3* is set 2 plus gateway/bridge/call.py, which compiles but fails at
import (mypyc looks the ``BaseException`` annotation of the dataclass ``CallFailure`` up in the module's
globals: KeyError) unless that annotation is written ``builtins.BaseException`` (``import builtins``):
measured with that one-line change, not shipped here. CPU per call, % of a core, median (per-pair
compiled/pure ratios):

=========================  ==========================  =====================  ==================
tree (pairs)               CPU per call pure → comp.   per-pair ratios        median ratio
=========================  ==========================  =====================  ==================
e179e40, set 1 (3)         0.651 → 0.621 %             0.91 0.98 0.98         0.98
e179e40, set 2 (3)         0.651 → 0.609 %             0.78 0.96 0.95         0.95
8780ec4, set 1 (3)¹        0.532 → 0.513 %             1.02 1.00 0.96         1.00
8780ec4, set 1 (5)²        0.502 → 0.475 %             1.01 0.89 1.01 0.89    0.93
                                                       0.93
8780ec4, set 3 (6)²        0.504 → 0.453 %             0.95 0.96 0.86 0.89    0.88
                                                       0.83 0.79
42480c0, set 2 (3)³        0.917 → 0.953 %             0.98 1.04 0.98         0.98
=========================  ==========================  =====================  ==================

¹ This script, ``--repeat 3 --calls 100 --seconds 10 --lock /tmp/bench.lock``. ² pure, set 1, set 3
in that fixed order six times; the first set 1 run overlapped a build and is left out. Set 3 always
ran last and its system time (which compiling cannot change) was also lower in every pair (×0.86),
so part of its ×0.88 is the order, not the compiler; its user time: ×0.89. ³ 2026-12-07, after the
resampler's inner loop moved to C (``gateway/audio/_polyphase.c``), ``--extended --repeat 3 --calls 100
--seconds 12 --lock /tmp/bench.lock`` on a slow day (19 modules compiled in 85 s): user time ×0.98 too;
what mypyc could still win went with the NumPy calls. Nothing was lost, late or
failed in those runs; p99 latencies stayed within the day's noise (8780ec4 medians: uplink 1.23 /
1.21 / 1.04 ms, downlink 3.35 / 2.67 / 1.93 ms for pure / set 1 / set 3); resident memory per call
186 / 186 / 181 KiB. ``calibration_us_per_frame`` (each tree's own codec, resampler and Live
encoder): 12.3 / 11.5 / 10.7 µs.

Micro, ``bench/twilio_codec.py`` (best of 5, three alternating pairs): ``receive_text`` of a 160-byte
media message 2.70-2.75 → 2.10-2.15 µs (×0.78), ``encode(PlayAudio)`` 0.44-0.45 → 0.34-0.35 µs (×0.77).
``bench/audio.py`` (three alternating triples): set 1 changes nothing (the resampler is not in it and
G.711 is audioop either way: Uplink 7.6-8.2 → 7.8-7.9, Downlink 10.2-10.4 → 10.1-10.3 µs per 20 ms
frame); set 2, with the resampler compiled: Uplink 6.8-7.1, Downlink 9.1-9.5 µs (×0.9).

Behaviour changes found by the unit tests on the compiled trees (tests/audio, bridge, telephony,
gemini, server, resilience: one failure with set 1, two with sets 2 and 3): compiled code checks the
declared type where an ``Any`` is assigned, so ``TwilioCodec`` answers a ``stop`` whose ``callSid`` is
``null`` with a ``TypeError`` instead of its 1007 ``TelephonyProtocolError`` (twilio.py infers
``call_sid: str`` from ``self.call_sid or ""``); and in compiled gateway/gemini/session.py
``raise LiveConnectError(...) from exc`` leaves ``__cause__`` empty
(tests/gemini/test_session_edges.py::test_refused_connection_is_a_retryable_connect_error).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: The per-frame, sans-I/O modules (typed, no numpy on their own path) that compile and pass their tests
#: but one (module docstring). signalwire.py is here because it subclasses TwilioCodec: an interpreted
#: class cannot inherit from a compiled one.
DEFAULT_MODULES = (
    "gateway/bridge/playout.py",
    "gateway/audio/framing.py",
    "gateway/audio/transcode.py",
    "gateway/audio/g711.py",
    "gateway/audio/formats.py",
    # The JSON codecs share a base (jsoncodec.py), and an interpreted class cannot inherit from a
    # compiled one: all of them, or none.
    "gateway/telephony/jsoncodec.py",
    "gateway/telephony/twilio.py",
    "gateway/telephony/signalwire.py",
    "gateway/telephony/plivo.py",
    "gateway/telephony/telnyx.py",
    "gateway/telephony/exotel.py",
    "gateway/telephony/jsonmsg.py",
    "gateway/telephony/events.py",
    "gateway/gemini/protocol.py",
    "gateway/gemini/messages.py",
    "gateway/wsframes.py",
)

#: ``--extended``: the next modules on the per-frame path; they compile and load, but with them a
#: ``raise ... from exc`` in the Live session loses its ``__cause__`` (module docstring).
EXTENDED_MODULES = (
    "gateway/audio/resample.py",
    "gateway/gemini/session.py",
    "gateway/server/media_out.py",
)

#: Figures compared (compiled/pure ratios per pair). Compiling can only cut the gateway's user time;
#: its system time (sockets) is the same work either way, so it shows the noise of the day.
METRICS = (
    ("cpu_per_call_pct", "CPU/call %"),
    ("gateway_user_pct", "user %"),
    ("gateway_sys_pct", "sys %"),
    ("uplink_ms_p99", "up p99 ms"),
    ("downlink_ms_p99", "down p99 ms"),
)

SETUP = """\
import sys
from setuptools import setup
from mypyc.build import mypycify

root, modules = sys.argv[1], sys.argv[2:]
setup(
    name="gateway-mypyc-bench",
    package_dir={"": root},
    ext_modules=mypycify(["--config-file", root + "/pyproject.toml", *(root + "/" + m for m in modules)]),
    script_args=["build_ext", "--inplace"],
)
"""


def copy_tree(dest: Path) -> None:
    """The parts of this checkout load.py needs: the package, the benches and mypy's configuration."""
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc")
    for name in ("gateway", "bench"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def build(tree: Path, modules: list[str], workdir: Path) -> float:
    """Compile ``modules`` of ``tree`` in place with mypyc; returns the build's seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "setup_mypyc.py").write_text(SETUP)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "setup_mypyc.py", str(tree), *modules],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"mypyc build failed (exit {proc.returncode})")
    return time.monotonic() - t0


def check_compiled(tree: Path, modules: list[str]) -> None:
    """Every compiled module must import as an extension with PYTHONPATH at ``tree`` (as the gateway will)."""
    names = [m.removesuffix(".py").replace("/", ".") for m in modules]
    code = "import importlib, json, sys\nprint(json.dumps({n: importlib.import_module(n).__file__ for n in sys.argv[1:]}))"
    out = subprocess.run(
        [sys.executable, "-c", code, *names],
        cwd=tempfile.gettempdir(),
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    files: dict[str, str] = json.loads(out)
    wrong = {n: f for n, f in files.items() if not (f.startswith(str(tree)) and f.endswith(".so"))}
    if wrong:
        raise SystemExit(f"not imported from the compiled tree: {wrong}")


@contextlib.contextmanager
def locked(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_run(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One ``bench/load.py --json`` run from ``tree``, importing the gateway from ``tree``."""
    cmd = [sys.executable, str(tree / "bench" / "load.py"), "--calls", str(args.calls)]
    cmd += ["--seconds", str(args.seconds), "--json", *args.load_arg]
    with locked(args.lock):
        proc = subprocess.run(
            cmd, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True
        )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"load.py failed in {tree} (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or a == 0 else round(b / a, 3)


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(statistics.median(kept), 4) if kept else None


def summarise(pairs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    rows = []
    for i, pair in enumerate(pairs, 1):
        row: dict[str, Any] = {"pair": i}
        for key, _ in METRICS:
            row[key] = {"pure": pair["pure"].get(key), "compiled": pair["compiled"].get(key)}
            row[key]["ratio"] = _ratio(row[key]["pure"], row[key]["compiled"])
        for side in ("pure", "compiled"):
            row[f"{side}_calibration_us_per_frame"] = pair[side].get("calibration_us_per_frame")
            row[f"{side}_calls_failed"] = pair[side].get("calls_failed")
            row[f"{side}_frames_late"] = pair[side].get("frames_late")
        rows.append(row)
    medians = {
        key: {
            "pure": _median([r[key]["pure"] for r in rows]),
            "compiled": _median([r[key]["compiled"] for r in rows]),
            "ratio": _median([r[key]["ratio"] for r in rows]),
        }
        for key, _ in METRICS
    }
    return {"pairs": rows, "median": medians}


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:g}"


def table(summary: dict[str, Any]) -> str:
    head = ["pair"] + [f"{label} pure → compiled (×)" for _, label in METRICS]
    lines = [" | ".join(head)]
    for row in [*summary["pairs"], {"pair": "median", **summary["median"]}]:
        cells = [str(row["pair"])]
        for key, _ in METRICS:
            m = row[key]
            cells.append(f"{_fmt(m['pure'])} → {_fmt(m['compiled'])} ({_fmt(m['ratio'])})")
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--modules", nargs="+", default=list(DEFAULT_MODULES), help="paths to compile")
    parser.add_argument("--extended", action="store_true", help="also compile EXTENDED_MODULES")
    parser.add_argument("--repeat", type=int, default=3, help="pure/compiled pairs (default 3)")
    parser.add_argument("--calls", type=int, default=100, help="concurrent calls per run (default 100)")
    parser.add_argument("--seconds", type=float, default=10.0, help="steady state per run (default 10)")
    parser.add_argument("--lock", help="flock this file around each load.py run (shared machines)")
    parser.add_argument(
        "--load-arg", action="append", default=[], help="one more argument for load.py (repeatable)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", action="store_true", help="keep both trees (their path is printed)")
    parser.add_argument("--build-only", action="store_true", help="compile and check, run nothing")
    args = parser.parse_args()
    if args.extended:
        args.modules = [*args.modules, *(m for m in EXTENDED_MODULES if m not in args.modules)]

    tmp = Path(tempfile.mkdtemp(prefix="gateway-mypyc-"))
    pure, tree = tmp / "pure", tmp / "compiled"
    try:
        copy_tree(pure)
        shutil.copytree(pure, tree)
        seconds = build(tree, args.modules, tmp / "build")
        check_compiled(tree, args.modules)
        print(f"compiled {len(args.modules)} modules in {seconds:.0f} s: {tree}", file=sys.stderr)
        if args.build_only:
            return 0
        pairs = []
        for i in range(args.repeat):
            pair = {}
            for name, where in (("pure", pure), ("compiled", tree)):
                print(f"pair {i + 1}/{args.repeat}: {name}", file=sys.stderr)
                pair[name] = load_run(where, args)
            pairs.append(pair)
        summary = summarise(pairs)
        summary["modules"] = args.modules
        summary["load_args"] = {"calls": args.calls, "seconds": args.seconds, "extra": args.load_arg}
        print(json.dumps(summary) if args.json else table(summary))
        return 0
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
