"""MediaSender: several messages in one write reach a real aiohttp client as separate text messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.server.media_out import MediaSender

# Every length class of the frame header: 7-bit, 16-bit (126…65535) and 64-bit lengths.
MESSAGES = ["x" * 10, "y" * 125, "z" * 126, '{"event":"media"}' + "a" * 3000, "w" * 70_000]


@pytest.fixture
async def server() -> AsyncIterator[tuple[TestServer, list[Exception]]]:
    errors: list[Exception] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        send = MediaSender(request, ws)
        await send(MESSAGES[:2])
        await send(MESSAGES[2:])
        await ws.receive()  # the client's "done"
        await ws.close()
        try:
            await send(["after close"])
        except Exception as exc:  # recorded for the test to inspect
            errors.append(exc)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield srv, errors
    await srv.close()


async def test_batched_frames_arrive_as_separate_messages_in_order(
    server: tuple[TestServer, list[Exception]],
) -> None:
    srv, errors = server
    async with aiohttp.ClientSession() as http, http.ws_connect(srv.make_url("/ws")) as ws:
        got = [(await ws.receive(timeout=5)).data for _ in MESSAGES]
        await ws.send_str("done")
        closing = await ws.receive(timeout=5)
    assert got == MESSAGES
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await asyncio.sleep(0.05)
    # After the close, a send goes through aiohttp, which refuses it instead of writing a stray frame.
    assert len(errors) == 1
    assert isinstance(errors[0], ConnectionError)


def test_a_compressed_socket_is_refused() -> None:
    ws = web.WebSocketResponse(compress=True)
    with pytest.raises(ValueError, match="compress=False"):
        MediaSender(None, ws)  # type: ignore[arg-type]
