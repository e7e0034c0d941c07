"""The record writer: calls hand it operations without waiting; one task commits them in batches.

A call never awaits the database. :meth:`RecordWriter.submit` appends to an in-memory queue and
wakes the writer task, which commits everything queued so far in one transaction, so a turn is on
disk a few milliseconds after it ended and a busy gateway still makes few commits. When the store
fails (disk full, PostgreSQL restarting) the batch is retried with backoff; if the outage outlasts
``max_pending`` operations the oldest are dropped and counted — calls go on either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from gateway.errors import RecordError
from gateway.metrics import GatewayMetrics
from gateway.records.model import CallClosed, RecordOp, TurnAdded
from gateway.records.store import RecordStore

_LOG = logging.getLogger("gateway.records")

#: Operations per transaction: large enough to amortise a commit, small enough to keep it short.
BATCH_MAX = 500


class RecordWriter:
    """Owns the queue of record operations and the task that writes them to ``store``."""

    def __init__(
        self,
        store: RecordStore,
        *,
        metrics: GatewayMetrics | None = None,
        max_pending: int = 100_000,
        retry_s: tuple[float, float] = (0.2, 5.0),
        instance: str = "",
    ) -> None:
        self.store = store
        #: Which gateway wrote a record (host:pid), for deployments sharing one database.
        self.instance = instance
        self._opened = False
        self.metrics = metrics
        self.max_pending = max_pending
        self._retry_first, self._retry_max = retry_s
        self._queue: deque[RecordOp] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: call id → highest turn ``seq`` committed, while the call is active (admin view).
        self._saved_turns: dict[str, int] = {}
        #: The store's last error while it is failing (empty once a write succeeds again).
        self.last_error = ""
        if metrics is not None:
            # Read at scrape time, so a store that cannot write shows its growing backlog at once.
            metrics.records_pending.set_function(lambda: len(self._queue))
            metrics.records_store_up.set_function(lambda: 0.0 if self.last_error else 1.0)
        self.written = 0
        self.dropped = 0
        self.failures = 0

    # --- the calls' side: never blocks ----------------------------------------------------------
    def submit(self, op: RecordOp) -> None:
        """Queue ``op``; it is committed after every operation submitted before it."""
        if self._closing and self._task is None:
            return
        queue = self._queue
        if len(queue) >= self.max_pending:
            queue.popleft()
            self.dropped += 1
            if self.metrics is not None:
                self.metrics.records_dropped.inc()
        queue.append(op)
        self._wake.set()

    def saved_turns(self, call_id: str) -> int:
        """How many of ``call_id``'s turns are committed (turn seqs start at 1)."""
        return self._saved_turns.get(call_id, 0)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def health(self) -> dict[str, object]:
        """For the admin view: what waits to be written, and why it cannot be, if it cannot."""
        return {
            "pending": len(self._queue),
            "failing": bool(self.last_error),
            "error": self.last_error,
            "dropped": self.dropped,
        }

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="record-writer")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (for at most ``timeout_s``), then stop the task."""
        self._closing = True
        self._wake.set()
        task = self._task
        if task is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(task)
        except TimeoutError:
            _LOG.error("call records lost: the store stayed unavailable", extra={"pending": len(self._queue)})
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.dropped += len(self._queue)
            self._queue.clear()
        self._task = None

    async def _run(self) -> None:
        queue, delay = self._queue, self._retry_first
        while True:
            if not queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [queue.popleft() for _ in range(min(len(queue), BATCH_MAX))]
            try:
                if not self._opened:
                    await self.store.open()
                    self._opened = True
                await self.store.write(batch)
            except RecordError as exc:
                self.failures += 1
                self.last_error = str(exc) or type(exc).__name__
                if self.metrics is not None:
                    self.metrics.record_write_errors.inc()
                if self.failures == 1 or delay >= self._retry_max:
                    _LOG.warning("call records not written; retrying", extra={"error": str(exc)})
                # Put the batch back in front, keeping order, and retry after a pause.
                queue.extendleft(reversed(batch))
                while len(queue) > self.max_pending:
                    queue.popleft()
                    self.dropped += 1
                    if self.metrics is not None:
                        self.metrics.records_dropped.inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            delay = self._retry_first
            if self.last_error:
                _LOG.info("call records written again", extra={"pending": len(queue)})
                self.last_error = ""
            self.written += len(batch)
            if self.metrics is not None:
                self.metrics.records_written.inc(len(batch))
            for op in batch:
                if isinstance(op, TurnAdded):
                    seen = self._saved_turns.get(op.call_id, 0)
                    self._saved_turns[op.call_id] = max(seen, op.turn.seq)
                elif isinstance(op, CallClosed):
                    self._saved_turns.pop(op.call_id, None)
