"""Build the gateway's aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import weakref
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.dialplan.store import DialplanStore
from gateway.gemini.session import LiveEndpoint
from gateway.security.tokens import StreamTokens
from gateway.server import twilio
from gateway.server.calls import CallRegistry
from gateway.server.preconnect import Preconnector
from gateway.server.state import (
    CALLS,
    DIALPLANS,
    LIVE_ENDPOINT,
    MEDIA_SOCKETS,
    PRECONNECT,
    SETTINGS,
    STREAM_TOKENS,
)
from gateway.settings import Settings


def create_app(settings: Settings, *, dialplans: DialplanStore | None = None) -> web.Application:
    """The gateway as an aiohttp app. ``dialplans`` may be given (tests); else loaded from settings."""
    app = web.Application(client_max_size=256 * 1024)
    app[SETTINGS] = settings
    app[DIALPLANS] = dialplans if dialplans is not None else DialplanStore(settings.dialplan_dir)
    app[LIVE_ENDPOINT] = LiveEndpoint(base_url=settings.gemini_url, api_key=settings.gemini_api_key)
    secret = settings.gateway_secret.encode() if settings.gateway_secret else secrets.token_bytes(32)
    app[STREAM_TOKENS] = StreamTokens(secret)
    app[CALLS] = CallRegistry()
    app[PRECONNECT] = Preconnector()
    app[MEDIA_SOCKETS] = weakref.WeakSet()
    app.router.add_post(twilio.VOICE_PATH, twilio.voice_webhook)
    app.router.add_get(twilio.MEDIA_PATH, twilio.media_stream)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/admin/calls", admin_list_calls)
    app.router.add_get("/admin/calls/{call_sid}", admin_show_call)
    app.cleanup_ctx.append(_dialplan_watch)
    app.on_shutdown.append(_close_preconnects)
    app.on_shutdown.append(_close_media_sockets)
    return app


async def _dialplan_watch(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[DIALPLANS].watch(), name="dialplan-watch")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


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
    store = request.app[DIALPLANS]
    if not store.healthy:
        return web.json_response({"ready": False, "reason": store.last_error}, status=503)
    return web.json_response({"ready": True})


def _admin_allowed(request: web.Request) -> bool:
    """Admin answers a bearer token when one is configured, else loopback clients only."""
    token = request.app[SETTINGS].admin_token
    if token:
        return secrets.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}")
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


async def admin_list_calls(request: web.Request) -> web.Response:
    if not _admin_allowed(request):
        raise web.HTTPForbidden(text="admin API: loopback only, or set GATEWAY_ADMIN_TOKEN")
    return web.json_response(request.app[CALLS].list())


async def admin_show_call(request: web.Request) -> web.Response:
    if not _admin_allowed(request):
        raise web.HTTPForbidden(text="admin API: loopback only, or set GATEWAY_ADMIN_TOKEN")
    record = request.app[CALLS].get(request.match_info["call_sid"])
    if record is None:
        raise web.HTTPNotFound(text="no such call")
    return web.json_response(record)
