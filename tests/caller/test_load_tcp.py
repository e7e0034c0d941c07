"""The load caller's AudioSocket socket over loopback TCP: messages cut from the byte stream however it
is split, one write per message, hang-up by closing either way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.caller.load import _tcp_open
from gateway.caller.side_audiosocket import message


class _Peer:
    """A loopback TCP server standing in for the gateway's listener: what it got, and its writer."""

    def __init__(self) -> None:
        self.connected: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.get_running_loop().create_future()
        )
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(
            lambda r, w: self.connected.set_result((r, w)), "127.0.0.1", 0
        )
        port = self.server.sockets[0].getsockname()[1]
        return f"tcp://127.0.0.1:{port}"


@pytest.fixture
async def peer() -> AsyncIterator[_Peer]:
    p = _Peer()
    yield p
    if p.connected.done():
        p.connected.result()[1].close()
    if p.server is not None:
        p.server.close()
        await p.server.wait_closed()


async def test_messages_are_cut_whole_however_the_stream_is_split(peer: _Peer) -> None:
    """A message in three writes, two in one, a long one: each reaches ``on_binary`` whole, in order."""
    got: list[bytes] = []
    four = asyncio.Event()

    def on_binary(data: bytes) -> None:
        got.append(data)
        if len(got) == 4:
            four.set()

    sock = await _tcp_open(await peer.start(), on_binary)
    reader, writer = await peer.connected
    first, second, third = message(0x10, bytes(320)), message(0x10, b"\x01\x02" * 160), message(0x00)
    big = message(0x10, bytes(range(256)) * 7)
    for part in (first[:1], first[1:2], first[2:]):
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(0.01)
    writer.write(second + third + big[:100])
    await writer.drain()
    await asyncio.sleep(0.01)
    writer.write(big[100:])
    await writer.drain()
    async with asyncio.timeout(2):
        await four.wait()
    assert got == [first, second, third, big]
    assert sock.send_binary(message(0x10, bytes(320)))
    assert await reader.readexactly(323) == message(0x10, bytes(320))
    sock.close()
    await sock.wait_closed(2.0)
    assert sock.closed.done()
    assert await reader.read() == b""  # the caller hung up by closing, as Asterisk does
    assert not sock.send_binary(b"x")
    assert sock.error == ""


async def test_the_gateway_closing_mid_message_is_an_error(peer: _Peer) -> None:
    sock = await _tcp_open(await peer.start(), lambda data: None)
    _, writer = await peer.connected
    writer.write(message(0x10, bytes(320))[:50])
    await writer.drain()
    writer.close()
    async with asyncio.timeout(2):
        await sock.closed
    assert "middle of a message" in sock.error


async def test_what_the_side_rejects_closes_the_connection(peer: _Peer) -> None:
    """A ValueError from the side (what Asterisk would not take) is the call's error; the socket closes."""

    def reject(data: bytes) -> None:
        raise ValueError(f"message kind {data[0]:#04x}")

    sock = await _tcp_open(await peer.start(), reject)
    reader, writer = await peer.connected
    writer.write(message(0x12, bytes(640)))
    await writer.drain()
    async with asyncio.timeout(2):
        await sock.closed
    assert sock.error == "unreadable message from the gateway: message kind 0x12"
    assert await reader.read() == b""
    assert not sock.send_text(b"{}")  # AudioSocket has no text


async def test_a_text_message_is_the_callers_mistake(peer: _Peer) -> None:
    sock = await _tcp_open(await peer.start(), lambda data: None)
    await peer.connected
    assert not sock.send_text(b'{"event":"mark"}')
    assert sock.error == "a text message on an AudioSocket connection"
    sock.close()
    await sock.wait_closed(2.0)


async def test_only_tcp_addresses() -> None:
    with pytest.raises(ConnectionError, match="tcp://HOST:PORT"):
        await _tcp_open("ws://127.0.0.1:1/x", lambda data: None)
