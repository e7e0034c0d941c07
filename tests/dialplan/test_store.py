"""Live reload: new calls get edits, calls in progress keep their plan, broken edits never win."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.dialplan.store import DialplanStore
from gateway.errors import DialplanErrors

from .helpers import MINIMAL_DEFAULT, plan, write


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(tmp_path, "default.toml", MINIMAL_DEFAULT)
    write(tmp_path, "support.toml", plan('"+15550100100"', extra='voice = "Kore"\n'))
    return tmp_path


async def _until(condition: Callable[[], bool]) -> None:
    """Wait up to 5 s for ``condition`` (the store reloads in a worker thread, so poll it)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within 5 s")


@pytest.fixture
async def watching(folder: Path) -> AsyncIterator[DialplanStore]:
    store = DialplanStore(folder, poll_interval_s=0.02)
    task = asyncio.create_task(store.watch())
    await asyncio.sleep(0)
    yield store
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_initial_load_failure_raises(tmp_path: Path) -> None:
    """The gateway must not start without a valid book: construction raises DialplanErrors."""
    write(tmp_path, "a.toml", plan('"+15550100100"'))
    with pytest.raises(DialplanErrors, match="default"):
        DialplanStore(tmp_path)


def test_good_edit_reaches_new_calls_only(folder: Path) -> None:
    """After a good edit new calls get the new version; a call holding the old plan keeps it intact."""
    store = DialplanStore(folder)
    held = store.current.match("+15550100100")
    assert held.voice == "Kore"
    write(folder, "support.toml", plan('"+15550100100"', extra='voice = "Puck"\n'))
    assert store.reload() is True
    fresh = store.current.match("+15550100100")
    assert (fresh.voice, held.voice) == ("Puck", "Kore")
    assert fresh.version != held.version
    assert store.healthy
    assert store.last_error is None


def test_reload_without_changes_keeps_the_same_book(folder: Path) -> None:
    """Re-reading identical files is not a new book (no churn in logs or records)."""
    store = DialplanStore(folder)
    book = store.current
    assert store.reload() is False
    assert store.current is book


def test_broken_edit_is_rejected_and_logged(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A broken edit leaves the last good book in force, marks the store unhealthy and logs file and field."""
    store = DialplanStore(folder)
    book = store.current
    write(folder, "support.toml", plan('"+15550100100"', extra='voice = "Nobody"\n'))
    with caplog.at_level(logging.WARNING, logger="gateway.dialplan"):
        assert store.reload() is False
    assert store.current is book
    assert not store.healthy
    assert store.last_error is not None
    assert "support.toml: voice:" in store.last_error
    assert store.reload_failures == 1
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.__dict__["file"] == str(folder / "support.toml")
    assert record.__dict__["field"] == "voice"
    # Fixing the file restores health.
    write(folder, "support.toml", plan('"+15550100100"', extra='voice = "Puck"\n'))
    assert store.reload() is True
    assert store.healthy
    assert store.last_error is None
    assert store.reload_failures == 1  # a count since start-up, not a state


def test_deleting_a_plan_removes_it(folder: Path) -> None:
    """A removed file's numbers fall back to the default for new calls."""
    store = DialplanStore(folder)
    (folder / "support.toml").unlink()
    assert store.reload() is True
    assert store.current.match("+15550100100").name == "default"


async def test_watch_picks_up_a_file_edit(watching: DialplanStore, folder: Path) -> None:
    """The poller notices an edited file and puts the new book in force without a signal."""
    write(folder, "support.toml", plan('"+15550100100"', extra='voice = "Puck"\n'))
    await _until(lambda: watching.current.match("+15550100100").voice == "Puck")


async def test_watch_picks_up_a_new_file(watching: DialplanStore, folder: Path) -> None:
    """A new plan file starts answering its numbers."""
    write(folder, "spanish.toml", plan('"+34*"'))
    await _until(lambda: watching.current.match("+34911234567").name == "spanish")


async def test_watch_picks_up_an_instruction_file_edit(tmp_path: Path) -> None:
    """Editing a system_instruction_file (not the .toml) also reloads."""
    write(tmp_path, "default.toml", 'default = true\nsystem_instruction_file = "prompt.md"\n')
    write(tmp_path, "prompt.md", "Be brief.")
    store = DialplanStore(tmp_path, poll_interval_s=0.02)
    task = asyncio.create_task(store.watch())
    try:
        write(tmp_path, "prompt.md", "Be very brief indeed.")
        await _until(lambda: store.current.default.system_instruction == "Be very brief indeed.")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watch_keeps_last_good_book_on_broken_edit(
    watching: DialplanStore, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A half-written or broken file seen by the poller is rejected; the fix is picked up next."""
    book = watching.current
    with caplog.at_level(logging.WARNING, logger="gateway.dialplan"):
        write(folder, "support.toml", 'numbers = ["+15550100100"\n')
        await _until(lambda: not watching.healthy)
    assert watching.current is book
    assert any(r.__dict__.get("field") == "end of file" for r in caplog.records)
    write(folder, "support.toml", plan('"+15550100100"', extra='voice = "Puck"\n'))
    await _until(lambda: watching.healthy and watching.current is not book)
    assert watching.current.match("+15550100100").voice == "Puck"


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="SIGHUP is POSIX only")
async def test_sighup_triggers_a_reload(folder: Path) -> None:
    """SIGHUP reloads at once, even when the next poll is far away; the handler is removed on exit."""
    store = DialplanStore(folder, poll_interval_s=3600)
    # Edit before watching starts, so only the signal can make the store notice.
    write(folder, "support.toml", plan('"+15550100100"', extra='voice = "Puck"\n'))
    task = asyncio.create_task(store.watch())
    await asyncio.sleep(0)  # let watch() install its handler in this loop
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        await _until(lambda: store.current.match("+15550100100").voice == "Puck")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


async def test_watcher_survives_an_unexpected_reload_failure(
    watching: DialplanStore, folder: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception during reload is logged, the book is kept, and watching goes on."""
    book = watching.current

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("gateway.dialplan.store.load_dialplans", explode)
    with caplog.at_level(logging.ERROR, logger="gateway.dialplan"):
        write(folder, "support.toml", plan('"+15550100100"', extra='voice = "Puck"\n'))
        await _until(lambda: not watching.healthy)
    assert watching.current is book
    assert any("unexpectedly" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    write(folder, "support.toml", plan('"+15550100100"', extra='voice = "Charon"\n'))
    await _until(lambda: watching.current.match("+15550100100").voice == "Charon")
