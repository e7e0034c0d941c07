"""Handshake, auth, framing and setup-phase errors, over real loopback WebSockets.

Plain ``ws://`` on purpose: these test the emulator's own handshake rules with a raw client; TLS to
the emulator is what the gateway's tests (tests/e2e, tests/gemini) and the SDK conformance test use.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from gateway.emulator import LIVE_PATH, Emulator

from .helpers import MODEL, LiveClient, fast

CONSTRAINED = "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"


async def _closed_with(client: LiveClient) -> tuple[int, str]:
    async def drain() -> None:
        while True:
            await client.recv()

    with pytest.raises(ConnectionClosed) as info:
        await drain()
    rcvd = info.value.rcvd
    assert rcvd is not None
    return rcvd.code, rcvd.reason


@pytest.mark.parametrize(
    "path",
    [
        LIVE_PATH,
        "/" + LIVE_PATH,  # the Python SDK's `//ws/...` with a trailing-slash base URL
        "/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent",
        "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContent",
    ],
)
async def test_real_paths_answer_setup_with_binary_setup_complete(path: str) -> None:
    """Every real Live path accepts a setup and answers with one binary setupComplete frame."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu, path=path)
        await client.setup()  # asserts binary + exact body
        await client.close()
        frame = await emu.wait_for(lambda f: f.direction == "out")
        assert frame.kind == "binary"
        assert frame.payload == {"setupComplete": {}}


async def test_unknown_path_is_http_404() -> None:
    """Paths that are not Live endpoints get a plain HTTP 404."""
    async with Emulator() as emu, aiohttp.ClientSession() as http:
        url = emu.base_url.replace("ws://", "http://") + "/ws/nothing"
        async with http.get(url) as response:
            assert response.status == 404


@pytest.mark.parametrize(
    ("query", "headers"),
    [("key=sekret-key-123", None), ("", {"x-goog-api-key": "sekret-key-123"})],
)
async def test_configured_key_accepted_from_query_or_header(
    query: str, headers: dict[str, str] | None
) -> None:
    """The API key may come from ?key= or the x-goog-api-key header."""
    async with Emulator(fast(), api_key="sekret-key-123") as emu:
        client = await LiveClient.connect(emu, query=query, headers=headers)
        await client.setup()
        await client.close()


async def test_bad_key_upgrades_then_closes_1007_after_setup() -> None:
    """A wrong key still upgrades; the setup is answered with close 1007 "API key not valid"."""
    async with Emulator(fast(), api_key="sekret-key-123") as emu:
        client = await LiveClient.connect(emu, headers={"x-goog-api-key": "wrong"})
        await client.send({"setup": {"model": MODEL}})
        code, reason = await _closed_with(client)
        assert code == 1007
        assert reason == "API key not valid. Please pass a valid API key."


@pytest.mark.parametrize(
    ("query", "headers"),
    [("access_token=auth_tokens/abc", None), ("", {"Authorization": "Token auth_tokens/abc"})],
)
async def test_constrained_endpoint_takes_ephemeral_tokens(
    query: str, headers: dict[str, str] | None
) -> None:
    """BidiGenerateContentConstrained accepts ?access_token= and Authorization: Token, rejects others."""
    async with Emulator(fast(), ephemeral_tokens={"auth_tokens/abc"}) as emu:
        client = await LiveClient.connect(emu, path=CONSTRAINED, query=query, headers=headers)
        await client.setup()
        await client.close()
        bad = await LiveClient.connect(emu, path=CONSTRAINED, query="access_token=auth_tokens/other")
        await bad.send({"setup": {"model": MODEL}})
        assert (await _closed_with(bad))[0] == 1007


async def test_first_message_config_is_rejected_1007() -> None:
    """The tutorial's `config` first message is rejected with 1007."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.send({"config": {"model": MODEL}})
        assert await _closed_with(client) == (
            1007,
            'Invalid JSON payload received. Unknown name "config": Cannot find field.',
        )


async def test_first_message_not_setup_is_rejected_1007() -> None:
    """A valid message other than setup first closes with 1007."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.send({"clientContent": {"turnComplete": True}})
        assert (await _closed_with(client))[0] == 1007


async def test_second_setup_is_rejected_1007() -> None:
    """A second setup closes the socket with 1007 "Request contains an invalid argument." """
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.setup()
        await client.send({"setup": {"model": MODEL}})
        assert await _closed_with(client) == (1007, "Request contains an invalid argument.")


