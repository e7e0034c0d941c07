"""Typed keys for everything the aiohttp application holds."""

from __future__ import annotations

import weakref

from aiohttp import web

from gateway.dialplan.store import DialplanStore
from gateway.gemini.session import LiveEndpoint
from gateway.security.tokens import StreamTokens
from gateway.server.calls import CallRegistry
from gateway.server.preconnect import Preconnector
from gateway.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
DIALPLANS = web.AppKey("dialplans", DialplanStore)
LIVE_ENDPOINT = web.AppKey("live_endpoint", LiveEndpoint)
STREAM_TOKENS = web.AppKey("stream_tokens", StreamTokens)
CALLS = web.AppKey("calls", CallRegistry)
PRECONNECT = web.AppKey("preconnect", Preconnector)
MEDIA_SOCKETS = web.AppKey("media_sockets", weakref.WeakSet[web.WebSocketResponse])
