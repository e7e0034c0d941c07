"""Vonage's Voice REST API: the requests call control needs (hang up, transfer) and placing a call.

The requests are built sans-I/O in :mod:`gateway.telephony.vonage` (``PUT /v1/calls/{uuid}``); this
client signs each with a fresh application JWT (RS256, the application's private key) and sends it
with the app's pooled HTTP client, so tests point ``base_url`` at a local stand-in.

Every failure becomes a :class:`~gateway.errors.ToolError` whose message is safe to show the model: it
never carries the JWT or Vonage's raw reply.
"""

from __future__ import annotations

import aiohttp

from gateway.errors import ConfigError, ToolError
from gateway.telephony.rest import RestRequest
from gateway.telephony.vonage import (
    VONAGE_API_BASE,
    application_jwt,
    create_call_request,
    hangup_request,
    transfer_request,
)
from gateway.tools import rest_call

__all__ = ["VonageRest"]


class VonageRest:
    """Hangs up and transfers live calls of one Vonage application (implements ``CallControlRest``)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        application_id: str,
        private_key: str,
        base_url: str = VONAGE_API_BASE,
        timeout_s: float = 10.0,
    ) -> None:
        """Raises ConfigError when the key cannot sign (checked now, not at the first hang-up)."""
        application_jwt(application_id, private_key)
        self._http = http
        self._application_id = application_id
        self._private_key = private_key
        self._base_url = base_url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def _jwt(self) -> str:
        return application_jwt(self._application_id, self._private_key)

    async def send(self, request: RestRequest) -> int:
        """Send one request; its status, which is one of ``request.ok``.

        Raises:
            ToolError: Vonage cannot be reached, or answered with another status.
        """
        reply = await rest_call.send(self._http, request, client_timeout=self._timeout, provider="Vonage")
        return reply.status

    async def create_call(
        self,
        *,
        to: str,
        from_: str,
        answer_url: str,
        event_url: str,
        ringing_s: int,
        machine_detection: bool,
    ) -> str:
        """Place an outbound call (``POST /v1/calls``); its uuid.

        Raises:
            RestRefused: Vonage refused the request. ToolError: Vonage could not be reached, or its answer
                had no call uuid. ConfigError: a number Vonage cannot dial.
        """
        request = create_call_request(
            to=to, from_=from_, answer_url=answer_url, event_url=event_url, ringing_s=ringing_s,
            machine_detection=machine_detection, app_jwt=self._jwt(), base_url=self._base_url,
        )  # fmt: skip
        reply = await rest_call.send(self._http, request, client_timeout=self._timeout, provider="Vonage")
        uuid = reply.body.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            raise ToolError("Vonage answered the call request without a call uuid")
        return uuid

    async def hang_up(self, call_sid: str) -> None:
        """``PUT /v1/calls/{uuid}`` ``hangup``; a call that has already ended (404) counts as success."""
        await self.send(hangup_request(call_uuid=call_sid, app_jwt=self._jwt(), base_url=self._base_url))

    async def transfer(self, call_sid: str, number: str) -> None:
        """``PUT /v1/calls/{uuid}`` ``transfer`` to an NCCO connecting ``number`` (Vonage ends our socket)."""
        try:
            request = transfer_request(
                call_uuid=call_sid, number=number, app_jwt=self._jwt(), base_url=self._base_url
            )
        except ConfigError as exc:
            raise ToolError("the transfer number is not one the phone provider can dial") from exc
        await self.send(request)