@pytest.mark.parametrize(
    "model", ["models/gemini-2.0-flash-live-001", "models/gemini-live-2.5-flash-preview", "models/nope"]
)
async def test_unknown_or_retired_model_closes_1008_with_truncated_reason(model: str) -> None:
    """Unknown and retired models close 1008 "… is not found …", the reason cut to 123 bytes."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.send({"setup": {"model": model}})
        code, reason = await _closed_with(client)
        assert code == 1008
        assert reason.startswith(f"{model} is not found for API version v1beta")
        assert len(reason.encode()) == 123


async def test_known_models_override() -> None:
    """known_models replaces the default model table."""
    async with Emulator(fast(), known_models=["models/my-model"]) as emu:
        client = await LiveClient.connect(emu)
        await client.setup(model="models/my-model")
        other = await LiveClient.connect(emu)
        await other.send({"setup": {"model": MODEL}})
        assert (await _closed_with(other))[0] == 1008


async def test_unknown_resumption_handle_closes_1008() -> None:
    """A resumption handle the emulator never issued closes 1008 "session not found"."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.send({"setup": {"model": MODEL, "session_resumption": {"handle": "bogus"}}})
        assert await _closed_with(client) == (1008, "BidiGenerateContent session not found")


async def test_slow_setup_delays_setup_complete() -> None:
    """setup_delay_s holds setupComplete back."""
    async with Emulator(fast(setup_delay_s=0.3)) as emu:
        client = await LiveClient.connect(emu)
        started = time.monotonic()
        await client.setup()
        assert time.monotonic() - started >= 0.3


async def test_injected_close_reason_is_truncated_safely() -> None:
    """An injected close with a long multibyte reason sends at most 123 bytes, whole characters."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.setup()
        emu.inject_close(1011, "€" * 100)
        code, reason = await _closed_with(client)
        assert code == 1011
        assert reason == "€" * 41


async def test_injected_1006_drops_tcp_without_close_frame() -> None:
    """inject_close(1006) drops the connection: the client sees no close frame."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.setup()
        emu.inject_close(1006)
        with pytest.raises(ConnectionClosed) as info:
            await client.recv()
        assert info.value.rcvd is None
        recorded = await emu.wait_for(lambda f: f.kind == "close")
        assert recorded.close_code == 1006


async def test_scenario_close_after() -> None:
    """close_after_s closes the session with the scenario's code and reason."""
    async with Emulator(
        fast(close_after_s=0.1, close_code=1011, close_reason="The service is currently unavailable.")
    ) as emu:
        client = await LiveClient.connect(emu)
        await client.setup()
        assert await _closed_with(client) == (1011, "The service is currently unavailable.")


async def test_go_away_then_deadline_close() -> None:
    """go_away_after_s sends goAway with a proto3 duration, then closes 1011 when time is up."""
    async with Emulator(fast(go_away_after_s=0.1, go_away_time_left_s=0.25)) as emu:
        client = await LiveClient.connect(emu)
        await client.setup()
        msg = await client.recv()
        assert msg == {"goAway": {"timeLeft": "0.250s"}}
        started = time.monotonic()
        assert await _closed_with(client) == (1011, "Deadline expired before operation could complete.")
        assert time.monotonic() - started >= 0.2


async def test_client_close_is_recorded_and_wait_for_times_out() -> None:
    """A client close (1000) is recorded; wait_for raises TimeoutError when nothing matches."""
    async with Emulator(fast()) as emu:
        client = await LiveClient.connect(emu)
        await client.setup()
        await client.ws.close(1000)
        frame = await emu.wait_for(lambda f: f.direction == "in" and f.kind == "close")
        assert frame.close_code == 1000
        with pytest.raises(TimeoutError):
            await emu.wait_for(lambda f: False, timeout=0.05)


async def test_stop_closes_open_sessions() -> None:
    """Stopping the emulator closes live sessions instead of leaving them hanging."""
    emu = Emulator(fast())
    await emu.start()
    ws = await websockets.connect(emu.base_url + LIVE_PATH)
    await ws.send(json.dumps({"setup": {"model": MODEL}}))
    await ws.recv()
    await asyncio.wait_for(emu.stop(), 5)
    with pytest.raises(ConnectionClosed):
        await ws.recv()
