"""Asterisk chan_websocket: the media route ``/asterisk/media`` that Asterisk dials out to.

Asterisk's ``Dial(WebSocket/<connection>/c(slin16)v(to=…,from=…))`` opens a WebSocket (subprotocol
``media``) to the ``uri`` of that connection in ``websocket_client.conf``; no webhook comes first, so
the upgrade is authenticated by ``GATEWAY_PBX_SECRET`` (the URI's ``?token=`` or the connection's
``password``, sent as HTTP basic auth) and the call's identity is the URI's ``to``/``from`` parameters
(the dialplan's ``${EXTEN}`` and ``${CALLERID(num)}``) with ``MEDIA_START``'s ``channel_id`` as the call
id: gateway/server/pbx.py. Everything after ``MEDIA_START`` is the shared media handler's.

No REST client: Asterisk is hung up by the ``HANGUP`` command on the socket, and nothing on it transfers.
"""

from __future__ import annotations

from aiohttp import web

from gateway.log import call_logger
from gateway.security.tokens import StreamClaims
from gateway.server.media import StreamRoute, media_stream_handler
from gateway.server.pbx import pbx_claims, pbx_refusal
from gateway.telephony.asterisk import SUBPROTOCOL, ChanWebsocketCodec
from gateway.telephony.events import CallStarted

MEDIA_PATH = "/asterisk/media"

log = call_logger("gateway.asterisk")


def _start_claims(start: CallStarted, request: web.Request) -> StreamClaims:
    """The call: MEDIA_START's channel id, the number and caller from the URI the dialplan filled."""
    return pbx_claims(request, start.call_sid)


def _no_token(start: CallStarted, request: web.Request) -> str:
    return ""  # never asked: _start_claims always decides


ROUTE = StreamRoute(
    provider="asterisk",
    path=MEDIA_PATH,
    codec=ChanWebsocketCodec,
    upgrade_refusal=pbx_refusal,
    token=_no_token,
    log=log,
    start_claims=_start_claims,
    protocols=(SUBPROTOCOL,),
)
media_stream = media_stream_handler(ROUTE)

#: Asterisk's route, as the provider registry (gateway/server/providers.py) serves it.
ROUTES = (("GET", MEDIA_PATH, media_stream),)
