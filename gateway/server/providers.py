"""The phone providers the gateway serves, in one table: each brings its routes (webhook or answer
request, media stream), and everything behind them is shared (gateway/server/media.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from gateway.server import (
    asterisk,
    browser,
    exotel,
    freeswitch,
    jambonz,
    plivo,
    signalwire,
    telnyx,
    twilio,
    vonage,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: provider name → its routes (method, path, handler).
PROVIDERS: dict[str, Sequence[tuple[str, str, Handler]]] = {
    "twilio": twilio.ROUTES,
    "plivo": plivo.ROUTES,
    "exotel": exotel.ROUTES,
    "telnyx": telnyx.ROUTES,
    "signalwire": signalwire.ROUTES,
    "vonage": vonage.ROUTES,
    "freeswitch": freeswitch.ROUTES,
    "jambonz": jambonz.ROUTES,
    # chan_websocket; AudioSocket is a TCP listener of its own (gateway/server/audiosocket.py).
    "asterisk": asterisk.ROUTES,
    # The softphone page at /phone and its socket (16 kHz PCM16 both ways): gateway/server/browser.py.
    "browser": browser.ROUTES,
}


def add_routes(app: web.Application) -> None:
    """Serve every provider's routes."""
    for routes in PROVIDERS.values():
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
