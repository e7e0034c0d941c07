"""Observability end to end: call records, /metrics, the admin API, /readyz and the live web page."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import signal
import sqlite3
import sys
import time
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import gateway
from gateway.audio import resample
from gateway.caller import CallOptions, CallReport, place_call
from gateway.emulator import Emulator
from gateway.records.sqlite import SqliteStore
from tests.e2e.served import free_port
from tests.needs import unavailable

from .conftest import DEFAULT_PLAN, GatewayFactory

pytestmark = pytest.mark.e2e

#: The `gateway` console script of this environment.
GATEWAY_CLI = str(Path(sys.executable).parent / "gateway")


async def _json(url: str, *, token: str = "", method: str = "GET", **kw: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(headers=headers) as http, http.request(method, url, **kw) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def _until(probe: Callable[[], Any], limit_s: float = 20.0, what: str = "condition") -> Any:
    """Poll ``probe`` (async) until it returns something truthy."""
    deadline = time.monotonic() + limit_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _active_call(base: str, min_turns: int = 0, saved: int = 0) -> dict[str, Any]:
    """The first active call once its live transcript has ``min_turns`` turns and ``saved`` are committed."""

    async def probe() -> dict[str, Any] | None:
        status, doc = await _json(f"{base}/admin/calls")
        assert status == 200, doc
        for call in doc["active"]:
            if len(call["transcript"]) >= min_turns and call["turns_saved"] >= saved:
                return dict(call)
        return None

    result: dict[str, Any] = await _until(probe, what=f"an active call with {min_turns} turns")
    return result


def _metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_record_and_metrics_after_a_scripted_call(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """A greeting + one exchange leaves a complete record in SQLite and the matching series in /metrics."""
    gw = await make_gateway()
    report = await place_call(
        CallOptions(to="+15551230000", gateway=gw.url, play="builtin:hello", hangup_after_s=12.0)
    )
    assert report.protocol_errors == []

    async def ended() -> dict[str, Any] | None:
        status, doc = await _json(f"{gw.url}/admin/records/{report.call_sid}")
        return doc if status == 200 and doc["ended_at"] else None

    record = await _until(ended, what="the closed record")
    roles = [t["role"] for t in record["turns"]]
    assert roles[:3] == ["bot", "caller", "bot"], record["turns"]
    assert "emulator" in record["turns"][0]["text"]
    assert [t["seq"] for t in record["turns"]] == list(range(1, len(roles) + 1))
    assert (record["from"], record["to"], record["dialplan"], record["ended_by"]) == (
        "+15550001111", "+15551230000", "default", "caller",
    )  # fmt: skip
    assert record["stream_id"] == report.stream_sid
    assert len(record["dialplan_version"]) == 12
    assert record["gemini_sessions"] == [f"{report.call_sid}#1"]
    assert record["stats"]["frames_in"] >= 500
    assert record["usage"]["total_tokens"] > 0
    # The same record is in the SQLite file under the data folder, readable by another process.
    db = sqlite3.connect(gw.settings.data_dir / "calls.db")
    try:
        assert db.execute("SELECT COUNT(*) FROM turns WHERE call_id = ?", (report.call_sid,)).fetchone()[
            0
        ] == len(roles)
    finally:
        db.close()

    status, text = await _json(f"{gw.url}/metrics")
    assert status == 200
    m = _metrics(text)
    assert m[("gateway_calls_total", (("dialplan", "default"), ("outcome", "caller")))] == 1
    assert m[("gateway_active_calls", ())] == 0
    assert m[("gateway_greeting_latency_seconds_count", (("dialplan", "default"),))] == 1
    assert m[("gateway_reply_latency_seconds_count", (("dialplan", "default"),))] >= 1
    assert m[("gateway_media_frames_total", (("direction", "in"),))] == record["stats"]["frames_in"]
    assert m[("gateway_media_frames_total", (("direction", "out"),))] == record["stats"]["frames_out"]
    assert m[("gateway_records_written_total", ())] >= len(roles) + 2
    assert ("gateway_queue_depth", (("queue", "playout"), ("stat", "max"))) in m
    assert m[("gateway_gemini_tokens_total", (("dialplan", "default"), ("kind", "prompt")))] > 0
    # Which resampler loop runs (a fleet's NumPy processes stand out), and what runs it.
    build = (("python", platform.python_version()), ("resampler", "c" if resample.COMPILED else "numpy"))
    assert m[("gateway_build_info", (*build, ("version", gateway.__version__)))] == 1


async def test_admin_api_lists_shows_and_hangs_up(make_gateway: GatewayFactory, emulator: Emulator) -> None:
    """Operators list calls, read a live transcript and hang up a call; the record says who ended it."""
    gw = await make_gateway()
    call = asyncio.create_task(
        place_call(CallOptions(to="+15551230000", gateway=gw.url, play="builtin:hello", hangup_after_s=60.0))
    )
    try:
        active = await _active_call(gw.url, min_turns=2)
        sid = active["call_sid"]
        status, doc = await _json(f"{gw.url}/admin/calls/{sid}")
        assert status == 200
        assert doc["state"] == "active"
        assert doc["transcript"][0]["role"] == "bot"
        assert (await _json(f"{gw.url}/admin/calls/CAnope"))[0] == 404
        # A form post (no JSON) cannot hang up: a cross-site page could send one.
        status, _ = await _json(f"{gw.url}/admin/calls/{sid}/hangup", method="POST", data="x=1")
        assert status == 415
        status, doc = await _json(f"{gw.url}/admin/calls/{sid}/hangup", method="POST", json={})
        assert (status, doc) == (202, {"call_sid": sid, "hung_up": True})
        report: CallReport = await asyncio.wait_for(call, 10)
    finally:
        call.cancel()
    assert report.ended_by == "gateway"
    await asyncio.wait_for(emulator.sessions[0].closed.wait(), 5)

    async def closed() -> dict[str, Any] | None:
        status, doc = await _json(f"{gw.url}/admin/records/{sid}")
        return doc if status == 200 and doc["ended_at"] else None

    record = await _until(closed, what="the closed record")
    assert (record["ended_by"], record["end_reason"]) == ("admin", "hung up from the admin API")
    status, doc = await _json(f"{gw.url}/admin/records?limit=5")
    assert status == 200
    assert [r["call_id"] for r in doc["records"]] == [sid]
    assert "turns" not in doc["records"][0]
    assert (await _json(f"{gw.url}/admin/calls/{sid}/hangup", method="POST", json={}))[0] == 404


async def test_admin_token_protects_admin_metrics_and_data(make_gateway: GatewayFactory) -> None:
    """With GATEWAY_ADMIN_TOKEN set, admin, records and /metrics need it; the page shell does not."""
    gw = await make_gateway(admin_token="t" * 32)
    for path in ("/admin/calls", "/admin/records", "/metrics", "/admin/calls/CA1"):
        assert (await _json(gw.url + path))[0] == 403, path
        assert (await _json(gw.url + path, token="wrong"))[0] == 403, path
    assert (await _json(gw.url + "/admin/calls", token="t" * 32))[0] == 200
    assert (await _json(gw.url + "/metrics", token="t" * 32))[0] == 200
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/admin/calls") as refused:
        text = await refused.text()
    assert "GATEWAY_ADMIN_TOKEN" in text  # the fix is the token, not loopback, once one is set
    assert "loopback" not in text
    assert "127.0.0.1" not in text
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/admin/") as resp:
        assert resp.status == 200
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]


async def test_readyz_is_not_ready_while_draining(make_gateway: GatewayFactory) -> None:
    """Once shutdown starts, /readyz answers 503 so load balancers stop sending calls."""
    gw = await make_gateway()
    assert (await _json(gw.url + "/readyz"))[0] == 200
    await gw.app.shutdown()
    status, doc = await _json(gw.url + "/readyz")
    assert (status, doc["ready"]) == (503, False)
    assert "draining" in doc["reason"]


async def test_a_rejected_dialplan_edit_is_reported_without_failing_readiness(
    make_gateway: GatewayFactory, dialplan_dir: Path
) -> None:
    """A typo must not take the fleet out of its load balancer: /readyz stays 200 (the last good plans
    serve calls) while /metrics and the operator's /readyz report the rejected edit until it is fixed."""
    gw = await make_gateway()

    async def dialplan_metrics() -> tuple[float, float]:
        status, text = await _json(gw.url + "/metrics")
        assert status == 200
        found = _metrics(text)
        return found[("gateway_dialplans_healthy", ())], found[("gateway_dialplan_reload_failures_total", ())]

    assert await dialplan_metrics() == (1.0, 0.0)
    (dialplan_dir / "typo.toml").write_text('numbers = ["+15550009999"]\nvoise = "Puck"\n')

    async def rejected() -> bool:
        return (await dialplan_metrics())[0] == 0.0

    await _until(rejected, limit_s=10, what="the edit to be rejected")
    assert (await dialplan_metrics())[1] >= 1.0
    status, doc = await _json(gw.url + "/readyz")
    assert status == 200
    assert doc["ready"] is True
    assert "typo.toml" in doc["dialplans"]["reason"]
    (dialplan_dir / "typo.toml").unlink()

    async def healthy() -> bool:
        return (await dialplan_metrics())[0] == 1.0

    await _until(healthy, limit_s=10, what="the fixed folder to be accepted")
    assert (await _json(gw.url + "/readyz"))[1] == {"ready": True}


