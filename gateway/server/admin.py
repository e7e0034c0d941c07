"""Operator endpoints: the admin API, ``/metrics`` and the live web page.

Everything here answers only the operator (see :mod:`gateway.server.access`: a bearer
``GATEWAY_ADMIN_TOKEN`` when one is set, else direct loopback clients). The one exception is the
page's static shell (HTML/JS, no data) when a token is set: a browser cannot attach a bearer
header to a navigation, so the page asks for the token and sends it with each API request.

Routes:

* ``GET /admin/calls`` — active calls (with live transcripts) and recently finished ones; with several
  replicas (gateway/server/cluster.py) the active calls of every live replica, each with its ``instance``;
* ``GET /admin/calls/{sid}`` — one call: live while active (here or on another replica), then from
  memory or the record store;
* ``POST /admin/calls/{sid}/hangup`` — end a call, on whichever replica carries it (JSON body, so a
  cross-site form cannot);
* ``GET /admin/records[?limit=&dialplan=]``, ``GET /admin/records/{id}`` — the durable records;
* ``GET /metrics`` — Prometheus text format;
* ``GET /admin/`` — the web page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from prometheus_client import Histogram

from gateway.errors import RecordError
from gateway.metrics import CONTENT_TYPE, CallDepths
from gateway.records.hub import Observability
from gateway.records.model import CallRecord
from gateway.server.access import admin_allowed, require_admin
from gateway.server.inspector import call_page, setup_inspector, wants_page
from gateway.server.state import CALLS, CLUSTER, DIALPLANS, LIMITS, OBSERVABILITY, SETTINGS

if TYPE_CHECKING:
    from gateway.server.cluster import Cluster

_LOG = logging.getLogger("gateway.admin")
T = TypeVar("T")
STATIC = Path(__file__).parent / "static"
#: How often recordings past their retention are looked for.
PURGE_INTERVAL_S = 3600.0
_PAGE_HEADERS = {
    # The page renders caller speech: no inline script, nothing from elsewhere, no framing.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def setup_admin(app: web.Application) -> None:
    """Create the app's :class:`Observability` and add the operator routes to ``app``."""
    calls = app[CALLS]

    def depths() -> Iterator[CallDepths]:
        return (bridge.depths() for bridge in list(calls.active.values()))

    app[OBSERVABILITY] = Observability(app[SETTINGS], depths=depths)
    app.router.add_get("/admin/calls", list_calls)
    app.router.add_get("/admin/calls/{call_sid}", show_call)
    app.router.add_post("/admin/calls/{call_sid}/hangup", hang_up)
    app.router.add_get("/admin/records", list_records)
    app.router.add_get("/admin/records/{call_id}", show_record)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/admin", page)
    app.router.add_get("/admin/", page)
    app.router.add_get("/admin/app.js", script)
    setup_inspector(app)  # the call page's data, search, summary (gateway/server/inspector.py)
    app.cleanup_ctx.append(_observability)
    app.on_shutdown.insert(0, _begin_drain)


async def _observability(app: web.Application) -> AsyncIterator[None]:
    hub = app[OBSERVABILITY]
    await hub.start()
    purge = asyncio.create_task(_purge_loop(app), name="recordings-purge")
    lag = asyncio.create_task(_loop_lag(app, hub.metrics.loop_lag), name="loop-lag")
    yield
    for task in (purge, lag):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await hub.stop()


#: How often the event loop's lateness is sampled (four wake-ups a second for the whole process).
LAG_INTERVAL_S = 0.25


async def _loop_lag(app: web.Application, histogram: Histogram) -> None:
    """Sample how late the loop runs a timer: calls feel a busy loop as late audio before anything else.
    Each sample also feeds overload protection (gateway/server/load.py), with the CPU share."""
    loop = asyncio.get_running_loop()
    load, calls = app[LIMITS].load, app[CALLS]
    while True:
        due = loop.time() + LAG_INTERVAL_S
        await asyncio.sleep(LAG_INTERVAL_S)
        lag = max(0.0, loop.time() - due)
        histogram.observe(lag)
        load.sample(lag, len(calls.active))


async def _purge_loop(app: web.Application) -> None:
    hub, dialplans = app[OBSERVABILITY], app[DIALPLANS]
    while True:
        try:
            await hub.purge_recordings(dialplans.current.plans)
        except OSError as exc:
            _LOG.warning("recordings purge failed", extra={"error": str(exc)})
        await asyncio.sleep(PURGE_INTERVAL_S)


async def _begin_drain(app: web.Application) -> None:
    """Shutdown started: /readyz says so before calls are closed, so balancers stop sending new ones."""
    app[OBSERVABILITY].draining = True


def is_draining(app: web.Application) -> bool:
    return OBSERVABILITY in app and app[OBSERVABILITY].draining


# --- admin API ------------------------------------------------------------------------------------


async def list_calls(request: web.Request) -> web.Response:
    require_admin(request)
    writer = request.app[OBSERVABILITY].writer
    records = (
        writer.health() if writer is not None else {"pending": 0, "failing": False, "error": "", "dropped": 0}
    )
    doc = request.app[CALLS].list()
    instance = request.app[OBSERVABILITY].instance
    for call in doc["active"]:
        call["instance"] = instance
    cluster = request.app.get(CLUSTER)
    if cluster is not None:
        doc["cluster"] = await _cluster_calls(cluster, doc["active"])
    return web.json_response({**doc, "records": records})


