"""SignalWire's Compatibility REST API, the two requests call control needs: hang up and transfer.

The requests are built sans-I/O by :class:`gateway.telephony.signalwire.SignalWireRest` (``POST
…/api/laml/2010-04-01/Accounts/{ProjectID}/Calls/{CallSid}.json``, Basic ``ProjectID:APIToken``); this
client sends them with the app's pooled HTTP client. SignalWire's "Update a Call" takes ``Status`` and
``Url`` but documents no inline ``Twiml``, so a transfer points the call at a URL of the gateway's that
answers with ``<Dial>`` (``transfer_url``, see gateway/server/signalwire.py).

Every failure becomes a :class:`~gateway.errors.ToolError` whose message is safe to show the model:
it never carries the credentials or the provider's raw reply.
"""

from __future__ import annotations

from urllib.parse import urlencode

import aiohttp

from gateway.errors import ConfigError, ToolError
from gateway.telephony.rest import RestRequest
from gateway.telephony.signalwire import SignalWireRest
from gateway.telephony.twiml import dial_twiml
from gateway.tools import rest_call
from gateway.tools.rest_call import RestRefused

__all__ = ["SignalWireCallControl"]


class SignalWireCallControl:
    """Hangs up and transfers live calls of one SignalWire project."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        space_url: str,
        project_id: str,
        api_token: str,
        transfer_url: str,
        timeout_s: float = 10.0,
    ) -> None:
        """``transfer_url``: the gateway's public URL serving a transfer's ``<Dial>`` ("" when unknown).

        Raises:
            ConfigError: a credential is missing or the Space URL is not http(s).
        """
        self._http = http
        self._requests = SignalWireRest(base_url=space_url, project_id=project_id, api_token=api_token)
        self.transfer_url = transfer_url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, request: RestRequest) -> int:
        """Send one request; its HTTP status when below 400.

        Raises:
            ToolError: SignalWire cannot be reached, or answered with an error status.
        """
        return (await rest_call.send(self._http, request, client_timeout=self._timeout)).status

    async def hang_up(self, call_sid: str) -> None:
        """``Status=completed``; a call that has already ended (404) counts as success."""
        try:
            await self.send(self._requests.hangup(call_sid))
        except RestRefused as exc:
            if exc.status != 404:
                raise
        except ConfigError as exc:  # the SID is not SignalWire's
            raise ToolError("this call has no valid provider id, so it cannot be updated") from exc

    async def transfer(self, call_sid: str, number: str) -> None:
        """Redirect the call to our ``<Dial>`` document for ``number`` (SignalWire then ends the stream)."""
        if not self.transfer_url:
            raise ToolError(
                "transfers are not set up on this line (no public URL); offer another way to help"
            )
        try:
            dial_twiml(number)  # refuse a target now, not when SignalWire fetches the document
            request = self._requests.redirect(
                call_sid, f"{self.transfer_url}?{urlencode({'to': number.strip()})}"
            )
        except ConfigError as exc:
            raise ToolError("the call or the transfer number is not one the phone provider can use") from exc
        await self.send(request)
