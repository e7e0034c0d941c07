"""Vertex AI as the Live backend: URLs and model names, settings, the Vertex dialect both ways.

The socket tests run the gateway's client against the emulator's Vertex path over verified TLS, with
bearer tokens that real google-auth obtains from the OAuth2 stand-in (see conftest.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import websockets

from gateway.emulator import Emulator, Rule, Scenario
from gateway.emulator.oauth import OAuthStandIn
from gateway.emulator.pki import TestPKI
from gateway.errors import ConfigError, LiveConnectError, LiveSessionError
from gateway.gemini.auth import VertexCredentials
from gateway.gemini.messages import (
    LOCAL_CALL_ID_PREFIX,
    FunctionResponse,
    ServerEvent,
    SessionConfig,
    SessionResumptionUpdate,
    ToolCall,
    TurnComplete,
    UsageMetadata,
    encode_tool_response,
    parse_server_message,
)
from gateway.gemini.protocol import LiveProtocol
from gateway.gemini.session import LiveEndpoint, LiveSession, VertexTarget, vertex_base_url
from gateway.settings import DEFAULT_GEMINI_URL, Settings

FAST = Scenario(first_audio_delay_s=0.0, speed=0.0, playback_wait=False)
VERTEX_PATH = "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent"
NATIVE = "gemini-live-2.5-flash-native-audio"


# ---------------------------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("location", "host"),
    [
        ("us-central1", "wss://us-central1-aiplatform.googleapis.com"),
        ("europe-west4", "wss://europe-west4-aiplatform.googleapis.com"),
        ("global", "wss://aiplatform.googleapis.com"),
        ("eu", "wss://aiplatform.eu.rep.googleapis.com"),
    ],
)
def test_vertex_host_follows_the_location(location: str, host: str) -> None:
    assert vertex_base_url(location) == host
    endpoint = LiveEndpoint.for_vertex("my-project", location)
    assert endpoint.url() == host + VERTEX_PATH
    assert endpoint.redacted_url() == endpoint.url()  # nothing secret travels in a Vertex URL
    assert endpoint.secure


def test_base_url_override_and_api_version() -> None:
    """GEMINI_BASE_URL wins on Vertex too (a proxy, the emulator); the path and version still apply."""
    endpoint = LiveEndpoint.for_vertex(
        "p", "us-central1", base_url="https://proxy.example:8443/vertex/", api_version="v1"
    )
    assert endpoint.url() == (
        "wss://proxy.example:8443/vertex/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent"
    )


@pytest.mark.parametrize(
    ("model", "resource"),
    [
        (NATIVE, f"projects/acme/locations/us-east5/publishers/google/models/{NATIVE}"),
        (
            "models/gemini-3.8-live",
            "projects/acme/locations/us-east5/publishers/google/models/gemini-3.8-live",
        ),
        (
            "publishers/google/models/gemini-3.8-live",
            "projects/acme/locations/us-east5/publishers/google/models/gemini-3.8-live",
        ),
        ("meta/llama-live", "projects/acme/locations/us-east5/publishers/meta/models/llama-live"),
        (
            "projects/other/locations/europe-west4/publishers/google/models/x",
            "projects/other/locations/europe-west4/publishers/google/models/x",
        ),
    ],
)
def test_model_names_become_vertex_resources(model: str, resource: str) -> None:
    endpoint = LiveEndpoint.for_vertex("acme", "us-east5")
    assert endpoint.model_name(model) == resource


async def test_gemini_api_endpoint_is_unchanged() -> None:
    endpoint = LiveEndpoint(api_key="AIzaSy-key-0123456789")
    assert endpoint.vertex is None
    assert endpoint.url().endswith(
        "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    )
    assert endpoint.headers() == {"x-goog-api-key": "AIzaSy-key-0123456789"}
    assert await endpoint.auth_headers() == {"x-goog-api-key": "AIzaSy-key-0123456789"}
    assert endpoint.model_name("gemini-3.8-live") == "gemini-3.8-live"
    assert "AIzaSy" not in repr(endpoint)


def test_vertex_endpoint_takes_no_api_key_and_needs_a_real_target() -> None:
    with pytest.raises(ConfigError, match="bearer"):
        LiveEndpoint(api_key="k" * 20, vertex=VertexTarget("p", "us-central1"))
    with pytest.raises(ConfigError, match="project"):
        VertexTarget("", "us-central1")
    with pytest.raises(ConfigError, match="location"):
        VertexTarget("p", "us/central1")


# ---------------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "On"])
def test_vertex_mode_from_google_genai_variables(value: str) -> None:
    env = {
        "GOOGLE_GENAI_USE_VERTEXAI": value,
        "GOOGLE_CLOUD_PROJECT": "acme",
        "GOOGLE_CLOUD_LOCATION": "us-east5",
    }
    settings = Settings.from_env(env)
    assert (settings.vertex, settings.vertex_project, settings.vertex_location) == (True, "acme", "us-east5")
    assert settings.gemini_url == "wss://us-east5-aiplatform.googleapis.com"
    assert not settings.embedded_emulator  # no API key, yet Vertex is the backend


@pytest.mark.parametrize("value", ["", "false", "0", "No", "OFF"])
def test_vertex_mode_off(value: str) -> None:
    settings = Settings.from_env({"GOOGLE_GENAI_USE_VERTEXAI": value, "GOOGLE_CLOUD_PROJECT": "acme"})
    assert not settings.vertex
    assert settings.gemini_url == DEFAULT_GEMINI_URL


def test_explicit_base_url_wins_in_vertex_mode() -> None:
    env = {
        "GOOGLE_GENAI_USE_VERTEXAI": "true",
        "GOOGLE_CLOUD_PROJECT": "acme",
        "GOOGLE_CLOUD_LOCATION": "us-east5",
        "GEMINI_BASE_URL": "wss://vertex-proxy.internal:8443/",
    }
    assert Settings.from_env(env).gemini_url == "wss://vertex-proxy.internal:8443"


def test_enterprise_variable_wins_as_in_the_sdk() -> None:
    env = {
        "GOOGLE_GENAI_USE_ENTERPRISE": "false",
        "GOOGLE_GENAI_USE_VERTEXAI": "true",
        "GOOGLE_CLOUD_PROJECT": "a",
    }
    assert not Settings.from_env(env).vertex


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"GOOGLE_GENAI_USE_VERTEXAI": "true", "GOOGLE_CLOUD_LOCATION": "us-east5"}, "GOOGLE_CLOUD_PROJECT"),
        ({"GOOGLE_GENAI_USE_VERTEXAI": "true", "GOOGLE_CLOUD_PROJECT": "acme"}, "GOOGLE_CLOUD_LOCATION"),
        ({"GOOGLE_GENAI_USE_VERTEXAI": "maybe"}, "GOOGLE_GENAI_USE_VERTEXAI"),
    ],
)
def test_missing_vertex_setting_is_one_line_naming_it(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert names in str(info.value)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- dialect


def test_id_less_calls_get_distinct_local_ids_that_responses_leave_out() -> None:
    """Vertex sends function calls without ids: local ids route the answers and never go on the wire."""
    msg = {"toolCall": {"functionCalls": [{"name": "lookup", "args": {"q": 1}}, {"name": "lookup"}]}}
    [event] = parse_server_message(json.dumps(msg))
    assert isinstance(event, ToolCall)
    ids = [call.id for call in event.calls]
    assert all(i.startswith(LOCAL_CALL_ID_PREFIX) for i in ids)
    assert len(set(ids)) == 2
    text = encode_tool_response(
        [FunctionResponse(ids[0], "lookup", {"output": 1}), FunctionResponse("fc-7", "lookup", {"output": 2})]
    )
    assert json.loads(text) == {
        "toolResponse": {
            "functionResponses": [
                {"name": "lookup", "response": {"output": 1}},
                {"id": "fc-7", "name": "lookup", "response": {"output": 2}},
            ]
        }
    }


def _ready(protocol: LiveProtocol) -> LiveProtocol:
    protocol.setup()
    protocol.receive(b'{"setupComplete": {"sessionId": "vertex-session-1"}}')  # Vertex may name its session
    return protocol


def test_vertex_tool_response_has_no_scheduling() -> None:
    response = FunctionResponse(
        "fc-1", "lookup", {"output": "ok"}, scheduling="INTERRUPT", will_continue=True
    )
    cfg = SessionConfig(model="gemini-3.8-live")
    gemini = json.loads(_ready(LiveProtocol(cfg)).tool_response([response]))
    assert gemini["toolResponse"]["functionResponses"][0]["scheduling"] == "INTERRUPT"
    vertex = json.loads(_ready(LiveProtocol(cfg, vertex=True)).tool_response([response]))
    assert vertex == {
        "toolResponse": {
            "functionResponses": [{"id": "fc-1", "name": "lookup", "response": {"output": "ok"}}]
        }
    }


def test_vertex_has_no_audio_stream_end() -> None:
    with pytest.raises(LiveSessionError, match="Vertex"):
        _ready(LiveProtocol(SessionConfig(model=NATIVE), vertex=True)).audio_stream_end()


def test_vertex_usage_and_resumption_fields() -> None:
    """``candidates*`` usage names are the response side; a transparent-resumption index is tolerated."""
    usage = {
        "promptTokenCount": 120,
        "candidatesTokenCount": 30,
        "totalTokenCount": 150,
        "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 30}],
        "trafficType": "ON_DEMAND",
    }
    [turn, used] = parse_server_message(
        json.dumps({"serverContent": {"turnComplete": True}, "usageMetadata": usage})
    )
    assert isinstance(turn, TurnComplete)
    assert isinstance(used, UsageMetadata)
    assert (used.prompt_tokens, used.response_tokens, used.total_tokens) == (120, 30, 150)
    update = {
        "sessionResumptionUpdate": {
            "newHandle": "CiQ3Zm",
            "resumable": True,
            "lastConsumedClientMessageIndex": "42",
        }
    }
    assert parse_server_message(json.dumps(update)) == [SessionResumptionUpdate("CiQ3Zm", True)]


# ---------------------------------------------------------------------------------------------- sockets


@pytest.fixture
async def vertex_emu(standin: OAuthStandIn, pki: TestPKI) -> AsyncIterator[Emulator]:
    scenario = Scenario(
        first_audio_delay_s=0.0,
        speed=0.0,
        playback_wait=False,
        rules=[
            Rule(text_contains="order", tool="find_order", args={"number": "42"}, reply="Found: {result}")
        ],
    )
    async with Emulator(scenario, ssl_context=pki.server_context(), access_tokens=standin.token_ok) as emu:
        yield emu


@pytest.fixture
async def endpoint(vertex_emu: Emulator, pki: TestPKI) -> AsyncIterator[LiveEndpoint]:
    ep = LiveEndpoint.for_vertex(
        "vertex-test", "us-central1", base_url=vertex_emu.base_url, tls=pki.client_context()
    )
    await ep.start()
    yield ep
    await ep.aclose()


async def _until(session: LiveSession, predicate: Callable[[ServerEvent], bool]) -> list[ServerEvent]:
    seen: list[ServerEvent] = []
    async with asyncio.timeout(5.0):
        async for event in session.events():
            seen.append(event)
            if predicate(event):
                return seen
    raise AssertionError(f"stream ended before a match: {seen}")


async def test_tool_call_round_trip_in_the_vertex_dialect(
    vertex_emu: Emulator, endpoint: LiveEndpoint
) -> None:
    """The emulator's id-less call reaches the client with a local id; the answer goes back without it
    (and without scheduling), the emulator matches it by name and speaks the result; usage counts."""
    session = await LiveSession.connect(endpoint, SessionConfig(model=NATIVE))
    try:
        session.send_client_content([("user", "Where is my order?")])
        events = await _until(session, lambda e: isinstance(e, ToolCall))
        call = events[-1]
        assert isinstance(call, ToolCall)
        [fc] = call.calls
        assert fc.name == "find_order"
        assert fc.id.startswith(LOCAL_CALL_ID_PREFIX)
        session.send_tool_response(
            [FunctionResponse(fc.id, fc.name, {"output": "shipped"}, scheduling="WHEN_IDLE")]
        )
        rest = await _until(session, lambda e: isinstance(e, UsageMetadata))  # rides on turnComplete
        usage = [e for e in rest if isinstance(e, UsageMetadata)]
    finally:
        await session.close()
    sent = [
        f.payload["toolResponse"]
        for f in vertex_emu.sessions[0].frames
        if f.payload and "toolResponse" in f.payload
    ]
    assert sent == [{"functionResponses": [{"name": "find_order", "response": {"output": "shipped"}}]}]
    out = [f.payload for f in vertex_emu.sessions[0].frames if f.direction == "out" and f.payload]
    calls = [m["toolCall"] for m in out if "toolCall" in m]
    assert calls == [{"functionCalls": [{"name": "find_order", "args": {"number": "42"}}]}]
    assert any("shipped" in json.dumps(m) for m in out if "outputTranscription" in json.dumps(m))
    assert usage
    assert usage[-1].response_tokens > 0
    assert "candidatesTokenCount" in usage[-1].raw


async def test_resumption_on_the_vertex_path(vertex_emu: Emulator, endpoint: LiveEndpoint) -> None:
    session = await LiveSession.connect(endpoint, SessionConfig(model=NATIVE))
    try:
        session.send_client_content([("user", "Hello there")])
        await _until(session, lambda e: isinstance(e, SessionResumptionUpdate) and e.resumable)
        handle = session.resumption_handle
    finally:
        await session.close()
    assert handle
    resumed = await LiveSession.connect(endpoint, SessionConfig(model=NATIVE, resumption_handle=handle))
    await resumed.close()
    assert vertex_emu.sessions[1].resumed_from == handle
    assert [h.dialect for h in vertex_emu.handshakes] == ["vertex", "vertex"]


async def test_emulator_refuses_a_token_it_did_not_issue(vertex_emu: Emulator, pki: TestPKI) -> None:
    """An unknown bearer token is refused at the upgrade (401), which is not worth retrying."""

    class Forged:
        async def headers(self) -> dict[str, str]:
            return {"Authorization": "Bearer standin.forged-token-0123456789"}

        async def start(self) -> None: ...

        async def aclose(self) -> None: ...

    forged = LiveEndpoint.for_vertex(
        "vertex-test",
        "us-central1",
        base_url=vertex_emu.base_url,
        credentials=Forged(),
        tls=pki.client_context(),
    )
    with pytest.raises(LiveConnectError, match="HTTP 401") as info:
        await LiveSession.connect(forged, SessionConfig(model=NATIVE))
    assert not info.value.retryable
    assert [h.authorized for h in vertex_emu.handshakes] == [False]
    assert vertex_emu.sessions == []


async def _raw_setup(
    emu: Emulator, pki: TestPKI, token: str, model: str, path: str, code: int | None
) -> None:
    """Send one Vertex setup with a raw client: it is accepted (``code`` None) or closed with ``code``."""
    headers = {"Authorization": f"Bearer {token}"}
    url = emu.base_url + path
    async with websockets.connect(url, additional_headers=headers, ssl=pki.client_context()) as ws:
        await ws.send(json.dumps({"setup": {"model": model}}))
        if code is None:
            first: Any = json.loads(await ws.recv())
            assert "setupComplete" in first
            return
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == code


@pytest.mark.parametrize(
    ("model", "path", "code"),
    [
        (f"projects/p/locations/us-central1/publishers/google/models/{NATIVE}", VERTEX_PATH, None),
        (
            f"projects/p/locations/us-central1/publishers/google/models/{NATIVE}",
            VERTEX_PATH.replace("v1beta1", "v1"),
            None,
        ),
        (f"models/{NATIVE}", VERTEX_PATH, 1008),  # Vertex wants the full resource name
        (
            f"projects/p/locations/global/publishers/google/models/{NATIVE}",
            VERTEX_PATH,
            1008,
        ),  # regional only
        (
            "projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash-live-001",
            VERTEX_PATH,
            1008,
        ),
    ],
)
async def test_emulator_vertex_model_names(
    vertex_emu: Emulator, standin: OAuthStandIn, pki: TestPKI, model: str, path: str, code: int | None
) -> None:
    creds = VertexCredentials()
    try:
        token = (await creds.headers())["Authorization"].removeprefix("Bearer ")
    finally:
        await creds.aclose()
    await _raw_setup(vertex_emu, pki, token, model, path, code)
