"""The lean load-test Live server over loopback, driven by the gateway's own LiveSession."""

from __future__ import annotations

import array
import asyncio
import base64
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.caller.load import PROBE_LEVELS, echo_rtt
from gateway.emulator.load import CHIME_SAMPLES, ECHO_PATH, LoadLiveServer
from gateway.emulator.pki import TestPKI, make_pki
from gateway.errors import LiveConnectError
from gateway.gemini.messages import (
    GenerationComplete,
    InputTranscription,
    Interrupted,
    ModelAudio,
    OutputTranscription,
    ServerEvent,
    SessionConfig,
    SessionResumptionUpdate,
    TurnComplete,
    UsageMetadata,
    VadConfig,
    encode_realtime_audio,
)
from gateway.gemini.session import LiveEndpoint, LiveSession

KEY = "AIzaSy-load-test-key"
PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
FRAME = 320  # samples per 20 ms at 16 kHz


def _speech(frames: int) -> list[bytes]:
    """A 400 Hz tone at ~-21 dBFS RMS, as the load callers speak, in 20 ms frames at 16 kHz."""
    tone = array.array("h", (round(4000 * math.sin(2 * math.pi * 400 * i / 16000)) for i in range(FRAME)))
    return [tone.tobytes()] * frames


def _silence(frames: int) -> list[bytes]:
    return [bytes(2 * FRAME)] * frames


def _probe(number: int, seq: int) -> list[bytes]:
    """The four flat frames that spell a call number and a sequence digit."""
    digits = (number >> 8 & 15, number >> 4 & 15, number & 15, seq & 15)
    return [array.array("h", [PROBE_LEVELS[d]] * FRAME).tobytes() for d in digits]


@pytest.fixture
async def server() -> AsyncIterator[LoadLiveServer]:
    async with LoadLiveServer(api_key=KEY, first_audio_delay_s=0.05, speed=8.0) as srv:
        yield srv


async def _connect(srv: LoadLiveServer, **config: Any) -> LiveSession:
    cfg = SessionConfig(model="gemini-3.8-live", vad=VadConfig(silence_duration_ms=300), **config)
    return await LiveSession.connect(LiveEndpoint(base_url=srv.base_url, api_key=KEY), cfg)


async def _turn(session: LiveSession, timeout: float = 5.0) -> list[ServerEvent]:  # noqa: ASYNC109
    """Events up to and including the next TurnComplete."""
    seen: list[ServerEvent] = []
    async with asyncio.timeout(timeout):
        async for event in session.events():
            seen.append(event)
            if isinstance(event, TurnComplete):
                return seen
    raise AssertionError(f"the session ended mid-turn: {seen}")


def _audio_bytes(events: list[ServerEvent]) -> int:
    return sum(len(e.pcm) for e in events if isinstance(e, ModelAudio))


async def _stream(session: LiveSession, frames: list[bytes], gap: float = 0.006) -> None:
    """Send frames about as a phone call does (faster), each its own message; a gap under 5 ms lets
    LiveSession queue and coalesce them (several frames per message)."""
    for frame in frames:
        session.send_audio(frame)
        await asyncio.sleep(gap)


async def test_greeting_then_an_echo_with_the_probe_found(server: LoadLiveServer) -> None:
    """A text turn gets the greeting; caller speech gets a reply of chime + its length; probes are found."""
    session = await _connect(server)
    try:
        session.send_client_content([("user", "Greet the caller.")])
        greeting = await _turn(session)
        assert _audio_bytes(greeting) == 2 * server.greeting_samples > 0
        assert [type(e) for e in greeting][-2:] == [GenerationComplete, TurnComplete]
        assert any(isinstance(e, OutputTranscription) for e in greeting)
        usage = await anext(session.events())  # rides on the turnComplete message
        assert isinstance(usage, UsageMetadata)
        assert usage.response_tokens > 0
        assert isinstance(await anext(session.events()), SessionResumptionUpdate)

        await _stream(session, _silence(3) + _probe(0x2AB, 5) + _silence(3) + _speech(25) + _silence(16))
        reply = await _turn(session)
        assert not any(isinstance(e, Interrupted) for e in reply)
        assert any(isinstance(e, InputTranscription) and e.text == " [speech 0.5 s]" for e in reply)
        # The echo persona: a 0.36 s chime plus the 0.5 s spoken, in whole 20 ms frames at 24 kHz.
        assert _audio_bytes(reply) == 2 * (CHIME_SAMPLES + 12000)
    finally:
        await session.close()
    probe = server.probes[0]
    assert probe.number == 0x2AB
    assert [s for s, _, _ in probe.probes] == [5]
    assert probe.probes[0][2] == 3  # three frames came before it
    turns = probe.result()["turns"]
    assert [(nbytes, interrupted) for _, nbytes, interrupted in turns] == [
        (2 * server.greeting_samples, False),
        (2 * (CHIME_SAMPLES + 12000), False),
    ]


