"""The call inspector and the dashboard, end to end: real calls (simulated caller → gateway → emulator
over wss://) with recording on, a tool call, a barge-in and a key press; the JSON API behind the pages
(and who may read it); then the pages themselves in a real headless Chromium.

Screenshots go to ``artifacts/`` at the repository root (git-ignored). With
``GATEWAY_UPDATE_SCREENSHOTS=1`` the README's two screenshots in ``docs/img/`` are rewritten too.
"""

from __future__ import annotations

import asyncio
import os
import time
import wave
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.caller import CallOptions, CallReport, place_call
from gateway.emulator import Emulator
from gateway.emulator.scenario import Rule
from tests.needs import unavailable

from .conftest import DEFAULT_PLAN, Gateway, GatewayFactory
from .test_observability import CHROMEDRIVER, CHROMIUM, HOWTO, _browser, _json, _until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
README_IMAGES = ROOT / "docs" / "img"
TOKEN = "t" * 32
#: Recording on, the shipped lookup_order tool declared.
PLAN = DEFAULT_PLAN.replace("[vad]", 'tools = ["lookup_order"]\n[recording]\nenabled = true\n[vad]')
ORDER_RESULT = "shipped"


def _script(emulator: Emulator) -> None:
    """The greeting looks an order up (a tool call) and reads it out, long enough to be barged in on;
    the key press gets its own answer."""
    emulator.scenario.rules = [
        Rule(
            text_contains="Greet the caller",
            say="Welcome to Acme Widgets. Let me check your latest order while you wait on the line.",
            tool="lookup_order",
            args={"order_id": "A1001"},
            reply="Your order {result} is on its way and should arrive on Thursday with all its items.",
        ),
        Rule(dtmf="5", say="You pressed five. Connecting you to billing is not possible today, sorry."),
    ]


async def _place(gw: Gateway, **options: Any) -> asyncio.Task[CallReport]:
    opts = CallOptions(
        to="+15551230000",
        gateway=gw.url,
        play="builtin:hello",
        speak_at_s=2.5,  # over the greeting: a barge-in
        dtmf="5",
        dtmf_interval_s=0.3,
        **options,
    )
    return asyncio.create_task(place_call(opts))


