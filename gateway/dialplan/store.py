"""Live reload of the dialplan folder: poll for edits, reload on SIGHUP, never lose a good book.

Rules:

* :attr:`DialplanStore.current` is swapped in one assignment to a new immutable
  :class:`~gateway.dialplan.model.DialplanBook`. Calls in progress keep the ``Dialplan`` they
  started with; only new calls see an edit.
* A broken edit is rejected as a whole: the last good book stays in force, the reason is logged
  per file and field, :attr:`reload_failures` counts it and :attr:`healthy` turns false until a good
  edit arrives. It does not fail readiness: the instance still serves calls with the last good book,
  and a typo must not take a whole fleet out of its load balancer (reported on /metrics instead).
* Change detection polls names, sizes and mtimes (no inotify dependency). A half-written file
  is rejected and then picked up again on the next poll once the editor finishes writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Collection
from pathlib import Path

from gateway.dialplan.loader import dialplan_files, load_dialplans
from gateway.dialplan.model import DialplanBook
from gateway.errors import DialplanErrors

_Snapshot = frozenset[tuple[str, int, int]]
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


class DialplanStore:
    """The dialplans in force, reloaded while calls are up."""

    def __init__(
        self,
        directory: Path,
        *,
        known_tools: Collection[str] | None = None,
        poll_interval_s: float = 1.0,
        logger: Logger | None = None,
    ) -> None:
        """Load ``directory`` now.

        Raises:
            DialplanErrors: the initial load failed; the gateway must not start without plans.
        """
        self.directory = directory
        self.known_tools = known_tools
        self.poll_interval_s = poll_interval_s
        self.log: Logger = logger or logging.getLogger("gateway.dialplan")
        #: False while the newest edit is rejected (the last good book still serves calls).
        self.healthy = True
        self.last_error: str | None = None
        #: Rejected (or failed) reloads since start-up: ``gateway_dialplan_reload_failures_total``.
        self.reload_failures = 0
        self._lock = threading.Lock()
        self._snapshot = self._scan(None)
        self.current: DialplanBook = load_dialplans(directory, known_tools=known_tools)
        self._snapshot = self._scan(self.current)
        self.log.info(
            "dialplans loaded",
            extra={"dialplans": ",".join(f"{n}@{v}" for n, v in self.current.fingerprint)},
        )

    def _scan(self, book: DialplanBook | None) -> _Snapshot:
        """(path, mtime, size) of every dialplan file and every instruction file in use."""
        paths: set[Path] = set()
        with contextlib.suppress(OSError):
            paths.update(dialplan_files(self.directory))
        if book is not None:
            paths.update(p.instruction_file for p in book.plans if p.instruction_file is not None)
        entries: set[tuple[str, int, int]] = set()
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                entries.add((str(path), -1, -1))  # a vanished instruction file is a change too
                continue
            entries.add((str(path), st.st_mtime_ns, st.st_size))
        return frozenset(entries)

    def changed(self) -> bool:
        """Whether any dialplan or instruction file changed since the last (re)load attempt."""
        return self._scan(self.current) != self._snapshot

    def reload(self) -> bool:
        """Re-read the folder. Returns True when a new book is now in force.

        A broken edit is rejected (logged with file and field); the last good book stays.
        Re-reading unchanged files returns False and keeps the same book object.
        """
        with self._lock:
            # Snapshot *before* reading, so an edit that lands mid-read is seen by the next poll.
            self._snapshot = self._scan(self.current)
            try:
                book = load_dialplans(self.directory, known_tools=self.known_tools)
            except DialplanErrors as exc:
                self.healthy = False
                self.last_error = str(exc)
                self.reload_failures += 1
                for error in exc.errors:
                    self.log.warning(
                        "dialplan edit rejected; last good dialplans stay in force",
                        extra={"file": error.file, "field": error.field, "problem": error.problem},
                    )
                return False
            self.healthy = True
            self.last_error = None
            # Instruction files named by the new book are watched from now on.
            self._snapshot |= self._scan(book)
            if book.fingerprint == self.current.fingerprint:
                return False
            old = dict(self.current.fingerprint)
            new = dict(book.fingerprint)
            self.current = book
        self.log.info(
            "dialplans reloaded",
            extra={
                "changed": ",".join(f"{n}@{v}" for n, v in new.items() if old.get(n) != v) or "-",
                "removed": ",".join(sorted(old.keys() - new.keys())) or "-",
            },
        )
        return True

    async def watch(self) -> None:
        """Reload on file changes (polled every ``poll_interval_s``) and on SIGHUP, until cancelled."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        sighup = getattr(signal, "SIGHUP", None)
        installed = False
        if sighup is not None:
            try:
                loop.add_signal_handler(sighup, wake.set)
                installed = True
            except (NotImplementedError, RuntimeError, ValueError):
                # Windows loops, or a loop outside the main thread: polling still works.
                self.log.debug("SIGHUP reload unavailable in this event loop; polling only")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval_s):
                        await wake.wait()
                if wake.is_set():
                    wake.clear()
                    self.log.info("SIGHUP received; reloading dialplans")
                elif not await asyncio.to_thread(self.changed):
                    continue
                # File reads happen off the loop so live calls' media never waits on the disk.
                try:
                    await asyncio.to_thread(self.reload)
                except Exception:
                    # The watcher must outlive any surprise; the last good book stays in force.
                    self.healthy = False
                    self.reload_failures += 1
                    self.log.exception("dialplan reload failed unexpectedly; last good dialplans stay")
        finally:
            if installed and sighup is not None:
                loop.remove_signal_handler(sighup)
