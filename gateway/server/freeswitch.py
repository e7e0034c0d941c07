"""FreeSWITCH mod_audio_stream: the media route ``/freeswitch/media``.

FreeSWITCH dials the socket itself (``uuid_audio_stream <uuid> start wss://…/freeswitch/media?token=…``):
no webhook comes first, so there is no per-call stream token. ``GATEWAY_PBX_SECRET`` in the URL (or as
the basic-auth password, e.g. through ``STREAM_EXTRA_HEADERS``) authenticates the upgrade, and the
metadata text frame says who the call is (gateway/server/pbx.py); the codec is
gateway/telephony/freeswitch.py, where what the module can and cannot do is written down.
"""

from __future__ import annotations

from aiohttp import web

from gateway.log import call_logger
from gateway.security.tokens import StreamClaims
from gateway.server.media import StreamRoute, media_stream_handler
from gateway.server.pbx import pbx_claims, pbx_refusal
from gateway.telephony.events import CallStarted
from gateway.telephony.freeswitch import FreeSwitchCodec

MEDIA_PATH = "/freeswitch/media"

log = call_logger("gateway.freeswitch")


def _start_claims(start: CallStarted, request: web.Request) -> StreamClaims:
    """The channel's uuid from the metadata; to/from from it, else from the URL."""
    return pbx_claims(request, start.call_sid, to=start.to, from_=start.from_)


ROUTE = StreamRoute(
    provider="freeswitch",
    path=MEDIA_PATH,
    codec=FreeSwitchCodec,
    upgrade_refusal=pbx_refusal,
    token=lambda start, request: "",  # never asked: start_claims always decides
    log=log,
    start_claims=_start_claims,
)
media_stream = media_stream_handler(ROUTE)

#: FreeSWITCH's route, as the provider registry (gateway/server/providers.py) serves it.
ROUTES = (("GET", MEDIA_PATH, media_stream),)