async def _get(url: str, *, token: str = "", headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """Status, body (JSON or bytes) and headers."""
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http, http.get(url, headers=h) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.read()
        return resp.status, body, resp.headers


async def _finished_call(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path, **gw: Any
) -> tuple[Gateway, str, dict[str, Any]]:
    """A finished call with everything the timeline draws; its id and its record."""
    (dialplan_dir / "default.toml").write_text(PLAN)
    _script(emulator)
    gateway = await make_gateway(**gw)
    report = await (await _place(gateway, hangup_after_s=14.0))
    assert report.protocol_errors == []
    token = gw.get("admin_token", "")

    async def closed() -> dict[str, Any] | None:
        status, doc = await _json(f"{gateway.url}/admin/records/{report.call_sid}", token=token)
        return doc if status == 200 and doc["ended_at"] else None

    record = await _until(closed, what="the closed record")
    path = Path(record["recording"])

    async def finalised() -> bool:
        try:
            with wave.open(str(path)) as w:
                return w.getnframes() > 0
        except (OSError, EOFError, wave.Error):
            return False

    await _until(finalised, what="the finalised WAV")
    return gateway, report.call_sid, record


def _check_record(record: dict[str, Any]) -> None:
    """The call did what the test needs: a tool call, a barge-in, a key, replies with latencies."""
    kinds = [e["kind"] for e in record["events"]]
    assert "barge_in" in kinds, kinds
    assert "reply" in kinds, kinds
    assert "greeting" in kinds, kinds
    assert [t for t in record["turns"] if t.get("interrupted")], record["turns"]
    assert [t["text"] for t in record["turns"] if t["role"] == "dtmf"] == ["5"]
    [tool] = record["tool_calls"]
    assert (tool["name"], tool["arguments"], tool["status"]) == ("lookup_order", {"order_id": "A1001"}, "ok")


# --- the JSON API ----------------------------------------------------------------------------------


async def test_timeline_peaks_recording_search_and_summary(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path
) -> None:
    """Every endpoint behind the pages, on a real finished call."""
    gw, sid, record = await _finished_call(make_gateway, emulator, dialplan_dir)
    _check_record(record)
    base = f"{gw.url}/admin/calls/{sid}"

    status, doc, _ = await _get(base + "/timeline")
    assert status == 200
    assert doc["state"] == "ended"
    assert [(t["seq"], t["role"], t["text"]) for t in doc["turns"]] == [
        (t["seq"], t["role"], t["text"]) for t in record["turns"]
    ]
    replies = [e for e in record["events"] if e["kind"] == "reply"]
    with_latency = [t for t in doc["turns"] if "reply_latency_ms" in t]
    assert sorted(t["reply_latency_ms"] for t in with_latency) == sorted(
        e["detail"]["latency_ms"] for e in replies
    )
    assert all(t["role"] == "bot" for t in with_latency)
    assert all(0 < t["reply_latency_ms"] < 5000 for t in with_latency)
    assert doc["tool_calls"] == record["tool_calls"]
    assert doc["recording"]["url"] == f"/admin/calls/{sid}/recording"  # no token: nothing to sign

    # Peaks: both channels, the caller's speech and the bot's greeting both loud somewhere.
    status, peaks, _ = await _get(base + "/peaks")
    assert status == 200
    with wave.open(record["recording"]) as w:
        seconds = w.getnframes() / w.getframerate()
    assert peaks["duration_s"] == pytest.approx(seconds)
    assert len(peaks["caller"]) == len(peaks["bot"]) == pytest.approx(seconds / peaks["bucket_s"], abs=1)
    assert max(peaks["caller"]) > 50
    assert max(peaks["bot"]) > 50
    assert (await _get(base + "/peaks"))[1] == peaks  # cached: the same answer

    # The WAV, whole and by Range (what the player's seeking asks for).
    status, body, headers = await _get(base + "/recording")
    assert status == 200
    assert body[:4] == b"RIFF"
    assert headers["Content-Type"] == "audio/wav"
    assert headers.get("Accept-Ranges") == "bytes"
    status, part, headers = await _get(base + "/recording", headers={"Range": "bytes=100-199"})
    assert status == 206
    assert part == body[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(body)}"

    # Search: by transcript text, number, dialplan, ended-by and dates; the summary counts the call.
    said = next(t["text"] for t in record["turns"] if t["role"] == "bot")
    for query, hits in (
        (f"q={said.split()[1].upper()}", [sid]),
        ("q=nobody+said+this", []),
        ("number=5550001111", [sid]),
        ("number=999", []),
        ("dialplan=default", [sid]),
        ("ended_by=caller", [sid]),
        ("ended_by=running", []),
        (f"since={int(time.time()) - 3600}&until={int(time.time()) + 60}", [sid]),
        ("until=2001-01-01", []),
    ):
        status, found, _ = await _get(f"{gw.url}/admin/search?{query}")
        assert status == 200, found
        assert [r["call_id"] for r in found["records"]] == hits, query
    assert found["dialplans"] == ["default"]
    assert (await _get(f"{gw.url}/admin/search?since=soon"))[0] == 400
    assert (await _get(f"{gw.url}/admin/search?limit=x"))[0] == 400
    status, summary, _ = await _get(f"{gw.url}/admin/summary")
    assert status == 200
    assert summary["active_calls"] == 0
    assert summary["records"]["calls"] == 1
    assert summary["records"]["latency"]["count"] == len(replies)
    assert summary["records"]["tool_calls"] == 1
    assert summary["records"]["events"]["barge_in"] >= 1

    assert (await _get(f"{gw.url}/admin/calls/CAnope/timeline"))[0] == 404
    assert (await _get(f"{gw.url}/admin/calls/CAnope/recording"))[0] == 404
    assert (await _get(f"{gw.url}/admin/ui/nope.js"))[0] == 404
    # A browser navigation gets the page; an API client still gets JSON from the same URL.
    status, page, headers = await _get(base, headers={"Accept": "text/html,application/xhtml+xml"})
    assert status == 200
    assert b"inspector.js" in page
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, doc, _ = await _get(base)
    assert status == 200
    assert doc["call_sid"] == sid
    assert doc["state"] == "ended"


async def test_inspector_endpoints_need_the_operator(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path
) -> None:
    """With a token: no data without it (403), the shells load, and the player's URL is signed."""
    gw, sid, _ = await _finished_call(make_gateway, emulator, dialplan_dir, admin_token=TOKEN)
    base = f"{gw.url}/admin/calls/{sid}"
    for path in ("/timeline", "/peaks", "/recording"):
        assert (await _get(base + path))[0] == 403, path
        assert (await _get(base + path, token="wrong"))[0] == 403, path
        assert (await _get(base + path, token=TOKEN))[0] == 200, path
    for path in ("/admin/search", "/admin/summary"):
        assert (await _get(gw.url + path))[0] == 403, path
        assert (await _get(gw.url + path, token=TOKEN))[0] == 200, path
    # The shells and their scripts hold no data: they load, and ask for the token.
    assert (await _get(base, headers={"Accept": "text/html"}))[0] == 200
    assert (await _get(gw.url + "/admin/ui/inspector.js"))[0] == 200
    assert (await _get(base))[0] == 403  # the JSON of the same URL does not
    # The <audio> element cannot send the token: the timeline hands out a signed, expiring URL.
    status, doc, _ = await _get(base + "/timeline", token=TOKEN)
    url = doc["recording"]["url"]
    assert "sig=" in url
    assert "expires=" in url
    status, body, _ = await _get(gw.url + url)
    assert status == 200
    assert body[:4] == b"RIFF"
    assert (await _get(gw.url + url.replace("sig=", "sig=0")))[0] == 403
    assert (await _get(gw.url + url.replace(sid, sid + "x")))[0] == 403
    expired = url.split("expires=")[0] + "expires=1&sig=" + url.split("sig=")[1]
    assert (await _get(gw.url + expired))[0] == 403
    # Without a token, only a direct loopback client is the operator: a proxied request is not.
    open_gw = await make_gateway()
    status, _, _ = await _get(f"{open_gw.url}/admin/summary", headers={"X-Forwarded-For": "203.0.113.9"})
    assert status == 403


# --- the pages in headless Chromium --------------------------------------------------------------


def _screenshot(driver: Any, name: str, readme: str | None = None) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    if readme and os.environ.get("GATEWAY_UPDATE_SCREENSHOTS") == "1":
        README_IMAGES.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(README_IMAGES / readme))
    return path


