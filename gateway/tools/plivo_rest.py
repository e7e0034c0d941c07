"""Plivo's REST API: the two requests call control needs (hang up, transfer) and Make Call.

The requests themselves are built sans-I/O in :mod:`gateway.telephony.plivo` (``hangup_request``,
``transfer_request``); this client sends them with the app's pooled HTTP client. A Plivo transfer
names a URL, not a document: Plivo fetches ``aleg_url`` and runs the ``<Dial>`` it serves, so the
gateway serves that document itself (``transfer_url``, see gateway/server/plivo.py).

Every failure becomes a :class:`~gateway.errors.ToolError` whose message is safe to show the model:
it never carries the credentials or the provider's raw reply.
"""

from __future__ import annotations

from urllib.parse import urlencode

import aiohttp

from gateway.errors import ConfigError, ToolError
from gateway.telephony.plivo import (
    PLIVO_API_BASE,
    dial_xml,
    hangup_request,
    make_call_request,
    transfer_request,
)
from gateway.telephony.rest import RestRequest
from gateway.tools import rest_call

__all__ = ["PlivoRest"]


class PlivoRest:
    """Hangs up and transfers live calls of one Plivo account, and places its outbound calls."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        auth_id: str,
        auth_token: str,
        transfer_url: str,
        base_url: str = PLIVO_API_BASE,
        timeout_s: float = 10.0,
    ) -> None:
        """``transfer_url``: the gateway's public URL serving a transfer's ``<Dial>`` ("" when unknown)."""
        if not auth_id or not auth_token:
            raise ConfigError("Plivo REST needs PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN")
        self._http = http
        self._auth = {"auth_id": auth_id, "auth_token": auth_token, "base_url": base_url}
        self.transfer_url = transfer_url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, request: RestRequest) -> int:
        """Send one request; its status, which is one of ``request.ok``.

        Raises:
            ToolError: Plivo cannot be reached, or answered with another status.
        """
        return (await rest_call.send(self._http, request, client_timeout=self._timeout)).status

    async def make_call(
        self,
        *,
        to: str,
        from_: str,
        answer_url: str,
        hangup_url: str,
        ring_url: str,
        ring_timeout_s: int,
        machine_detection_url: str | None,
    ) -> str:
        """Place an outbound call (:func:`~gateway.telephony.plivo.make_call_request`); its ``request_uuid``.

        Raises:
            ConfigError: a number or URL Plivo cannot take. RestRefused: Plivo refused the request.
            ToolError: Plivo could not be reached, or answered without a request_uuid.
        """
        request = make_call_request(
            to=to,
            from_=from_,
            answer_url=answer_url,
            hangup_url=hangup_url,
            ring_url=ring_url,
            ring_timeout_s=ring_timeout_s,
            machine_detection_url=machine_detection_url,
            **self._auth,
        )
        reply = await rest_call.send(self._http, request, client_timeout=self._timeout, provider="Plivo")
        request_uuid = reply.body.get("request_uuid")
        if not isinstance(request_uuid, str) or not request_uuid:
            raise ToolError("Plivo answered the call request without a request_uuid")
        return request_uuid

    async def hang_up(self, call_sid: str) -> None:
        """``DELETE …/Call/{uuid}/``; a call that has already ended (404) counts as success."""
        await self.send(hangup_request(call_uuid=call_sid, **self._auth))

    async def transfer(self, call_sid: str, number: str) -> None:
        """Point the caller's leg at our ``<Dial>`` document for ``number`` (Plivo then ends the stream)."""
        if not self.transfer_url:
            raise ToolError(
                "transfers are not set up on this line (no public URL); offer another way to help"
            )
        try:
            dial_xml(number)  # refuse a target Plivo cannot dial now, not when Plivo fetches the document
        except ConfigError as exc:
            raise ToolError("the transfer number is not one the phone provider can dial") from exc
        aleg_url = f"{self.transfer_url}?{urlencode({'to': number})}"
        await self.send(transfer_request(call_uuid=call_sid, aleg_url=aleg_url, **self._auth))
