"""The provider's side of a simulated call: how it asks the gateway for the call, how its stream speaks.

:mod:`gateway.caller.call` plays the caller (a real-time audio clock, speech, keys, mark echoes at
playout time, hang-up) the same way for every provider; a :class:`CallerSide` is everything that
differs: the webhook or answer request and its signature, the stream URL and upgrade headers, and
every message in both directions, field for field as the provider sends and expects them. The caller
works in 20 ms μ-law 8 kHz frames; a side converts at its edge when its stream carries another format.

Sides are written from the providers' documents, independently of :mod:`gateway.telephony`, so a
mistake in the gateway's codecs is not mirrored here.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import aiohttp

from gateway.caller import wire
from gateway.errors import AuthError, ConfigError, TelephonyProtocolError

if TYPE_CHECKING:
    from gateway.caller.call import CallOptions, CallReport

__all__ = ["CallerSide", "Heard", "Offer", "TwilioSide", "parse_twiml", "post_webhook", "ws_url"]


@dataclass
class Offer:
    """What the gateway's answer told the provider: where to stream, and with what."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    #: Values the provider passes back in its start message (Twilio's ``<Parameter>``s).
    parameters: dict[str, str] = field(default_factory=dict)
    status_callback: str | None = None
    #: Verbs the provider would run after the stream ends.
    after: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Heard:
    """One message from the gateway: audio (μ-law 8 kHz), a mark to echo once played, a clear, or call
    control the side has noted itself (``control``: Asterisk's ANSWER/HANGUP; nothing for the caller)."""

    kind: Literal["media", "mark", "clear", "control"]
    audio: bytes = b""
    name: str = ""


class CallerSide(ABC):
    """One provider's side of the wire. One instance per call."""

    name: ClassVar[str]
    #: Pending marks come back at once when playback is cleared (Twilio does; see its ``clear``).
    clear_echoes_marks: ClassVar[bool] = True
    #: Frame type of the provider's messages on the stream.
    binary: ClassVar[bool] = False
    #: The environment variable holding what the provider signs with (``gateway call``'s default).
    credential_env: ClassVar[str] = ""

    @abstractmethod
    async def request_call(
        self, http: aiohttp.ClientSession, opts: CallOptions, report: CallReport
    ) -> Offer | None:
        """The webhook (or answer request) exchange; None when the gateway answered without a stream.

        Raises:
            ConfigError: the gateway cannot be reached. AuthError: it refused (401/403).
            TelephonyProtocolError: it answered with something the provider could not follow.
        """

    @abstractmethod
    def opening(self, report: CallReport, offer: Offer) -> Sequence[str | bytes]:
        """The messages the provider sends once the socket is open (``connected``, ``start``…; bytes:
        binary, AudioSocket's UUID)."""

    @abstractmethod
    def media(self, report: CallReport, index: int, ulaw: bytes) -> str | bytes | None:
        """One 20 ms frame of caller audio (μ-law 8 kHz; the side converts to its stream's format). None:
        the provider sends it in a later message with the frames that follow (Exotel: 100 ms each).
        ``bytes``: a binary message (Vonage)."""

    @abstractmethod
    def dtmf(self, report: CallReport, digit: str) -> str | bytes: ...

    @abstractmethod
    def mark_played(self, report: CallReport, name: str) -> str:
        """The provider's echo of a mark (checkpoint, notify…) whose audio has played."""

    @abstractmethod
    def stop(self, report: CallReport) -> str | bytes | None:
        """The provider's hang-up message, if it sends one before closing."""

    async def connect(
        self, http: aiohttp.ClientSession, offer: Offer
    ) -> aiohttp.ClientWebSocketResponse | None:
        """Open the media stream itself (AudioSocket: TCP); None: the WebSocket at ``offer.url``."""
        return None

    def cleared(self, report: CallReport) -> str | None:
        """The provider's acknowledgement of a clear (Plivo's ``clearedAudio``), if it sends one."""
        return None

    @abstractmethod
    def receive(self, report: CallReport, text: str) -> Heard:
        """Parse one message from the gateway. Raises ValueError naming what the provider would reject."""

    def receive_binary(self, report: CallReport, data: bytes) -> Heard:
        """Parse one binary message from the gateway (only binary-frame providers take any).

        Raises ValueError naming what the provider would reject."""
        raise ValueError(f"binary frame ({self.name} accepts JSON text frames only)")

    async def stream_status(  # noqa: B027 - optional: only some providers send status callbacks
        self, http: aiohttp.ClientSession, offer: Offer, opts: CallOptions, report: CallReport, event: str
    ) -> None:
        """A stream status callback, for providers that send them."""


async def post_webhook(
    http: aiohttp.ClientSession,
    url: str,
    *,
    data: dict[str, str] | bytes | None = None,
    json_body: Any = None,
    headers: dict[str, str],
    what: str = "voice webhook",
) -> str:
    """POST the provider's request to the gateway; the body of a 200, else the error the provider sees."""
    try:
        async with http.post(url, data=data, json=json_body, headers=headers) as resp:
            body = await resp.text()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ConfigError(f"cannot reach the gateway's {what} {url}: {exc}") from exc
    if status in (401, 403):
        raise AuthError(f"{what} refused the call: HTTP {status} (is the auth token right?)")
    if status != 200:
        raise TelephonyProtocolError(f"{what} answered HTTP {status}: {body[:200]!r}")
    return body


