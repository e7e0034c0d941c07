"""Where a provider's transfer document lives, for providers whose transfer API takes a URL (Plivo,
SignalWire): the provider fetches that URL and runs the ``<Dial>`` it serves.

The URL's base is GATEWAY_PUBLIC_URL when set, else where the provider last reached this app's answer
webhook (scheme://host, as :func:`~gateway.server.media.public_base` reads it). Kept per app and
provider, weakly, so a finished app (tests make many) leaves nothing behind.
"""

from __future__ import annotations

import weakref

from aiohttp import web

from gateway.server.media import public_base
from gateway.server.state import SETTINGS

__all__ = ["remember_base", "transfer_url"]

_WEBHOOK_BASES: weakref.WeakKeyDictionary[web.Application, dict[str, str]] = weakref.WeakKeyDictionary()


def remember_base(request: web.Request, provider: str) -> str:
    """The request's public base, remembered as where ``provider`` reaches this app."""
    base = public_base(request)
    _WEBHOOK_BASES.setdefault(request.app, {})[provider] = base
    return base


def transfer_url(app: web.Application, provider: str, path: str) -> str:
    """The public URL of ``provider``'s transfer document at ``path``; "" while no base is known."""
    base = app[SETTINGS].public_url or _WEBHOOK_BASES.get(app, {}).get(provider, "")
    return base + path if base else ""
