"""Telnyx's Call Control commands against the simulated Telnyx API on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.caller import wire_telnyx as wire
from gateway.caller.telnyx_api import TelnyxApi
from gateway.errors import ConfigError, ToolError
from gateway.tools.telnyx_rest import TelnyxCallControl

KEY = "KEY0123456789-telnyx-secret"
CALL = "v3:" + "a" * 44


@pytest.fixture
async def api() -> AsyncIterator[TelnyxApi]:
    async with TelnyxApi(api_key=KEY) as stand_in:
        yield stand_in


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_answer_then_hang_up_and_an_ended_call_is_done_anyway(
    api: TelnyxApi, http: aiohttp.ClientSession
) -> None:
    """answer carries the stream (token in its URL, RTP both ways); a second hang-up meets Telnyx's 90018
    (the call has ended), which is what a hang-up wants: no error."""
    call = api.expect(CALL)
    rest = TelnyxCallControl(http, api_key=KEY, base_url=api.base_url)
    await rest.answer(CALL, "wss://gw.example.com/telnyx/media", "tok.en", codec="PCMA")
    stream = call.answered.result()
    assert stream is not None
    assert (stream.url, stream.codec, stream.bidirectional_codec) == (
        "wss://gw.example.com/telnyx/media?token=tok.en", "PCMA", "PCMA"
    )  # fmt: skip
    await rest.hang_up(CALL)
    await rest.hang_up(CALL)
    assert [c.action for c in api.commands] == ["answer", "hangup", "hangup"]
    assert all(c.authorization == f"Bearer {KEY}" for c in api.commands)
    assert call.ended_by == "hangup"


async def test_reject_and_transfer(api: TelnyxApi, http: aiohttp.ClientSession) -> None:
    rest = TelnyxCallControl(http, api_key=KEY, base_url=api.base_url)
    api.expect(CALL)
    await rest.reject(CALL)
    other = "v3:" + "b" * 44
    api.expect(other).texml_answered(wire.StreamRequest("wss://x/", "inbound_track", "PCMU", "rtp", "PCMU"))
    await rest.transfer(other, " +15550100199 ")
    assert [(c.action, c.body) for c in api.commands] == [
        ("reject", {"cause": "USER_BUSY"}),
        ("transfer", {"to": "+15550100199"}),
    ]


async def test_refusals_are_tool_errors_without_secrets(api: TelnyxApi, http: aiohttp.ClientSession) -> None:
    """An unknown call, a wrong key, an unreachable API and an id Telnyx could not have issued all become
    ToolErrors the model may hear: status and Telnyx's code, never the key."""
    rest = TelnyxCallControl(http, api_key=KEY, base_url=api.base_url)
    with pytest.raises(ToolError, match="HTTP 404, Telnyx error 10005") as unknown:
        await rest.transfer(CALL, "+15550100199")
    wrong = TelnyxCallControl(http, api_key="KEYwrong", base_url=api.base_url)
    api.expect(CALL)
    with pytest.raises(ToolError, match="HTTP 401") as refused:
        await wrong.hang_up(CALL)
    down = TelnyxCallControl(http, api_key=KEY, base_url="http://127.0.0.1:9/v2")
    with pytest.raises(ToolError, match="could not be reached") as unreachable:
        await down.hang_up(CALL)
    with pytest.raises(ToolError, match="call_control_id"):
        await rest.hang_up("not a call id/../x")
    for exc in (unknown, refused, unreachable):
        assert KEY not in str(exc.value)
        assert "KEYwrong" not in str(exc.value)
    with pytest.raises(ConfigError, match="TELNYX_API_KEY"):
        TelnyxCallControl(http, api_key=" ", base_url=api.base_url)


async def test_the_stand_in_refuses_what_telnyx_would(api: TelnyxApi, http: aiohttp.ClientSession) -> None:
    """The simulated API checks commands as Telnyx does, so a gateway mistake shows up in tests."""
    call = api.expect(CALL)
    url = f"{api.base_url}/calls/{CALL}/actions/answer"
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    mp3 = {"stream_url": "wss://gw/telnyx/media", "stream_bidirectional_mode": "mp3"}
    async with http.post(url, data=json.dumps(mp3), headers=headers) as resp:
        assert resp.status == 422
        assert "rtp" in (await resp.json())["errors"][0]["detail"]
    assert call.problems
    assert not call.answered.done()
    async with http.post(url, data=b"{}", headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 401
