"""LiveSession edge cases without the emulator: endpoint URLs, refused connections, misbehaving servers."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer
from websockets.asyncio.server import ServerConnection, serve

from gateway.errors import ConfigError, LiveConnectError, LiveSessionClosed
from gateway.gemini.messages import OutputTranscription, SessionConfig, TurnComplete
from gateway.gemini.session import LiveEndpoint, LiveSession, _LiveConnection

KEY = "AIzaSy-test-key-0123456789abcdef"
PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


def _cfg() -> SessionConfig:
    return SessionConfig(model="gemini-3.8-live")


# ----------------------------------------------------------------------------------- endpoint


def test_endpoint_url_puts_the_key_in_a_header_by_default() -> None:
    """The default URL has no credential; the key travels in x-goog-api-key."""
    ep = LiveEndpoint(api_key="k e y")
    assert ep.url() == "wss://generativelanguage.googleapis.com" + PATH
    assert ep.headers() == {"x-goog-api-key": "k e y"}
    assert "k e y" not in repr(ep)


def test_endpoint_url_variants() -> None:
    """?key= on request, the Constrained method for ephemeral tokens, http(s) mapped to ws(s)."""
    q = LiveEndpoint(base_url="http://127.0.0.1:9/", api_key="a/b", key_in_query=True)
    assert q.url() == "ws://127.0.0.1:9" + PATH + "?key=a%2Fb"
    assert q.headers() == {}
    assert q.redacted_url() == "ws://127.0.0.1:9" + PATH
    t = LiveEndpoint(ephemeral_token="auth_tokens/xyz", api_version="v1alpha")
    assert t.url() == (
        "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1alpha."
        "GenerativeService.BidiGenerateContentConstrained?access_token=auth_tokens%2Fxyz"
    )
    assert t.headers() == {}
    assert "xyz" not in t.redacted_url()


def test_endpoint_without_credentials_sends_none() -> None:
    """A local emulator needs no key: no query string and no auth header."""
    ep = LiveEndpoint(base_url="ws://127.0.0.1:9")
    assert ep.url() == "ws://127.0.0.1:9" + PATH
    assert ep.headers() == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"api_key": "k", "ephemeral_token": "t"},
        {"api_key": "k", "base_url": "ftp://x"},
        {"api_key": "k", "base_url": "wss://"},
        {"api_key": "k", "base_url": "wss://h?key=1"},
        {"api_key": "k", "api_version": "v1/../x"},
    ],
)
def test_bad_endpoints_are_config_errors(kwargs: dict[str, str]) -> None:
    """Double credentials and odd URLs fail at configuration time."""
    with pytest.raises(ConfigError):
        LiveEndpoint(**kwargs)


async def test_refused_connection_is_a_retryable_connect_error() -> None:
    """Nothing listening on the port: LiveConnectError, retryable, no OSError leaking out."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(LiveConnectError) as info:
        await LiveSession.connect(LiveEndpoint(base_url=f"ws://127.0.0.1:{port}", api_key=KEY), _cfg())
    assert info.value.retryable
    assert isinstance(info.value.__cause__, OSError)


# ------------------------------------------------------------------ misbehaving servers (no emulator)


