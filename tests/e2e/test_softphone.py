"""The browser softphone end to end: the /phone page in a real headless Chromium (fake microphone playing a
WAV of speech with pauses) → the ``browser`` provider's socket → gateway → Gemini Live emulator over
wss://; and its API and authentication over plain HTTP and WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from gateway.caller.samples import hello_utterance
from gateway.emulator import Emulator
from tests.needs import unavailable

from .conftest import GatewayFactory

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
HOWTO = (
    "needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver) and selenium"
)
ADMIN_TOKEN = "a" * 32
REPO = Path(__file__).resolve().parents[2]
#: Where the mid-call screenshot is kept (GATEWAY_TEST_ARTIFACTS, else build/test-artifacts/).
ARTIFACTS = Path(os.environ.get("GATEWAY_TEST_ARTIFACTS", REPO / "build" / "test-artifacts"))
#: The README's picture, replaced when GATEWAY_UPDATE_SCREENSHOTS=1.
README_SHOT = REPO / "docs" / "img" / "softphone.png"
RATE = 48000
SUPPORT_PLAN = """
name = "support"
numbers = ["+15550100100", "+15550100101"]
voice = "Kore"
system_instruction = "You are the Acme support line."
greeting = "Greet the caller."
"""


def speech_wav(path: Path) -> Path:
    """What the fake microphone says (Chromium loops it): 9 s of quiet while the greeting plays (about
    7 s), an utterance, 2 s of quiet (the reply starts), an utterance over the reply (a barge-in), then quiet
    while the second reply plays. 48 kHz like most devices, so the page's worklet resamples 48 → 16 kHz
    as on a real machine."""
    hello = hello_utterance(RATE)

    def quiet(seconds: float) -> np.ndarray[Any, np.dtype[np.float32]]:
        return np.zeros(int(RATE * seconds), dtype=np.float32)

    signal = np.concatenate([quiet(9.0), hello, quiet(2.0), hello, quiet(12.0)])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((signal * 32767).astype("<i2").tobytes())
    return path


def _browser(user_data: Path, wav: Path) -> Any:
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
        "--window-size=1280,1100",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={user_data}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


async def _json(url: str, *, token: str = "", method: str = "GET", **kw: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(headers=headers) as http, http.request(method, url, **kw) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def _until(probe: Callable[[], Any], limit_s: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + limit_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_a_call_from_the_softphone_page_in_chromium(
    make_gateway: GatewayFactory, emulator: Emulator, tmp_path: Path, dialplan_dir: Path
) -> None:
    """Chromium speaks through the page: the greeting plays, the caller's speech reaches the emulator and
    the reply plays; the record holds both sides' turns and the page measured a sane reply latency."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        unavailable(HOWTO)
    pytest.importorskip("selenium", reason=HOWTO)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # A second plan, so the page lists more than the catch-all (and the call must not reach it).
    await asyncio.to_thread((dialplan_dir / "support.toml").write_text, SUPPORT_PLAN)
    gw = await make_gateway()
    wav = await asyncio.to_thread(speech_wav, tmp_path / "speech.wav")
    driver = await asyncio.to_thread(_browser, tmp_path / "chromium-profile", wav)
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    shot = ARTIFACTS / "softphone.png"

    def attr(name: str) -> str:
        return str(driver.find_element(By.ID, "phone").get_attribute(f"data-{name}") or "")

    def converse() -> dict[str, str]:
        driver.get(gw.url + "/phone/")
        wait = WebDriverWait(driver, 30)
        # The numbers list is the dialplans API's answer; its call button dials the plan's number.
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'li.plan[data-plan="default"] button:enabled'))
        number = driver.find_element(By.ID, "number")
        number.clear()
        number.send_keys("+15551230000")
        driver.find_element(By.ID, "call").click()
        wait.until(lambda d: attr("state") == "in-call")
        # The greeting plays, the caller speaks, the reply plays; the caller speaks over it (the gateway's
        # clear empties the page's buffer) and the second reply plays: the page measured two replies.
        wait.until(lambda d: int(attr("replies") or 0) >= 2)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#transcript .turn.caller")) >= 2)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#transcript .turn.bot")) >= 3)
        time.sleep(1.0)  # the meters and the reply's bubble mid-reply, for the picture
        driver.save_screenshot(str(shot))
        seen = {name: attr(name) for name in (
            "call-sid", "greeting-ms", "greeting-latency-ms", "reply-ms", "replies", "frames-sent",
            "frames-received", "played-ms", "marks-echoed", "gaps", "jitter-ms", "clears",
        )}  # fmt: skip
        seen["transcript"] = driver.find_element(By.ID, "transcript").text
        driver.find_element(By.ID, "hangup").click()
        wait.until(lambda d: attr("state") == "ended")
        return seen

    try:
        seen = await asyncio.to_thread(converse)
    except Exception:
        logs = await asyncio.to_thread(driver.get_log, "browser")
        print("\n".join(str(entry) for entry in logs))  # the page's console, for the failure report
        raise
    finally:
        await asyncio.to_thread(driver.quit)
    print("softphone page:", json.dumps(seen))
    if os.environ.get("GATEWAY_UPDATE_SCREENSHOTS") == "1":
        README_SHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, README_SHOT)

    sid = seen["call-sid"]
    assert sid.startswith("BR")

    async def ended() -> dict[str, Any] | None:
        status, doc = await _json(f"{gw.url}/admin/records/{sid}")
        return doc if status == 200 and doc["ended_at"] else None

    record = await _until(ended, what="the closed record")
    roles = [t["role"] for t in record["turns"]]
    assert roles[:5] == ["bot", "caller", "bot", "caller", "bot"], record["turns"]
    # The second utterance cut the first reply: the gateway cleared the page's buffer.
    assert [t.get("interrupted", False) for t in record["turns"][:3:2]] == [False, True], record["turns"]
    assert int(seen["clears"]) >= 1, seen
    assert "emulator" in record["turns"][0]["text"]
    # The emulator heard the utterance at its length (1.5 s): the page's 48 → 16 kHz frames run at the rate.
    assert record["turns"][1]["text"].startswith("[speech "), record["turns"]
    assert 1.3 <= float(record["turns"][1]["text"].split()[1]) <= 1.7, record["turns"]
    assert (record["from"], record["to"], record["dialplan"], record["ended_by"]) == (
        "browser", "+15551230000", "default", "caller",
    )  # fmt: skip
    # The page heard the greeting (seconds of it before the caller first spoke) and measured the reply.
    assert int(seen["greeting-ms"]) >= 1000, seen
    assert 0 < int(seen["greeting-latency-ms"]) < 5000, seen
    reply_ms = int(seen["reply-ms"])
    # The emulator answers once 300 ms of quiet ended the turn (the dialplan's silence_duration_ms): the
    # page must see at least that, and no more than a few hundred ms on top of it on loopback.
    assert 300 <= reply_ms <= 2500, seen
    assert int(seen["frames-sent"]) >= 250  # 20 ms frames, continuously, for more than 5 s
    assert int(seen["marks-echoed"]) >= 1
    assert record["turns"][1]["text"] in seen["transcript"]
    assert shot.stat().st_size > 10_000


