"""Exotel's side of a simulated call: the Voicebot applet, dynamic or static, as Exotel plays it.

Dynamic (the default): ``GET /exotel/voicebot?CallSid=…&CallFrom=…&CallTo=…`` as the applet requests its
URL (numbers in Exotel's national form, ``09876543210``), then the ``{"url": …}`` it answers, opened as
Exotel opens a stream URL (credentials → ``Authorization: Basic``, query pairs → ``custom_parameters``).
Static (``voice_path="/exotel/media"``): the stream URL itself, ``wss://exotel:SECRET@host/exotel/media``.

On the stream: caller audio as 16-bit PCM at the URL's rate in 100 ms messages (Exotel's cadence), and
every message from the gateway checked against the applet's rules, chunk sizes included
(:mod:`gateway.caller.wire_exotel`). The caller itself works in μ-law 8 kHz; this side converts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import numpy as np
import soxr

from gateway.audio.resample import SUPPORTED_RATE_PAIRS, StreamResampler
from gateway.caller import wire_exotel as wire
from gateway.caller.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.caller.sides import CallerSide, Heard, Offer, ws_url
from gateway.errors import AuthError, ConfigError, TelephonyProtocolError

if TYPE_CHECKING:
    from gateway.caller.call import CallOptions, CallReport

__all__ = ["ExotelSide"]

VOICEBOT_PATH = "/exotel/voicebot"
#: Exotel sends caller audio about every 100 ms: five of the caller's 20 ms frames a message.
FRAMES_PER_MEDIA = 5


def _resampler(in_rate: int, out_rate: int) -> Callable[[bytes], bytes]:
    """A streaming PCM16 resampler: the gateway's where it has the pair, else soxr's low-latency one."""
    if in_rate == out_rate:
        return lambda pcm: pcm
    if (in_rate, out_rate) in SUPPORTED_RATE_PAIRS:
        return StreamResampler(in_rate, out_rate).process
    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="QQ")
    return lambda pcm: stream.resample_chunk(np.frombuffer(pcm, "<i2")).astype("<i2").tobytes()


def _national(number: str) -> str:
    """A number as Exotel's applet requests write Indian numbers: ``+919876543210`` → ``09876543210``."""
    return "0" + number[3:] if number.startswith("+91") else number


class ExotelSide(CallerSide):
    """The Voicebot applet (bidirectional stream): JSON text frames, L16 audio, marks and clear."""

    name = "exotel"
    credential_env = "EXOTEL_STREAM_SECRET"
    #: Undocumented for Exotel; its protocol is Twilio's (mark, clear), whose clear returns pending marks.
    clear_echoes_marks: ClassVar[bool] = True

    def __init__(self) -> None:
        self._seq = 1
        self._chunk = 0
        self._rate = 8000
        self._batch: list[bytes] = []
        self._batch_at = 0
        self._from = self._to = ""
        self._up: Callable[[bytes], bytes] = _resampler(8000, 8000)
        self._down: Callable[[bytes], bytes] = _resampler(8000, 8000)

    async def request_call(
        self, http: aiohttp.ClientSession, opts: CallOptions, report: CallReport
    ) -> Offer | None:
        report.call_sid = wire.new_sid()  # Exotel's are 32 hex digits
        report.stream_sid = wire.new_sid()
        self._from, self._to = opts.from_, opts.to
        base, path = opts.gateway.rstrip("/"), opts.voice_path or VOICEBOT_PATH
        if path.rstrip("/").endswith("/media"):
            url, _ = ws_url(base + path, keep_query=True)
            if opts.auth_token:  # as pasted into the applet: wss://exotel:SECRET@host/exotel/media
                parts = urlsplit(url)
                url = urlunsplit(
                    parts._replace(netloc=f"exotel:{quote(opts.auth_token, safe='')}@{parts.netloc}")
                )
        else:
            answered = await self._dynamic(http, base + path, opts, report)
            if answered is None:
                return None
            url = answered
        target = wire.stream_target(url)
        self._rate = target.sample_rate
        self._up, self._down = _resampler(8000, self._rate), _resampler(self._rate, 8000)
        return Offer(url=target.url, headers=target.headers, parameters=target.custom_parameters)

    async def _dynamic(
        self, http: aiohttp.ClientSession, url: str, opts: CallOptions, report: CallReport
    ) -> str | None:
        """The applet's request to its dynamic URL; the stream URL answered, or None when refused (503)."""
        params = wire.voicebot_request(
            call_sid=report.call_sid, from_=_national(opts.from_), to=_national(opts.to)
        )
        if opts.auth_token:  # the URL configured in the applet carries ?secret=
            params["secret"] = opts.auth_token
        try:
            async with http.get(url, params=params) as resp:
                body, status = await resp.text(), resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the gateway's voicebot URL {url}: {exc}") from exc
        if status in (401, 403):
            raise AuthError(f"voicebot URL refused the call: HTTP {status} (is the secret right?)")
        if status == 503:
            report.warnings.append("voicebot URL over capacity (503): Exotel runs the flow's next applet")
            return None
        if status != 200:
            raise TelephonyProtocolError(f"voicebot URL answered HTTP {status}: {body[:200]!r}")
        return wire.parse_voicebot_reply(body)

    def opening(self, report: CallReport, offer: Offer) -> list[str]:
        start = wire.start(
            self._next(),
            stream_sid=report.stream_sid,
            call_sid=report.call_sid,
            account_sid=report.account_sid,
            from_=self._from,
            to=self._to,
            custom_parameters=offer.parameters,
            sample_rate=self._rate,
        )
        return [wire.connected(), start]

    def _next(self) -> int:
        self._seq += 1
        return self._seq - 1

    def media(self, report: CallReport, index: int, ulaw: bytes) -> str | None:
        if not self._batch:
            self._batch_at = index
        self._batch.append(ulaw)
        if len(self._batch) < FRAMES_PER_MEDIA:
            return None
        pcm = self._up(ulaw_to_pcm16(b"".join(self._batch)))
        self._batch = []
        self._chunk += 1
        return wire.media(
            self._next(),
            stream_sid=report.stream_sid,
            chunk=self._chunk,
            timestamp_ms=self._batch_at * 20,
            payload=pcm,
        )

    def dtmf(self, report: CallReport, digit: str) -> str:
        return wire.dtmf(self._next(), stream_sid=report.stream_sid, digit=digit)

    def mark_played(self, report: CallReport, name: str) -> str:
        return wire.mark(self._next(), stream_sid=report.stream_sid, name=name)

    def stop(self, report: CallReport) -> str | None:
        return wire.stop(
            self._next(),
            stream_sid=report.stream_sid,
            call_sid=report.call_sid,
            account_sid=report.account_sid,
        )

    def receive(self, report: CallReport, text: str) -> Heard:
        msg = wire.parse_gateway_message(text, stream_sid=report.stream_sid)  # ValueError: a rule broken
        if isinstance(msg, wire.MediaMsg):
            return Heard("media", audio=pcm16_to_ulaw(self._down(msg.payload)))
        if isinstance(msg, wire.MarkMsg):
            return Heard("mark", name=msg.name)
        return Heard("clear")
