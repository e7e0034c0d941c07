"""End-to-end fixtures: simulated caller → gateway → emulator, all over loopback sockets.

The gateway reaches the emulator as production reaches Google: over ``wss://``, verifying the
server's certificate against the trust store. The emulator's certificate is signed by a throw-away CA
that the gateway trusts only through ``SSL_CERT_FILE`` (OpenSSL's own variable, read when the app
builds its TLS context), exactly as an operator would trust a corporate CA.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner

from gateway.dialplan.store import DialplanStore
from gateway.emulator import Emulator
from gateway.emulator.pki import TestPKI
from gateway.records.model import CallRecord
from gateway.server.app import create_app
from gateway.server.connections import GatewayRunner
from gateway.server.state import CALLS, DIALPLANS, OBSERVABILITY
from gateway.settings import DEFAULT_MODEL, Settings

DEFAULT_PLAN = """
default = true
voice = "Puck"
language = "en-US"
system_instruction = "You are a helpful phone assistant."
greeting = "Greet the caller."
[vad]
silence_duration_ms = 300
"""


@dataclass
class Gateway:
    app: web.Application
    server: TestServer
    settings: Settings

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def dialplans(self) -> DialplanStore:
        return self.app[DIALPLANS]

    def app_calls_list(self) -> list[dict[str, Any]]:
        """Records of finished calls, oldest first."""
        return list(reversed(self.app[CALLS].list()["recent"]))

    async def wait_calls_ended(self, count: int, within_s: float = 5.0) -> list[dict[str, Any]]:
        """The gateway closes a call a moment after the caller hangs up: wait for ``count`` records."""
        async with asyncio.timeout(within_s):
            # Polling is fine here: the registry has no change notification, and this is a test.
            while len(records := self.app_calls_list()) < count or self.app[CALLS].active:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        return records

    async def ended_record(self, call_id: str, within_s: float = 10.0) -> CallRecord:
        """The call's durable record once it is closed (the writer commits a moment after the call ends)."""
        hub = self.app[OBSERVABILITY]
        async with asyncio.timeout(within_s):
            while True:
                record = await hub.get_call(call_id)
                if record is not None and record.ended:
                    return record
                await asyncio.sleep(0.1)


def call_statuses(record: CallRecord) -> list[str]:
    """An outbound call's statuses in its record, in the order calls go through them."""
    return [e.detail["status"] for e in sorted(record.events, key=lambda e: e.seq) if e.kind == "call_status"]


@pytest.fixture
async def emulator(trust_test_ca: TestPKI) -> AsyncIterator[Emulator]:
    async with Emulator(ssl_context=trust_test_ca.server_context()) as emu:
        assert emu.base_url.startswith("wss://")
        yield emu


@pytest.fixture
def dialplan_dir(tmp_path: Path) -> Path:
    d = tmp_path / "dialplans"
    d.mkdir()
    (d / "default.toml").write_text(DEFAULT_PLAN)
    return d


GatewayFactory = Callable[..., Awaitable[Gateway]]


def in_process_settings(dialplan_dir: Path, data_dir: Path, **fields: object) -> Settings:
    """A gateway's settings (``fields``, with the stand-in's ``gemini_url``, over the defaults) for a test
    that runs it in its own process, beside the Live stand-in and the callers: their CPU and their turns
    on the loop would count as the gateway's in the overload check, which a loaded CI machine then trips
    (a call refused at random), so it is off here and on where a test is about it (test_overload.py)."""
    return Settings(
        host="127.0.0.1",
        gemini_api_key="test-key-not-secret",
        gemini_model=DEFAULT_MODEL,
        dialplan_dir=dialplan_dir,
        data_dir=data_dir,
        gateway_secret="s" * 32,
        max_cpu_percent=0,
        max_loop_lag_ms=0,
    ).with_(**fields)


class GatewayTestServer(TestServer):
    """aiohttp's TestServer on the gateway's own runner, so the connection cap applies as in `serve`;
    and as `serve` runs it: aiohttp's test server cancels a handler whose client went away
    (``handler_cancellation=True``), `serve` does not (aiohttp's default), so a handler must finish its
    work after its socket closed (hanging a call up by REST, writing its record) here too."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return GatewayRunner(self.app, **(kwargs | {"handler_cancellation": False}))


@pytest.fixture
async def make_gateway(emulator: Emulator, dialplan_dir: Path) -> AsyncIterator[GatewayFactory]:
    servers: list[TestServer] = []

    async def make(**overrides: object) -> Gateway:
        fields = {"gemini_url": emulator.base_url, **overrides}
        settings = in_process_settings(dialplan_dir, dialplan_dir.parent / "data", **fields)
        app = create_app(settings, dialplans=DialplanStore(settings.dialplan_dir, poll_interval_s=0.2))
        server = GatewayTestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return Gateway(app, server, settings)

    yield make
    for server in reversed(servers):
        await server.close()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()


def client_messages(emulator: Emulator, key: str, session: int = 0) -> list[dict[str, Any]]:
    """The client messages of one kind (``realtimeInput``, ``clientContent``…) that ``session`` of the
    emulator received, in order."""
    return [
        f.payload[key]
        for f in emulator.sessions[session].frames
        if f.direction == "in" and f.payload is not None and key in f.payload
    ]


#: A plan whose bot may end the call itself (the ``end_call`` tool): the end-call tests of the PBX providers.
END_CALL_PLAN = """
default = true
voice = "Puck"
system_instruction = "You are the Acme support line."
greeting = "Greet the caller."
tools = ["end_call"]
[vad]
silence_duration_ms = 300
"""


async def stored_record(url: str, call_id: str) -> dict[str, Any]:
    """The call's durable record (admin API of the gateway at ``url``), once the writer has closed it."""
    async with asyncio.timeout(5), aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{url}/admin/records/{call_id}") as response:
                if response.status == 200 and (record := await response.json()).get("ended_by"):
                    return dict(record)
            await asyncio.sleep(0.05)
