"""Audio recordings (both legs, stereo WAV), their retention, the [recording] table and `gateway calls`."""

from __future__ import annotations

import asyncio
import os
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from gateway.audio.g711 import pcm16_to_ulaw
from gateway.cli import main
from gateway.dialplan.loader import load_dialplan
from gateway.errors import DialplanErrors
from gateway.records.recording import CallRecording, purge_recordings, recording_path
from gateway.records.sqlite import SqliteStore

from .conftest import call_ops


def _tone(freq: float, frames: int) -> list[bytes]:
    t = np.arange(frames * 160) / 8000
    pcm = (8000 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()
    ulaw = pcm16_to_ulaw(pcm)
    return [ulaw[i * 160 : (i + 1) * 160] for i in range(frames)]


async def test_recording_keeps_caller_left_and_bot_right(tmp_path: Path) -> None:
    """The caller's frames go left, bot frames sent go right, aligned; a barge-in drops unplayed bot audio."""
    path = recording_path(tmp_path, "support", "CA/../1")
    assert path.parent.parent == tmp_path / "support"
    assert path.name == "CA1.wav"  # ids are sanitised before becoming file names
    with ThreadPoolExecutor(max_workers=1) as pool:
        rec = CallRecording(path, pool)
        caller, bot = _tone(440, 150), _tone(1000, 100)
        for i in range(150):
            if i < 100:
                rec.bot(bot[i])
            rec.caller(caller[i])
        rec.bot(bot[0])
        rec.clear_bot()  # barge-in: this frame was never played
        rec.caller(caller[0])
        await rec.close()
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        assert w.getnframes() == 151 * 160
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2).astype(float)
    left, right = pcm[:, 0], pcm[:, 1]

    def peak_hz(x: np.ndarray) -> float:
        return float(np.argmax(np.abs(np.fft.rfft(x))) * 8000 / len(x))

    assert peak_hz(left[:16000]) == pytest.approx(440, abs=10)
    assert peak_hz(right[:16000]) == pytest.approx(1000, abs=10)
    assert np.abs(right[100 * 160 :]).max() < 50  # silence after the bot's 100 frames and after the clear


async def test_a_wideband_stream_is_recorded_at_its_own_rate(tmp_path: Path) -> None:
    """L16 16 kHz legs (a wideband provider) are recorded as they are, 16 kHz stereo, not as μ-law."""
    path = tmp_path / "wide.wav"

    def l16(freq: float, frames: int) -> list[bytes]:
        pcm = (8000 * np.sin(2 * np.pi * freq * np.arange(frames * 320) / 16000)).astype("<i2").tobytes()
        return [pcm[i * 640 : (i + 1) * 640] for i in range(frames)]

    with ThreadPoolExecutor(max_workers=1) as pool:
        rec = CallRecording(path, pool, codec="l16", rate=16000)
        caller, bot = l16(440, 100), l16(3000, 60)
        for i in range(100):
            if i < 60:
                rec.bot(bot[i])
            rec.caller(caller[i])
        await rec.close()
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 16000)
        assert w.getnframes() == 100 * 320
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2).astype(float)
    left, right = pcm[:, 0], pcm[:, 1]
    assert np.array_equal(left[:320], np.frombuffer(caller[0], "<i2"))  # the caller's samples, exactly
    assert np.array_equal(right[:320], np.frombuffer(bot[0], "<i2"))
    spectrum = np.abs(np.fft.rfft(right[: 60 * 320]))
    assert float(np.argmax(spectrum) * 16000 / (60 * 320)) == pytest.approx(3000, abs=10)
    assert np.abs(right[60 * 320 :]).max() == 0


def test_purge_applies_each_plans_retention(tmp_path: Path) -> None:
    """Recordings older than their plan's retention go; other plans' and unknown plans' stay."""
    now = time.time()
    old = now - 10 * 86_400
    files = {
        "support": recording_path(tmp_path, "support", "CAold", old),
        "support-new": recording_path(tmp_path, "support", "CAnew", now),
        "sales": recording_path(tmp_path, "sales", "CAold", old),
        "gone": recording_path(tmp_path, "removed-plan", "CAold", old),
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"RIFF")
    for key in ("support", "sales", "gone"):
        os.utime(files[key], (old, old))
    deleted = purge_recordings(tmp_path, {"support": 7, "sales": None}, now)
    assert deleted == 1
    assert not files["support"].exists()
    assert not files["support"].parent.exists()  # the emptied day folder is removed
    assert all(files[k].exists() for k in ("support-new", "sales", "gone"))


def test_dialplan_recording_table(tmp_path: Path) -> None:
    """[recording] turns recording on with a retention; typos are errors naming the field."""
    base = 'default = true\nsystem_instruction = "x"\n'
    plan = tmp_path / "a.toml"
    plan.write_text(base)
    assert load_dialplan(plan).recording.enabled is False
    plan.write_text(base + "[recording]\nenabled = true\nretention_days = 30\n")
    loaded = load_dialplan(plan).recording
    assert (loaded.enabled, loaded.retention_days) == (True, 30)
    plan.write_text(base + "[recording]\nenable = true\nretention_days = 0\n")
    with pytest.raises(DialplanErrors) as info:
        load_dialplan(plan)
    text = str(info.value)
    assert "recording.enable: unknown key (did you mean 'enabled'?)" in text
    assert "recording.retention_days: must be between 1 and 36500, not 0" in text


async def _fill(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    await store.write(call_ops("CA0001"))
    await store.write(call_ops("CA0002", closed=False, started_at=1_700_000_500.0))
    await store.close()


def test_calls_cli_lists_and_shows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`gateway calls list` prints one line per call; `show` prints the transcript, the cut and the tools."""
    db = tmp_path / "calls.db"
    asyncio.run(_fill(db))
    assert main(["calls", "--database-url", f"sqlite:///{db}", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["started", "call", "from", "to", "dialplan", "duration", "turns", "ended", "by"]
    assert out[1].split()[2:] == [
        "CA0002",
        "+15550001111",
        "+15551230000",
        "support",
        "running",
        "3",
        "(unfinished)",
    ]
    assert out[2].split()[2:] == ["CA0001", "+15550001111", "+15551230000", "support", "9.0s", "3", "caller"]

    assert main(["calls", "--database-url", f"sqlite:///{db}", "show", "CA0001"]) == 0
    shown = capsys.readouterr().out
    assert "support @ abc123" in shown
    assert "bot     Hello, how can I help?" in shown
    assert "[cut off; the caller heard: Let me look]" in shown
    assert 'lookup_order({"order": "A17"}) -> ok in 42 ms: {"status": "shipped"}' in shown
    assert "reconnect cause=go_away" in shown
    assert "tokens    prompt 120, response 80, total 200" in shown

    assert main(["calls", "--database-url", f"sqlite:///{db}", "--json", "show", "CA0002"]) == 0
    assert '"ended_at": null' in capsys.readouterr().out
    assert main(["calls", "--database-url", f"sqlite:///{db}", "show", "CA000"]) == 1
    assert "more than one call" in capsys.readouterr().err
    assert main(["calls", "--database-url", f"sqlite:///{tmp_path}/none.db", "list"]) == 1
    assert "no call records yet" in capsys.readouterr().err