async def test_caller_speech_during_a_reply_interrupts_it(server: LoadLiveServer) -> None:
    """Barge-in: 100 ms of speech while the model talks → interrupted, then turnComplete, no more audio."""
    session = await _connect(server)
    try:
        session.send_client_content([("user", "Greet the caller.")])
        audio_seen = asyncio.get_running_loop().create_future()
        events: list[ServerEvent] = []

        async def read() -> None:
            async for event in session.events():
                events.append(event)
                if isinstance(event, ModelAudio) and not audio_seen.done():
                    audio_seen.set_result(None)
                if isinstance(event, TurnComplete):
                    return

        reader = asyncio.create_task(read())
        await asyncio.wait_for(audio_seen, 5.0)
        await _stream(session, _speech(8))
        await asyncio.wait_for(reader, 5.0)
        kinds = [type(e) for e in events]
        assert Interrupted in kinds
        assert GenerationComplete not in kinds
        assert kinds.index(Interrupted) < kinds.index(TurnComplete)
        assert _audio_bytes(events) < 2 * server.greeting_samples
    finally:
        await session.close()
    (turn,) = server.probes[0].result()["turns"]
    assert turn[2] is True  # noted as interrupted


async def test_other_audio_shapes_take_the_full_parser(server: LoadLiveServer) -> None:
    """snake_case keys, URL-safe base64 and a fragmented setup are the protocol too, just not fast."""
    url = server.base_url + PATH + f"?key={KEY}"
    async with websockets.connect(url) as ws:
        setup = json.dumps({"setup": {"model": "models/gemini-3.8-live"}})
        await ws.send([setup[:10], setup[10:]])  # two fragments
        assert json.loads(await ws.recv()) == {"setupComplete": {}}
        frames = _speech(10) + _silence(30)
        for frame in frames:
            data = base64.urlsafe_b64encode(frame).decode().rstrip("=")
            await ws.send(json.dumps({"realtime_input": {"audio": {"data": data, "mime_type": "audio/pcm"}}}))
        messages = []
        while not messages or "turnComplete" not in messages[-1].get("serverContent", {}):
            raw = await asyncio.wait_for(ws.recv(), 5.0)
            assert isinstance(raw, bytes), "server frames are binary"
            messages.append(json.loads(raw))
        parts = [
            m["serverContent"]["modelTurn"]["parts"][0] for m in messages if "modelTurn" in m["serverContent"]
        ]
        assert {p["inlineData"]["mimeType"] for p in parts} == {"audio/pcm;rate=24000"}
        assert sum(len(base64.b64decode(p["inlineData"]["data"])) for p in parts) == 2 * (
            CHIME_SAMPLES + 4800
        )
        await ws.ping()
    assert server.probes[0].frames_in == len(frames)


async def test_coalesced_frames_are_each_looked_at(server: LoadLiveServer) -> None:
    """A message of several 20 ms frames (a backlog the gateway coalesced): every frame counts, a probe
    across the frames is found wherever its frames sit, and the speech in it is echoed."""
    frames = _silence(1) + _probe(0x123, 9) + _silence(2) + _speech(10) + _silence(20)
    url = server.base_url + PATH + f"?key={KEY}"
    async with websockets.connect(url) as ws:
        setup = {"model": "models/gemini-3.8-live"}
        setup["realtimeInputConfig"] = {"automaticActivityDetection": {"silenceDurationMs": 300}}
        await ws.send(json.dumps({"setup": setup}))
        await ws.recv()
        for at in range(0, len(frames), 5):
            await ws.send(encode_realtime_audio(b"".join(frames[at : at + 5])))
        messages = []
        while not messages or "turnComplete" not in messages[-1].get("serverContent", {}):
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), 5.0)))
    probe = server.probes[0]
    assert probe.frames_in == len(frames)
    assert probe.number == 0x123
    assert [(s, before) for s, _, before in probe.probes] == [(9, 1)]
    assert sum(len(base64.b64decode(p["inlineData"]["data"])) for m in messages for p in _parts(m)) == 2 * (
        CHIME_SAMPLES + 4800
    )


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = message.get("serverContent", {}).get("modelTurn", {}).get("parts", [])
    return parts


