"""Plivo's side of a simulated call: the signed Answer URL request, the ``<Stream>`` it follows, the stream.

Plivo POSTs the Answer URL (``X-Plivo-Signature-V3`` and its nonce, numbers without ``+``), reads the
``<Stream>`` in the answer and opens the URL in its text, query included. On the stream it sends
``start`` (no ``connected``), ``media`` in the ``<Stream contentType>`` (μ-law 8 kHz, or L16 at 8 or
16 kHz), ``dtmf``, ``playedStream`` once a checkpoint's audio has played, ``clearedAudio`` after a
``clearAudio`` (whose dropped checkpoints are never answered), and ``stop``. Every message is built and
checked by :mod:`gateway.caller.wire_plivo`; the caller's 20 ms μ-law 8 kHz frames are converted here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp

from gateway.audio.resample import StreamResampler
from gateway.caller import wire_plivo as wire
from gateway.caller.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.caller.sides import CallerSide, Heard, Offer, post_webhook, ws_url

if TYPE_CHECKING:
    from gateway.caller.call import CallOptions, CallReport

__all__ = ["PlivoSide"]


class PlivoSide(CallerSide):
    """Plivo Audio Streams: signed Answer URL → bidirectional ``<Stream>`` → JSON text frames."""

    name = "plivo"
    answer_path = "/plivo/answer"
    credential_env = "PLIVO_AUTH_TOKEN"
    #: A clear drops the queued checkpoints unanswered; Plivo acknowledges with ``clearedAudio`` instead.
    clear_echoes_marks = False

    def __init__(self) -> None:
        self._seq = 0
        self._ms = 0
        self._content_type = wire.DEFAULT_CONTENT_TYPE
        self._extra_headers = ""
        #: Resamplers between the caller's 8 kHz and a 16 kHz stream (None: the stream is 8 kHz).
        self._up: StreamResampler | None = None
        self._down: StreamResampler | None = None
        self._mismatch_noted = False

    async def request_call(
        self, http: aiohttp.ClientSession, opts: CallOptions, report: CallReport
    ) -> Offer | None:
        url = opts.gateway.rstrip("/") + (opts.voice_path or self.answer_path)
        report.call_sid = wire.new_uuid()
        if not opts.account_sid:
            report.account_sid = wire.new_auth_id()
        form = wire.answer_form(call_uuid=report.call_sid, from_=opts.from_, to=opts.to)
        headers = wire.answer_headers(opts.auth_token, url, form)
        body = await post_webhook(http, url, data=form, headers=headers, what="answer URL")
        spec, tags = wire.parse_answer(body)
        if spec is None:
            report.after_stream = tags
            return None
        warnings = []
        if not spec.bidirectional:
            warnings.append("the <Stream> is not bidirectional: Plivo would ignore everything the bot sends")
        if not spec.keep_call_alive:
            warnings.append("the <Stream> lacks keepCallAlive: Plivo would run the next element at once")
        stream_url, _ = ws_url(spec.url, keep_query=True)  # Plivo dials the element's text as written
        self._content_type = spec.content_type
        self._extra_headers = ";".join(f"{k}={v}" for k, v in spec.extra_headers.items())
        if wire.CONTENT_TYPES[spec.content_type][1] == 16000:
            self._up, self._down = StreamResampler(8000, 16000), StreamResampler(16000, 8000)
        report.stream_sid = wire.new_uuid()
        return Offer(
            url=stream_url,
            parameters=dict(spec.extra_headers),
            status_callback=spec.status_callback_url,
            after=spec.after,
            warnings=warnings,
        )

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def opening(self, report: CallReport, offer: Offer) -> list[str]:
        return [
            wire.start(
                self._next(),
                call_id=report.call_sid,
                stream_id=report.stream_sid,
                account_id=report.account_sid,
                content_type=self._content_type,
                extra_headers=self._extra_headers,
            )
        ]

    def media(self, report: CallReport, index: int, ulaw: bytes) -> str:
        encoding, _ = wire.CONTENT_TYPES[self._content_type]
        if encoding == "audio/x-mulaw":
            payload = ulaw
        elif self._up is not None:
            payload = self._up.process(ulaw_to_pcm16(ulaw))
        else:
            payload = ulaw_to_pcm16(ulaw)
        self._ms = index * 20
        return wire.media(
            self._next(), stream_id=report.stream_sid, chunk=index + 1, timestamp_ms=self._ms, payload=payload
        )

    def dtmf(self, report: CallReport, digit: str) -> str:
        return wire.dtmf(self._next(), stream_id=report.stream_sid, digit=digit, timestamp_ms=self._ms)

    def mark_played(self, report: CallReport, name: str) -> str:
        return wire.played_stream(self._next(), stream_id=report.stream_sid, name=name)

    def cleared(self, report: CallReport) -> str | None:
        return wire.cleared_audio(self._next(), stream_id=report.stream_sid)

    def stop(self, report: CallReport) -> str | None:
        return wire.stop(self._next(), stream_id=report.stream_sid)

    def receive(self, report: CallReport, text: str) -> Heard:
        msg = wire.parse_gateway_message(text, stream_id=report.stream_sid)
        if isinstance(msg, wire.PlayAudioMsg):
            return Heard("media", audio=self._to_ulaw(report, msg))
        if isinstance(msg, wire.CheckpointMsg):
            return Heard("mark", name=msg.name)
        if isinstance(msg, wire.ClearAudioMsg):
            if self._down is not None:
                self._down.reset()  # the dropped audio's filter state must not leak into the next reply
            return Heard("clear")
        raise ValueError(
            "sendDTMF: the gateway declares in-band DTMF for Plivo, so it should never send this"
        )

    def _to_ulaw(self, report: CallReport, msg: wire.PlayAudioMsg) -> bytes:
        """``playAudio`` as the caller hears it: μ-law 8 kHz."""
        fmt = (msg.content_type, msg.sample_rate)
        if fmt != wire.CONTENT_TYPES[self._content_type] and not self._mismatch_noted:
            # Plivo plays it, but the gateway converted its audio for another stream than this one.
            report.warnings.append(f"playAudio as {fmt[0]} at {fmt[1]} Hz on a {self._content_type} stream")
            self._mismatch_noted = True
        if msg.content_type == "audio/x-mulaw":
            return msg.payload
        if len(msg.payload) % 2:
            raise ValueError("playAudio of audio/x-l16 with an odd byte count")
        pcm = msg.payload
        if msg.sample_rate == 16000:
            self._down = self._down or StreamResampler(16000, 8000)
            pcm = self._down.process(pcm)
        return pcm16_to_ulaw(pcm)