async def test_recording_writes_both_legs(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path
) -> None:
    """A dialplan with [recording] enabled leaves a stereo WAV of the call, named in its record."""
    (dialplan_dir / "default.toml").write_text(
        DEFAULT_PLAN.replace("[vad]", "[recording]\nenabled = true\n[vad]")
    )
    gw = await make_gateway()
    report = await place_call(
        CallOptions(to="+15551230000", gateway=gw.url, play="builtin:hello", hangup_after_s=6.0)
    )

    async def closed() -> dict[str, Any] | None:
        status, doc = await _json(f"{gw.url}/admin/records/{report.call_sid}")
        return doc if status == 200 and doc["ended_at"] else None

    record = await _until(closed, what="the closed record")
    path = Path(record["recording"])
    assert path.is_relative_to(gw.settings.data_dir / "recordings" / "default")

    async def finalised() -> bool:
        try:
            with wave.open(str(path)) as w:
                return w.getnframes() > 0
        except (OSError, EOFError, wave.Error):
            return False

    await _until(finalised, what="the finalised WAV")
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        # One stereo sample pair per caller sample: the caller's frames are the recording's clock.
        assert w.getnframes() == report.frames_sent * 160


# --- a gateway process killed mid-call -----------------------------------------------------------


@contextlib.asynccontextmanager
async def _gateway_process(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    plans = tmp_path / "dialplans"
    plans.mkdir()
    (plans / "default.toml").write_text(DEFAULT_PLAN)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GATEWAY_", "TWILIO_"))}
    env.update(GATEWAY_DATA_DIR=str(tmp_path / "data"), GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(port))
    log = (tmp_path / "gateway.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        GATEWAY_CLI, "serve", "--emulator", "--dialplans", str(plans),
        env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:

        async def up() -> bool:
            assert proc.returncode is None, (tmp_path / "gateway.log").read_text()
            try:
                return (await _json(base + "/healthz"))[0] == 200
            except aiohttp.ClientError:
                return False

        await _until(up, limit_s=30, what="the gateway process")
        yield proc, base
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        log.close()


async def test_killed_gateway_keeps_every_finished_turn(tmp_path: Path) -> None:
    """SIGKILL mid-call: every turn the gateway had committed is in SQLite, and the call shows unfinished."""
    async with _gateway_process(tmp_path) as (proc, base):
        call = asyncio.create_task(
            place_call(
                CallOptions(
                    to="+15551230000", gateway=base, play="builtin:hello", turns=3, hangup_after_s=60.0
                )
            )
        )
        try:
            # Greeting, the caller, the bot's answer, the caller again: at least 4 committed turns.
            live = await _active_call(base, min_turns=4, saved=4)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call, 10)
        finally:
            call.cancel()
    saved = live["turns_saved"]
    store = SqliteStore(tmp_path / "data" / "calls.db")
    await store.open()
    try:
        record = await store.get_call(live["call_sid"])
    finally:
        await store.close()
    assert record is not None
    assert record.ended_at is None  # nobody closed it: the process died
    assert len(record.turns) >= saved
    assert [(t.role, t.text) for t in record.turns[:saved]] == [
        (t["role"], t["text"]) for t in live["transcript"][:saved]
    ]
    # `gateway calls show` reads the surviving record and says the call never finished.
    shown = await asyncio.create_subprocess_exec(
        GATEWAY_CLI, "calls", "--data-dir", str(tmp_path / "data"),
        "show", live["call_sid"],
        stdout=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
    )  # fmt: skip
    out = (await shown.communicate())[0].decode()
    assert shown.returncode == 0, out
    assert "the gateway stopped mid-call" in out
    assert live["transcript"][0]["text"] in out


# --- the web page in a real headless Chromium ------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
HOWTO = (
    "needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver) and selenium"
)


def _browser(user_data: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={user_data}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


@pytest.mark.slow
async def test_web_page_shows_a_live_call_in_chromium(
    make_gateway: GatewayFactory, emulator: Emulator, tmp_path: Path
) -> None:
    """Headless Chromium renders the active call with its live transcript and records, and hangs it up."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        unavailable(HOWTO)
    pytest.importorskip("selenium", reason=HOWTO)
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    gw = await make_gateway()
    call = asyncio.create_task(
        place_call(CallOptions(to="+15551230000", gateway=gw.url, play="builtin:hello", hangup_after_s=60.0))
    )
    driver = await asyncio.to_thread(_browser, tmp_path / "chromium-profile")
    try:
        live = await _active_call(gw.url, min_turns=2)
        sid = live["call_sid"]
        caller_text = next(t["text"] for t in live["transcript"] if t["role"] == "caller")

        def page_shows_call() -> tuple[str, str, str]:
            driver.get(gw.url + "/admin/")
            # The page re-renders every second: read and click inside retried waits.
            wait = WebDriverWait(driver, 15, ignored_exceptions=(StaleElementReferenceException,))

            def text_of(selector: str, needle: str) -> Callable[[Any], str | None]:
                def probe(d: Any) -> str | None:
                    found = d.find_elements(By.CSS_SELECTOR, selector)
                    return str(found[0].text) if found and needle in found[0].text else None

                return probe

            card = wait.until(text_of(f'section.call[data-call-sid="{sid}"]', caller_text))
            row = wait.until(text_of(f'tr.record[data-call-id="{sid}"]', sid))
            button = f'section.call[data-call-sid="{sid}"] button.hangup'
            wait.until(lambda d: d.find_element(By.CSS_SELECTOR, button).click() or True)
            gone = wait.until(text_of("#active", "No active calls."))
            return card, row, gone

        card_text, row_text, after = await asyncio.to_thread(page_shows_call)
        report = await asyncio.wait_for(call, 10)
    finally:
        call.cancel()
        await asyncio.to_thread(driver.quit)
    assert sid in card_text
    assert "+15550001111 → +15551230000" in card_text
    assert "dialplan default" in card_text
    assert "bot" in card_text
    assert caller_text in card_text
    assert sid in row_text
    assert "No active calls." in after
    assert report.ended_by == "gateway"


@pytest.mark.slow
async def test_web_page_without_the_admin_token_says_it_is_not_authorised(
    make_gateway: GatewayFactory, emulator: Emulator, tmp_path: Path
) -> None:
    """Refused (403), the page says it is not authorised rather than claiming there are no calls."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        unavailable(HOWTO)
    pytest.importorskip("selenium", reason=HOWTO)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    gw = await make_gateway(admin_token="t" * 32)
    driver = await asyncio.to_thread(_browser, tmp_path / "chromium-profile")
    try:

        def active_text() -> str:
            driver.get(gw.url + "/admin/")
            wait = WebDriverWait(driver, 15)
            wait.until(lambda d: d.find_element(By.ID, "token-form").is_displayed())
            return str(driver.find_element(By.ID, "active").text)

        shown = await asyncio.to_thread(active_text)
    finally:
        await asyncio.to_thread(driver.quit)
    assert "Not authorised" in shown
    assert "No active calls" not in shown
