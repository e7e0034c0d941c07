"""What the PBX connectors share: one secret, and the call's identity from the URL.

Asterisk (chan_websocket), FreeSWITCH (mod_audio_stream) and jambonz (``listen``) open their media
socket to us directly: no provider webhook comes first to issue a per-call stream token, and none of
them signs its requests. So the socket's upgrade is authenticated by ``GATEWAY_PBX_SECRET``, given as
``?token=SECRET`` in the URL (what a PBX dialplan can put in a URL) or as the password of HTTP basic
auth (``wss://gateway:SECRET@host/…``). Without the secret set, only direct loopback peers are served
(a PBX on this host; never through a proxy on it), as for an unsigned provider webhook.

The dialled number and the caller come from the protocol's own metadata where it has them, else from
the ``to`` and ``from`` URL parameters that the PBX dialplan fills (Asterisk: ``${EXTEN}``,
``${CALLERID(num)}``); :func:`pbx_claims` checks their shape as a webhook's identity is checked, and
the call is still served once per call id (the replay guard's ``claim_stream``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable

from aiohttp import web

from gateway.errors import TelephonyProtocolError
from gateway.log import call_logger
from gateway.security.inputs import webhook_identity_problem
from gateway.security.tokens import StreamClaims
from gateway.server.access import is_direct_loopback
from gateway.server.media import StreamRoute
from gateway.server.state import SETTINGS
from gateway.telephony.events import CallStarted
from gateway.telephony.jsonmsg import CLOSE_POLICY_VIOLATION
from gateway.telephony.provider import MediaCodec

__all__ = ["PBX_REFUSAL", "pbx_claims", "pbx_refusal", "pbx_route", "secret_offered"]

#: The query parameter that carries GATEWAY_PBX_SECRET.
SECRET_PARAMETER = "token"
PBX_REFUSAL = (
    "PBX media socket refused: set GATEWAY_PBX_SECRET and put it in the socket's URL (?token=…) or as "
    "its basic-auth password; without it only a PBX on this host (a direct loopback peer) is served"
)


def secret_offered(request: web.BaseRequest, secret: str) -> bool:
    """Whether ``request`` carries ``secret``: ``?token=`` or the basic-auth password (constant time)."""
    expected = secret.encode()
    candidates: list[bytes] = []
    if (query := request.query.get(SECRET_PARAMETER)) is not None:
        candidates.append(query.encode("utf-8", "surrogateescape"))
    scheme, _, encoded = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "basic":
        try:
            candidates.append(base64.b64decode(encoded.strip(), validate=True).partition(b":")[2])
        except (binascii.Error, ValueError):
            pass
    ok = False
    for candidate in candidates:  # every candidate compared, so timing says nothing about which
        ok |= hmac.compare_digest(expected, candidate)
    return ok


def pbx_refusal(request: web.Request) -> str | None:
    """Why a PBX media upgrade is refused, or None (see the module docstring). Before the socket exists."""
    settings = request.app[SETTINGS]
    if settings.pbx_secret:
        return None if secret_offered(request, settings.pbx_secret) else PBX_REFUSAL
    if settings.allow_unsigned_webhooks or is_direct_loopback(request):
        return None
    return PBX_REFUSAL


def pbx_claims(request: web.BaseRequest, call_id: str, *, to: str = "", from_: str = "") -> StreamClaims:
    """The call's identity: ``to``/``from_`` from the protocol's metadata when it has them, else the
    URL's ``to`` and ``from`` parameters.

    Raises:
        TelephonyProtocolError: no dialled number, or an identity of the wrong shape (close 1008).
    """
    to = to or request.query.get("to", "")
    from_ = from_ or request.query.get("from", "")
    if not to:
        raise TelephonyProtocolError(
            "no dialled number: pass it in the socket's URL as ?to=…&from=…",
            close_code=CLOSE_POLICY_VIOLATION,
        )
    if (problem := webhook_identity_problem(call_id, to, from_)) is not None:
        raise TelephonyProtocolError(f"call identity: {problem}", close_code=CLOSE_POLICY_VIOLATION)
    return StreamClaims(call_sid=call_id, to=to, from_=from_, expires_at=0.0, nonce="")


def _start_claims(start: CallStarted, request: web.Request) -> StreamClaims:
    """The call id from the stream's start; to/from from it where the protocol carries them, else the URL."""
    return pbx_claims(request, start.call_sid, to=start.to, from_=start.from_)


def _no_token(start: CallStarted, request: web.Request) -> str:
    return ""  # never asked: _start_claims always decides


def pbx_route(
    provider: str, path: str, codec: Callable[[], MediaCodec], *, protocols: tuple[str, ...] = ()
) -> StreamRoute:
    """A PBX connector's media route: the upgrade authenticated by :func:`pbx_refusal`, the call by
    :func:`pbx_claims` (no webhook, so no stream token); everything else is the shared media handler's.
    ``protocols``: the WebSocket subprotocol the PBX asks for (Asterisk ``media``, jambonz
    ``audio.jambonz.org``)."""
    return StreamRoute(
        provider=provider,
        path=path,
        codec=codec,
        upgrade_refusal=pbx_refusal,
        token=_no_token,
        log=call_logger(f"gateway.{provider}"),
        start_claims=_start_claims,
        protocols=protocols,
    )
