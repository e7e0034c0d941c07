"""MediaSocket: text messages reach the direct handler in order with everything else, over real sockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from gateway.server.media_in import MediaSocket, direct_failure


class Server:
    """One MediaSocket endpoint; what its direct handler took and what its reading task received."""

    def __init__(self) -> None:
        self.direct: list[str] = []
        self.read: list[tuple[WSMsgType, object]] = []
        self.installed: bool | None = None
        #: The reading task starts reading only once this is set, so messages can pile up first.
        self.read_gate = asyncio.Event()
        self.done = asyncio.Event()
        self.handler: Callable[[str], bool] = self.take_direct

    def take_direct(self, text: str) -> bool:
        if text.startswith("direct"):
            if text == "direct boom":
                raise ValueError("boom")
            self.direct.append(text)
            return True
        return False

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = MediaSocket(compress=False)
        await ws.prepare(request)
        self.installed = ws.handle_directly(self.handler)
        await self.read_gate.wait()
        async for msg in ws:
            failure = direct_failure(msg) if msg.type is WSMsgType.ERROR else None
            self.read.append((msg.type, failure if failure is not None else msg.data))
            if msg.data == "stop":
                break
        ws.handle_directly(None)
        self.done.set()  # before the close, which waits for the client's reply
        await ws.close()
        return ws


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, TestServer]]:
    server = Server()
    app = web.Application()
    app.router.add_get("/ws", server.handle)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield server, srv
    await srv.close()


async def _until(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_the_direct_path_is_live_with_the_installed_aiohttp(served: tuple[Server, TestServer]) -> None:
    """Guards the two aiohttp internals MediaSocket relies on: if they move, this fails."""
    server, srv = served
    server.read_gate.set()
    async with aiohttp.ClientSession() as http, http.ws_connect(srv.make_url("/ws")) as ws:
        await _until(lambda: server.installed is not None)
        for i in range(20):
            await ws.send_str(f"direct {i}")
        await ws.send_str("stop")
        await asyncio.wait_for(server.done.wait(), 5)
    assert server.installed is True
    assert server.direct == [f"direct {i}" for i in range(20)]
    assert server.read == [(WSMsgType.TEXT, "stop")]


async def test_messages_behind_a_queued_one_keep_their_order(served: tuple[Server, TestServer]) -> None:
    """While anything waits for the reading task, direct messages queue behind it instead of overtaking."""
    server, srv = served
    async with aiohttp.ClientSession() as http, http.ws_connect(srv.make_url("/ws")) as ws:
        await _until(lambda: server.installed is not None)
        await ws.send_str("direct 1")
        await ws.send_str("mark a")  # queued: the reading task is not reading yet
        await ws.send_str("direct 2")  # must not overtake "mark a"
        await ws.send_bytes(b"\x00binary")
        await ws.ping()
        await _until(lambda: len(server.direct) == 1)
        await asyncio.sleep(0.1)
        server.read_gate.set()
        await _until(lambda: len(server.read) == 3)
        await ws.send_str("direct 3")  # the queue is empty again: direct once more
        await _until(lambda: len(server.direct) == 2)
        await ws.send_str("stop")
        await asyncio.wait_for(server.done.wait(), 5)
    assert server.direct == ["direct 1", "direct 3"]
    assert server.read == [
        (WSMsgType.TEXT, "mark a"),
        (WSMsgType.TEXT, "direct 2"),
        (WSMsgType.BINARY, b"\x00binary"),
        (WSMsgType.TEXT, "stop"),
    ]


async def test_a_handler_error_reaches_the_reader_in_order_and_ends_direct_handling(
    served: tuple[Server, TestServer],
) -> None:
    server, srv = served
    server.read_gate.set()
    async with aiohttp.ClientSession() as http, http.ws_connect(srv.make_url("/ws")) as ws:
        await _until(lambda: server.installed is not None)
        await ws.send_str("direct 1")
        await ws.send_str("direct boom")
        await ws.send_str("direct 2")  # after the failure: the reading task gets it
        await ws.send_str("stop")
        await asyncio.wait_for(server.done.wait(), 5)
    assert server.direct == ["direct 1"]
    (kind, failure), *rest = server.read
    assert kind is WSMsgType.ERROR
    assert isinstance(failure, ValueError)
    assert str(failure) == "boom"
    assert rest == [(WSMsgType.TEXT, "direct 2"), (WSMsgType.TEXT, "stop")]


def test_a_plain_error_message_carries_no_direct_failure() -> None:
    msg = aiohttp.WSMessage(WSMsgType.ERROR, ConnectionResetError(), None)
    assert direct_failure(msg) is None
