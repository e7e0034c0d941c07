"""Who may use the operator endpoints (``/admin``, ``/metrics``) and the unsigned development webhook,
and where a connection comes from.

Both rules answer "is this the operator?" the same way, in one place:

* with a token configured, a request must carry ``Authorization: Bearer <token>`` (the scheme in any
  case, RFC 7235 §2.1);
* without one, only a *direct* loopback client is trusted, and only while the gateway listens on
  loopback alone. Listening on any other address (the default ``0.0.0.0`` included) means something
  else may relay requests to it, so the admin then needs the token and says so.

*Direct* means no proxy relayed the request. Any forwarding or CDN header (``Forwarded``, ``Via``,
``X-Forwarded-*``, ``X-Real-IP``, ``CF-Connecting-IP``, ``True-Client-IP``, …) marks it as relayed,
and so does HTTP/1.0, which nginx's default ``proxy_pass`` speaks while adding none of those headers
(no browser or HTTP client in use today sends 1.0). A proxy that adds nothing and speaks 1.1 (HAProxy
without ``option forwardfor``) cannot be told from a local client: in front of such a proxy set
``GATEWAY_ADMIN_TOKEN``. The ``Host`` header must name this host too, so a web page the operator opens
cannot reach the loopback API through DNS rebinding.
"""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import HttpVersion11, web

from gateway.server.state import SETTINGS
from gateway.settings import Settings

#: Headers a reverse proxy, tunnel, load balancer or CDN adds to what it relays.
_PROXY_HEADERS = frozenset(
    {
        "forwarded",
        "via",
        "x-real-ip",
        "x-client-ip",
        "client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-cluster-client-ip",
        "x-original-forwarded-for",
        "x-proxyuser-ip",
        "x-appengine-user-ip",
        "x-cloud-trace-context",
        "cloudfront-viewer-address",
    }
)
#: Header families of the same: X-Forwarded-For/Host/Proto/Port/…, Cloudflare, AWS, Envoy, Fastly, Azure.
_PROXY_PREFIXES = ("x-forwarded-", "cf-", "x-amzn-", "x-envoy-", "fastly-", "x-azure-", "x-akamai-")

ADMIN_REFUSAL = "forbidden: send Authorization: Bearer $GATEWAY_ADMIN_TOKEN"
ADMIN_REFUSAL_PROXIED = (
    "forbidden: without GATEWAY_ADMIN_TOKEN only a direct client on this machine may use the admin, "
    "and this request came through a proxy; set GATEWAY_ADMIN_TOKEN and send Authorization: Bearer <token>"
)
ADMIN_REFUSAL_EXPOSED = (
    "forbidden: the gateway listens beyond loopback, so the admin and /metrics need GATEWAY_ADMIN_TOKEN "
    "(then send Authorization: Bearer <token>); or listen on 127.0.0.1 (--host 127.0.0.1, as `make run` "
    "does) to use them from this machine without one"
)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def listens_on_loopback(settings: Settings) -> bool:
    """The gateway binds a loopback address only (``0.0.0.0``, ``::`` or a LAN address: no)."""
    return _is_loopback(settings.host.strip().strip("[]").lower())


def is_proxied(request: web.BaseRequest) -> bool:
    """A proxy, tunnel or CDN relayed ``request``, as far as can be told (see the module docstring)."""
    if request.version < HttpVersion11:
        return True
    for name in request.headers:
        lower = name.lower()
        if lower in _PROXY_HEADERS or lower.startswith(_PROXY_PREFIXES):
            return True
    return False


def is_direct_loopback(request: web.BaseRequest) -> bool:
    """The peer is this host, no proxy relayed the request, and it was addressed to this host."""
    if is_proxied(request):
        return False
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    return _is_loopback(request.remote or "") and _is_loopback(host.strip("[]").lower())


def local_operator(request: web.Request) -> bool:
    """Trusted without credentials: a direct loopback client of a gateway listening on loopback alone."""
    return listens_on_loopback(request.app[SETTINGS]) and is_direct_loopback(request)


def bearer_matches(request: web.BaseRequest, token: str) -> bool:
    """``Authorization: Bearer <token>`` (scheme in any case), the token compared in constant time (as
    bytes: headers may be non-ASCII)."""
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    given = credentials.strip().encode("utf-8", "surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(given, token.encode())


def admin_allowed(request: web.Request) -> bool:
    """Whether ``request`` may read operator endpoints (admin API, metrics)."""
    token = request.app[SETTINGS].admin_token
    if token:
        return bearer_matches(request, token)
    return local_operator(request)


def admin_refusal(request: web.Request) -> str:
    """Why :func:`admin_allowed` said no, naming the fix (and nothing about the gateway's data)."""
    settings = request.app[SETTINGS]
    if settings.admin_token:
        return ADMIN_REFUSAL
    if not listens_on_loopback(settings):
        return ADMIN_REFUSAL_EXPOSED
    return ADMIN_REFUSAL_PROXIED


def require_admin(request: web.Request) -> None:
    """Raise 403 unless :func:`admin_allowed`. The answer says how to get in, and nothing else."""
    if not admin_allowed(request):
        raise web.HTTPForbidden(text=admin_refusal(request))


def _forwarded_for(request: web.BaseRequest) -> str:
    """The client address the nearest proxy reported: the last ``X-Forwarded-For`` hop (the one that
    proxy appended; earlier ones are whatever the client claimed), else ``X-Real-IP``, else the last
    ``Forwarded: for=``. Empty when none parses as an address."""
    candidates = [
        request.headers.get("X-Forwarded-For", "").rsplit(",", 1)[-1],
        request.headers.get("X-Real-IP", ""),
    ]
    forwarded = request.headers.get("Forwarded", "").rsplit(",", 1)[-1]
    for part in forwarded.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "for":
            value = value.strip('"')
            # for="[2001:db8::1]:4711" or for=192.0.2.60:80
            value = value[1:].split("]")[0] if value.startswith("[") else value.split(":")[0]
            candidates.append(value)
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate.strip()))
        except ValueError:
            continue
    return ""


def source_address(request: web.BaseRequest) -> str:
    """Where a connection comes from, for per-source limits: the peer address, IPv6 by /64 (one host
    usually holds a whole /64). A peer on this host (a local reverse proxy or tunnel) speaks for
    someone else: the client it forwards for is used when it says."""
    peer = request.remote or ""
    if _is_loopback(peer) and (forwarded := _forwarded_for(request)):
        peer = forwarded
    try:
        address = ipaddress.ip_address(peer.split("%")[0])
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)  # a dual-stack listener's view of an IPv4 client
    if address.version == 6 and not address.is_loopback:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
