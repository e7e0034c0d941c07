"""Vonage's side of a simulated call: the signed answer webhook, the NCCO it follows, the WebSocket.

Vonage GETs the answer URL (``to``, ``from``, ``uuid``, ``conversation_uuid``; a JWT in
``Authorization`` when signed webhooks are on), reads the NCCO's ``connect`` to a ``websocket``
endpoint, and opens its ``uri`` with the endpoint's ``authorization`` on the upgrade. On the socket it
sends ``websocket:connected`` (the endpoint's headers flattened into it), then one binary 20 ms L16
frame every 20 ms, ``websocket:dtmf``, ``websocket:notify`` once a notify's audio has played and
``websocket:cleared`` after a ``clear``; it hangs up by closing the socket. What the gateway sends is
checked as Vonage checks it: binary messages of exactly 20 ms, and paced in real time (Vonage plays
what it gets and buffers only so much): the spacing and the lead of the gateway's audio over the
clock are measured into ``CallReport.pacing``. The caller's 20 ms μ-law 8 kHz frames are converted here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from gateway.audio.resample import StreamResampler
from gateway.caller import wire_vonage as wire
from gateway.caller.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.caller.sides import CallerSide, Heard, Offer
from gateway.errors import AuthError, ConfigError, TelephonyProtocolError

if TYPE_CHECKING:
    from gateway.caller.call import CallOptions, CallReport

__all__ = ["PACING_LIMIT_MS", "VonageSide"]

#: Audio received ahead of the clock beyond this is not paced in real time (the gateway's lead is 40 ms).
PACING_LIMIT_MS = 250.0
#: A gap longer than this ends a run of bot audio (spacing is measured within runs).
_RUN_GAP_S = 0.1


class VonageSide(CallerSide):
    """Vonage Voice API: signed answer webhook → NCCO ``connect`` websocket → binary L16 + JSON text."""

    name = "vonage"
    answer_path = "/vonage/answer"
    credential_env = "VONAGE_SIGNATURE_SECRET"
    binary = True
    #: A ``clear`` answers with ``websocket:cleared``; the notifies it dropped are not echoed.
    clear_echoes_marks = False

    def __init__(self) -> None:
        self.endpoint: wire.Endpoint | None = None
        self.rate = 16000
        self._up: StreamResampler | None = None
        self._down: StreamResampler | None = None
        self._pending_up = bytearray()
        self._payloads: dict[str, dict[str, Any]] = {}
        #: Every binary message heard, as sent (L16 at the stream's rate): for bandwidth checks.
        self.heard_pcm = bytearray()
        #: Replaces the caller's audio: frame index → one 20 ms L16 frame at the stream's rate.
        self.uplink_source: Callable[[int], bytes] | None = None
        self._last_at: float | None = None
        self._ahead_s = 0.0
        self._intervals: list[float] = []
        self._bad_sizes = 0
        self._pacing_noted = False

    async def request_call(
        self, http: aiohttp.ClientSession, opts: CallOptions, report: CallReport
    ) -> Offer | None:
        url = opts.gateway.rstrip("/") + (opts.voice_path or self.answer_path)
        report.call_sid = wire.new_uuid()
        query = wire.answer_query(call_uuid=report.call_sid, from_=opts.from_, to=opts.to)
        headers = {"User-Agent": "Vonage-Voice/1.0"}
        if opts.auth_token:
            headers["Authorization"] = "Bearer " + wire.signed_jwt(opts.auth_token, wire.query_payload(query))
        try:
            async with http.get(url, params=query, headers=headers) as resp:
                body, status = await resp.text(), resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the gateway's answer URL {url}: {exc}") from exc
        if status in (401, 403):
            raise AuthError(f"answer URL refused the call: HTTP {status} (is the signature secret right?)")
        if status != 200:
            raise TelephonyProtocolError(f"answer URL answered HTTP {status}: {body[:200]!r}")
        endpoint, actions = wire.parse_ncco(body, signature_secret=opts.auth_token)
        if endpoint is None:
            report.after_stream = actions
            return None
        self.endpoint, self.rate = endpoint, endpoint.rate
        if self.rate != 8000:
            self._up, self._down = StreamResampler(8000, self.rate), StreamResampler(self.rate, 8000)
        report.stream_sid = report.call_sid
        report.pacing = {"messages": 0, "bad_sizes": 0, "max_ahead_ms": 0.0}
        upgrade = {"Authorization": endpoint.authorization} if endpoint.authorization else {}
        return Offer(url=endpoint.uri, headers=upgrade, parameters=dict(endpoint.headers), after=actions[1:])

    def opening(self, report: CallReport, offer: Offer) -> list[str]:
        assert self.endpoint is not None
        return [wire.connected(self.endpoint.content_type, self.endpoint.headers)]

    def media(self, report: CallReport, index: int, ulaw: bytes) -> bytes | None:
        size = wire.frame_bytes(self.rate)
        if self.uplink_source is not None:
            return self.uplink_source(index)
        pcm = ulaw_to_pcm16(ulaw)
        self._pending_up += self._up.process(pcm) if self._up is not None else pcm
        if len(self._pending_up) < size:
            return None if index == 0 else bytes(size)  # the resampler's start-up delay: silence
        frame = bytes(self._pending_up[:size])
        del self._pending_up[:size]
        return frame

    def dtmf(self, report: CallReport, digit: str) -> str:
        return wire.dtmf(digit)

    def mark_played(self, report: CallReport, name: str) -> str:
        return wire.notify(self._payloads.pop(name, {"mark": name}))

    def cleared(self, report: CallReport) -> str | None:
        self._payloads.clear()
        return wire.cleared()

    def stop(self, report: CallReport) -> str | None:
        return None  # Vonage hangs up by closing the socket

    def receive(self, report: CallReport, text: str) -> Heard:
        msg = wire.parse_gateway_text(text)
        if isinstance(msg, wire.NotifyMsg):
            mark = msg.payload.get("mark")
            name = mark if isinstance(mark, str) else json.dumps(msg.payload, sort_keys=True)
            self._payloads[name] = msg.payload
            return Heard("mark", name=name)
        if self._down is not None:
            self._down.reset()  # the dropped audio's filter state must not leak into the next reply
        self._last_at = None
        self._ahead_s = 0.0
        return Heard("clear")

    def receive_binary(self, report: CallReport, data: bytes) -> Heard:
        self._pace(report, time.monotonic(), len(data))
        wire.check_audio(data, self.rate)
        if len(self.heard_pcm) < 120 * self.rate * 2:
            self.heard_pcm += data
        pcm = self._down.process(data) if self._down is not None else data
        return Heard("media", audio=pcm16_to_ulaw(pcm))

    def _pace(self, report: CallReport, now: float, size: int) -> None:
        """The gateway's audio against the clock: Vonage plays one 20 ms frame per 20 ms, so what it holds
        is the audio received minus the time passed; spacing is measured within runs of audio."""
        pacing = report.pacing
        pacing["messages"] += 1
        if size != wire.frame_bytes(self.rate):
            self._bad_sizes += 1
            pacing["bad_sizes"] = self._bad_sizes
        last = self._last_at
        if last is not None and now - last < _RUN_GAP_S:
            self._intervals.append(now - last)
            self._ahead_s = max(0.0, self._ahead_s - (now - last))
        else:
            self._ahead_s = 0.0
        self._ahead_s += 0.020
        self._last_at = now
        ahead_ms = self._ahead_s * 1000
        if ahead_ms > pacing["max_ahead_ms"]:
            pacing["max_ahead_ms"] = round(ahead_ms, 1)
        if ahead_ms > PACING_LIMIT_MS and not self._pacing_noted:
            self._pacing_noted = True
            raise ValueError(
                f"audio {ahead_ms:.0f} ms ahead of real time: Vonage needs one 20 ms message per 20 ms"
            )

    def pacing_summary(self) -> dict[str, float]:
        """Spacing of the gateway's binary messages within runs: median, p99 and worst deviation from
        20 ms (ms), after each run's opening lead."""
        steady = sorted(abs(i - 0.020) * 1000 for i in self._intervals if i > 0.005)
        if not steady:
            return {}
        return {
            "intervals": len(steady),
            "jitter_p50_ms": round(steady[len(steady) // 2], 2),
            "jitter_p99_ms": round(steady[min(len(steady) - 1, int(len(steady) * 0.99))], 2),
            "jitter_max_ms": round(steady[-1], 2),
        }
