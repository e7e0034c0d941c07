"""The call inspector and the dashboard's data: a call's timeline, its recording, search and a summary.

Same access rules as the rest of the admin (:mod:`gateway.server.access`): every JSON endpoint wants
the operator; the page shells and their scripts hold no data, so with a token set they load without
it and send the token with each API request (as ``/admin/`` does). A browser's ``<audio>`` element
cannot send a bearer header, so the timeline hands out a recording URL signed with an HMAC of the
admin token, valid for an hour and for that one call.

Routes:

* ``GET /admin/calls/{sid}`` with ``Accept: text/html`` (a browser navigation) — the call page
  (the JSON API keeps the route for everything else; see :func:`wants_page`);
* ``GET /admin/calls/{sid}/timeline`` — turns with timing and reply latency, tool calls, events,
  live levels while the call runs, and where the recording is;
* ``GET /admin/calls/{sid}/peaks`` — the recording's waveform (computed once, cached);
* ``GET /admin/calls/{sid}/recording`` — the WAV, with HTTP Range (aiohttp's FileResponse);
* ``GET /admin/search`` — records filtered by number, dialplan, dates, ended-by and transcript text;
* ``GET /admin/summary`` — the last hour for the dashboard;
* ``GET /admin/ui/{name}`` — the pages' scripts and style sheet.

Live levels cost the media path one integer compare per caller frame (``CallBridge.level_in``) and one
peak per Gemini audio chunk (``level_out``); :class:`LevelSampler` reads them five times a second, and
only while someone has the call page of a live call open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import time
import wave
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from gateway.bridge.call import CallBridge
from gateway.errors import RecordError
from gateway.records.model import CallRecord
from gateway.records.peaks import wav_peaks
from gateway.records.search import RUNNING, RecordQuery, dialplan_names, search_calls, summary
from gateway.server.access import admin_allowed, require_admin
from gateway.server.state import CALLS, OBSERVABILITY, SETTINGS

_LOG = logging.getLogger("gateway.admin")
STATIC = Path(__file__).parent / "static"
#: Files under /admin/ui/, with their content types (nothing else is served from the folder).
ASSETS = {
    "inspector.js": "text/javascript; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
}
PAGE_HEADERS = {
    # The pages render caller speech: no inline script, nothing from elsewhere, no framing.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; media-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: How long a signed recording URL works.
RECORDING_URL_S = 3600
#: Live levels: one sample per interval, kept for the last ``LEVELS_KEPT`` samples (10 minutes).
LEVEL_INTERVAL_S = 0.2
LEVELS_KEPT = 3000
#: The sampler runs while a live call page asked for its timeline this recently.
VIEWER_TTL_S = 15.0
#: Cached peaks (each a few tens of KB).
PEAKS_CACHED = 64
#: A reply-latency event belongs to the bot turn that started nearest to it, within this.
_REPLY_MATCH_S = 5.0


def setup_inspector(app: web.Application) -> None:
    """Add the inspector's routes and its level sampler to ``app`` (called from ``setup_admin``)."""
    sampler = LevelSampler(app)
    app[SAMPLER] = sampler
    app.router.add_get("/admin/calls/{call_sid}/timeline", timeline)
    app.router.add_get("/admin/calls/{call_sid}/peaks", peaks)
    app.router.add_get("/admin/calls/{call_sid}/recording", recording)
    app.router.add_get("/admin/search", search)
    app.router.add_get("/admin/summary", dashboard_summary)
    app.router.add_get("/admin/ui/{name}", asset)
    app.cleanup_ctx.append(sampler.run)


# --- live levels -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Levels:
    start: float
    caller: deque[int] = field(default_factory=lambda: deque(maxlen=LEVELS_KEPT))
    bot: deque[int] = field(default_factory=lambda: deque(maxlen=LEVELS_KEPT))
    frames_sent: int = 0
    dropped: int = 0


