"""A real `gateway serve` process for the tests that need one: its own event loop (uvloop when
installed, as in production), its signals, its exit code, its SQLite records."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from gateway.emulator import Emulator
from tests.e2e.conftest import DEFAULT_PLAN

KEY = "AIza-served-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A `gateway serve` subprocess on loopback, its output collected."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, data: Path) -> None:
        self.proc, self.port, self.data = proc, port, data
        self.url = f"http://127.0.0.1:{port}"
        self.output: list[str] = []
        assert proc.stdout is not None
        self._reader = asyncio.create_task(self._read(proc.stdout))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.output.append(line.decode(errors="replace"))

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.get(self.url + path) as resp:
            return resp.status, await resp.json(content_type=None)

    async def wait_active(self, count: int, within_s: float = 10.0) -> None:
        async with asyncio.timeout(within_s):
            while True:
                _, doc = await self.get("/admin/calls")
                if len(doc["active"]) >= count:
                    return
                await asyncio.sleep(0.05)

    async def exit_code(self, within_s: float) -> int:
        async with asyncio.timeout(within_s):
            code = await self.proc.wait()
        await self._reader
        return code

    def turns(self, call_id: str) -> list[tuple[str, str]]:
        with sqlite3.connect(self.data / "calls.db") as db:
            rows = db.execute("SELECT role, text FROM turns WHERE call_id = ? ORDER BY seq", (call_id,))
            return [(str(role), str(text)) for role, text in rows]

    def records(self) -> list[dict[str, Any]]:
        with sqlite3.connect(self.data / "calls.db") as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM calls ORDER BY started_at")]


async def serve(
    emulator: Emulator, tmp_path: Path, *, dialplans: Mapping[str, str] | None = None, **env_vars: str
) -> Served:
    """``gateway serve`` on a free loopback port, reaching ``emulator`` over verified wss://; ready.
    ``dialplans``: more plans (name → TOML) beside the default one."""
    plans = tmp_path / "dialplans"
    plans.mkdir()
    (plans / "default.toml").write_text(DEFAULT_PLAN)
    for name, text in (dialplans or {}).items():
        (plans / f"{name}.toml").write_text(text)
    port, data = free_port(), tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GOOGLE_", "GATEWAY_"))}
    env |= {
        "GEMINI_BASE_URL": emulator.base_url,  # wss://, verified against the test CA (SSL_CERT_FILE)
        "GEMINI_API_KEY": KEY,
        "GATEWAY_DATA_DIR": str(data),
        "GATEWAY_LOG_FORMAT": "json",
        **env_vars,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--dialplans", str(plans), "--no-check",
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    served = Served(proc, port, data)
    async with asyncio.timeout(30):
        while True:
            try:
                if (await served.get("/readyz"))[0] == 200:
                    return served
            except aiohttp.ClientError:
                pass
            assert proc.returncode is None, "".join(served.output)
            await asyncio.sleep(0.1)


async def stop(served: Served) -> None:
    if served.proc.returncode is None:
        served.proc.kill()
        await served.proc.wait()
