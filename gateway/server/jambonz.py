"""jambonz ``listen`` (bidirectional streaming audio): the media route ``/jambonz/media``.

jambonz opens the socket itself when the application runs the ``listen`` verb, with subprotocol
``audio.jambonz.org`` and, given ``wsAuth``, HTTP basic auth: ``GATEWAY_PBX_SECRET`` as its password
(or ``?token=`` in the verb's URL) authenticates the upgrade, and the metadata frame jambonz sends
first (``callSid``, ``to``, ``from``) says who the call is (gateway/server/pbx.py). The codec is
gateway/telephony/jambonz.py.
"""

from __future__ import annotations

from aiohttp import web

from gateway.log import call_logger
from gateway.security.tokens import StreamClaims
from gateway.server.media import StreamRoute, media_stream_handler
from gateway.server.pbx import pbx_claims, pbx_refusal
from gateway.telephony.events import CallStarted
from gateway.telephony.jambonz import SUBPROTOCOL, JambonzCodec

MEDIA_PATH = "/jambonz/media"

log = call_logger("gateway.jambonz")


def _start_claims(start: CallStarted, request: web.Request) -> StreamClaims:
    """The call from jambonz's metadata (``callSid``, ``to``, ``from``); the URL's to/from as fallback."""
    return pbx_claims(request, start.call_sid, to=start.to, from_=start.from_)


ROUTE = StreamRoute(
    provider="jambonz",
    path=MEDIA_PATH,
    codec=JambonzCodec,
    upgrade_refusal=pbx_refusal,
    token=lambda start, request: "",  # never asked: start_claims always decides
    log=log,
    start_claims=_start_claims,
    protocols=(SUBPROTOCOL,),
)
media_stream = media_stream_handler(ROUTE)

#: jambonz's route, as the provider registry (gateway/server/providers.py) serves it.
ROUTES = (("GET", MEDIA_PATH, media_stream),)