def _needs_chromium() -> None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        unavailable(HOWTO)
    pytest.importorskip("selenium", reason=HOWTO)


def _attrs(driver: Any, selector: str, *names: str) -> list[tuple[str | None, ...]]:
    from selenium.webdriver.common.by import By

    return [tuple(e.get_attribute(n) for n in names) for e in driver.find_elements(By.CSS_SELECTOR, selector)]


@pytest.mark.slow
async def test_call_page_of_a_finished_call_in_chromium(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path, tmp_path: Path
) -> None:
    """The timeline shows the record's turns, latencies, tool call, barge-in and key; the player seeks."""
    _needs_chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    gw, sid, record = await _finished_call(make_gateway, emulator, dialplan_dir)
    _check_record(record)
    _status, timeline, _ = await _get(f"{gw.url}/admin/calls/{sid}/timeline")
    driver = await asyncio.to_thread(_browser, tmp_path / "chromium-profile")
    try:

        def inspect() -> dict[str, Any]:
            driver.set_window_size(1440, 1100)
            driver.get(f"{gw.url}/admin/calls/{sid}")
            wait = WebDriverWait(driver, 15)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".band[data-turn-seq]"))
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".wave.caller path"))  # the peaks
            seen: dict[str, Any] = {
                "bands": _attrs(
                    driver, ".band[data-turn-seq]", "data-turn-seq", "data-role", "data-latency-ms"
                ),
                "marks": _attrs(driver, ".latency-mark", "data-turn-seq", "data-latency-ms"),
                "tools": _attrs(
                    driver, ".marker.tool", "data-tool-call-id", "data-tool-name", "data-duration-ms"
                ),
                "cards": _attrs(driver, ".tool-card", "data-tool-call-id"),
                "events": _attrs(driver, ".marker[data-event-kind]", "data-event-kind"),
                "digits": _attrs(driver, ".marker.dtmf", "data-digit"),
                "cut": _attrs(driver, ".band.bot[data-interrupted] .cut", "style"),
                "state": driver.find_element(By.ID, "call-state").get_attribute("data-state"),
                "tool_text": driver.find_element(By.CSS_SELECTOR, ".tool-card").text,
            }
            _screenshot(driver, "call-inspector.png", "call-inspector.png")
            dark = {"media": "", "features": [{"name": "prefers-color-scheme", "value": "dark"}]}
            driver.execute_cdp_cmd("Emulation.setEmulatedMedia", dark)
            _screenshot(driver, "call-inspector-dark.png")
            driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "", "features": []})
            # Click the caller's first turn: the player and the playhead go there.
            band = driver.find_element(By.CSS_SELECTOR, '.band.caller[data-role="caller"]')
            seen["band_start"] = float(band.get_attribute("data-start"))
            wait.until(lambda d: d.execute_script("return document.getElementById('player').readyState") >= 1)
            band.click()
            wait.until(
                lambda d: abs(d.execute_script("return document.getElementById('player').currentTime")
                              - seen["band_start"]) < 0.05
            )  # fmt: skip
            seen["player_at"] = driver.execute_script("return document.getElementById('player').currentTime")
            seen["playhead_at"] = float(driver.find_element(By.ID, "playhead").get_attribute("data-t"))
            # The keyboard moves it too: focus the timeline, arrow right is five seconds on.
            driver.find_element(By.ID, "timeline").send_keys("\ue014")  # ArrowRight
            wait.until(lambda d: d.execute_script("return document.getElementById('player').currentTime")
                       > seen["band_start"] + 4.9)  # fmt: skip
            return seen

        seen = await asyncio.to_thread(inspect)
    finally:
        await asyncio.to_thread(driver.quit)
    turns = [t for t in timeline["turns"] if t["role"] in ("caller", "bot", "dtmf")]
    assert sorted((int(s), r) for s, r, _ in seen["bands"]) == [(t["seq"], t["role"]) for t in turns]
    latencies = {t["seq"]: t["reply_latency_ms"] for t in timeline["turns"] if "reply_latency_ms" in t}
    assert latencies
    assert {int(s): float(v) for s, _, v in seen["bands"] if v is not None} == latencies
    assert {int(s): float(v) for s, v in seen["marks"]} == latencies
    [tool] = record["tool_calls"]
    assert [(i, n, float(str(ms))) for i, n, ms in seen["tools"]] == [
        (tool["id"], "lookup_order", tool["duration_ms"])
    ]
    assert seen["cards"] == [(tool["id"],)]
    assert "A1001" in seen["tool_text"]
    assert ORDER_RESULT in seen["tool_text"]
    assert ("barge_in",) in seen["events"]
    assert seen["digits"] == [("5",)]
    assert seen["cut"]
    assert "width" in str(seen["cut"][0][0])
    assert seen["state"] == "ended"
    assert seen["player_at"] == pytest.approx(seen["band_start"], abs=0.05)
    assert seen["playhead_at"] == pytest.approx(seen["band_start"], abs=0.05)