def ws_url(url: str, *, keep_query: bool) -> tuple[str, bool]:
    """A stream URL as the provider dials it: http(s) → ws(s); (url, whether a query was dropped)."""
    parts = urlsplit(url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise TelephonyProtocolError(f"stream URL must be wss:// (or ws:// locally), got {url!r}")
    query = parts.query if keep_query else ""
    return urlunsplit((scheme, parts.netloc, parts.path, query, "")), bool(parts.query) and not keep_query


class TwilioSide(CallerSide):
    """Twilio Media Streams: signed voice webhook → ``<Connect><Stream>`` TwiML → JSON text frames."""

    name = "twilio"
    voice_path = "/twilio/voice"
    credential_env = "TWILIO_AUTH_TOKEN"

    async def request_call(
        self, http: aiohttp.ClientSession, opts: CallOptions, report: CallReport
    ) -> Offer | None:
        webhook_url = opts.gateway.rstrip("/") + (opts.voice_path or self.voice_path)
        form = wire.voice_webhook_form(
            call_sid=report.call_sid, account_sid=report.account_sid, from_=opts.from_, to=opts.to
        )
        headers = {"User-Agent": "TwilioProxy/1.1", "I-Twilio-Idempotency-Token": wire.new_sid("")}
        if opts.auth_token:
            headers["X-Twilio-Signature"] = wire.sign(opts.auth_token, webhook_url, form)
        body = await post_webhook(http, webhook_url, data=form, headers=headers)
        offer = parse_twiml(body, webhook_url)
        if offer is None:
            report.after_stream = [v.tag for v in ET.fromstring(body)]
            return None
        url, dropped = ws_url(offer.url, keep_query=False)
        if dropped:
            offer.warnings.append("the <Stream url> has a query string; Twilio drops it")
        offer.url = url
        offer.headers = {"User-Agent": "Twilio.TmeWs/1.0"}
        if opts.auth_token:
            offer.headers["X-Twilio-Signature"] = wire.sign(opts.auth_token, url, {})
        report.stream_sid = wire.new_sid("MZ")
        return offer

    def opening(self, report: CallReport, offer: Offer) -> list[str]:
        self._seq = 1
        return [
            wire.connected(),
            wire.start(
                self._next(),
                stream_sid=report.stream_sid,
                call_sid=report.call_sid,
                account_sid=report.account_sid,
                parameters=offer.parameters,
            ),
        ]

    def _next(self) -> int:
        self._seq += 1
        return self._seq - 1

    def media(self, report: CallReport, index: int, ulaw: bytes) -> str:
        return wire.media(
            self._next(), stream_sid=report.stream_sid, chunk=index + 1, timestamp_ms=index * 20, payload=ulaw
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
        try:
            msg = json.loads(text)
        except ValueError:
            raise ValueError(f"not JSON: {text[:60]!r}") from None
        if not isinstance(msg, dict):
            raise ValueError("message is not a JSON object")
        event = msg.get("event")
        if event not in ("media", "mark", "clear"):
            raise ValueError(f"unknown event {event!r} (Twilio accepts media, mark, clear)")
        if msg.get("streamSid") != report.stream_sid:
            raise ValueError(
                f"{event} with streamSid {msg.get('streamSid')!r}, expected {report.stream_sid!r}"
            )
        if event == "media":
            body = msg.get("media")
            payload = body.get("payload") if isinstance(body, dict) else None
            if not isinstance(payload, str):
                raise ValueError("media without media.payload string")
            try:
                return Heard("media", audio=base64.b64decode(payload, validate=True))
            except (binascii.Error, ValueError):
                raise ValueError("media.payload is not valid base64") from None
        if event == "mark":
            body = msg.get("mark")
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str):
                raise ValueError("mark without mark.name string")
            return Heard("mark", name=name)
        return Heard("clear")

    async def stream_status(
        self, http: aiohttp.ClientSession, offer: Offer, opts: CallOptions, report: CallReport, event: str
    ) -> None:
        url = offer.status_callback
        if not url:
            return
        form = {
            "AccountSid": report.account_sid,
            "CallSid": report.call_sid,
            "StreamSid": report.stream_sid,
            "StreamName": "",
            "StreamEvent": event,
            "StreamError": "",
            "Timestamp": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
        }
        headers = {"X-Twilio-Signature": wire.sign(opts.auth_token, url, form)} if opts.auth_token else {}
        try:
            async with http.post(url, data=form, headers=headers) as resp:
                if resp.status >= 400:
                    report.warnings.append(f"stream status callback {event}: HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            report.warnings.append(f"stream status callback {event} failed: {exc}")


def parse_twiml(text: str, webhook_url: str) -> Offer | None:
    found = wire.connect_stream(text, dialect="TwiML", source="voice webhook")
    if found is None:
        return None
    stream, after = found
    return Offer(
        url=urljoin(webhook_url, stream.get("url", "")),
        parameters=wire.stream_parameters(stream),
        status_callback=stream.get("statusCallback"),
        after=after,
    )