async def _cluster_calls(cluster: Cluster, active: list[dict[str, Any]]) -> dict[str, Any]:
    """Add the other replicas' active calls to ``active``; what the listing knows of the cluster."""
    from gateway.server.cluster_admission import REDIS_ERRORS

    try:
        remote, instances = await cluster.remote_calls()
    except REDIS_ERRORS as exc:
        _LOG.warning("admin: the other replicas' calls are unavailable", extra={"error": str(exc)})
        return {"instance": cluster.instance, "instances": [], "error": f"Redis: {type(exc).__name__}"}
    active.extend(remote)
    return {"instance": cluster.instance, "instances": instances}


async def show_call(request: web.Request) -> web.StreamResponse:
    """A call from memory (live transcript while active); older ones from the record store. A browser
    navigating here gets the call page instead (gateway/server/inspector.py)."""
    if wants_page(request):
        return await call_page(request)
    require_admin(request)
    call_sid = request.match_info["call_sid"]
    live = await _live_call(request, call_sid)
    if live is None and (other := await _resolve(request, call_sid)) != call_sid:
        live = await _live_call(request, other)  # a provider's request id for a call now running
    if live is not None:
        return live
    record = await _record(request, call_sid)
    return web.json_response({"state": "ended" if record.ended else "unfinished", **record.as_dict()})


async def _live_call(request: web.Request, call_sid: str) -> web.Response | None:
    """The call while it is active, here or on another replica; None when it is not."""
    doc = request.app[CALLS].get(call_sid)
    if doc is not None:
        return web.json_response({**doc, "instance": request.app[OBSERVABILITY].instance})
    cluster = request.app.get(CLUSTER)
    if cluster is not None:
        remote = await _on_cluster(cluster.find_call(call_sid))
        if remote is not None:
            return web.json_response({"state": "active", **remote})
    return None


async def _resolve(request: web.Request, call_sid: str) -> str:
    """The call ``call_sid`` is another name of (records.store.ALIAS_EVENT), else itself."""
    try:
        return await request.app[OBSERVABILITY].resolve(call_sid)
    except RecordError:  # records off: no other names are known
        return call_sid


async def hang_up(request: web.Request) -> web.Response:
    require_admin(request)
    if request.content_type != "application/json":
        # A cross-site HTML form cannot send JSON without a CORS preflight we never answer.
        raise web.HTTPUnsupportedMediaType(text="send Content-Type: application/json")
    call_sid = request.match_info["call_sid"]
    bridge = request.app[CALLS].active.get(call_sid)
    cluster = request.app.get(CLUSTER)
    if bridge is None and cluster is not None:
        # Carried by another replica: its control channel does it, and says whether it could.
        outcome, owner = await _on_cluster(cluster.hang_up(call_sid, peer=request.remote or ""))
        if outcome == "taken":
            body = {"call_sid": call_sid, "hung_up": True, "instance": owner}
            return web.json_response(body, status=202)
        if outcome == "ending":
            raise web.HTTPConflict(text="the call is already ending")
        if outcome == "unreachable":
            raise web.HTTPServiceUnavailable(text=f"the replica carrying the call ({owner}) did not answer")
    if bridge is None:
        raise web.HTTPNotFound(text="no such active call")
    if not bridge.hang_up("admin", "hung up from the admin API"):
        raise web.HTTPConflict(text="the call is already ending")
    bridge.log.info("hang-up requested by the operator", extra={"peer": request.remote})
    return web.json_response({"call_sid": call_sid, "hung_up": True}, status=202)


async def _on_cluster(work: Awaitable[T]) -> T:
    """``work`` against the cluster's Redis; unreachable, the request gets a 503 saying so."""
    from gateway.server.cluster_admission import REDIS_ERRORS

    try:
        return await work
    except REDIS_ERRORS as exc:
        _LOG.warning("admin: the cluster registry is unavailable", extra={"error": str(exc)})
        raise web.HTTPServiceUnavailable(text="the other replicas cannot be reached (Redis)") from exc


async def list_records(request: web.Request) -> web.Response:
    require_admin(request)
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be a whole number") from None
    dialplan = request.query.get("dialplan") or None
    try:
        records = await request.app[OBSERVABILITY].recent_calls(limit=limit, dialplan=dialplan)
    except RecordError as exc:
        raise web.HTTPServiceUnavailable(text=str(exc)) from exc
    summaries = []
    for record in records:
        doc = record.as_dict()
        for key in ("turns", "tool_calls", "events", "gemini_sessions"):
            doc.pop(key)
        summaries.append(doc)
    return web.json_response({"records": summaries})


async def show_record(request: web.Request) -> web.Response:
    require_admin(request)
    record = await _record(request, request.match_info["call_id"])
    return web.json_response(record.as_dict())


async def _record(request: web.Request, call_id: str) -> CallRecord:
    try:
        record = await request.app[OBSERVABILITY].get_call(call_id)
    except RecordError as exc:
        raise web.HTTPServiceUnavailable(text=str(exc)) from exc
    if record is None:
        raise web.HTTPNotFound(text="no such call")
    return record


async def metrics(request: web.Request) -> web.Response:
    require_admin(request)
    body = request.app[OBSERVABILITY].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


# --- the web page -----------------------------------------------------------------------------------


def _page_allowed(request: web.Request) -> bool:
    # With a token the shell is public (it holds no data; the API still wants the token).
    return bool(request.app[SETTINGS].admin_token) or admin_allowed(request)


async def page(request: web.Request) -> web.StreamResponse:
    if not _page_allowed(request):
        require_admin(request)
    if request.path == "/admin":
        raise web.HTTPFound("/admin/")
    return web.FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)


async def script(request: web.Request) -> web.StreamResponse:
    if not _page_allowed(request):
        require_admin(request)
    return web.FileResponse(
        STATIC / "app.js", headers={**_PAGE_HEADERS, "Content-Type": "text/javascript; charset=utf-8"}
    )