class LevelSampler:
    """Samples every active call's levels five times a second while a live call page is open."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self.levels: dict[str, _Levels] = {}
        self._watched_until = 0.0
        self._wake = asyncio.Event()

    def watched(self) -> None:
        """A live call page polled: keep sampling for a while."""
        self._watched_until = time.monotonic() + VIEWER_TTL_S
        self._wake.set()

    def sample(self, now: float) -> None:
        active = self._app[CALLS].active
        for sid in [s for s in self.levels if s not in active]:
            del self.levels[sid]
        for sid, bridge in list(active.items()):
            levels = self.levels.get(sid)
            if levels is None:
                levels = self.levels[sid] = _Levels(start=now, frames_sent=bridge.playout.frames_sent)
            self._sample_call(bridge, levels)

    @staticmethod
    def _sample_call(bridge: CallBridge, levels: _Levels) -> None:
        caller, bridge.level_in = bridge.level_in, 0
        sent = bridge.playout.frames_sent
        bot = bridge.level_out if sent > levels.frames_sent else 0
        levels.frames_sent = sent
        if len(levels.caller) == LEVELS_KEPT:
            levels.dropped += 1
        levels.caller.append(min(1000, caller * 1000 // 32768))
        levels.bot.append(min(1000, bot * 1000 // 32768))

    def of(self, call_sid: str) -> dict[str, Any] | None:
        levels = self.levels.get(call_sid)
        if levels is None:
            return None
        return {
            "start": levels.start + levels.dropped * LEVEL_INTERVAL_S,
            "interval_s": LEVEL_INTERVAL_S,
            "caller": list(levels.caller),
            "bot": list(levels.bot),
        }

    async def run(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self._loop(), name="inspector-levels")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _loop(self) -> None:
        while True:
            if time.monotonic() > self._watched_until:
                self.levels.clear()
                self._wake.clear()
                await self._wake.wait()  # nobody is looking: no work at all
            try:
                self.sample(time.time())
            except Exception:  # a bug here must not stop the meter for the rest of the process
                _LOG.exception("inspector: sampling live levels failed")
            await asyncio.sleep(LEVEL_INTERVAL_S)


SAMPLER = web.AppKey("inspector_sampler", LevelSampler)


# --- pages and assets ------------------------------------------------------------------------------


def _shell_allowed(request: web.Request) -> bool:
    # With a token the shells are public (they hold no data; the API still wants the token).
    return bool(request.app[SETTINGS].admin_token) or admin_allowed(request)


def wants_page(request: web.Request) -> bool:
    """A browser navigating to ``/admin/calls/{sid}`` (it asks for HTML); ``fetch`` and API clients
    send ``*/*`` or ``application/json`` and get the JSON."""
    return "text/html" in request.headers.get("Accept", "")


async def call_page(request: web.Request) -> web.StreamResponse:
    """The call page's shell; its script reads the call id from the path."""
    if not _shell_allowed(request):
        require_admin(request)
    return web.FileResponse(STATIC / "call.html", headers=PAGE_HEADERS)


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    content_type = ASSETS.get(name)
    if content_type is None:
        raise web.HTTPNotFound(text="no such file")
    if not _shell_allowed(request):
        require_admin(request)
    return web.FileResponse(STATIC / name, headers={**PAGE_HEADERS, "Content-Type": content_type})


# --- the timeline ----------------------------------------------------------------------------------


def attach_latencies(doc: dict[str, Any]) -> None:
    """Give each bot turn of a timeline ``doc`` its reply latency (``reply`` events) or, for the
    first, the greeting's (``greeting``): the nearest unclaimed bot turn by start time."""
    bots = [t for t in doc["turns"] if t["role"] == "bot"]
    claimed: set[int] = set()
    for event in doc["events"]:
        if event["kind"] not in ("reply", "greeting"):
            continue
        detail = event["detail"]
        candidates = [
            (abs(t["started_at"] - event["at"]), i)
            for i, t in enumerate(bots)
            if i not in claimed and abs(t["started_at"] - event["at"]) <= _REPLY_MATCH_S
        ]
        if not candidates:
            continue
        _, index = min(candidates)
        claimed.add(index)
        turn = bots[index]
        turn["audio_at"] = event["at"]
        if event["kind"] == "reply":
            turn["reply_latency_ms"] = detail.get("latency_ms")
            turn["speech_end_at"] = detail.get("speech_end_at")
        else:
            turn["greeting_latency_ms"] = detail.get("latency_ms")


def _live_turns(bridge: CallBridge) -> list[dict[str, Any]]:
    """The running call's turns straight from its transcript: finished ones, then those in progress."""
    turns: list[dict[str, Any]] = []
    for seq, t in enumerate(bridge.transcript.turns, start=1):
        doc: dict[str, Any] = {
            "seq": seq,
            "role": t.role,
            "text": t.text,
            "started_at": t.started_at,
            "ended_at": t.ended_at,
        }
        if t.interrupted:
            doc.update(interrupted=True, heard=t.heard or "")
        turns.append(doc)
    for item in bridge.transcript.as_list()[len(turns) :]:
        at = float(item["at"])  # type: ignore[arg-type]
        turns.append(
            {"seq": len(turns) + 1, "role": item["role"], "text": item["text"], "started_at": at,
             "ended_at": None, "live": True}
        )  # fmt: skip
    return turns


def _recording_sig(token: str, call_id: str, expires: int) -> str:
    message = f"recording\n{call_id}\n{expires}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def _recording_url(request: web.Request, call_id: str) -> str:
    path = f"/admin/calls/{call_id}/recording"
    token = request.app[SETTINGS].admin_token
    if not token:
        return path
    expires = int(time.time()) + RECORDING_URL_S
    return path + "?" + urlencode({"expires": expires, "sig": _recording_sig(token, call_id, expires)})


async def _stored(request: web.Request, call_id: str) -> CallRecord | None:
    hub = request.app[OBSERVABILITY]
    if hub.store is None:
        return None
    try:
        return await hub.get_call(call_id)
    except RecordError as exc:
        raise web.HTTPServiceUnavailable(text=str(exc)) from exc


async def timeline(request: web.Request) -> web.Response:
    """Everything the call page draws, live (this replica's calls) or from the record."""
    require_admin(request)
    call_id = request.match_info["call_sid"]
    bridge = request.app[CALLS].active.get(call_id)
    record = await _stored(request, call_id)
    if bridge is None and record is None:
        raise web.HTTPNotFound(text="no such call")
    if record is not None:
        doc = record.as_dict()
        doc["state"] = "ended" if record.ended else "unfinished"
    else:
        doc = {"events": [], "tool_calls": [], "recording": None, "stats": {}, "usage": {}}
    if bridge is not None:
        sampler = request.app[SAMPLER]
        sampler.watched()
        snap = bridge.snapshot()
        doc.update(
            call_id=call_id,
            state="active",
            started_at=doc.get("started_at", snap["started_at"]),
            turns=_live_turns(bridge),
            levels=sampler.of(call_id),
            ended_at=None,
            **{k: snap[k] for k in ("from", "to", "dialplan", "dialplan_version")},
        )
        frames = {"frames_in": snap["frames_in"], "frames_out": snap["frames_out"]}
        doc["stats"] = {**doc.get("stats", {}), **frames}
        doc["instance"] = request.app[OBSERVABILITY].instance
    elif doc["state"] == "unfinished" and doc.get("instance") != request.app[OBSERVABILITY].instance:
        doc["state"] = "active_elsewhere"  # running on another replica (or its process died)
    doc["now"] = time.time()
    attach_latencies(doc)
    path = doc.get("recording")
    doc["recording"] = (
        {"url": _recording_url(request, call_id), "peaks_url": f"/admin/calls/{call_id}/peaks"}
        if path and doc["state"] == "ended"
        else None
    )
    doc.pop("gemini_sessions", None)
    return web.json_response(doc)


# --- the recording ---------------------------------------------------------------------------------


def _inside(root: Path, name: str) -> Path | None:
    """``name`` resolved, if it is a file under ``root`` (blocking: file-system calls)."""
    path = Path(name).resolve()
    if not path.is_relative_to(root.resolve()):
        _LOG.warning("recording outside the recordings folder refused", extra={"path": name})
        return None
    return path if path.is_file() else None


async def _recording_file(request: web.Request, call_id: str) -> tuple[Path, os.stat_result]:
    """The finished recording of ``call_id`` (it must lie under the recordings folder), and its stat."""
    record = await _stored(request, call_id)
    if record is None or not record.recording:
        raise web.HTTPNotFound(text="this call has no recording")
    root = request.app[OBSERVABILITY].recordings_root
    path = await asyncio.to_thread(_inside, root, record.recording) if record.ended else None
    if path is None:
        raise web.HTTPNotFound(text="the recording is not finished (or was deleted by its retention)")
    try:
        return path, await asyncio.to_thread(path.stat)
    except OSError:
        raise web.HTTPNotFound(text="the recording was deleted") from None


def _signed(request: web.Request, call_id: str) -> bool:
    token = request.app[SETTINGS].admin_token
    expires, sig = request.query.get("expires", ""), request.query.get("sig", "")
    if not token or not expires.isdigit() or int(expires) < time.time():
        return False
    return hmac.compare_digest(sig.encode(), _recording_sig(token, call_id, int(expires)).encode())


async def recording(request: web.Request) -> web.StreamResponse:
    """The WAV; Range requests (seeking in the player) are answered with 206 by FileResponse."""
    call_id = request.match_info["call_sid"]
    if not _signed(request, call_id):
        require_admin(request)
    path, _ = await _recording_file(request, call_id)
    headers = {
        "Content-Type": "audio/wav",
        "Cache-Control": "private, max-age=300",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'inline; filename="{path.name}"',
    }
    return web.FileResponse(path, headers=headers)


_PEAKS: OrderedDict[tuple[str, int, int], dict[str, Any]] = OrderedDict()


async def peaks(request: web.Request) -> web.Response:
    """The recording's waveform, computed once per file on a worker thread and cached."""
    require_admin(request)
    call_id = request.match_info["call_sid"]
    path, stat = await _recording_file(request, call_id)
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    doc = _PEAKS.get(key)
    if doc is None:
        try:
            doc = await asyncio.to_thread(wav_peaks, path)
        except (OSError, EOFError, wave.Error) as exc:
            raise web.HTTPNotFound(text=f"the recording cannot be read: {exc}") from exc
        _PEAKS[key] = doc
        while len(_PEAKS) > PEAKS_CACHED:
            _PEAKS.popitem(last=False)
    else:
        _PEAKS.move_to_end(key)
    return web.json_response(doc, headers={"Cache-Control": "private, max-age=300"})


# --- search and summary ----------------------------------------------------------------------------


def _when(value: str, name: str, *, end: bool = False) -> float | None:
    """A date (``2025-01-31``, the whole day; ``end``: up to its end), a date-time, or Unix seconds."""
    value = value.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise web.HTTPBadRequest(
            text=f"{name}: give a date (YYYY-MM-DD), a date-time or Unix seconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # the operator's local time, as the page shows times
    stamp = parsed.timestamp()
    return stamp + 86_400 if end and len(value) == 10 else stamp


def _int(request: web.Request, name: str, default: int) -> int:
    try:
        return int(request.query.get(name, default))
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a whole number") from None


def parse_query(request: web.Request) -> RecordQuery:
    q = request.query
    ended_by = q.get("ended_by", "").strip() or None
    return RecordQuery(
        number=q.get("number", "").strip() or None,
        dialplan=q.get("dialplan", "").strip() or None,
        since=_when(q.get("since", ""), "since"),
        until=_when(q.get("until", ""), "until", end=True),
        ended_by=ended_by,
        text=q.get("q", "").strip() or None,
        limit=_int(request, "limit", 25),
        offset=_int(request, "offset", 0),
    )


async def search(request: web.Request) -> web.Response:
    require_admin(request)
    query = parse_query(request)
    hub = request.app[OBSERVABILITY]
    if hub.store is None:
        raise web.HTTPServiceUnavailable(text="call records are turned off (GATEWAY_RECORDS=0)")
    try:
        store = await hub.opened_store()
        records, total = await search_calls(store, query)
        plans = await dialplan_names(store)
    except RecordError as exc:
        raise web.HTTPServiceUnavailable(text=str(exc)) from exc
    rows = []
    for record in records:
        doc = record.as_dict()
        for key in ("turns", "tool_calls", "events", "gemini_sessions", "stats", "usage"):
            doc.pop(key)
        rows.append(doc)
    return web.json_response(
        {
            "records": rows,
            "total": total,
            "offset": query.offset,
            "limit": query.limit,
            "dialplans": plans,
            "ended_by": [RUNNING, "caller", "gateway", "gemini", "admin"],
        }
    )


async def dashboard_summary(request: web.Request) -> web.Response:
    """The dashboard's numbers: live ones from this process, the last hour from the records."""
    require_admin(request)
    hub = request.app[OBSERVABILITY]
    now = time.time()
    doc: dict[str, Any] = {"active_calls": len(request.app[CALLS].active), "now": now}
    if hub.store is None:
        doc["records"] = None
        return web.json_response(doc)
    try:
        doc["records"] = await summary(await hub.opened_store(), now=now)
    except RecordError as exc:
        raise web.HTTPServiceUnavailable(text=str(exc)) from exc
    return web.json_response(doc)
