"""Who may use the operator endpoints (``/admin``, ``/metrics``) and the unsigned development webhook.

Both rules answer "is this the operator?" the same way, in one place:

* with a token configured, a request must carry ``Authorization: Bearer <token>``;
* without one, only a *direct* loopback client is trusted. A request that came through a proxy
  (``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``) is not direct even when the proxy itself
  connects from 127.0.0.1: a tunnel or reverse proxy on the same host would otherwise make every
  internet client look local. The ``Host`` header must name this host too, so a web page the
  operator opens cannot reach the loopback API through DNS rebinding.
"""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web

from gateway.server.state import SETTINGS

_PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")

ADMIN_REFUSAL = "forbidden: loopback only, or send Authorization: Bearer $GATEWAY_ADMIN_TOKEN"


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def is_direct_loopback(request: web.BaseRequest) -> bool:
    """The peer is this host, no proxy forwarded the request, and it was addressed to this host."""
    if any(h in request.headers for h in _PROXY_HEADERS):
        return False
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    return _is_loopback(request.remote or "") and _is_loopback(host.strip("[]").lower())


def bearer_matches(request: web.BaseRequest, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time (as bytes: headers may be non-ASCII)."""
    given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, f"Bearer {token}".encode())


def admin_allowed(request: web.Request) -> bool:
    """Whether ``request`` may read operator endpoints (admin API, metrics)."""
    token = request.app[SETTINGS].admin_token
    if token:
        return bearer_matches(request, token)
    return is_direct_loopback(request)


def require_admin(request: web.Request) -> None:
    """Raise 403 unless :func:`admin_allowed`. The answer says how to get in, and nothing else."""
    if not admin_allowed(request):
        raise web.HTTPForbidden(text=ADMIN_REFUSAL)