async def _serve(handler: Callable[[web.Request], Any]) -> TestServer:
    app = web.Application()
    app.router.add_get(PATH, handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_malformed_server_message_closes_with_a_protocol_error() -> None:
    """Garbage after setupComplete ends events() with LiveSessionClosed(1002) and closes the socket."""
    closed_with: list[int | None] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        await ws.send_bytes(b'{"setupComplete": {}}')
        await ws.send_bytes(b"\x00 not json")
        msg = await ws.receive()
        closed_with.append(ws.close_code if msg.type == WSMsgType.CLOSE else None)
        return ws

    server = await _serve(handler)
    try:
        s = await LiveSession.connect(
            LiveEndpoint(base_url=f"ws://127.0.0.1:{server.port}", api_key=KEY), _cfg()
        )
        with pytest.raises(LiveSessionClosed) as info:
            [e async for e in s.events()]
        assert info.value.code == 1002
        assert info.value.retryable
        await s.close()
        assert closed_with == [1002]
    finally:
        await server.close()


async def test_garbage_after_the_session_is_ready_still_closes_with_a_protocol_error() -> None:
    """A malformed message arriving once messages are taken in the read callback (_LiveConnection) is
    declined there and met by the reader, which ends the session with 1002 as before."""
    closed_with: list[int | None] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        await ws.send_bytes(b'{"setupComplete": {}}')
        await ws.receive()  # the client's text: the session is ready and taking messages by now
        await ws.send_bytes(b'{"serverContent": {"outputTranscription": {"text": "fine"}}}')
        await ws.send_bytes(b"\x00 not json")
        await ws.send_bytes(b'{"serverContent": {"outputTranscription": {"text": "never"}}}')
        msg = await ws.receive()
        closed_with.append(ws.close_code if msg.type == WSMsgType.CLOSE else None)
        return ws

    server = await _serve(handler)
    try:
        s = await LiveSession.connect(
            LiveEndpoint(base_url=f"ws://127.0.0.1:{server.port}", api_key=KEY), _cfg()
        )
        s.send_text("hi")
        seen: list[Any] = []

        async def read_all() -> None:
            async for event in s.events():
                seen.append(event)

        with pytest.raises(LiveSessionClosed) as info:
            await read_all()
        assert info.value.code == 1002
        assert seen == [OutputTranscription("fine")]
        assert isinstance(s._ws, _LiveConnection)
        assert s._ws.taken == 1
        await s.close()
        assert closed_with == [1002]
    finally:
        await server.close()


async def test_a_fragmented_server_message_keeps_its_place() -> None:
    """RFC 6455 lets a server fragment a message. Fragments go the usual way (websockets reassembles them
    for the reader); whole messages after one wait their turn behind it: events come in order."""

    def said(text: str) -> bytes:
        return json.dumps({"serverContent": {"outputTranscription": {"text": text}}}).encode()

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(b'{"setupComplete": {}}')
        await ws.recv()
        await ws.send(said("one"))
        whole = said("two")
        await ws.send([whole[:10], whole[10:25], whole[25:]])  # three frames: binary, cont, cont
        await ws.send(said("three"))
        await ws.send(b'{"serverContent": {"turnComplete": true}}')
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        s = await LiveSession.connect(LiveEndpoint(base_url=f"ws://127.0.0.1:{port}", api_key=KEY), _cfg())
        try:
            s.send_text("hi")
            seen: list[Any] = []
            async with asyncio.timeout(5):
                async for event in s.events():
                    seen.append(event)
                    if isinstance(event, TurnComplete):
                        break
            texts = [e.text for e in seen if isinstance(e, OutputTranscription)]
            assert texts == ["one", "two", "three"]
            assert isinstance(s._ws, _LiveConnection)
            assert 1 <= s._ws.taken <= 3  # "one"; "three" and turnComplete if they came after "two" was read
            assert s.stats.messages_received == 5
        finally:
            await s.close()


async def test_first_message_not_setup_complete_is_a_connect_error() -> None:
    """A server that talks before setupComplete is incompatible: final LiveConnectError."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        await ws.send_bytes(b'{"serverContent": {"turnComplete": true}}')
        await ws.receive()
        return ws

    server = await _serve(handler)
    try:
        with pytest.raises(LiveConnectError, match="setupComplete") as info:
            await LiveSession.connect(
                LiveEndpoint(base_url=f"ws://127.0.0.1:{server.port}", api_key=KEY), _cfg()
            )
        assert not info.value.retryable
    finally:
        await server.close()


@pytest.mark.parametrize(("status", "retryable"), [(403, False), (429, True), (503, True)])
async def test_refused_upgrade_maps_http_status(status: int, retryable: bool) -> None:
    """An HTTP error instead of the upgrade is a LiveConnectError; 429 and 5xx are retryable."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, text="no")

    server = await _serve(handler)
    try:
        with pytest.raises(LiveConnectError, match=str(status)) as info:
            await LiveSession.connect(
                LiveEndpoint(base_url=f"ws://127.0.0.1:{server.port}", api_key=KEY), _cfg()
            )
        assert info.value.retryable is retryable
    finally:
        await server.close()
