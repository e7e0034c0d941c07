"""Asterisk chan_websocket's side of a simulated call: Asterisk dials out to the gateway's media URL.

What a dialplan line ``Dial(WebSocket/gemini/c(slin16)v(to=${EXTEN},from=${CALLERID(num)}))`` does with
a ``websocket_client.conf`` connection ``uri = ws://gateway/asterisk/media``, ``protocols = media``,
``username``/``password``: Asterisk appends the ``v()`` parameters to the URI, upgrades with subprotocol
``media`` and basic auth, sends ``MEDIA_START`` and then one binary frame per 20 ms of the caller's
audio, ``DTMF_END`` per key, ``MEDIA_MARK_PROCESSED`` once a mark reaches the front of its queue (played
here on the caller's clock); it hangs up by closing the socket. What the gateway sends is checked as
Asterisk takes it (:mod:`gateway.caller.wire_asterisk`): commands in the channel's control format, binary
media in whole ``optimal_frame_size`` frames. The control format (``plain-text`` or ``json``) and the
codec (``slin16``, ``ulaw``, ``alaw``) are the side's; ``--provider asterisk-json`` picks JSON.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import aiohttp

from gateway.audio.g711 import alaw_to_pcm16, pcm16_to_alaw
from gateway.audio.resample import StreamResampler
from gateway.caller import wire_asterisk as wire
from gateway.caller.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.caller.sides import CallerSide, Heard, Offer, ws_url

if TYPE_CHECKING:
    from gateway.caller.call import CallOptions, CallReport

__all__ = ["AsteriskJsonSide", "AsteriskSide"]


class AsteriskSide(CallerSide):
    """chan_websocket, plain-text control messages (Asterisk's default), slin16 unless told otherwise."""

    name = "asterisk"
    media_path = "/asterisk/media"
    credential_env = "GATEWAY_PBX_SECRET"
    binary = True
    #: FLUSH_MEDIA frees queued marks without answering them.
    clear_echoes_marks = False
    control: wire.ControlFormat = "plain-text"

    def __init__(self, codec: str = "slin16", *, secret_in_url: bool = False) -> None:
        if codec not in wire.FORMATS:
            raise ValueError(f"codec {codec!r}: one of {', '.join(wire.FORMATS)}")
        self.codec = codec
        self.rate, self.width = wire.FORMATS[codec]
        self.optimal = wire.optimal_frame_size(codec)
        #: The secret as ``?token=`` in the URI rather than websocket_client.conf's password (basic auth).
        self.secret_in_url = secret_in_url
        self.channel_id = ""
        self.commands: list[str] = []
        self._up = StreamResampler(8000, self.rate) if self.rate != 8000 else None
        self._down = StreamResampler(self.rate, 8000) if self.rate != 8000 else None
        self._pending_up = bytearray()
        #: Every binary message heard, as sent (the stream's codec): for bandwidth checks.
        self.heard = bytearray()

    async def request_call(
        self, http: aiohttp.ClientSession, opts: CallOptions, report: CallReport
    ) -> Offer | None:
        # No webhook: the dialplan dials the connection, whose URI gets the v() parameters appended.
        self.channel_id = report.call_sid = report.stream_sid = wire.new_uniqueid()
        params = {"to": opts.to, "from": opts.from_}
        headers = {"Sec-WebSocket-Protocol": "media", "User-Agent": "Asterisk"}
        if opts.auth_token:
            if self.secret_in_url:
                params["token"] = opts.auth_token
            else:
                basic = base64.b64encode(f"asterisk:{opts.auth_token}".encode()).decode()
                headers["Authorization"] = f"Basic {basic}"
        url, _ = ws_url(opts.gateway.rstrip("/") + self.media_path, keep_query=False)
        return Offer(url=f"{url}?{urlencode(params)}", headers=headers)

    def opening(self, report: CallReport, offer: Offer) -> list[str]:
        return [
            wire.media_start(
                self.control,
                connection_id="gemini",
                channel=f"WebSocket/gemini/0x{abs(hash(self.channel_id)) % 16**12:012x}",
                channel_id=self.channel_id,
                codec=self.codec,
                optimal=self.optimal,
                variables={"CALLERID(num)": "", "EXTEN": ""} if self.control == "json" else None,
            )
        ]

    def media(self, report: CallReport, index: int, ulaw: bytes) -> bytes | None:
        if self.codec == "ulaw":
            return ulaw
        pcm = ulaw_to_pcm16(ulaw)
        if self.codec == "alaw":
            return pcm16_to_alaw(pcm)
        self._pending_up += self._up.process(pcm) if self._up is not None else pcm
        size = self.optimal
        if len(self._pending_up) < size:
            return None if index == 0 else bytes(size)  # the resampler's start-up delay: silence
        frame = bytes(self._pending_up[:size])
        del self._pending_up[:size]
        return frame

    def dtmf(self, report: CallReport, digit: str) -> str:
        return wire.dtmf_end(self.control, digit, self.channel_id)

    def mark_played(self, report: CallReport, name: str) -> str:
        return wire.mark_processed(self.control, name, self.channel_id)

    def stop(self, report: CallReport) -> str | None:
        return None  # Asterisk hangs up by closing the socket (webchan_hangup)

    def receive(self, report: CallReport, text: str) -> Heard:
        command = wire.parse_command(self.control, text)
        self.commands.append(command.name)
        if command.name == "MARK_MEDIA":
            return Heard("mark", name=command.correlation_id)
        if command.name == "FLUSH_MEDIA":
            if self._down is not None:
                self._down.reset()
            return Heard("clear")
        if command.name in ("ANSWER", "HANGUP"):
            return Heard("control")
        raise ValueError(f"{command.name}: a command the gateway has no reason to send")

    def receive_binary(self, report: CallReport, data: bytes) -> Heard:
        wire.check_media(data, self.optimal)
        if len(self.heard) < 120 * self.rate * self.width:
            self.heard += data
        if self.codec == "ulaw":
            return Heard("media", audio=data)
        pcm = alaw_to_pcm16(data) if self.codec == "alaw" else data
        if self._down is not None:
            pcm = self._down.process(pcm)
        return Heard("media", audio=pcm16_to_ulaw(pcm))


class AsteriskJsonSide(AsteriskSide):
    """chan_websocket with ``f(json)`` (or ``control_message_format = json``): JSON control messages."""

    name = "asterisk-json"
    control: wire.ControlFormat = "json"
