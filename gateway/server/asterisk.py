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

from gateway.server.media import media_stream_handler
from gateway.server.pbx import pbx_route
from gateway.telephony.asterisk import SUBPROTOCOL, ChanWebsocketCodec

MEDIA_PATH = "/asterisk/media"

ROUTE = pbx_route("asterisk", MEDIA_PATH, ChanWebsocketCodec, protocols=(SUBPROTOCOL,))
media_stream = media_stream_handler(ROUTE)

#: Asterisk's route, as the provider registry (gateway/server/providers.py) serves it.
ROUTES = (("GET", MEDIA_PATH, media_stream),)
