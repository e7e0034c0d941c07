"""Twilio's REST API, the two requests call control needs: transfer (``<Dial>``) and hang up.

``POST {base}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with HTTP Basic
``AccountSid:AuthToken`` and a form body (docs/telephony-providers.md §1.7): ``Twiml=<Response><Dial>…``
moves the live call to a new number (and ends its media stream); ``Status=completed`` hangs up even
an in-progress call. The HTTP client and the base URL are injected, so tests point them at a local
stand-in and production shares the app's pooled client.

Every failure becomes a :class:`~gateway.errors.ToolError` whose message is safe to show the model:
it never carries the credentials or the provider's raw reply.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import urlencode

import aiohttp

from gateway.errors import ConfigError, ToolError
from gateway.telephony.rest import RestRequest
from gateway.telephony.twiml import dial_twiml
from gateway.tools import rest_call
from gateway.tools.rest_call import RestRefused

__all__ = ["DEFAULT_BASE_URL", "TwilioRest"]

DEFAULT_BASE_URL = "https://api.twilio.com"
_SID = re.compile(r"[A-Za-z0-9]{2,64}")
#: Twilio's "resource not found": the call already ended, which is what a hang-up wants anyway.
_NOT_FOUND = "20404"


class TwilioRest:
    """Updates live calls of one Twilio account."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        account_sid: str,
        auth_token: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 10.0,
    ) -> None:
        if not _SID.fullmatch(account_sid) or not auth_token:
            raise ConfigError("Twilio REST needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        self._http = http
        basic = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {basic}"}
        self.account_sid = account_sid
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def call_url(self, call_sid: str) -> str:
        if not _SID.fullmatch(call_sid):
            raise ToolError("this call has no valid provider id, so it cannot be updated")
        return f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Calls/{call_sid}.json"

    async def update_call(self, call_sid: str, form: dict[str, str]) -> dict[str, Any]:
        """POST ``form`` to the call resource; returns Twilio's JSON reply.

        Raises:
            ToolError: Twilio cannot be reached, or answered with an error (its code is included).
        """
        request = RestRequest(
            "POST",
            self.call_url(call_sid),
            self._headers | {"Content-Type": "application/x-www-form-urlencoded"},
            urlencode(form).encode(),
        )
        reply = await rest_call.send(
            self._http, request, client_timeout=self._timeout, provider="Twilio", error_codes=_error_codes
        )
        return reply.body

    async def create_call(self, form: list[tuple[str, str]]) -> dict[str, Any]:
        """Place an outbound call: ``POST …/Accounts/{AccountSid}/Calls.json`` with ``form``
        (:func:`gateway.telephony.twilio_calls.create_call_form`); Twilio's reply (201, ``sid``…).

        Raises:
            ToolError: Twilio cannot be reached. RestRefused: it refused (its code is included).
        """
        request = RestRequest(
            "POST",
            f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Calls.json",
            self._headers | {"Content-Type": "application/x-www-form-urlencoded"},
            urlencode(form).encode(),
        )
        reply = await rest_call.send(
            self._http, request, client_timeout=self._timeout, provider="Twilio", error_codes=_error_codes
        )
        return reply.body

    async def transfer(self, call_sid: str, number: str, *, caller_id: str | None = None) -> None:
        """Move the call to ``number`` with ``<Dial>`` (the media stream then ends)."""
        await self.update_call(call_sid, {"Twiml": dial_twiml(number, caller_id=caller_id)})

    async def hang_up(self, call_sid: str) -> None:
        """End the call. A call that has already ended counts as success."""
        try:
            await self.update_call(call_sid, {"Status": "completed"})
        except RestRefused as exc:
            if exc.status == 404 or _NOT_FOUND in exc.codes:
                return
            raise


def _error_codes(reply: dict[str, Any]) -> tuple[str, ...]:
    """Twilio's error code (``{"code": 20404, …}``), when its reply has one."""
    code = reply.get("code")
    return (str(code),) if isinstance(code, int) else ()
