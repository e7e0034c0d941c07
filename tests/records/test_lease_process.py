"""The records lease with real processes: a `gateway serve --emulator` SIGKILLed mid-call has its call
closed by a surviving instance once the lease passes; one stopped with SIGTERM gives its lease up."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import sqlite3
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.caller import CallOptions, CallReport, place_call
from gateway.records.hub import Observability
from gateway.records.sqlite import SqliteStore
from gateway.records.store import ORPHAN_EVENT
from gateway.settings import Settings
from tests.e2e.served import free_port

pytestmark = pytest.mark.e2e

LEASE_S = 1.0


def _rows(db: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(conn.execute(sql, params).fetchall())
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        conn.close()


async def _serve(data: Path) -> tuple[asyncio.subprocess.Process, str, str]:
    """A gateway on the embedded emulator: its process, URL, and instance id once it heartbeats."""
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GOOGLE_", "GATEWAY_", "TWILIO_"))
    }
    env |= {"GATEWAY_DATA_DIR": str(data), "GATEWAY_RECORDS_LEASE_S": str(LEASE_S)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--emulator", "--port", str(port),
        env=env, cwd=Path(__file__).parents[2], stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    async with asyncio.timeout(30):
        while True:
            assert proc.returncode is None, "gateway serve exited at start"
            mine = [str(r[0]) for r in _rows(data / "calls.db", "SELECT instance FROM instances")]
            mine = [i for i in mine if i.split(":")[1:2] == [str(proc.pid)]]
            if mine:
                try:
                    async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as resp:
                        if resp.status == 200:
                            return proc, url, mine[0]
                except aiohttp.ClientError:
                    pass
            await asyncio.sleep(0.05)


async def test_a_sigkilled_gateways_call_is_closed_by_the_lease_and_sigterm_gives_it_up(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    db = data / "calls.db"
    procs: list[asyncio.subprocess.Process] = []
    proc, url, instance = await _serve(data)
    procs.append(proc)
    host, pid, start = instance.split(":")
    assert (host, int(pid)) == (socket.gethostname(), proc.pid)
    assert start
    settings = dataclasses.replace(Settings.from_env({}), data_dir=tmp_path, records_lease_s=LEASE_S)
    survivor = Observability(settings, store=SqliteStore(db))
    await survivor.start()
    call: asyncio.Task[CallReport] | None = None
    try:
        opts = CallOptions(to="+15551230000", gateway=url, play="builtin:hello", max_duration_s=60)
        call = asyncio.create_task(place_call(opts))
        async with asyncio.timeout(20):
            while True:
                if _rows(db, "SELECT call_id FROM calls WHERE instance = ? AND ended_at IS NULL", instance):
                    break
                await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        killed_at = time.time()
        async with asyncio.timeout(LEASE_S + 5):
            while True:
                [(call_id, ended_at, ended_by, reason)] = _rows(
                    db,
                    "SELECT call_id, ended_at, ended_by, end_reason FROM calls WHERE instance = ?",
                    instance,
                )
                if ended_at is not None:
                    break
                await asyncio.sleep(0.05)
        closed_after = time.time() - killed_at
        assert ended_by == "gateway"
        assert isinstance(reason, str)
        assert "killed or crashed" in reason
        assert isinstance(ended_at, float)
        assert killed_at - LEASE_S - 1.0 <= ended_at <= killed_at  # its last heartbeat (renewed every 0.2 s)
        assert closed_after < LEASE_S + 2.0
        print(
            f"\nrecords lease: a SIGKILLed gateway's call closed {closed_after:.2f}s after the kill "
            f"(lease {LEASE_S}s)"
        )
        [(kind, detail)] = _rows(
            db, "SELECT kind, detail FROM call_events WHERE call_id = ? AND kind = ?", call_id, ORPHAN_EVENT
        )
        assert json.loads(str(detail)) == {
            "check": "lease",
            "instance": instance,
            "closed_by": survivor.instance,
        }
        assert kind == ORPHAN_EVENT
        # The dead instance's lease row goes just after its calls are closed (a write of its own).
        async with asyncio.timeout(5):
            while [r[0] for r in _rows(db, "SELECT instance FROM instances")] != [survivor.instance]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await asyncio.wait_for(call, timeout=20)  # the caller noticed the line drop

        # A clean stop (SIGTERM, no calls): the instance's lease row is gone when it exits.
        proc2, _, instance2 = await _serve(data)
        procs.append(proc2)
        proc2.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc2.wait(), timeout=20) == 0
        assert instance2 not in [r[0] for r in _rows(db, "SELECT instance FROM instances")]
    finally:
        if call is not None:
            call.cancel()
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await survivor.stop()
