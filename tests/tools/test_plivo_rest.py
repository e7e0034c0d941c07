"""Plivo REST hang-up and transfer against a local stand-in: the exact requests, and their failures."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.errors import ConfigError, ToolError
from gateway.tools.plivo_rest import PlivoRest

AUTH_ID = "MA" + "1" * 18
TOKEN = "plivo-token-not-real"
CALL = "6f1c2a9e-0d3b-4b7a-9f51-2c8e7d4a1b00"
TRANSFER_URL = "https://voice.example.com/plivo/transfer"


class FakePlivo:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str, bytes]] = []
        self.status = 204
        app = web.Application()
        app.router.add_route("*", "/v1/Account/{auth_id}/Call/{uuid}/", self.call)
        self.server = TestServer(app, host="127.0.0.1")

    async def call(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((request.method, request.path, request.headers.get("Authorization", ""), body))
        return web.Response(status=self.status, text='{"error": "secret detail"}')


@pytest.fixture
async def plivo() -> AsyncIterator[FakePlivo]:
    fake = FakePlivo()
    await fake.server.start_server()
    yield fake
    await fake.server.close()


@pytest.fixture
async def rest(plivo: FakePlivo) -> AsyncIterator[PlivoRest]:
    async with aiohttp.ClientSession() as http:
        yield PlivoRest(
            http,
            auth_id=AUTH_ID,
            auth_token=TOKEN,
            transfer_url=TRANSFER_URL,
            base_url=str(plivo.server.make_url("")).rstrip("/"),
        )


async def test_hang_up_deletes_the_call_and_an_ended_call_is_success(
    plivo: FakePlivo, rest: PlivoRest
) -> None:
    await rest.hang_up(CALL)
    plivo.status = 404
    await rest.hang_up(CALL)
    basic = "Basic " + base64.b64encode(f"{AUTH_ID}:{TOKEN}".encode()).decode()
    assert [r[:3] for r in plivo.requests] == [("DELETE", f"/v1/Account/{AUTH_ID}/Call/{CALL}/", basic)] * 2


async def test_transfer_names_the_gateways_dial_document(plivo: FakePlivo, rest: PlivoRest) -> None:
    plivo.status = 202
    await rest.transfer(CALL, "+15550100199")
    [(method, path, _, body)] = plivo.requests
    assert (method, path) == ("POST", f"/v1/Account/{AUTH_ID}/Call/{CALL}/")
    assert json.loads(body) == {
        "legs": "aleg",
        "aleg_url": TRANSFER_URL + "?to=%2B15550100199",
        "aleg_method": "POST",
    }


async def test_failures_are_tool_errors_without_credentials_or_plivos_reply(
    plivo: FakePlivo, rest: PlivoRest
) -> None:
    plivo.status = 401
    with pytest.raises(ToolError) as refused:
        await rest.hang_up(CALL)
    assert "HTTP 401" in str(refused.value)
    assert TOKEN not in str(refused.value)
    assert "secret detail" not in str(refused.value)
    with pytest.raises(ToolError, match="not one the phone provider can dial"):
        await rest.transfer(CALL, "the manager")
    with pytest.raises(ToolError, match="no valid provider id"):
        await rest.hang_up("../../Account")
    await plivo.server.close()
    with pytest.raises(ToolError, match="could not be reached"):
        await rest.hang_up(CALL)
    assert len(plivo.requests) == 1


async def test_transfer_without_a_public_url_is_not_set_up() -> None:
    async with aiohttp.ClientSession() as http:
        rest = PlivoRest(http, auth_id=AUTH_ID, auth_token=TOKEN, transfer_url="")
        with pytest.raises(ToolError, match="not set up"):
            await rest.transfer(CALL, "+15550100199")
        with pytest.raises(ConfigError, match="PLIVO_AUTH_ID"):
            PlivoRest(http, auth_id="", auth_token=TOKEN, transfer_url="")