async def test_protocol_errors_close_as_the_live_api_does(server: LoadLiveServer) -> None:
    """Bad key → 1007 after setup; unknown model, unknown handle → 1008; audio before setup, a second
    setup → 1007; a path that is not the Live API's → HTTP 404."""
    good = LiveEndpoint(base_url=server.base_url, api_key=KEY)
    with pytest.raises(LiveConnectError) as bad_key:
        await LiveSession.connect(
            LiveEndpoint(base_url=server.base_url, api_key="wrong"), SessionConfig("gemini-3.8-live")
        )
    assert bad_key.value.code == 1007
    with pytest.raises(LiveConnectError) as bad_model:
        await LiveSession.connect(good, SessionConfig("gemini-2.0-flash-live-001"))
    assert bad_model.value.code == 1008
    with pytest.raises(LiveConnectError) as bad_handle:
        await LiveSession.connect(good, SessionConfig("gemini-3.8-live", resumption_handle="nope"))
    assert bad_handle.value.code == 1008

    async with websockets.connect(server.base_url + PATH + f"?key={KEY}") as ws:
        await ws.send(json.dumps({"realtimeInput": {"audioStreamEnd": True}}))
        with pytest.raises(ConnectionClosed) as first_not_setup:
            await ws.recv()
    assert first_not_setup.value.rcvd is not None
    assert first_not_setup.value.rcvd.code == 1007
    async with websockets.connect(server.base_url + PATH, additional_headers={"x-goog-api-key": KEY}) as ws:
        setup = json.dumps({"setup": {"model": "models/gemini-3.8-live"}})
        await ws.send(setup)
        await ws.recv()
        await ws.send(setup)
        with pytest.raises(ConnectionClosed) as second_setup:
            await ws.recv()
    assert second_setup.value.rcvd is not None
    assert second_setup.value.rcvd.code == 1007
    with pytest.raises(InvalidStatus) as not_found:
        await websockets.connect(server.base_url + "/ws/something.else")
    assert not_found.value.response.status_code == 404


async def test_echo_path_returns_each_message(server: LoadLiveServer) -> None:
    """The bench's bare round-trip endpoint echoes text frames as they came, to any client."""
    async with websockets.connect(server.base_url + ECHO_PATH) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
    rtt = await echo_rtt(server.base_url + ECHO_PATH, count=20)  # the lean callers' own socket
    assert 0.0 < rtt < 0.1


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_serves_wss_to_a_client_trusting_its_ca(pki: TestPKI, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a server context it serves wss://, and the gateway's own verifying client reaches it when
    the CA is trusted through SSL_CERT_FILE (as bench/load.py's gateway does): a greeting and an echo
    through the SSL transport's buffered reads, the probe found; the echo path stays plain ws://."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    tls = pki.server_context()
    async with LoadLiveServer(api_key=KEY, first_audio_delay_s=0.05, speed=8.0, ssl_context=tls) as srv:
        assert srv.base_url == f"wss://127.0.0.1:{srv.port}"
        assert srv.echo_url == f"ws://127.0.0.1:{srv.plain_port}{ECHO_PATH}"
        assert srv.plain_port != srv.port
        session = await _connect(srv)  # LiveEndpoint's default context: the system store + SSL_CERT_FILE
        try:
            session.send_client_content([("user", "Greet the caller.")])
            assert _audio_bytes(await _turn(session)) == 2 * srv.greeting_samples
            await _stream(session, _silence(3) + _probe(0x123, 7) + _speech(25) + _silence(16))
            assert _audio_bytes(await _turn(session)) == 2 * (CHIME_SAMPLES + 12000)
        finally:
            await session.close()
        assert srv.probes[0].number == 0x123
        assert [s for s, _, _ in srv.probes[0].probes] == [7]
        assert 0.0 < await echo_rtt(srv.echo_url, count=20) < 0.1
        # The TLS port speaks nothing but TLS: a plain WebSocket handshake there gets no upgrade.
        with pytest.raises(websockets.exceptions.InvalidMessage):
            await websockets.connect(f"ws://127.0.0.1:{srv.port}{PATH}", open_timeout=5)


async def test_wss_refuses_a_client_that_does_not_trust_its_ca(
    pki: TestPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another CA's client, or the system store alone, fails verification: a non-retryable
    LiveConnectError before any session starts on the server."""
    other = make_pki(tmp_path / "other")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    async with LoadLiveServer(api_key=KEY, ssl_context=pki.server_context()) as srv:
        for endpoint in (
            LiveEndpoint(base_url=srv.base_url, api_key=KEY, tls=other.client_context()),
            LiveEndpoint(base_url=srv.base_url, api_key=KEY),
        ):
            with pytest.raises(LiveConnectError) as refused:
                await LiveSession.connect(endpoint, SessionConfig("gemini-3.8-live"))
            assert not refused.value.retryable
            assert "did not verify" in str(refused.value)
        assert srv.sessions == 0
        # The same client trusting the right CA gets in.
        trusted = LiveEndpoint(base_url=srv.base_url, api_key=KEY, tls=pki.client_context())
        session = await LiveSession.connect(trusted, SessionConfig("gemini-3.8-live"))
        await session.close()
        assert srv.sessions == 1