# --- API and authentication ---------------------------------------------------------------------


async def test_softphone_api_needs_the_admin_credential_and_a_token_before_gemini(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """No admin credential, no call; a socket without a valid token never opens a Gemini session."""
    gw = await make_gateway(admin_token=ADMIN_TOKEN)
    base, ws_url = gw.url, gw.url.replace("http://", "ws://") + "/phone/media"
    # The page's shell is public with a token set (it asks for the token); its data is not.
    status, html = await _json(base + "/phone/")
    assert status == 200
    assert "phone.js" in html
    async with aiohttp.ClientSession() as http, http.get(base + "/phone/worklet.js") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/javascript")
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert "registerProcessor" in await resp.text()
    assert (await _json(base + "/phone/api/numbers"))[0] == 403
    assert (await _json(base + "/phone/call", method="POST", json={"to": "+15551230000"}))[0] == 403
    assert (await _json(base + "/phone/call", method="POST", json={"to": "+1"}, token="wrong"))[0] == 403
    # A form post cannot place a call (a cross-site page could send one).
    status, _ = await _json(base + "/phone/call", method="POST", data="to=1", token=ADMIN_TOKEN)
    assert status == 415
    status, _ = await _json(base + "/phone/call", method="POST", json={"to": "+1<script>"}, token=ADMIN_TOKEN)
    assert status == 400

    async def refused(start: dict[str, Any] | None, headers: dict[str, str] | None = None) -> int | None:
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, headers=headers) as ws:
            if start is not None:
                await ws.send_str(json.dumps(start))
                await ws.send_bytes(b"\0" * 640)
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
            return ws.close_code

    sid = "BR" + "0" * 32
    assert await refused({"event": "start", "call_sid": sid, "token": ""}) == 1008
    assert await refused({"event": "start", "call_sid": sid, "token": "v1.forged.mac"}) == 1008
    assert await refused(None) == 1008  # nothing sent: closed at the start timeout
    async with aiohttp.ClientSession() as http:
        # Another site's page cannot open the socket in an operator's browser.
        with pytest.raises(aiohttp.WSServerHandshakeError) as excinfo:
            await http.ws_connect(ws_url, headers={"Origin": "https://evil.example"})
        assert excinfo.value.status == 403
    assert emulator.sessions == []  # nothing above reached Gemini

    status, doc = await _json(base + "/phone/api/numbers", token=ADMIN_TOKEN)
    assert status == 200
    assert [(p["name"], p["default"], p["dial"]) for p in doc["dialplans"]] == [
        ("default", True, "+15551230000")
    ]
    status, admitted = await _json(base + "/phone/call", method="POST", json={"to": "+15551230000"},
                                   token=ADMIN_TOKEN)  # fmt: skip
    assert status == 200, admitted
    assert admitted["call_sid"].startswith("BR")
    assert admitted["dialplan"] == "default"
    # A valid token for another call id is refused too.
    other = {"event": "start", "call_sid": "BR" + "1" * 32, "token": admitted["token"]}
    assert await refused(other) == 1008

    # The real one: the page's protocol by hand (16 kHz PCM16 up, binary audio and marks down).
    media_format = {"encoding": "audio/l16", "sample_rate": 16000, "channels": 1}
    start = {"event": "start", "call_sid": admitted["call_sid"], "token": admitted["token"],
             "to": "+15551230000", "media_format": media_format}  # fmt: skip
    audio = bytearray()
    marks: list[str] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, origin=base) as ws:
        await ws.send_str(json.dumps(start))
        silence = b"\0" * 640
        deadline = time.monotonic() + 15
        while len(audio) < 32000 * 2 and time.monotonic() < deadline:  # two seconds of the greeting
            await ws.send_bytes(silence)
            try:
                msg = await ws.receive(timeout=0.02)
            except TimeoutError:
                continue
            if msg.type is aiohttp.WSMsgType.BINARY:
                audio += msg.data
            elif msg.type is aiohttp.WSMsgType.TEXT:
                doc = json.loads(msg.data)
                if doc["event"] == "mark":
                    marks.append(doc["name"])
                    await ws.send_str(json.dumps({"event": "mark", "name": doc["name"]}))
            else:
                break
        # The token was single-use: a second socket with it is refused while the call runs.
        assert await refused(start) == 1008
        await ws.send_str('{"event":"stop"}')
    assert len(audio) >= 64000, "the greeting did not arrive"
    assert len(audio) % 2 == 0
    assert marks
    pcm = np.frombuffer(bytes(audio), dtype="<i2")
    assert np.abs(pcm).max() > 3000  # speech, not silence
    status, doc = await _json(f"{base}/phone/calls/{admitted['call_sid']}", token=ADMIN_TOKEN)
    assert status == 200
    assert doc["transcript"][0]["role"] == "bot"
    assert len(emulator.sessions) == 1


