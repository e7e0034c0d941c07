"""The gateway's observability parts for one application: metrics, the record store and writer,
and audio recordings with their retention. The server builds one and hands each call an observer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

from gateway.dialplan.model import Dialplan
from gateway.errors import RecordError
from gateway.metrics import CallDepths, GatewayMetrics
from gateway.records.model import CallRecord
from gateway.records.observer import CallObserver
from gateway.records.recording import CallRecording, purge_recordings, recording_path
from gateway.records.store import RecordStore, open_store
from gateway.records.writer import RecordWriter
from gateway.settings import Settings

_LOG = logging.getLogger("gateway.records")


def _instance_alive(instance: str) -> bool:
    """Whether the gateway process ``host:pid`` may still be running (only this host's can be checked)."""
    host, _, pid = instance.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
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
    ) -> None:
        self.metrics = GatewayMetrics(depths)
        if store is None and settings.records:
            store = open_store(settings.database_url, settings.data_dir)
        self.store = store
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self._max_call_s = settings.max_call_s
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
        """Open the store (a failure is logged; the writer keeps retrying) and start the writer."""
        if self.store is not None:
            try:
                await self._ensure_open()
            except RecordError as exc:
                _LOG.error("call records unavailable for now; retrying", extra={"error": str(exc)})
            else:
                _LOG.info("call records", extra={"store": self.store.description})
                await self._close_orphans(self.store)
        if self.writer is not None:
            self.writer.start()

    async def _close_orphans(self, store: RecordStore) -> None:
        """Calls a killed gateway left "running" are closed now, not shown as live forever."""
        try:
            closed = await store.close_orphans(
                instance=self.instance, alive=_instance_alive, max_call_s=self._max_call_s, now=time.time()
            )
        except RecordError as exc:
            _LOG.warning("could not close calls left open by an earlier process", extra={"error": str(exc)})
            return
        if closed:
            _LOG.warning(
                "closed call records an earlier gateway process left running",
                extra={"calls": len(closed), "call_ids": closed[:20]},
            )

    async def stop(self) -> None:
        """Finalise recordings, write the queued records, close the store."""
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
        if self.writer is not None:
            await self.writer.stop()
        if self.store is not None:
            await self.store.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _ensure_open(self) -> RecordStore:
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
        store = await self._ensure_open()
        return await store.list_calls(limit=limit, dialplan=dialplan)

    async def get_call(self, call_id: str) -> CallRecord | None:
        store = await self._ensure_open()
        return await store.get_call(call_id)
