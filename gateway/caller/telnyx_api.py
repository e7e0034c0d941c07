"""Telnyx's Call Control API on loopback, as the simulated caller plays Telnyx: the gateway's commands
(``answer``, ``reject``, ``hangup``, ``transfer``…) arrive here, are checked as Telnyx checks them,
recorded, and acted on for the call they name.

A Call Control call is answered by a REST command, not by the webhook's reply, so whoever plays Telnyx
must also serve its API: point the gateway's ``TELNYX_API_BASE`` at :attr:`TelnyxApi.base_url`. A test
runs one for its whole duration (``async with TelnyxApi() as api``) and reads :attr:`TelnyxApi.commands`;
``gateway call --provider telnyx-callcontrol`` starts one for the call at the address it is given.
:class:`gateway.caller.telnyx_network.TelnyxNetwork` extends it with Telnyx's Dial for outbound calls.

Replies are Telnyx's shapes: ``{"data": {"result": "ok"}}``; errors ``{"errors": [{"code", "title",
"detail"}]}`` with 401 (no Bearer key), 404 (unknown call), 422 (a call that has ended: code 90018, as
Telnyx answers; or a malformed command).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any, Final, Self
from urllib.parse import urlsplit

from aiohttp import web

from gateway.caller import wire_telnyx as wire
from gateway.errors import ConfigError, TelephonyProtocolError

__all__ = ["ApiCommand", "TelnyxApi", "serving"]

_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})
#: Base URLs of the stand-ins running in this process (so a call finds a test's instance).
_RUNNING: dict[str, TelnyxApi] = {}


@dataclasses.dataclass(frozen=True, slots=True)
class ApiCommand:
    """One command the gateway sent."""

    action: str
    call_control_id: str
    body: dict[str, Any]
    authorization: str = dataclasses.field(repr=False)


class ApiCall:
    """What one call's Telnyx knows: whether and how it was answered, and whether it has ended."""

    def __init__(self) -> None:
        #: The stream the ``answer`` command asked for; None when the call was rejected or hung up first.
        self.answered: asyncio.Future[wire.StreamRequest | None] = asyncio.get_running_loop().create_future()
        self.ended_by: str = ""
        self.commands: list[ApiCommand] = []
        #: Commands Telnyx would have refused, as the gateway's operator would read them in the portal.
        self.problems: list[str] = []

    def texml_answered(self, stream: wire.StreamRequest) -> None:
        """A TeXML call is answered by its instructions, not by a command."""
        if not self.answered.done():
            self.answered.set_result(stream)

    def _end(self, action: str) -> None:
        self.ended_by = self.ended_by or action
        if not self.answered.done():
            self.answered.set_result(None)


def _error(
    status: int, title: str, *, code: str = "10015", detail: str = "", pointer: str = ""
) -> web.Response:
    """Telnyx's error envelope; ``pointer`` names the offending field (JSON pointer, ``/to``)."""
    error: dict[str, Any] = {"code": code, "title": title, "detail": detail}
    if pointer:
        error["source"] = {"pointer": pointer}
    return web.json_response({"errors": [error]}, status=status)


