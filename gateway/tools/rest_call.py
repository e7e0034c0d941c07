"""Sends one provider REST request (:class:`~gateway.telephony.rest.RestRequest`) with the app's HTTP client.

Every provider's call-control client does the same thing with a request built sans-I/O: send it with
the pooled aiohttp client, no redirects, read the reply, and turn every failure into a
:class:`~gateway.errors.ToolError` whose message is safe to show the model. The message never carries
the credentials (they stay in the request's headers) or the provider's raw reply: only the status and,
when the provider has them, its short error codes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.errors import ToolError
from gateway.telephony.rest import RestRequest

__all__ = ["RestRefused", "RestReply", "send"]

#: A provider's error codes in its JSON reply, as short strings (``()`` when it has none).
ErrorCodes = Callable[[dict[str, Any]], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class RestReply:
    """What the provider answered: the status, and the reply when it is a JSON object (else ``{}``)."""

    status: int
    body: dict[str, Any]


class RestRefused(ToolError):
    """The provider answered with a status that is not success; ``codes`` are its error codes, if any."""

    def __init__(self, status: int, codes: tuple[str, ...] = (), *, provider: str = "") -> None:
        self.status = status
        self.codes = codes
        detail = f"HTTP {status}" + (f", {provider} error {', '.join(codes[:3])}" if codes else "")
        super().__init__(f"the phone provider refused the request ({detail}); the call was not changed")


async def send(
    http: aiohttp.ClientSession,
    request: RestRequest,
    *,
    client_timeout: aiohttp.ClientTimeout,
    provider: str = "",
    error_codes: ErrorCodes | None = None,
) -> RestReply:
    """Send ``request``; success is a status in ``request.ok`` (when set) or below 400.

    Raises:
        ToolError: the provider cannot be reached. RestRefused: it answered with another status
            (``error_codes`` reads the reply's codes into the message, prefixed with ``provider``).
    """
    try:
        async with http.request(
            request.method,
            request.url,
            headers=dict(request.headers),
            data=request.body,
            timeout=client_timeout,
            allow_redirects=False,
        ) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ToolError("the phone provider could not be reached; the call was not changed") from exc
    try:
        parsed = json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError):
        parsed = None
    body: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
    refused = status >= 400 if request.ok is None else status not in request.ok
    if refused:
        raise RestRefused(status, error_codes(body) if error_codes else (), provider=provider)
    return RestReply(status, body)
