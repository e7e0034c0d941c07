"""Starting the gateway: never on the emulator by accident, and a configuration Gemini rejects is caught
at start (``gateway doctor``, and the same check in ``gateway serve``), in one line per check.

The emulator stands in for Google over ``wss://`` with the test CA, trusted through ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import run as gateway_run
from gateway.audio import resample
from gateway.doctor import diagnose
from gateway.emulator import Emulator
from gateway.emulator.pki import TestPKI
from gateway.run import NO_CREDENTIALS
from gateway.server.app import live_endpoint
from gateway.server.limits import FileBudget
from gateway.settings import Settings

from .conftest import DEFAULT_PLAN

pytestmark = pytest.mark.e2e

KEY = "AIza-the-right-key-for-tests"


@pytest.fixture
async def emu(trust_test_ca: TestPKI) -> AsyncIterator[Emulator]:
    async with Emulator(api_key=KEY, ssl_context=trust_test_ca.server_context()) as emulator:
        yield emulator


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _doctor(**env: str) -> tuple[str, list[tuple[str, str, str]]]:
    settings = Settings.from_env(env)
    endpoint = live_endpoint(settings)
    try:
        report = await diagnose(settings, endpoint, timeout_s=3.0)
    finally:
        await endpoint.aclose()
    return report.where, [(f.check, f.status, f.detail) for f in report.findings]


async def test_doctor_all_good(emu: Emulator) -> None:
    where, findings = await _doctor(GEMINI_BASE_URL=emu.base_url, GEMINI_API_KEY=KEY)
    assert where.startswith(f"Gemini Live (Gemini API) at {emu.base_url}/ws/")
    assert KEY not in where
    assert [(c, s) for c, s, _ in findings] == [
        ("reachable", "ok"),
        ("TLS", "ok"),
        ("authenticated", "ok"),
        ("model accepted", "ok"),
    ]
    assert "verified (TLSv1.3)" in findings[1][2]
    assert emu.sessions[0].close_code == 1000  # the probe session was closed cleanly


async def test_doctor_names_a_refused_key(emu: Emulator) -> None:
    _, findings = await _doctor(GEMINI_BASE_URL=emu.base_url, GEMINI_API_KEY="AIza-wrong")
    assert findings[2][:2] == ("authenticated", "FAIL")
    assert "GEMINI_API_KEY refused" in findings[2][2]
    assert "API key not valid" in findings[2][2]
    assert findings[3][1] == "skip"
    assert "AIza-wrong" not in repr(findings)


async def test_doctor_names_an_unknown_model(emu: Emulator) -> None:
    _, findings = await _doctor(
        GEMINI_BASE_URL=emu.base_url, GEMINI_API_KEY=KEY, GEMINI_MODEL="gemini-1.0-pro"
    )
    assert findings[-1][:2] == ("model accepted", "FAIL")
    assert "gemini-1.0-pro" in findings[-1][2]
    assert "1008" in findings[-1][2]


async def test_doctor_says_the_certificate_did_not_verify(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trust store does not hold the server's CA (no SSL_CERT_FILE): TLS fails, and says how to fix it."""
    monkeypatch.delenv("SSL_CERT_FILE")
    _, findings = await _doctor(GEMINI_BASE_URL=emu.base_url, GEMINI_API_KEY=KEY)
    assert findings[0][1] == "ok"
    assert findings[1][:2] == ("TLS", "FAIL")
    assert "did not verify" in findings[1][2]
    assert "SSL_CERT_FILE" in findings[1][2]
    assert not emu.sessions, "no WebSocket was opened over an unverified connection"


async def test_doctor_says_the_host_is_unreachable() -> None:
    port = _closed_port()
    _, findings = await _doctor(GEMINI_BASE_URL=f"wss://127.0.0.1:{port}", GEMINI_API_KEY=KEY)
    assert findings[0][:2] == ("reachable", "FAIL")
    assert f"cannot connect to 127.0.0.1:{port}" in findings[0][2]
    assert [s for _, s, _ in findings[1:]] == ["skip", "skip", "skip"]


# --- the commands, as a user runs them ------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GOOGLE_", "GATEWAY_"))}
    return env | extra