@pytest.mark.slow
async def test_call_page_of_a_live_call_and_the_dashboard_in_chromium(
    make_gateway: GatewayFactory, emulator: Emulator, dialplan_dir: Path, tmp_path: Path
) -> None:
    """A live call's page grows turn by turn with live levels; the dashboard lists and filters calls."""
    _needs_chromium()
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    (dialplan_dir / "default.toml").write_text(PLAN)
    _script(emulator)
    gw = await make_gateway()
    # A finished call first, so the dashboard has something to filter out.
    first = await (await _place(gw, hangup_after_s=6.0))
    call = await _place(gw, hangup_after_s=60.0)
    driver = await asyncio.to_thread(_browser, tmp_path / "chromium-profile")
    try:

        async def live_sid() -> str | None:
            _status, doc = await _json(f"{gw.url}/admin/calls")
            return next((c["call_sid"] for c in doc["active"] if len(c["transcript"]) >= 2), None)

        sid = await _until(live_sid, what="a live call with two turns")

        def watch_live() -> dict[str, Any]:
            driver.set_window_size(1440, 1000)
            driver.get(f"{gw.url}/admin/calls/{sid}")
            wait = WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,))
            wait.until(lambda d: d.find_element(By.ID, "call-state").get_attribute("data-state") == "active")
            first_count = len(d_bands := driver.find_elements(By.CSS_SELECTOR, ".band[data-turn-seq]"))
            assert d_bands
            # Live levels arrive (the sampler runs while the page is open) and turns keep coming.
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".wave.caller path"))
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".band[data-turn-seq]")) > first_count)
            return {"first": first_count, "text": driver.find_element(By.ID, "conversation").text}

        live = await asyncio.to_thread(watch_live)
        _status, doc = await _json(f"{gw.url}/admin/calls/{sid}/timeline")
        assert doc["state"] == "active"
        assert doc["levels"]["caller"]
        assert any(t["text"] and t["text"] in live["text"] for t in doc["turns"] if t["role"] == "caller")

        def dashboard() -> dict[str, Any]:
            driver.set_window_size(1440, 1250)
            driver.get(f"{gw.url}/admin/")
            wait = WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,))
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'section.call[data-call-sid="{sid}"]'))
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.record")) == 2)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#calls-chart rect.bar"))
            # The page re-renders as it refreshes: read (and click) inside retried waits.
            active = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '[data-card="active"] .value').text)
            calls = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '[data-card="calls"] .value').text)
            _screenshot(driver, "dashboard.png", "dashboard.png")
            # Filter: only the running call.
            from selenium.webdriver.support.ui import Select

            Select(driver.find_element(By.ID, "f-ended-by")).select_by_value("running")
            driver.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
            wait.until(
                lambda d: (
                    [r.get_attribute("data-call-id") for r in d.find_elements(By.CSS_SELECTOR, "tr.record")]
                    == [sid]
                )
            )
            # Search the transcript for words of the finished call only: that call alone.
            driver.find_element(By.ID, "f-clear").click()
            driver.find_element(By.ID, "f-number").send_keys("5550001111")
            driver.find_element(By.ID, "f-q").send_keys("nobody said this")
            driver.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
            try:
                wait.until(lambda d: "No call matches" in d.find_element(By.ID, "records").text)
            except TimeoutException:  # what the page showed instead, and with which filters
                ids = ("records-count", "records", "f-number", "f-q")
                found = [driver.find_element(By.ID, i) for i in ids]
                pytest.fail(f"no 'No call matches': {[e.text or e.get_attribute('value') for e in found]}")
            driver.find_element(By.ID, "f-clear").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.record")) == 2)
            # A row opens the call's page.
            row = f'tr.record[data-call-id="{first.call_sid}"] a'
            wait.until(lambda d: d.find_element(By.CSS_SELECTOR, row).click() or True)
            wait.until(lambda d: d.find_element(By.ID, "call-state").get_attribute("data-state") == "ended")
            return {"active": active, "calls": calls, "url": driver.current_url}

        board = await asyncio.to_thread(dashboard)
    finally:
        call.cancel()
        await asyncio.to_thread(driver.quit)
    assert board["active"] == "1"
    assert board["calls"] == "2"
    assert board["url"].endswith(f"/admin/calls/{first.call_sid}")
