"""The browser softphone: the page at ``/phone``, its small API, and the ``browser`` provider's media socket.

Talking to the bot is the fastest way to judge it; this makes the browser a phone. The page
(gateway/server/static/phone/) captures the microphone, turns it into 16 kHz PCM16 in an AudioWorklet
and streams it over ``/phone/media`` (protocol: gateway/telephony/browser.py); everything behind that
socket (admission, dialplans, the Gemini session, tools, records) is the same as for a phone call
(gateway/server/media.py).

Who may call: the operator, by the same rule as ``/admin`` (gateway/server/access.py: the bearer
``GATEWAY_ADMIN_TOKEN`` when set, else a direct loopback client of a loopback-only gateway). With a
token set the page's static shell is public (a browser cannot attach a bearer header to a navigation),
and the page asks for the token. A call is two steps:

1. ``POST /phone/call`` ``{"to": "+15551230000"}`` (JSON, so a cross-site form cannot; the admin
   credential) admits the call as a provider's webhook would (``accept_call``: dialplan, a reserved
   place, a preconnected Gemini session) and answers a fresh call id and its stream token (signed, bound
   to that id, short-lived, single-use);
2. the page opens ``/phone/media`` and sends ``start`` with both; only then does the call run. A socket
   without a valid token is closed (1008) before anything is spent: no Gemini session opens. A browser
   upgrade must come from this gateway's own page (its ``Origin``): another site cannot use an
   operator's browser to open one.

Routes: ``GET /phone`` (the page), its script, style and worklet; ``GET /phone/api/numbers`` (the
dialplans and the numbers they answer, with one to dial for each); ``POST /phone/call``;
``GET /phone/calls/{call_sid}`` (a softphone call's live transcript); ``GET /phone/media``.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web

from gateway.dialplan.model import Dialplan, DialplanBook, is_prefix_pattern
from gateway.log import call_logger
from gateway.security.tokens import MAX_TOKEN_LENGTH
from gateway.server.access import admin_allowed, require_admin
from gateway.server.media import Refused, StreamRoute, accept_call, media_stream_handler
from gateway.server.state import CALLS, DIALPLANS, SETTINGS, STREAM_TOKENS
from gateway.telephony.browser import CALL_ID_PREFIX, RATE, BrowserCodec
from gateway.telephony.events import CallStarted

__all__ = ["CALL_PATH", "MEDIA_PATH", "PAGE_PATH", "ROUTES"]

PAGE_PATH: Final = "/phone"
CALL_PATH: Final = "/phone/call"
NUMBERS_PATH: Final = "/phone/api/numbers"
MEDIA_PATH: Final = "/phone/media"
#: Who the softphone's calls come from, in dialplan matching, records and the admin page.
CALLER: Final = "browser"
STATIC: Final = Path(__file__).parent / "static" / "phone"
#: The page's files: name → content type. Nothing else under /phone is served from disk.
_ASSETS: Final = {
    "phone.js": "text/javascript; charset=utf-8",
    "worklet.js": "text/javascript; charset=utf-8",
    "phone.css": "text/css; charset=utf-8",
}
#: Dial-pad characters: a number as dialled (E.164 or a short extension, ``*`` and ``#`` keys).
_DIALLABLE: Final = frozenset("+0123456789*#")
_MAX_NUMBER: Final = 32
_HEADERS: Final = {
    # As the admin page, stricter on style (no inline style at all): the page shows caller speech.
    # connect-src 'self' covers the same-origin ws:/wss: socket (CSP Level 3, "Matching source
    # expressions"); the worklet is a script from 'self'.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; media-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

log = call_logger("gateway.browser")


# --- the page ---------------------------------------------------------------------------------------


def _page_allowed(request: web.Request) -> bool:
    """As /admin: with a token the shell is public (no data in it; the API wants the token)."""
    return bool(request.app[SETTINGS].admin_token) or admin_allowed(request)


async def page(request: web.Request) -> web.StreamResponse:
    if not _page_allowed(request):
        require_admin(request)
    if request.path == PAGE_PATH:
        raise web.HTTPFound(PAGE_PATH + "/")
    return web.FileResponse(STATIC / "index.html", headers=_HEADERS)


async def asset(request: web.Request) -> web.StreamResponse:
    if not _page_allowed(request):
        require_admin(request)
    name = request.path.rsplit("/", 1)[-1]
    return web.FileResponse(STATIC / name, headers={**_HEADERS, "Content-Type": _ASSETS[name]})


# --- the API ----------------------------------------------------------------------------------------


def _example(book: DialplanBook, plan: Dialplan) -> str:
    """A number that reaches ``plan`` from the softphone, or "" when none is obvious."""
    candidates = [n for n in plan.numbers if not is_prefix_pattern(n)]
    for pattern in plan.numbers:
        if is_prefix_pattern(pattern):
            prefix = pattern[:-1]
            candidates.append(prefix + "0" * max(1, 12 - len(prefix)))
    if plan.default:
        candidates += ["+15551230000", "+10000000000", "1000"]
    for number in candidates:
        if all(c in _DIALLABLE for c in number) and book.match(number, CALLER).name == plan.name:
            return number
    return ""


async def numbers(request: web.Request) -> web.Response:
    """The dialplans and the numbers they answer, each with a number to dial (the default plan's: one
    no other plan claims)."""
    require_admin(request)
    book = request.app[DIALPLANS].current
    plans = [
        {
            "name": plan.name,
            "numbers": list(plan.numbers),
            "callers": list(plan.callers),
            "default": plan.default,
            "dial": _example(book, plan),
            "voice": plan.voice or "",
            "language": plan.language or "",
        }
        for plan in book.plans
    ]
    plans.sort(key=lambda p: (bool(p["default"]), str(p["name"])))
    return web.json_response({"dialplans": plans, "rate": RATE})


async def place_call(request: web.Request) -> web.Response:
    """Admit a softphone call: a call id and its stream token for ``/phone/media`` (module doc)."""
    require_admin(request)
    if request.content_type != "application/json":
        # A cross-site HTML form cannot send JSON without a CORS preflight we never answer.
        raise web.HTTPUnsupportedMediaType(text="send Content-Type: application/json")
    try:
        body: Any = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body is not JSON") from None
    to = body.get("to") if isinstance(body, dict) else None
    if not isinstance(to, str):
        raise web.HTTPBadRequest(text='send {"to": "<number>"}')
    to = to.strip()
    if not 1 <= len(to) <= _MAX_NUMBER or not all(c in _DIALLABLE for c in to):
        raise web.HTTPBadRequest(text=f"to must be 1-{_MAX_NUMBER} dial-pad characters (+, digits, *, #)")
    call_sid = CALL_ID_PREFIX + secrets.token_hex(16)
    accepted = await accept_call(request, log, call_sid=call_sid, to=to, from_=CALLER, may_preconnect=True)
    if isinstance(accepted, Refused):
        return web.json_response({"error": "refused", "message": accepted.message}, status=503)
    log.info(
        "softphone call admitted",
        extra={"call_sid": call_sid, "to": to, "dialplan": accepted.plan.name, "peer": request.remote},
    )
    return web.json_response(
        {
            "call_sid": call_sid,
            "token": accepted.token,
            "to": to,
            "dialplan": accepted.plan.name,
            "media_path": MEDIA_PATH,
            "rate": RATE,
            "expires_in_s": request.app[STREAM_TOKENS].ttl_s,
        }
    )


async def show_call(request: web.Request) -> web.Response:
    """A softphone call's live transcript (then its result, while the gateway remembers it)."""
    require_admin(request)
    call_sid = request.match_info["call_sid"]
    doc = request.app[CALLS].get(call_sid) if call_sid.startswith(CALL_ID_PREFIX) else None
    if doc is None:
        raise web.HTTPNotFound(text="no such softphone call")
    keys = ("state", "call_sid", "dialplan", "transcript", "ended_by", "reason", "started_at", "ended_at")
    return web.json_response({k: doc[k] for k in keys if k in doc})


