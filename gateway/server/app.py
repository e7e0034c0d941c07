"""Build the gateway's aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
import platform
import secrets
import weakref
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

import gateway
from gateway.audio import resample
from gateway.dialplan.store import DialplanStore
from gateway.errors import ConfigError
from gateway.gemini.session import LiveEndpoint
from gateway.security.replay import close_guard, replay_guard
from gateway.security.tokens import StreamTokens
from gateway.server.access import admin_allowed
from gateway.server.admin import is_draining, setup_admin
from gateway.server.audiosocket import audiosocket_listener
from gateway.server.calls import CallRegistry
from gateway.server.connections import connection_state, handler_args, open_file_limit
from gateway.server.drain import DRAINING
from gateway.server.limits import LimitState
from gateway.server.outbound import setup_outbound
from gateway.server.preconnect import Preconnector
from gateway.server.providers import add_routes
from gateway.server.state import (
    CALLS,
    CLUSTER,
    DIALPLANS,
    HTTP_CLIENT,
    LIMITS,
    LIVE_ENDPOINT,
    MEDIA_SOCKETS,
    OBSERVABILITY,
    PRECONNECT,
    SETTINGS,
    STREAM_TOKENS,
    TOOLS,
)
from gateway.settings import DEFAULT_GEMINI_URL, Settings
from gateway.telephony.vonage import application_jwt
from gateway.tools.loader import adopt_dialplans, build_registry
from gateway.tools.registry import ToolRegistry


def create_app(
    settings: Settings, *, dialplans: DialplanStore | None = None, tools: ToolRegistry | None = None
) -> web.Application:
    """The gateway as an aiohttp app. ``dialplans`` and ``tools`` may be given; else built from settings."""
    # Idle and slow connections time out, and are counted against a cap sized by the open-file limit
    # (gateway/server/connections.py; serve it with GatewayRunner for the cap to apply).
    app = web.Application(
        client_max_size=256 * 1024, handler_args=handler_args(settings), middlewares=[connection_state]
    )
    app[SETTINGS] = settings
    app[TOOLS] = registry = tools if tools is not None else build_registry(settings)
    if dialplans is None:
        dialplans = DialplanStore(settings.dialplan_dir, known_tools=registry.names())
    adopt_dialplans(dialplans, registry)  # tool names are checked against the registry, now and on reload
    app[DIALPLANS] = dialplans
    app[LIVE_ENDPOINT] = live_endpoint(settings)
    app.cleanup_ctx.append(_live_credentials)
    secret = settings.gateway_secret.encode() if settings.gateway_secret else secrets.token_bytes(32)
    guard = replay_guard(settings.redis_url, prefix=settings.redis_prefix + "stream-nonce:")
    app[STREAM_TOKENS] = StreamTokens(secret, guard=guard)
    app[LIMITS] = LimitState.from_settings(
        settings, reserve_s=app[STREAM_TOKENS].ttl_s, files=open_file_limit()
    )
    app[CALLS] = CallRegistry()
    app[PRECONNECT] = Preconnector()
    app[MEDIA_SOCKETS] = weakref.WeakSet()
    add_routes(app)  # every provider's webhook and media stream (gateway/server/providers.py)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    setup_admin(app)
    setup_outbound(app, secret)  # POST /admin/api/calls and Twilio's outbound callbacks
    if settings.redis_url:
        _join_cluster(app)  # before the pressure is set: it goes to the cluster's admission
    app[LIMITS].admission.pressure = _pressure(app)
    app[OBSERVABILITY].metrics.watch_dialplans(lambda: (dialplans.healthy, dialplans.reload_failures))
    app[OBSERVABILITY].metrics.build.info(
        {
            "version": gateway.__version__,
            "python": platform.python_version(),
            "resampler": "c" if resample.COMPILED else "numpy",
        }
    )
    app.cleanup_ctx.append(_dialplan_watch)
    app.cleanup_ctx.append(_http_client)
    app.on_startup.append(_load_signing_keys)
    # Last in, first out: AudioSocket calls end before the HTTP client and the rest they use close.
    app.cleanup_ctx.append(audiosocket_listener)
    app.on_shutdown.append(_close_preconnects)
    app.on_cleanup.append(_close_replay_guard)
    app.on_shutdown.append(_close_media_sockets)
    return app


def _join_cluster(app: web.Application) -> None:
    """One replica of several (GATEWAY_REDIS_URL): admission, active calls and the admin API are shared
    through Redis (gateway/server/cluster.py); the per-process file budget still caps this replica."""
    from gateway.server.cluster import Cluster  # needs the 'redis' extra, only when clustered

    limits = app[LIMITS]
    cluster = Cluster.from_settings(
        app[SETTINGS],
        instance=app[OBSERVABILITY].instance,
        calls=app[CALLS],
        preconnect=app[PRECONNECT],
        local_cap=limits.budget.calls,
        reserve_s=app[STREAM_TOKENS].ttl_s,
    )
    limits.admission = cluster.admission
    app[CLUSTER] = cluster

    async def membership(app: web.Application) -> AsyncIterator[None]:
        await cluster.start()
        yield
        await cluster.stop()

    app.cleanup_ctx.append(membership)


def _pressure(app: web.Application) -> Callable[[], str | None]:
    """Why this instance takes no new call at all now: draining, or overloaded (server/load.py)."""
    limits, hub = app[LIMITS], app[OBSERVABILITY]

    def pressure() -> str | None:
        if hub.draining:
            return DRAINING
        load = limits.load
        return load.refusal(limits.admission.total) if load.enabled else None

    return pressure


def live_endpoint(settings: Settings) -> LiveEndpoint:
    """Gemini API (API key) or Vertex AI (ADC bearer tokens), as the settings say."""
    if settings.vertex:
        # The Gemini API's default host cannot serve Vertex: it means "the location's host" here.
        base_url = "" if settings.gemini_url == DEFAULT_GEMINI_URL else settings.gemini_url
        return LiveEndpoint.for_vertex(settings.vertex_project, settings.vertex_location, base_url=base_url)
    return LiveEndpoint(base_url=settings.gemini_url, api_key=settings.gemini_api_key)


async def _live_credentials(app: web.Application) -> AsyncIterator[None]:
    """Find the Live credentials at start-up (no ADC stops the gateway with one line), and keep a Vertex
    token fresh in the background until shutdown."""
    endpoint = app[LIVE_ENDPOINT]
    await endpoint.start()
    yield
    await endpoint.aclose()


async def _dialplan_watch(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[DIALPLANS].watch(), name="dialplan-watch")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    """One pooled client for outbound requests (HTTP tools, Twilio REST); tool threads stop with it."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30, connect=5)) as http:
        app[HTTP_CLIENT] = http
        yield
    app[TOOLS].close()