async def _run(*args: str, env: dict[str, str], cwd: Path, within_s: float = 30.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(within_s):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_serve_without_credentials_refuses_in_one_line(tmp_path: Path) -> None:
    code, out, err = await _run("serve", "--port", str(_closed_port()), env=_env(), cwd=tmp_path)
    assert code == 2
    assert err.strip() == f"gateway: {NO_CREDENTIALS}"
    assert "Traceback" not in out + err


async def test_serve_with_a_bad_setting_prints_one_line(tmp_path: Path) -> None:
    code, _, err = await _run("serve", "--emulator", env=_env(GATEWAY_PRECONNECT="perhaps"), cwd=tmp_path)
    assert code == 2
    assert err.strip() == (
        "gateway: GATEWAY_PRECONNECT='perhaps' is not on or off: use 1/0, true/false, yes/no or on/off"
    )


async def test_serve_refuses_to_start_with_a_key_gemini_rejects(emu: Emulator, tmp_path: Path) -> None:
    env = _env(
        GEMINI_BASE_URL=emu.base_url, GEMINI_API_KEY="AIza-wrong", SSL_CERT_FILE=os.environ["SSL_CERT_FILE"]
    )
    port = str(_closed_port())
    code, _, err = await _run(
        "serve", "--port", port, "--dialplans", str(_plans(tmp_path)), env=env, cwd=tmp_path
    )
    assert code == 1
    (line,) = [line for line in err.splitlines() if line.startswith("gateway: ")]
    assert line.startswith("gateway: start-up check failed (authenticated): GEMINI_API_KEY refused")
    assert "AIza-wrong" not in err


async def test_doctor_command_prints_one_line_per_check(emu: Emulator, tmp_path: Path) -> None:
    env = _env(GEMINI_BASE_URL=emu.base_url, GEMINI_API_KEY=KEY, SSL_CERT_FILE=os.environ["SSL_CERT_FILE"])
    code, out, _ = await _run("doctor", "--dialplans", str(_plans(tmp_path)), env=env, cwd=tmp_path)
    assert code == 0, out
    lines = out.splitlines()
    assert len(lines) == 5
    assert [line.split()[0] for line in lines[1:]] == ["ok", "ok", "ok", "ok"]


async def test_serve_with_emulator_says_so(tmp_path: Path) -> None:
    """`make run` without a key runs `gateway serve --emulator`: the banner says calls get the emulator,
    and with no host given it listens on this machine only (so `gateway call` works unsigned)."""
    port = _closed_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--emulator", "--port", str(port),
        "--dialplans", str(_plans(tmp_path)),
        env=_env(GATEWAY_DATA_DIR=str(tmp_path / "data")), cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not any("embedded Gemini Live emulator" in line for line in seen):
                line = (await proc.stdout.readline()).decode()
                assert line, "".join(seen)
                seen.append(line)
    finally:
        proc.terminate()
        await proc.wait()
    assert any("--emulator: calls are answered by the embedded Gemini Live emulator" in s for s in seen)
    assert any(f"listening on 127.0.0.1:{port}" in s for s in seen)
    # The start-up logs come before the banner: the resampler's C loop is warned about only when missing.
    warned = any("the resampler's C extension is not built" in s for s in seen)
    assert warned is not resample.COMPILED, "".join(seen)


def test_a_gateway_without_the_c_resampler_says_so_at_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Built without a compiler, the gateway works (NumPy) but says what that costs and how to fix it."""
    monkeypatch.setattr(resample, "COMPILED", False)
    with caplog.at_level(logging.WARNING, logger="gateway"):
        settings = Settings()
        gateway_run._log_capacity(settings, FileBudget.compute(settings, 65536), 65536)
    assert "the resampler's C extension is not built" in caplog.text
    assert "GATEWAY_BUILD_EXTENSION=yes" in caplog.text


def _plans(tmp_path: Path) -> Path:
    plans = tmp_path / "dialplans"
    plans.mkdir(exist_ok=True)
    (plans / "default.toml").write_text(DEFAULT_PLAN)
    return plans


async def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = await _run(
            "serve", "--emulator", "--host", "127.0.0.1", "--port", str(port),
            "--dialplans", str(_plans(tmp_path)),
            env=_env(GATEWAY_DATA_DIR=str(tmp_path / "data")), cwd=tmp_path,
        )  # fmt: skip
    assert code == 1
    assert f"gateway: cannot listen on 127.0.0.1:{port}: Address already in use" in err.splitlines()
    assert "Traceback" not in out + err


async def test_a_second_gateway_on_the_same_port_refuses_to_start(tmp_path: Path) -> None:
    """Workers share their port with SO_REUSEPORT; a second instance must not silently join them."""
    port = _closed_port()
    args = ["serve", "--emulator", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    args += ["--dialplans", str(_plans(tmp_path)), "--loop", "asyncio"]
    env = _env(GATEWAY_DATA_DIR=str(tmp_path / "data"))
    first = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            while True:  # up once its port answers
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    assert first.returncode is None
                    await asyncio.sleep(0.2)
        code, _, err = await _run(*args, env=env, cwd=tmp_path)
        assert code == 1
        assert f"gateway: another gateway already serves 127.0.0.1:{port}" in err
    finally:
        first.terminate()
        await first.wait()


async def test_the_event_loop_lag_is_a_metric(gateway: Any) -> None:
    await asyncio.sleep(0.6)
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/metrics") as response:
        text = await response.text()
    counts = [line for line in text.splitlines() if line.startswith("gateway_event_loop_lag_seconds_count")]
    assert counts
    assert float(counts[0].split()[-1]) >= 2
