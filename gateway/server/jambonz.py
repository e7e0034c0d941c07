"""jambonz ``listen`` (bidirectional streaming audio): the media route ``/jambonz/media``.

jambonz opens the socket itself when the application runs the ``listen`` verb, with subprotocol
``audio.jambonz.org`` and, given ``wsAuth``, HTTP basic auth: ``GATEWAY_PBX_SECRET`` as its password
(or ``?token=`` in the verb's URL) authenticates the upgrade, and the metadata frame jambonz sends
first (``callSid``, ``to``, ``from``) says who the call is (gateway/server/pbx.py). The codec is
gateway/telephony/jambonz.py.
"""

from __future__ import annotations

from gateway.server.media import media_stream_handler
from gateway.server.pbx import pbx_route
from gateway.telephony.jambonz import SUBPROTOCOL, JambonzCodec

MEDIA_PATH = "/jambonz/media"

ROUTE = pbx_route("jambonz", MEDIA_PATH, JambonzCodec, protocols=(SUBPROTOCOL,))
media_stream = media_stream_handler(ROUTE)

#: jambonz's route, as the provider registry (gateway/server/providers.py) serves it.
ROUTES = (("GET", MEDIA_PATH, media_stream),)
