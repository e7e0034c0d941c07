"""A phone call in Vertex AI mode, end to end over loopback.

Simulated Twilio caller → gateway → the emulator's Vertex path over ``wss://`` (test CA). The gateway
authenticates as production does: google-auth reads a service-account key file
(``GOOGLE_APPLICATION_CREDENTIALS``), signs a JWT assertion and trades it for an access token at the
file's ``token_uri`` — the local OAuth2 stand-in, over HTTPS verified against the same CA — and the
emulator accepts only tokens that stand-in issued.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.caller import CallOptions, place_call
from gateway.caller.call import admin_transcript
from gateway.emulator import Emulator
from gateway.emulator.oauth import OAuthStandIn
from gateway.emulator.pki import TestPKI
from gateway.emulator.scenario import Rule
from gateway.emulator.session import RecordedFrame
from gateway.errors import ConfigError

from .conftest import GatewayFactory

pytestmark = pytest.mark.e2e

PROJECT, LOCATION = "acme-telephony", "us-central1"
MODEL = "gemini-live-2.5-flash-native-audio"
RESOURCE = f"projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{MODEL}"
PLAN = f"""
default = true
model = "{MODEL}"
voice = "Puck"
system_instruction = "You are the Acme support line."
greeting = "Greet the caller."
tools = ["lookup_order"]
[vad]
silence_duration_ms = 300
"""


@pytest.fixture
async def standin(
    trust_test_ca: TestPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[OAuthStandIn]:
    """Google's token endpoint, and ADC naming a service account it knows (no other credentials)."""
    async with OAuthStandIn(ssl_context=trust_test_ca.server_context()) as server:
        key_file = server.service_account(tmp_path / "sa.json", project_id=PROJECT)
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(trust_test_ca.ca_file))
        monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
        monkeypatch.setenv("NO_GCE_CHECK", "True")
        monkeypatch.setenv("GOOGLE_CLOUD_QUOTA_PROJECT", "acme-billing")
        yield server


@pytest.fixture
async def emulator(trust_test_ca: TestPKI, standin: OAuthStandIn) -> AsyncIterator[Emulator]:
    """Overrides conftest's: the same TLS emulator, accepting only the stand-in's bearer tokens."""
    async with Emulator(ssl_context=trust_test_ca.server_context(), access_tokens=standin.token_ok) as emu:
        yield emu


async def _vertex_gateway(make_gateway: GatewayFactory, dialplan_dir: Path) -> str:
    (dialplan_dir / "default.toml").write_text(PLAN)
    gw = await make_gateway(gemini_api_key="", vertex=True, vertex_project=PROJECT, vertex_location=LOCATION)
    return gw.url


async def test_a_call_converses_over_vertex(
    make_gateway: GatewayFactory, dialplan_dir: Path, emulator: Emulator, standin: OAuthStandIn
) -> None:
    """Greeting heard, the caller's utterance answered; every Live connection used a real token."""
    url = await _vertex_gateway(make_gateway, dialplan_dir)
    report = await place_call(
        CallOptions(
            to="+15551230000",
            gateway=url,
            play="builtin:hello",
            hangup_after_s=10.0,
            transcript_source=admin_transcript(url),
        )
    )
    assert report.answered
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    roles = [t["role"] for t in report.transcript]
    assert roles[:3] == ["bot", "caller", "bot"]
    # The Vertex path, a bearer token the stand-in issued, the quota project, the model's resource name.
    assert standin.outcomes[:1] == ["issued"]
    assert emulator.handshakes
    assert all(h.dialect == "vertex" and h.authorized for h in emulator.handshakes)
    assert all(h.user_project == "acme-billing" for h in emulator.handshakes)
    assert emulator.sessions[0].setup is not None
    assert emulator.sessions[0].setup["model"] == RESOURCE


async def test_a_tool_call_without_ids_is_answered(
    make_gateway: GatewayFactory, dialplan_dir: Path, emulator: Emulator
) -> None:
    """Vertex's id-less function call runs the shipped handler; the answer goes back by name alone."""
    emulator.scenario.rules = [
        Rule(
            text_contains="Greet the caller",  # the greeting instruction (caller turns count from 1)
            say="Let me look that up.",
            tool="lookup_order",
            args={"order_id": "a 1001"},
            reply="Your order is {result}",
        )
    ]
    url = await _vertex_gateway(make_gateway, dialplan_dir)
    hangup = asyncio.Event()
    caller = asyncio.create_task(
        place_call(CallOptions(to="+15551230000", gateway=url, hangup_event=hangup, max_duration_s=15.0))
    )

    def answered(frame: RecordedFrame) -> bool:
        history = emulator.sessions[0].conversation.history if emulator.sessions[0].conversation else []
        return any(h["role"] == "model" and "shipped" in h["text"] for h in history)

    try:
        await emulator.wait_for(answered, timeout=15.0)
    finally:
        hangup.set()
    report = await caller
    assert report.protocol_errors == []
    responses = [
        item
        for f in emulator.sessions[0].frames
        if f.direction == "in" and f.payload and "toolResponse" in f.payload
        for item in f.payload["toolResponse"]["functionResponses"]
    ]
    [response] = responses
    assert set(response) == {"name", "response"}  # no id, no scheduling
    assert response["name"] == "lookup_order"
    assert response["response"]["output"]["status"] == "shipped"
    calls = [
        f.payload["toolCall"] for f in emulator.sessions[0].frames if f.payload and "toolCall" in f.payload
    ]
    assert calls
    assert all("id" not in fc for c in calls for fc in c["functionCalls"])


async def test_missing_credentials_stop_the_gateway_at_start(
    make_gateway: GatewayFactory, dialplan_dir: Path, monkeypatch: pytest.MonkeyPatch, standin: OAuthStandIn
) -> None:
    """No ADC is a configuration error at start-up, in one line, not a failure on the first call."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    with pytest.raises(ConfigError) as info:
        await _vertex_gateway(make_gateway, dialplan_dir)
    assert "Application Default Credentials" in str(info.value)
    assert "\n" not in str(info.value)
    assert standin.outcomes == []
