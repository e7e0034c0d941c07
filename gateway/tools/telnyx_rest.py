"""Telnyx's Call Control API, the commands the gateway sends: answer (with the stream), reject, hang up,
transfer; and for outbound calls, dial and start the stream.

The requests themselves are built sans-I/O by :class:`gateway.telephony.telnyx.TelnyxRest`
(``POST {base}/calls/{call_control_id}/actions/{action}``, ``Authorization: Bearer <API key>``, JSON);
this client sends them with the app's pooled HTTP client, so tests point ``base_url`` at a local
stand-in. The same commands serve TeXML calls: a TeXML call's ``CallSid`` is its call_control_id, and
Pipecat's Telnyx serializer (pipecat ``serializers/telnyx.py``) hangs up TeXML-started calls with the
Call Control ``hangup`` command exactly so.

Every failure becomes a :class:`~gateway.errors.ToolError` whose message is safe to show the model: it
never carries the API key or Telnyx's raw reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import aiohttp

from gateway.errors import ConfigError, ToolError
from gateway.telephony.rest import RestRequest
from gateway.telephony.telnyx import DEFAULT_API_BASE, AmdMode, TelnyxRest
from gateway.tools import rest_call
from gateway.tools.rest_call import RestRefused

__all__ = ["TelnyxCallControl"]

#: Telnyx's "call has already ended": what a hang-up wants anyway (docs/telephony-providers.md §2.4).
_ALREADY_ENDED = "90018"


class TelnyxCallControl:
    """Sends Call Control commands for one Telnyx account (implements ``CallControlRest``)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        api_key: str,
        base_url: str = DEFAULT_API_BASE,
        timeout_s: float = 10.0,
    ) -> None:
        self._http = http
        self._requests = TelnyxRest(api_key, base_url=base_url)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def answer(
        self, call_control_id: str, stream_url: str, token: str, *, codec: Literal["PCMU", "PCMA", "L16"]
    ) -> None:
        """Answer an inbound call and start its bidirectional stream to ``stream_url`` (token in its query).

        The command id is fixed: Telnyx ignores a command whose id it has seen for the same call, so a
        webhook Telnyx delivers twice cannot answer twice.
        """
        request = self._build(
            lambda: self._requests.answer(
                call_control_id, stream_url, token, codec=codec, command_id="answer"
            )
        )
        await self._send(request)

    async def dial(
        self,
        *,
        connection_id: str,
        to: str,
        from_: str,
        webhook_url: str,
        timeout_s: int,
        machine_detection: AmdMode,
    ) -> str:
        """Place an outbound call; its ``call_control_id``.

        Raises:
            RestRefused: Telnyx refused the request (its error codes are in the exception).
            ToolError: Telnyx could not be reached, or answered without a call_control_id.
        """
        request = self._build(
            lambda: self._requests.dial(
                connection_id=connection_id,
                to=to,
                from_=from_,
                webhook_url=webhook_url,
                timeout_s=timeout_s,
                machine_detection=machine_detection,
            )
        )
        reply = await self._send(request)
        data = reply.get("data")
        call_control_id = data.get("call_control_id") if isinstance(data, dict) else None
        if not isinstance(call_control_id, str) or not call_control_id:
            raise ToolError("Telnyx answered the dial request without a call_control_id")
        return call_control_id

    async def streaming_start(
        self, call_control_id: str, stream_url: str, token: str, *, codec: Literal["PCMU", "PCMA", "L16"]
    ) -> None:
        """Start the bidirectional stream of an answered outbound call (fixed command id, as ``answer``)."""
        request = self._build(
            lambda: self._requests.streaming_start(
                call_control_id, stream_url, token, codec=codec, command_id="stream"
            )
        )
        await self._send(request)

    async def reject(self, call_control_id: str) -> None:
        """Refuse an inbound call before answering it: the caller hears busy (``USER_BUSY``)."""
        request = self._build(lambda: self._requests.reject(call_control_id, cause="USER_BUSY"))
        await self._send(request)

    async def transfer(self, call_sid: str, number: str) -> None:
        """Transfer the call to ``number`` (Telnyx bridges the caller to it)."""
        await self._send(self._build(lambda: self._requests.transfer(call_sid, number)))

    async def hang_up(self, call_sid: str) -> None:
        """End the call. A call that has already ended counts as success."""
        try:
            await self._send(self._build(lambda: self._requests.hangup(call_sid)))
        except RestRefused as exc:
            if exc.status == 404 or _ALREADY_ENDED in exc.codes:
                return
            raise

    @staticmethod
    def _build(build: Callable[[], RestRequest]) -> RestRequest:
        """Build a request; a call id Telnyx could not have issued is the model's problem to hear."""
        try:
            request = build()
        except ConfigError as exc:
            raise ToolError(f"the phone provider cannot be asked to do that: {exc}") from exc
        return request

    async def _send(self, request: RestRequest) -> dict[str, Any]:
        """Send one command; Telnyx's JSON reply.

        Raises:
            ToolError: Telnyx cannot be reached, or answered with an error (its codes are included).
        """
        reply = await rest_call.send(
            self._http, request, client_timeout=self._timeout, provider="Telnyx", error_codes=_error_codes
        )
        return reply.body


def _error_codes(reply: dict[str, Any]) -> tuple[str, ...]:
    """Telnyx's error codes (``{"errors": [{"code": "90018", "title": …}]}``), as short strings."""
    errors = reply.get("errors")
    if not isinstance(errors, list):
        return ()
    codes = (e.get("code") for e in errors if isinstance(e, dict))
    return tuple(str(c)[:12] for c in codes if isinstance(c, str | int))
