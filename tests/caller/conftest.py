"""Fixtures shared by the simulated callers' tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestServer

from .fake_twilio_gateway import FakeGateway


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[FakeGateway], Awaitable[str]]]:
    """Start fake Twilio-side gateways on loopback; returns each one's base URL."""
    servers: list[TestServer] = []

    async def start(fake: FakeGateway) -> str:
        server = TestServer(fake.app(), host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        await server.close()
