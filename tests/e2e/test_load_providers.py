"""The lean load caller speaks every provider's protocol (``bench/load.py --provider NAME``): a few
concurrent calls through a real gateway to the lean Live server, every probe found on both legs."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.caller import wire_telnyx
from gateway.caller.load import CallPattern, analyse, run_calls
from gateway.caller.telnyx_api import TelnyxApi
from gateway.dialplan.store import DialplanStore
from gateway.emulator.load import LoadLiveServer
from gateway.emulator.pki import TestPKI
from gateway.server.app import create_app

from .conftest import GatewayTestServer, in_process_settings

pytestmark = pytest.mark.e2e

PATTERN = CallPattern(lead_silence_s=1.0, speak_s=0.6, silence_s=1.6, barge_every=2, barge_silence_s=0.9)
TOKEN = "load-provider-token-not-a-secret"
API_KEY = "KEYload-provider-api-key"
TELNYX_KEY = wire_telnyx.new_signing_key()

#: (provider, gateway settings beyond its credentials): each provider's default stream format, and the
#: wideband L16 ones, whose probes must survive the side's μ-law → L16 conversion.
CASES = [
    ("twilio", {}),
    ("signalwire", {}),
    ("signalwire", {"signalwire_codec": "L16@16000h"}),
    ("telnyx", {}),
    ("telnyx", {"telnyx_codec": "L16"}),
    ("telnyx-callcontrol", {}),
    ("plivo", {}),
    ("plivo", {"plivo_content_type": "audio/x-l16;rate=16000"}),
    ("exotel", {}),
    ("exotel", {"exotel_sample_rate": 16000}),
    ("freeswitch", {}),  # 16 kHz L16 up, 100 ms streamAudio files down
    ("jambonz", {}),  # 16 kHz L16 both ways, marks
    ("audiosocket", {}),  # plain TCP, slin 8 kHz paced in real time; no marks, no clear
]


def _credentials(provider: str, api: TelnyxApi) -> tuple[dict[str, Any], str]:
    """(the gateway's settings for ``provider``'s signatures, the caller's signing secret)."""
    if provider == "audiosocket":  # no credential: the listener's source allowlist (loopback)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return {"audiosocket_port": s.getsockname()[1]}, ""
    if provider.startswith("telnyx"):
        settings: dict[str, Any] = {"telnyx_public_key": wire_telnyx.public_key_b64(TELNYX_KEY)}
        settings |= {"telnyx_api_key": API_KEY, "telnyx_api_base": api.base_url}
        return settings, wire_telnyx.private_key_b64(TELNYX_KEY)
    key = {
        "twilio": "twilio_auth_token",
        "signalwire": "signalwire_signing_key",
        "plivo": "plivo_auth_token",
        "exotel": "exotel_stream_secret",
        "freeswitch": "pbx_secret",
        "jambonz": "pbx_secret",
    }[provider]
    return {key: TOKEN}, TOKEN


@pytest.fixture
async def live(trust_test_ca: TestPKI) -> AsyncIterator[LoadLiveServer]:
    async with LoadLiveServer(ssl_context=trust_test_ca.server_context()) as server:
        yield server


@pytest.fixture
async def make_gateway(
    live: LoadLiveServer, dialplan_dir: Path
) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """A gateway (over wss:// to the lean Live server) with ``overrides``; its base URL."""
    servers: list[GatewayTestServer] = []

    async def make(**overrides: object) -> str:
        settings = in_process_settings(
            dialplan_dir, dialplan_dir.parent / "data", **{"gemini_url": live.base_url, **overrides}
        )
        app = create_app(settings, dialplans=DialplanStore(settings.dialplan_dir, poll_interval_s=0.2))
        server = GatewayTestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield make
    for server in reversed(servers):
        await server.close()


@pytest.mark.parametrize(
    ("provider", "stream"),
    CASES,
    ids=[f"{p}-{'-'.join(map(str, s.values())) or 'default'}" for p, s in CASES],
)
async def test_load_calls_speak_each_provider(
    provider: str,
    stream: dict[str, Any],
    live: LoadLiveServer,
    make_gateway: Callable[..., Awaitable[str]],
) -> None:
    """Three lean calls over ``provider``'s protocol: no call fails (the side checks every message the
    gateway sends), every probe crosses the uplink, replies and barge-ins come back, marks are echoed."""
    async with TelnyxApi(api_key=API_KEY) as api:
        settings, secret = _credentials(provider, api)
        url = await make_gateway(**settings, **stream)
        if provider == "audiosocket":  # the callers connect to the TCP listener, not the web server
            url = f"tcp://127.0.0.1:{settings['audiosocket_port']}"
        start = time.monotonic() + 0.1
        calls, _ = await run_calls(
            url,
            [1, 2, 3],
            start_at=start,
            ramp_s=0.2,
            until=start + 6.0,
            pattern=PATTERN,
            auth_token=secret,
            provider=provider,
            provider_api=api.base_url if provider == "telnyx-callcontrol" else "",
        )
        await asyncio.sleep(0.3)  # the Live server sees the last frames and closes
    assert [c["error"] for c in calls] == ["", "", ""]
    a = analyse(calls, live.results())
    assert a.failed == []
    assert a.probes_found == a.probes_sent > 20
    assert len(a.uplink_s) == a.probes_found
    assert all(0 < v < 1.0 for v in a.uplink_s)
    assert len(a.downlink_s) >= 6  # greeting and echo replies, for each call
    assert all(0 < v < 1.0 for v in a.downlink_s)
    # Every caller frame reached the Live server, AudioSocket's first too (it is also the call's start).
    assert a.frames_lost_up == 0
    assert a.frames_lost_down == 0
    assert a.barge_ins >= 3  # each caller spoke over the greeting
    assert len(a.greeting_s) == 3
    # FreeSWITCH and AudioSocket have no marks.
    assert all(c["marks_echoed"] > 0 for c in calls) or provider in ("freeswitch", "audiosocket")
    if provider == "telnyx-callcontrol":  # answered by the gateway's command to the API stand-in
        assert sorted(c.action for c in api.commands).count("answer") == 3
