"""FreeSWITCH mod_audio_stream: the media route ``/freeswitch/media``.

FreeSWITCH dials the socket itself (``uuid_audio_stream <uuid> start wss://…/freeswitch/media?token=…``):
no webhook comes first, so there is no per-call stream token. ``GATEWAY_PBX_SECRET`` in the URL (or as
the basic-auth password, e.g. through ``STREAM_EXTRA_HEADERS``) authenticates the upgrade, and the
metadata text frame says who the call is (gateway/server/pbx.py); the codec is
gateway/telephony/freeswitch.py, where what the module can and cannot do is written down.
"""

from __future__ import annotations

from gateway.server.media import media_stream_handler
from gateway.server.pbx import pbx_route
from gateway.telephony.freeswitch import FreeSwitchCodec

MEDIA_PATH = "/freeswitch/media"

ROUTE = pbx_route("freeswitch", MEDIA_PATH, FreeSwitchCodec)
media_stream = media_stream_handler(ROUTE)

#: FreeSWITCH's route, as the provider registry (gateway/server/providers.py) serves it.
ROUTES = (("GET", MEDIA_PATH, media_stream),)
