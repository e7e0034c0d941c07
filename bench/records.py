"""Cost of observability on the media path, and how fast call records reach disk.

Prints: the per-frame cost of the voice-peak check the bridge does on every caller frame, the
per-frame cost of the stereo recorder when a dialplan records, and how many turns per second the
SQLite record writer commits (FULL sync, group commit) with many calls writing at once.

    .venv/bin/python bench/records.py
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import timeit
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gateway.audio.g711 import pcm16_to_ulaw
from gateway.records.observer import CallObserver, peak
from gateway.records.recording import CallRecording
from gateway.records.sqlite import SqliteStore
from gateway.records.writer import RecordWriter

FRAMES = 200_000


def per_frame_us(stmt: str, env: dict[str, object]) -> float:
    timer = timeit.Timer(stmt, globals=env)
    best = min(timer.repeat(repeat=5, number=FRAMES))
    return best / FRAMES * 1e6


async def recorder_cost(frame: bytes) -> float:
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=1) as pool:
        rec = CallRecording(Path(tmp) / "r.wav", pool)
        started = time.perf_counter()
        for _ in range(FRAMES // 4):
            rec.bot(frame)
            rec.caller(frame)
        elapsed = time.perf_counter() - started
        await rec.close()
    return elapsed / (FRAMES // 4) * 1e6


async def writer_rate(calls: int, turns: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "calls.db")
        writer = RecordWriter(store)
        writer.start()
        observers = [CallObserver(call_id=f"CA{i}", dialplan="p", writer=writer) for i in range(calls)]
        for obs in observers:
            obs.opened(stream_id="MZ", from_number="+1", to_number="+2", dialplan_version="v")
        started = time.perf_counter()
        for t in range(turns):
            for obs in observers:
                obs.turn("caller" if t % 2 else "bot", "some words said on the phone " * 3, 0.0, 0.0)
            await asyncio.sleep(0)
        submit_s = time.perf_counter() - started
        await writer.stop()
        total_s = time.perf_counter() - started
        await store.close()
    n = calls * turns
    return n / total_s, submit_s / n * 1e6


def main() -> None:
    t = np.arange(160) / 8000
    speech = (6000 * np.sin(2 * np.pi * 300 * t)).astype("<i2")
    pcm16k = np.repeat(speech, 2).tobytes()  # a 20 ms frame at 16 kHz, as the uplink makes it
    ulaw = pcm16_to_ulaw(speech.tobytes())
    peak_us = per_frame_us("peak(pcm, 2) > 1000", {"peak": peak, "pcm": pcm16k})
    rec_us = asyncio.run(recorder_cost(ulaw))
    rate, submit_us = asyncio.run(writer_rate(calls=200, turns=20))
    print(f"machine: {os.cpu_count()} CPUs")
    print(f"voice-peak check per caller frame (every call):        {peak_us:6.3f} µs")
    print(f"stereo recorder per caller frame (recording plans):    {rec_us:6.3f} µs")
    print(f"record submit per turn (on the event loop):            {submit_us:6.3f} µs")
    print(f"SQLite writer, 200 calls x 20 turns, synchronous=FULL: {rate:8.0f} turns/s committed")


if __name__ == "__main__":
    main()
