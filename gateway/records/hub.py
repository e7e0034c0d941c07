"""The gateway's observability parts for one application: metrics, the record store and writer,
and audio recordings with their retention. The server builds one and hands each call an observer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from gateway.dialplan.model import Dialplan
from gateway.errors import RecordError
from gateway.metrics import CallDepths, GatewayMetrics
from gateway.records.model import CallRecord
from gateway.records.observer import CallObserver
from gateway.records.recording import CallRecording, purge_recordings, recording_path
from gateway.records.store import ClosedCall, RecordStore, open_store
from gateway.records.writer import RecordWriter
from gateway.settings import Settings

_LOG = logging.getLogger("gateway.records")


#: Heartbeats per lease, and heartbeats between two sweeps for expired leases: with the default
#: 30 s lease, a replica renews its own every 6 s and looks at the others' every 12 s.
BEATS_PER_LEASE = 5
SWEEP_EVERY = 2


def new_instance_id() -> str:
    """``host:pid:start``, unique per process start: container replicas are all pid 1, and a
    restarted StatefulSet pod keeps its hostname, so ``host:pid`` alone names two processes."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _instance_alive(instance: str) -> bool:
    """Whether the gateway process ``host:pid[:start]`` may still be running (only this host's can
    be checked; this process's own identity is the caller's business)."""
    host, _, rest = instance.partition(":")
    pid, _, _start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    if int(pid) == os.getpid():
        return False  # our pid, another start: an earlier process (a restarted container is pid 1 again)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists (another user's process, say)
    return True


