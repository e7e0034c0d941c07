"""Twilio REST call updates against a local stand-in: the exact request, and its failures."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.errors import ConfigError, ToolError
from gateway.tools.twilio_rest import TwilioRest

ACCOUNT = "AC" + "1" * 32
CALL = "CA" + "2" * 32
TOKEN = "auth-token-not-real-123"


class FakeTwilio:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.status = 200
        self.body: dict[str, object] = {"sid": CALL, "status": "in-progress"}
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{call}", self.update)
        self.server = TestServer(app, host="127.0.0.1")

    async def update(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.requests.append(
            (request.path, request.headers.get("Authorization", ""), {k: str(v) for k, v in form.items()})
        )
        return web.json_response(self.body, status=self.status)


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio()
    await fake.server.start_server()
    yield fake
    await fake.server.close()


@pytest.fixture
async def rest(twilio: FakeTwilio) -> AsyncIterator[TwilioRest]:
    async with aiohttp.ClientSession() as http:
        yield TwilioRest(
            http, account_sid=ACCOUNT, auth_token=TOKEN, base_url=str(twilio.server.make_url("")).rstrip("/")
        )


async def test_transfer_posts_dial_twiml_with_basic_auth(twilio: FakeTwilio, rest: TwilioRest) -> None:
    """transfer() updates the call with <Dial>NUMBER</Dial>, authenticated as AccountSid:AuthToken."""
    await rest.transfer(CALL, "+15550100199")
    [(path, auth, form)] = twilio.requests
    assert path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"
    assert auth == "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    assert form["Twiml"].endswith("<Response><Dial>+15550100199</Dial></Response>")


async def test_hang_up_completes_the_call_and_tolerates_ended_calls(
    twilio: FakeTwilio, rest: TwilioRest
) -> None:
    """hang_up() sends Status=completed; a call that already ended (404/20404) is fine."""
    await rest.hang_up(CALL)
    assert twilio.requests[-1][2] == {"Status": "completed"}
    twilio.status, twilio.body = 404, {"code": 20404, "message": "not found"}
    await rest.hang_up(CALL)


async def test_refusals_are_tool_errors_without_secrets(twilio: FakeTwilio, rest: TwilioRest) -> None:
    """A refused update is a ToolError naming the status and Twilio code, never the credentials."""
    twilio.status, twilio.body = 400, {"code": 21205, "message": f"bad {TOKEN}"}
    with pytest.raises(ToolError) as info:
        await rest.transfer(CALL, "+15550100199")
    assert (
        str(info.value)
        == "the phone provider refused the request (HTTP 400, Twilio error 21205); the call was not changed"
    )
    assert TOKEN not in str(info.value)


async def test_unreachable_api_and_bad_ids() -> None:
    """No connection, or a call id that is not a SID, gives a ToolError; no credentials, a ConfigError."""
    async with aiohttp.ClientSession() as http:
        rest = TwilioRest(http, account_sid=ACCOUNT, auth_token=TOKEN, base_url="http://127.0.0.1:9")
        with pytest.raises(ToolError, match="could not be reached"):
            await rest.hang_up(CALL)
        with pytest.raises(ToolError, match="no valid provider id"):
            await rest.hang_up("../../Accounts")
        with pytest.raises(ConfigError):
            TwilioRest(http, account_sid="", auth_token="")