# --- the page's resampler, in Chromium -------------------------------------------------------------

WORKLET = REPO / "gateway" / "server" / "static" / "phone" / "worklet.js"
#: Runs worklet.js's Resampler on a sine (fed in 128-sample blocks, as an AudioWorklet is) and answers
#: the output's amplitude at the sine's frequency and its peak, with the first 50 ms skipped.
_RESAMPLE_JS = """
const [source, inRate, outRate, freq] = arguments;
const shim = "class AudioWorkletProcessor {}; const registerProcessor = () => {};" +
  "const sampleRate = 48000, currentTime = 0;";
const Resampler = new Function(shim + source + "; return Resampler;")();
const r = new Resampler(inRate, outRate);
const out = [];
const block = new Float32Array(128);
for (let n = 0; n < inRate; n += 128) {
  for (let i = 0; i < 128; i++) block[i] = 0.5 * Math.sin(2 * Math.PI * freq * (n + i) / inRate);
  r.push(block, (s) => out.push(s));
}
const skip = Math.round(outRate * 0.05);
const tail = out.slice(skip);
const f = Math.min(freq, outRate / 2);
let re = 0, im = 0, peak = 0;
tail.forEach((s, i) => {
  re += s * Math.cos(2 * Math.PI * f * i / outRate);
  im += s * Math.sin(2 * Math.PI * f * i / outRate);
  peak = Math.max(peak, Math.abs(s));
});
return [out.length, 2 * Math.hypot(re, im) / tail.length, peak];
"""


@pytest.mark.slow
async def test_the_page_resamples_band_limited(tmp_path: Path) -> None:
    """48 kHz → 16 kHz keeps speech-band tones at their level and removes what 16 kHz cannot carry
    (8.5 kHz would fold back to 7.5 kHz: nothing may come through); 16 kHz → 48 kHz plays tones at
    their level and pitch."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        unavailable(HOWTO)
    pytest.importorskip("selenium", reason=HOWTO)
    source = WORKLET.read_text()

    def run() -> dict[tuple[int, int, float], list[float]]:
        driver = _browser(tmp_path / "chromium-profile", speech_wav(tmp_path / "speech.wav"))
        try:
            driver.get("about:blank")  # no CSP there: the test may build the class from the file's text
            cases = [(48000, 16000, 1000.0), (48000, 16000, 6500.0), (48000, 16000, 8500.0),
                     (48000, 16000, 15000.0), (44100, 16000, 3000.0), (16000, 48000, 6500.0)]  # fmt: skip
            return {case: driver.execute_script(_RESAMPLE_JS, source, *case) for case in cases}
        finally:
            driver.quit()

    results = await asyncio.to_thread(run)
    for (in_rate, out_rate, freq), (count, level, peak) in results.items():
        # One second in, one second out, but for the filter's look-ahead (a couple of milliseconds).
        assert 0 <= out_rate - count <= 0.002 * out_rate + 16, (in_rate, out_rate, count)
        if freq <= 6500:  # wideband speech reaches 7 kHz; flat to 6.5 kHz, 8 kHz is Nyquist
            assert level == pytest.approx(0.5, abs=0.01), (freq, level)  # passband: the tone, at its level
        else:
            assert peak < 0.005, (freq, peak)  # stopband: below -40 dB of the tone, nothing folds back