class Observability:
    """Owns the writer task, the recording thread and the recordings being finalised."""

    def __init__(
        self,
        settings: Settings,
        *,
        depths: Callable[[], Iterable[CallDepths]] | None = None,
        store: RecordStore | None = None,
        instance: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = GatewayMetrics(depths)
        if store is None and settings.records:
            store = open_store(settings.database_url, settings.data_dir)
        self.store = store
        #: This process in the records and among replicas (``host:pid:start``; unique per start).
        self.instance = instance or new_instance_id()
        self._max_call_s = settings.max_call_s
        #: The lease: a replica silent this long (wall clock, shared by replicas) counts as dead.
        self.lease_s = settings.records_lease_s
        self.heartbeat_s = self.lease_s / BEATS_PER_LEASE
        self._clock = clock
        #: Since when heartbeats have succeeded without a gap (None: the store is failing).
        self._beating_since: float | None = None
        self._lease_failing = False
        self._orphans_checked = False
        self._lease_task: asyncio.Task[None] | None = None
        self._stop_lease = asyncio.Event()
        self.writer = (
            RecordWriter(store, metrics=self.metrics, instance=self.instance) if store is not None else None
        )
        self.recordings_root = settings.data_dir / "recordings"
        self._executor: ThreadPoolExecutor | None = None
        self._finishing: set[asyncio.Task[None]] = set()
        self._opened = False
        #: Set when shutdown begins, so /readyz turns away new calls while active ones finish.
        self.draining = False

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store (a failure is logged; the writer and the lease keep retrying), close what dead
        processes left running, take this instance's lease, and start the writer."""
        if self.store is not None:
            try:
                await self.opened_store()
            except RecordError as exc:
                _LOG.error("call records unavailable for now; retrying", extra={"error": str(exc)})
                self._lease_failing = True  # said once: the heartbeats retrying it stay quiet
            else:
                _LOG.info("call records", extra={"store": self.store.description, "instance": self.instance})
                await self.beat()  # first closes what dead processes left running (on the first success)
            self._lease_task = asyncio.create_task(self._lease_loop(), name="records-lease")
        if self.writer is not None:
            self.writer.start()

    async def _close_orphans(self, store: RecordStore) -> bool:
        """Calls a killed gateway left "running" are closed now, not shown as live forever. Whether
        the check ran (it is retried with the next heartbeat when the store failed)."""
        try:
            closed = await store.close_orphans(
                instance=self.instance, alive=_instance_alive, max_call_s=self._max_call_s, now=self._clock()
            )
        except RecordError as exc:
            _LOG.warning("could not close calls left open by an earlier process", extra={"error": str(exc)})
            return False
        self._closed("closed call records an earlier gateway process left running", "startup", closed)
        return True

    def _closed(self, message: str, check: str, closed: Sequence[ClosedCall]) -> None:
        if not closed:
            return
        self.metrics.records_orphans_closed.labels(check).inc(len(closed))
        _LOG.warning(
            message,
            extra={
                "calls": len(closed),
                "call_ids": [c.call_id for c in closed[:20]],
                "instances": sorted({c.instance for c in closed}),
            },
        )

    # --- the lease ------------------------------------------------------------------------------
    async def beat(self) -> None:
        """Renew this instance's lease. A failure is logged once per outage; the next beat retries."""
        if self.store is None:
            return
        try:
            store = await self.opened_store()
            if not self._orphans_checked:
                # Before the first heartbeat, so a previous process's last one still dates its calls' end.
                self._orphans_checked = await self._close_orphans(store)
            now = self._clock()
            await store.heartbeat(self.instance, now)
        except RecordError as exc:
            if not self._lease_failing:
                _LOG.warning("records lease not renewed; retrying", extra={"error": str(exc)})
            self._lease_failing = True
            self._beating_since = None
            return
        if self._lease_failing:
            _LOG.info("records lease renewed again", extra={"instance": self.instance})
            self._lease_failing = False
        if self._beating_since is None:
            self._beating_since = now

    async def sweep(self) -> list[ClosedCall]:
        """Close the calls of replicas whose lease expired (killed, crashed, cut off).

        Only once this instance's own heartbeats have gone through for a whole lease: after a store
        outage (or at start) the live replicas get that long to renew theirs before anyone judges them.
        """
        if self.store is None or self._beating_since is None:
            return []
        now = self._clock()
        if now - self._beating_since < self.lease_s:
            return []
        try:
            closed = await self.store.close_expired(instance=self.instance, lease_s=self.lease_s, now=now)
        except RecordError as exc:
            _LOG.warning("could not close the calls of stopped replicas", extra={"error": str(exc)})
            return []
        self._closed("closed call records of a gateway replica that stopped (lease expired)", "lease", closed)
        return closed

    async def _lease_loop(self) -> None:
        beats = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_lease.wait(), self.heartbeat_s)
            if self._stop_lease.is_set():
                return
            beats += 1
            try:
                await self.beat()
                if beats % SWEEP_EVERY == 0:
                    await self.sweep()
            except Exception:  # a bug here must not end the lease: others would close our live calls
                _LOG.exception("records lease task failed; continuing", extra={"instance": self.instance})

    async def stop(self) -> None:
        """Finalise recordings, write the queued records, give up the lease, close the store."""
        task, self._lease_task = self._lease_task, None
        if task is not None:
            # Not cancelled mid-statement (that could break a PostgreSQL connection): it stops between beats.
            self._stop_lease.set()
            try:
                async with asyncio.timeout(15.0):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
        if self.writer is not None:
            await self.writer.stop()
        if self.store is not None:
            await self._retire(self.store)
            await self.store.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _retire(self, store: RecordStore) -> None:
        """A clean stop: drop the lease so nobody waits for it, closing any call whose end was not
        written. Skipped while the store fails (the writer just gave up): the lease then expires."""
        if self._beating_since is None or (self.writer is not None and self.writer.last_error):
            return
        try:
            closed = await store.retire(self.instance, self._clock())
        except RecordError as exc:
            _LOG.warning("records lease not released; it expires by itself", extra={"error": str(exc)})
            return
        self._closed("closed call records this gateway could not finish before stopping", "shutdown", closed)

    async def opened_store(self) -> RecordStore:
        if self.store is None:
            raise RecordError("call records are turned off (GATEWAY_RECORDS=0)")
        if not self._opened:
            await self.store.open()
            self._opened = True
        return self.store

    # --- calls ----------------------------------------------------------------------------------
    def observer(
        self,
        *,
        call_id: str,
        stream_id: str,
        from_number: str,
        to_number: str,
        plan: Dialplan,
        audio_codec: str = "ulaw",
        audio_rate: int = 8000,
    ) -> CallObserver:
        """A started call's observer: its record is opened and it counts as active from now on.
        ``audio_codec``/``audio_rate``: the stream's format, which a recording keeps."""
        recording = None
        if plan.recording.enabled:
            recording = CallRecording(
                recording_path(self.recordings_root, plan.name, call_id),
                self._recording_thread(),
                codec=audio_codec,
                rate=audio_rate,
            )
        observer = CallObserver(
            call_id=call_id,
            dialplan=plan.name,
            writer=self.writer,
            metrics=self.metrics,
            recording=recording,
            on_recording_done=self._finish_recording,
        )
        observer.opened(
            stream_id=stream_id, from_number=from_number, to_number=to_number, dialplan_version=plan.version
        )
        observer.session_started()
        return observer

    def _recording_thread(self) -> ThreadPoolExecutor:
        if self._executor is None:
            # One thread keeps each file's chunks in order; recordings are a trickle of 32 KB/s each.
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recordings")
        return self._executor

    def _finish_recording(self, recording: CallRecording) -> None:
        task = asyncio.create_task(recording.close(), name=f"recording-close:{recording.path.name}")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def purge_recordings(self, plans: Iterable[Dialplan]) -> int:
        """Apply every plan's ``recording.retention_days`` to its recordings folder."""
        retention: Mapping[str, int | None] = {p.name: p.recording.retention_days for p in plans}
        if not any(v is not None for v in retention.values()):
            return 0
        loop = asyncio.get_running_loop()
        deleted = await loop.run_in_executor(
            self._recording_thread(), purge_recordings, self.recordings_root, retention
        )
        if deleted:
            _LOG.info("recordings past retention deleted", extra={"deleted": deleted})
        return deleted

    # --- reads (admin API, CLI) -------------------------------------------------------------------
    async def recent_calls(self, limit: int = 50, dialplan: str | None = None) -> list[CallRecord]:
        store = await self.opened_store()
        return await store.list_calls(limit=limit, dialplan=dialplan)

    async def get_call(self, call_id: str) -> CallRecord | None:
        store = await self.opened_store()
        return await store.get_call(call_id)

    async def resolve(self, call_id: str) -> str:
        """The call ``call_id`` names (another name of it, when a provider gave it two: store.ALIAS_EVENT)."""
        store = await self.opened_store()
        return await store.resolve(call_id)