async def _load_signing_keys(app: web.Application) -> None:
    """Load Vonage's application key now, off the event loop: loading checks the RSA key (~35 ms), which
    on the loop at the first hang-up or dial would stall every call (and trip the loop-lag admission)."""
    app_id, key = app[SETTINGS].vonage_application_id, app[SETTINGS].vonage_private_key
    if app_id and key:
        with contextlib.suppress(ConfigError):  # reported where the key is used (gateway/server/vonage.py)
            await asyncio.to_thread(application_jwt, app_id, key)


async def _close_replay_guard(app: web.Application) -> None:
    await close_guard(app[STREAM_TOKENS].guard)


async def _close_preconnects(app: web.Application) -> None:
    await app[PRECONNECT].close()


async def _close_media_sockets(app: web.Application) -> None:
    """Shutting down: end every call with 1001 so each bridge tears down its Gemini session."""
    sockets = app[MEDIA_SOCKETS].copy()
    await asyncio.gather(
        *(ws.close(code=1001, message=b"gateway shutting down") for ws in sockets), return_exceptions=True
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "active_calls": len(request.app[CALLS].active)})


async def readyz(request: web.Request) -> web.Response:
    if is_draining(request.app):
        return web.json_response({"ready": False, "reason": "draining: shutting down"}, status=503)
    # Ready means this instance can serve calls: its plans loaded (the store refuses to start without
    # them). A rejected edit leaves the last good plans serving, so it is reported (log, /metrics
    # gateway_dialplans_healthy, the admin page) but does not take the instance out of its load balancer.
    store = request.app[DIALPLANS]
    if not store.healthy and admin_allowed(request):
        # The reason names dialplan files and fields: operators only (see gateway.server.access).
        rejected = {"last_edit_rejected": True, "reason": store.last_error}
        return web.json_response({"ready": True, "dialplans": rejected})
    return web.json_response({"ready": True})
