"""SignalWire's side of a simulated call: the signed cXML webhook, the ``<Connect><Stream>``, the stream.

SignalWire POSTs the voice webhook (``X-SignalWire-Signature``; UUIDs for calls, streams and projects),
reads ``<Connect><Stream>`` in the cXML and opens its URL with the ``authBearerToken`` as ``Authorization:
Bearer``. On the stream it sends ``connected`` (version 0.2.0), ``start`` with the ``<Parameter>``s and
the ``codec``'s ``mediaFormat``, ``media`` in that codec (μ-law 8 kHz, or L16 at 16 or 24 kHz), ``dtmf``,
mark echoes (cleared marks echoed at once), an acknowledging ``clear`` after ours, and ``stop``. Every
message is built and checked by :mod:`gateway.caller.wire_signalwire`; the caller's 20 ms μ-law 8 kHz
frames are converted here.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp
import numpy as np
import soxr

from gateway.audio.resample import SUPPORTED_RATE_PAIRS, StreamResampler
from gateway.caller import wire_signalwire as wire
from gateway.caller.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.caller.sides import CallerSide, Heard, Offer, post_webhook
from gateway.errors import TelephonyProtocolError

if TYPE_CHECKING:
    from gateway.caller.call import CallOptions, CallReport

__all__ = ["SignalWireSide"]

#: DTMF key → (low, high) tone frequencies in Hz (ITU-T Q.23).
_DTMF_TONES = {
    key: (low, high)
    for low, row in zip((697, 770, 852, 941), ("123A", "456B", "789C", "*0#D"), strict=True)
    for high, key in zip((1209, 1336, 1477, 1633), row, strict=True)
}


class _Upsampler:
    """Caller PCM16 at 8 kHz → ``rate``, exactly 20 ms out per 20 ms in, as SignalWire's frames are.

    The gateway's resampler where it has the pair (8→16 kHz); soxr's low-latency one otherwise (8→24 kHz),
    whose first chunk comes out a few samples short: the shortfall is silence ahead of it.
    """

    def __init__(self, rate: int) -> None:
        self._ratio = rate // 8000
        if (8000, rate) in SUPPORTED_RATE_PAIRS:
            self._process: Callable[[bytes], bytes] = StreamResampler(8000, rate).process
        else:
            stream = soxr.ResampleStream(8000, rate, 1, dtype="int16", quality="QQ")
            self._process = lambda pcm: (
                stream.resample_chunk(np.frombuffer(pcm, "<i2")).astype("<i2").tobytes()
            )
        self._held = b""

    def process(self, pcm: bytes) -> bytes:
        want = len(pcm) * self._ratio
        out = self._held + self._process(pcm)
        if len(out) < want:
            out = bytes(want - len(out)) + out
        self._held = out[want:]
        return out[:want]


class SignalWireSide(CallerSide):
    """SignalWire cXML streams: signed voice webhook → ``<Connect><Stream>`` → Twilio-shaped JSON frames."""

    name = "signalwire"
    voice_path = "/signalwire/voice"
    credential_env = "SIGNALWIRE_SIGNING_KEY"
    #: "This action triggers SignalWire to return any pending mark messages for the cleared audio."
    clear_echoes_marks = True

    def __init__(self) -> None:
        self._seq = 0
        self._codec = "PCMU@8000h"
        self._rate = 8000
        self._up: _Upsampler | None = None
        self._down: StreamResampler | None = None

    async def request_call(
        self, http: aiohttp.ClientSession, opts: CallOptions, report: CallReport
    ) -> Offer | None:
        webhook_url = opts.gateway.rstrip("/") + (opts.voice_path or self.voice_path)
        report.call_sid = wire.new_sid()
        if not opts.account_sid:
            report.account_sid = wire.new_sid()  # SignalWire's AccountSid is the project's UUID
        form = wire.voice_webhook_form(
            call_sid=report.call_sid, account_sid=report.account_sid, from_=opts.from_, to=opts.to
        )
        headers = {}
        if opts.auth_token:
            headers[wire.SIGNATURE_HEADER] = wire.sign(opts.auth_token, webhook_url, form)
        body = await post_webhook(http, webhook_url, data=form, headers=headers)
        answer = wire.parse_cxml(body, webhook_url)
        if answer is None:
            report.after_stream = [v.tag for v in ET.fromstring(body)]  # parse_cxml has parsed it already
            return None
        offer = Offer(
            url=answer.url,
            parameters=answer.parameters,
            status_callback=answer.status_callback,
            after=answer.after,
        )
        if answer.bearer_token is not None:
            offer.headers["Authorization"] = f"Bearer {answer.bearer_token}"
        self._codec = answer.codec
        self._rate = int(wire.MEDIA_FORMATS[answer.codec]["sampleRate"])
        if self._rate != 8000:
            self._up, self._down = _Upsampler(self._rate), StreamResampler(self._rate, 8000)
        report.stream_sid = wire.new_sid()
        return offer

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def opening(self, report: CallReport, offer: Offer) -> list[str]:
        return [
            wire.connected(),
            wire.start(
                self._next(),
                stream_sid=report.stream_sid,
                call_sid=report.call_sid,
                account_sid=report.account_sid,
                parameters=offer.parameters,
                codec=self._codec,
            ),
        ]

    def media(self, report: CallReport, index: int, ulaw: bytes) -> str:
        payload = ulaw if self._up is None else self._up.process(ulaw_to_pcm16(ulaw))
        return wire.media(self._next(), chunk=index + 1, timestamp_ms=index * 20, payload=payload)

    def dtmf(self, report: CallReport, digit: str) -> str:
        return wire.dtmf(self._next(), stream_sid=report.stream_sid, digit=digit)

    def mark_played(self, report: CallReport, name: str) -> str:
        return wire.mark(stream_sid=report.stream_sid, name=name)

    def cleared(self, report: CallReport) -> str | None:
        # The Stream page (signalwire/docs 01670d0, "Clear message"): SignalWire acknowledges a flush.
        return f'{{"event":"clear","streamSid":"{report.stream_sid}"}}'

    def stop(self, report: CallReport) -> str | None:
        return wire.stop(self._next())

    def receive(self, report: CallReport, text: str) -> Heard:
        try:
            command = wire.parse_command(text, stream_sid=report.stream_sid)
        except TelephonyProtocolError as exc:
            raise ValueError(str(exc)) from None
        if command.kind == "media":
            return Heard("media", audio=self._to_ulaw(command.payload))
        if command.kind == "mark":
            return Heard("mark", name=command.name)
        if command.kind == "clear":
            if self._down is not None:
                self._down.reset()  # the dropped audio's filter state must not leak into the next reply
            return Heard("clear")
        # SignalWire plays a key the gateway sends into the call: the caller hears its two tones.
        return Heard("media", audio=_dtmf_tone(command.name))

    def _to_ulaw(self, payload: bytes) -> bytes:
        """Audio the gateway sent, as the caller hears it: μ-law 8 kHz."""
        if self._down is None:
            return payload
        if len(payload) % 2:
            raise ValueError(f"media.payload of {self._codec} with an odd byte count ({len(payload)})")
        return pcm16_to_ulaw(self._down.process(payload))


def _dtmf_tone(digit: str, ms: int = 100) -> bytes:
    """``ms`` of a key's two tones, μ-law 8 kHz, each tone at about -9 dBFS."""
    low, high = _DTMF_TONES[digit]
    t = np.arange(8 * ms) / 8000
    pcm = (np.sin(2 * math.pi * low * t) + np.sin(2 * math.pi * high * t)) * 6000
    return pcm16_to_ulaw(pcm.astype("<i2").tobytes())