class TelnyxApi:
    """A loopback stand-in for ``https://api.telnyx.com/v2``'s Call Control commands."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, prefix: str = "/v2", api_key: str = ""
    ) -> None:
        self.host, self.port, self.prefix = host, port, prefix.rstrip("/")
        #: When set, the Bearer key the gateway must present (else any non-empty key is taken).
        self.api_key = api_key
        self.commands: list[ApiCommand] = []
        self.calls: dict[str, ApiCall] = {}
        self._runner: web.AppRunner | None = None
        #: Holders: the owner (a test) and each call using it; the last one out stops it.
        self._users = 0

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.prefix}"

    async def start(self) -> None:
        app = web.Application()
        self._routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"cannot serve the Telnyx API stand-in on {self.host}:{self.port}: {exc}"
            ) from exc
        if self.port == 0:
            self.port = runner.addresses[0][1]
        self._runner = runner
        _RUNNING[self.base_url] = self

    async def close(self) -> None:
        _RUNNING.pop(self.base_url, None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _routes(self, app: web.Application) -> None:
        """The API's routes (a subclass serving more of Telnyx's API adds its own)."""
        app.router.add_post(self.prefix + "/calls/{call_control_id}/actions/{action}", self._action)

    async def __aenter__(self) -> Self:
        await self.start()
        self._users += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._users -= 1
        await self.close()

    def expect(self, call_control_id: str) -> ApiCall:
        """Take commands for ``call_control_id`` from now on (an unknown call is a 404, as at Telnyx)."""
        call = self.calls[call_control_id] = ApiCall()
        return call

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        """Telnyx's 401 when the request lacks the Bearer API key (or, when one is set, that key)."""
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not key.strip() or (self.api_key and key.strip() != self.api_key):
            return _error(401, "Authentication failed", code="10009", detail="Bearer API key required")
        return None

    async def _action(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        call_id, action = request.match_info["call_control_id"], request.match_info["action"]
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        if not isinstance(body, dict) or request.content_type != "application/json":
            return _error(422, "Invalid request", detail="the body must be a JSON object")
        command = ApiCommand(action, call_id, body, request.headers.get("Authorization", ""))
        self.commands.append(command)
        call = self.calls.get(call_id)
        if call is None:
            return _error(404, "Resource not found", code="10005", detail="no such call_control_id")
        call.commands.append(command)
        if call.ended_by:
            return _error(422, "Call has already ended", code="90018")
        problem = self._act(call, action, body, raw)
        if problem is not None:
            call.problems.append(f"{action}: {problem}")
            return _error(422, "Invalid parameter", detail=problem)
        return web.json_response({"data": {"result": "ok"}})

    def _act(self, call: ApiCall, action: str, body: dict[str, Any], raw: bytes) -> str | None:
        """Carry out one command; what Telnyx would refuse about it, or None."""
        match action:
            case "answer":
                if call.answered.done():
                    # A repeated command id is ignored by Telnyx; a second answer without one is an error.
                    return None if body.get("command_id") else "the call has already been answered"
                try:
                    call.answered.set_result(wire.parse_answer(raw))
                except TelephonyProtocolError as exc:
                    return str(exc)
            case "reject":
                if call.answered.done():
                    return "only a call that has not been answered can be rejected"
                if body.get("cause") not in ("CALL_REJECTED", "USER_BUSY"):
                    return "cause must be CALL_REJECTED or USER_BUSY"
                call._end("reject")
            case "hangup":
                call._end("hangup")
            case "transfer":
                if not isinstance(body.get("to"), str) or not body["to"].strip():
                    return "transfer needs a 'to' number or SIP URI"
                if not call.answered.done():
                    return "answer the call before transferring it"
                call._end("transfer")
            case _:
                pass  # send_dtmf, speak, streaming_*…: recorded, nothing to play here
        return None


@contextlib.asynccontextmanager
async def serving(base_url: str) -> AsyncIterator[TelnyxApi]:
    """The stand-in at ``base_url``: the one already running in this process (a test's), or a new one
    for as long as this block lasts (``gateway call``).

    Raises:
        ConfigError: ``base_url`` is not an http:// URL on this machine, or its port is taken.
    """
    key = base_url.rstrip("/")
    api = _RUNNING.get(key)
    if api is None:
        parts = urlsplit(key)
        if parts.scheme != "http" or parts.hostname not in _LOOPBACK or parts.port is None:
            raise ConfigError(
                f"the Telnyx API stand-in serves http://127.0.0.1:PORT/v2 on this machine, not {base_url!r}"
            )
        api = TelnyxApi(parts.hostname, parts.port, prefix=parts.path or "/")
        await api.start()
    api._users += 1
    try:
        yield api
    finally:
        api._users -= 1
        if api._users == 0:
            await api.close()
