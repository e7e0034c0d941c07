"""Telnyx's side of a simulated call, both ways Telnyx hands a call to an application.

* ``telnyx`` (TeXML): Telnyx POSTs the application's voice URL with a form, signed with Ed25519
  (``telnyx-signature-ed25519`` over ``"{telnyx-timestamp}|{body}"``), and follows the
  ``<Connect><Stream bidirectionalMode="rtp">`` in the answer.
* ``telnyx-callcontrol``: Telnyx POSTs the signed JSON ``call.initiated`` webhook; the application
  answers by sending the ``answer`` command, with the stream parameters, to Telnyx's API, so this side
  also serves that API (:mod:`gateway.caller.telnyx_api`, where the gateway's ``TELNYX_API_BASE``
  points) and opens the stream the command asks for. Around the stream it sends the webhooks Telnyx
  sends (``call.answered``, ``streaming.started``, ``streaming.stopped``, ``call.hangup``).

Either way the stream URL is dialled with its query (the gateway's token travels there), and the stream
speaks Telnyx's JSON: ``connected``, ``start`` (with the caller and callee), RTP payloads in ``media``,
``dtmf``, ``mark`` echoes (all pending ones at once on ``clear``), ``stop``. Messages are built and
checked by :mod:`gateway.caller.wire_telnyx`; the caller's 20 ms μ-law 8 kHz frames are converted here
to the stream's codec (PCMU, PCMA, or L16 at 16 kHz in network byte order) and back.

With an API stand-in, the gateway's ``hangup`` and ``transfer`` commands reach this side too; on Call
Control a stream the gateway closes without either leaves the call up (Telnyx does not end a Call
Control call when its stream closes), which the report warns about.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, ClassVar, Final
from urllib.parse import urlencode

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audio.g711 import alaw_to_pcm16, pcm16_to_alaw
from gateway.audio.resample import StreamResampler
from gateway.caller import wire_telnyx as wire
from gateway.caller.audio import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.caller.sides import CallerSide, Heard, Offer, post_webhook, ws_url
from gateway.caller.telnyx_api import ApiCall, serving
from gateway.errors import ConfigError, GatewayError, TelephonyProtocolError

if TYPE_CHECKING:
    from gateway.caller.call import CallOptions, CallReport

__all__ = ["TelnyxCallControlSide", "TelnyxSide"]

#: How long Telnyx waits, after delivering ``call.initiated``, for the ``answer`` command here.
ANSWER_TIMEOUT_S: Final = 10.0


class TelnyxSide(CallerSide):
    """Telnyx TeXML: signed form to the voice URL → ``<Connect><Stream>`` → JSON text frames."""

    name = "telnyx"
    voice_path = "/telnyx/voice"
    #: Telnyx signs with its own private key; a gateway with ``TELNYX_PUBLIC_KEY`` set takes only
    #: Telnyx's calls, unless it was given the public half of a key made for tests (``--auth-token``
    #: takes the private half, base64, as :func:`wire_telnyx.private_key_b64` writes it).
    credential_env = ""
    #: Telnyx's ``clear`` "returns all queued marks".
    clear_echoes_marks = True
    #: Answered by a Call Control ``answer`` command (True) or by TeXML (False).
    call_control: ClassVar[bool] = False

    def __init__(self) -> None:
        self._seq = 0
        self._encoding = "PCMU"  # what we stream (stream_codec)
        self._codec = "PCMU"  # what the gateway sends back (stream_bidirectional_codec)
        self._up: StreamResampler | None = None
        self._down: StreamResampler | None = None
        self._key: Ed25519PrivateKey | None = None
        self._webhook_url = ""
        self._from = self._to = ""
        self._session_id, self._leg_id, self._user_id = wire.new_id(), wire.new_id(), wire.new_id()
        self._connection_id = str(10**18 + secrets.randbelow(9 * 10**18))  # Telnyx's are long decimals
        self._api: contextlib.AsyncExitStack | None = None
        self._api_call: ApiCall | None = None

    # --- the call arrives ------------------------------------------------------------------------

    async def request_call(
        self, http: aiohttp.ClientSession, opts: CallOptions, report: CallReport
    ) -> Offer | None:
        self._key = wire.load_signing_key(opts.auth_token) if opts.auth_token else None
        self._webhook_url = opts.gateway.rstrip("/") + (opts.voice_path or self.voice_path)
        self._from, self._to = opts.from_, opts.to
        report.call_sid = wire.new_call_control_id()
        report.account_sid = opts.account_sid or wire.new_id()
        if opts.provider_api:
            await self._serve_api(opts.provider_api, report.call_sid)
        elif self.call_control:
            raise ConfigError(
                "a Call Control call is answered through Telnyx's API: give the caller the address the "
                "gateway's TELNYX_API_BASE points at (--provider-api http://127.0.0.1:PORT/v2)"
            )
        try:
            stream = await (self._initiate(http, report) if self.call_control else self._texml(http, report))
        except BaseException:
            await self._release_api()
            raise
        if stream is None:
            await self._release_api()
            return None
        return self._offer(stream, report)

    async def _serve_api(self, base_url: str, call_control_id: str) -> None:
        stack = contextlib.AsyncExitStack()
        api = await stack.enter_async_context(serving(base_url))
        self._api, self._api_call = stack, api.expect(call_control_id)

    async def _release_api(self) -> None:
        if self._api is not None:
            stack, self._api = self._api, None
            await stack.aclose()

    def _signed(self, body: bytes) -> dict[str, str]:
        return {} if self._key is None else wire.signed_headers(self._key, body, timestamp=int(time.time()))

    async def _texml(self, http: aiohttp.ClientSession, report: CallReport) -> wire.StreamRequest | None:
        form = wire.texml_voice_form(
            call_sid=report.call_sid,
            account_sid=report.account_sid,
            call_session_id=self._session_id,
            connection_id=self._connection_id,
            from_=self._from,
            to=self._to,
        )
        body = urlencode(form).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", **self._signed(body)}
        text = await post_webhook(http, self._webhook_url, data=body, headers=headers, what="TeXML voice URL")
        stream = wire.parse_texml(text, self._webhook_url)
        if stream is None:
            report.after_stream = [verb.tag for verb in ET.fromstring(text)]
        elif self._api_call is not None:
            self._api_call.texml_answered(stream)
        return stream

    async def _initiate(self, http: aiohttp.ClientSession, report: CallReport) -> wire.StreamRequest | None:
        call = self._api_call
        assert call is not None  # request_call insists on the API for Call Control
        body = wire.call_initiated(
            call_control_id=report.call_sid,
            call_leg_id=self._leg_id,
            call_session_id=self._session_id,
            connection_id=self._connection_id,
            from_=self._from,
            to=self._to,
            delivered_to=self._webhook_url,
        )
        headers = {"Content-Type": "application/json", **self._signed(body)}
        try:
            await post_webhook(
                http, self._webhook_url, data=body, headers=headers, what="Call Control webhook"
            )
        except TelephonyProtocolError as exc:
            if call.problems:  # why the gateway's answer failed, as Telnyx's API saw it
                raise TelephonyProtocolError(
                    f"{exc}; Telnyx's API refused {'; '.join(call.problems)}"
                ) from exc
            raise
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                stream = await asyncio.shield(call.answered)
        except TimeoutError:
            raise TelephonyProtocolError(
                f"no answer command reached Telnyx's API within {ANSWER_TIMEOUT_S:.0f} s of call.initiated "
                "(is the gateway's TELNYX_API_BASE this caller's --provider-api, and TELNYX_API_KEY set?)"
            ) from None
        if stream is None:
            report.after_stream = [call.ended_by]  # rejected or hung up unanswered
        return stream

    def _offer(self, stream: wire.StreamRequest, report: CallReport) -> Offer:
        encoding = "PCMU" if stream.codec == "default" else stream.codec  # the call's own codec: PCMU
        if encoding not in wire.RATES:
            raise TelephonyProtocolError(
                f"stream codec {encoding!r}: the simulated call has PCMU, PCMA or L16"
            )
        self._encoding, self._codec = encoding, stream.bidirectional_codec
        self._up = StreamResampler(8000, 16000) if encoding == "L16" else None
        self._down = StreamResampler(16000, 8000) if self._codec == "L16" else None
        warnings = []
        if stream.track != "inbound_track":
            warnings.append(f"stream track {stream.track}: the bot would hear itself")
        if encoding != self._codec:
            warnings.append(f"the stream runs {encoding} in and {self._codec} out: Telnyx transcodes one way")
        url, _ = ws_url(stream.url, keep_query=True)  # Telnyx dials the URL as given, query and all
        report.stream_sid = wire.new_id()
        return Offer(url=url, after=stream.after, warnings=warnings)

    # --- the stream ------------------------------------------------------------------------------

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def opening(self, report: CallReport, offer: Offer) -> list[str]:
        self._seq = 0
        return [
            wire.connected(),
            wire.start(
                self._next(),
                stream_id=report.stream_sid,
                call_control_id=report.call_sid,
                call_session_id=self._session_id,
                user_id=self._user_id,
                from_=self._from,
                to=self._to,
                encoding=self._encoding,
            ),
        ]

    def media(self, report: CallReport, index: int, ulaw: bytes) -> str:
        if self._encoding == "PCMU":
            payload = ulaw
        elif self._encoding == "PCMA":
            payload = pcm16_to_alaw(ulaw_to_pcm16(ulaw))
        else:
            assert self._up is not None
            payload = wire.l16_from_pcm16(self._up.process(ulaw_to_pcm16(ulaw)))
        return wire.media(
            self._next(),
            stream_id=report.stream_sid,
            chunk=index + 1,
            timestamp_ms=index * 20,
            payload=payload,
        )

    def dtmf(self, report: CallReport, digit: str) -> str:
        return wire.dtmf(self._next(), stream_id=report.stream_sid, digit=digit)

    def mark_played(self, report: CallReport, name: str) -> str:
        return wire.mark(self._next(), stream_id=report.stream_sid, name=name)

    def stop(self, report: CallReport) -> str | None:
        return wire.stop(
            self._next(), stream_id=report.stream_sid, user_id=self._user_id, call_control_id=report.call_sid
        )

    def receive(self, report: CallReport, text: str) -> Heard:
        try:
            command = wire.parse_command(text, codec=self._codec)
        except TelephonyProtocolError as exc:
            raise ValueError(str(exc)) from None
        if command.kind == "mark":
            return Heard("mark", name=command.name)
        if command.kind == "clear":
            return Heard("clear")
        audio = command.payload
        if self._codec == "PCMA":
            audio = pcm16_to_ulaw(alaw_to_pcm16(audio))
        elif self._codec == "L16":
            assert self._down is not None
            audio = pcm16_to_ulaw(self._down.process(wire.pcm16_from_l16(audio)))
        return Heard("media", audio=audio)

    # --- around the stream: Call Control's webhooks, and what the API saw ----------------------------

    async def stream_status(
        self, http: aiohttp.ClientSession, offer: Offer, opts: CallOptions, report: CallReport, event: str
    ) -> None:
        if self.call_control:
            if event == "stream-started":
                await self._webhook(http, report, "call.answered")
                await self._webhook(http, report, "streaming.started", {"stream_url": report.stream_url})
            else:
                await self._webhook(http, report, "streaming.stopped", {"stream_url": report.stream_url})
                await self._webhook(http, report, "call.hangup", {"hangup_cause": "normal_clearing"})
        if event != "stream-stopped":
            return
        call = self._api_call
        if call is not None:
            # Commands Telnyx would have refused are the gateway's protocol errors.
            report.protocol_errors.extend(call.problems)
            if call.ended_by:
                report.warnings.append(f"Telnyx's API took the gateway's {call.ended_by} command")
            elif self.call_control and report.ended_by == "gateway":
                report.warnings.append(
                    "the gateway closed the stream without a hangup command: on Telnyx Call Control the "
                    "call would stay up, the caller left in silence"
                )
        await self._release_api()

    async def _webhook(
        self,
        http: aiohttp.ClientSession,
        report: CallReport,
        event_type: str,
        payload: dict[str, str] | None = None,
    ) -> None:
        body = wire.call_event(
            event_type,
            call_control_id=report.call_sid,
            call_leg_id=self._leg_id,
            call_session_id=self._session_id,
            connection_id=self._connection_id,
            delivered_to=self._webhook_url,
            payload={"from": self._from, "to": self._to, **(payload or {})},
        )
        headers = {"Content-Type": "application/json", **self._signed(body)}
        try:
            await post_webhook(
                http, self._webhook_url, data=body, headers=headers, what=f"{event_type} webhook"
            )
        except GatewayError as exc:  # a refused notification does not change the call (Telnyx retries it)
            report.warnings.append(f"{event_type} webhook not taken: {exc}")


class TelnyxCallControlSide(TelnyxSide):
    """Telnyx Call Control: signed ``call.initiated`` → the gateway's ``answer`` command → the stream."""

    name = "telnyx-callcontrol"
    call_control = True
