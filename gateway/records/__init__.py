"""Call records: durable per-turn history of every call, metrics hooks and optional audio recordings.

* :mod:`~gateway.records.model` — the record and its write operations (plain values, no I/O);
* :mod:`~gateway.records.store` — the store interface and shared SQL; ``sqlite`` and ``postgres`` backends;
* :mod:`~gateway.records.writer` — the task that commits operations in batches, off the media path;
* :mod:`~gateway.records.observer` — what one call reports (records, metrics, recording);
* :mod:`~gateway.records.recording` — stereo WAV of both legs and the retention purge;
* :mod:`~gateway.records.hub` — the application's set of all of the above;
* :mod:`~gateway.records.cli` — `gateway calls list` / `gateway calls show ID`.
"""

from gateway.records.model import CallRecord, EventRecord, ToolCallRecord, TurnRecord, Usage
from gateway.records.store import RecordStore, open_store

__all__ = ["CallRecord", "EventRecord", "RecordStore", "ToolCallRecord", "TurnRecord", "Usage", "open_store"]
