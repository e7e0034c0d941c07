"""Typed keys for everything the aiohttp application holds."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from gateway.dialplan.store import DialplanStore
from gateway.gemini.session import LiveEndpoint
from gateway.records.hub import Observability
from gateway.security.tokens import StreamTokens
from gateway.server.calls import CallRegistry
from gateway.server.limits import LimitState
from gateway.server.preconnect import Preconnector
from gateway.settings import Settings
from gateway.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from gateway.server.cluster import Cluster  # imports redis: only where it is installed

SETTINGS = web.AppKey("settings", Settings)
DIALPLANS = web.AppKey("dialplans", DialplanStore)
LIVE_ENDPOINT = web.AppKey("live_endpoint", LiveEndpoint)
STREAM_TOKENS = web.AppKey("stream_tokens", StreamTokens)
CALLS = web.AppKey("calls", CallRegistry)
PRECONNECT = web.AppKey("preconnect", Preconnector)
MEDIA_SOCKETS = web.AppKey("media_sockets", weakref.WeakSet[web.WebSocketResponse])
LIMITS = web.AppKey("limits", LimitState)
#: Metrics, call records and recordings (see gateway/server/admin.py).
OBSERVABILITY = web.AppKey("observability", Observability)
#: Every tool dialplans may enable (gateway/tools/), built once per app.
TOOLS = web.AppKey("tools", ToolRegistry)
#: The shared outbound HTTP client (HTTP tools, Twilio REST); opened and closed with the app.
HTTP_CLIENT = web.AppKey("http_client", aiohttp.ClientSession)
#: This replica's link to the others (gateway/server/cluster.py); present only with GATEWAY_REDIS_URL.
CLUSTER: web.AppKey[Cluster] = web.AppKey("cluster")