# --- the media socket -------------------------------------------------------------------------------


def _origin_host(origin: str) -> str:
    try:
        return urlsplit(origin).netloc.lower()
    except ValueError:
        return ""


def _upgrade_refusal(request: web.Request) -> str | None:
    """A browser's upgrade must come from this gateway's page (its ``Origin``, RFC 6455 §10.2); an
    over-long query is no call of ours. Clients without ``Origin`` (not a browser) still need a token."""
    if len(request.query_string) > MAX_TOKEN_LENGTH:
        return "the query is too long"
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    allowed = {request.host.lower()}
    public = request.app[SETTINGS].public_url
    if public:
        allowed.add(urlsplit(public).netloc.lower())
    if _origin_host(origin) not in allowed:
        return "the softphone socket is only for this gateway's own /phone page"
    return None


def _token(start: CallStarted, request: web.Request) -> str:
    return start.custom_parameters.get("token", "")


ROUTE = StreamRoute(
    provider="browser",
    path=MEDIA_PATH,
    codec=BrowserCodec,
    upgrade_refusal=_upgrade_refusal,
    token=_token,
    log=log,
)
media_stream = media_stream_handler(ROUTE)

#: The softphone's routes, as the provider registry (gateway/server/providers.py) serves them.
ROUTES = (
    ("GET", PAGE_PATH, page),
    ("GET", PAGE_PATH + "/", page),
    *(("GET", f"{PAGE_PATH}/{name}", asset) for name in _ASSETS),
    ("GET", NUMBERS_PATH, numbers),
    ("POST", CALL_PATH, place_call),
    ("GET", "/phone/calls/{call_sid}", show_call),
    ("GET", MEDIA_PATH, media_stream),
)
