"""Conformance: Google's own google-genai SDK drives the emulator over TLS.

If the SDK (which Google tests against the real service) connects, parses every message the
emulator sends into typed objects, and the emulator records what the SDK really sent, the emulator
speaks the real wire protocol. Nothing here reaches the internet: the SDK is pointed at loopback.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google import genai
from google.genai import types

from gateway.emulator import Emulator, Rule, Scenario, voice

from .helpers import silence, tone

API_KEY = "conformance-key-0123456789"
MODEL = "gemini-3.8-live"
STORY = " ".join(["Once upon a time there was a gateway that bridged phone calls to a model."] * 6)


def _make_tls(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost: (server, client) contexts."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "emulator test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(ca_file))
    return server, client


@pytest.fixture
async def tls_emulator(tmp_path: Path) -> AsyncIterator[tuple[Emulator, ssl.SSLContext]]:
    server_ctx, client_ctx = _make_tls(tmp_path)
    scenario = Scenario(
        speed=3.0,
        first_audio_delay_s=0.0,
        playback_wait=False,
        greeting="Hello from the emulator.",
        rules=[
            Rule(text_contains="weather", tool="get_weather", args={"city": "Paris"}),
            Rule(text_contains="story", say=STORY),
        ],
    )
    emu = Emulator(scenario, api_key=API_KEY, ssl_context=server_ctx)
    await emu.start()
    try:
        yield emu, client_ctx
    finally:
        await emu.stop()


async def _until(
    session: genai.live.AsyncSession, predicate: Callable[[types.LiveServerMessage], bool]
) -> list[types.LiveServerMessage]:
    """Every message the SDK parses, up to and including the first matching ``predicate``."""
    seen: list[types.LiveServerMessage] = []
    while True:
        async for msg in session.receive():
            seen.append(msg)
            if predicate(msg):
                return seen


def _turn_complete(msg: types.LiveServerMessage) -> bool:
    return bool(msg.server_content and msg.server_content.turn_complete)


def _audio(msgs: list[types.LiveServerMessage]) -> bytes:
    out = b""
    for msg in msgs:
        turn = msg.server_content.model_turn if msg.server_content else None
        for part in (turn.parts or []) if turn else []:
            assert part.inline_data is not None
            assert part.inline_data.mime_type == "audio/pcm;rate=24000"
            out += part.inline_data.data or b""
    return out


def _text(msgs: list[types.LiveServerMessage], input_side: bool = False) -> str:
    pieces = []
    for msg in msgs:
        sc = msg.server_content
        tx = (sc.input_transcription if input_side else sc.output_transcription) if sc else None
        if tx and tx.text:
            pieces.append(tx.text)
    return "".join(pieces)


def _handles(msgs: list[types.LiveServerMessage]) -> list[str]:
    return [
        m.session_resumption_update.new_handle
        for m in msgs
        if m.session_resumption_update
        and m.session_resumption_update.resumable
        and m.session_resumption_update.new_handle
    ]


async def test_google_genai_sdk_full_conversation_over_tls(
    tls_emulator: tuple[Emulator, ssl.SSLContext],
) -> None:
    """The SDK connects over TLS, talks, calls a tool, is interrupted, gets goAway and resumes."""
    emu, client_ctx = tls_emulator
    client = genai.Client(
        api_key=API_KEY,
        http_options=types.HttpOptions(
            base_url=f"https://127.0.0.1:{emu.port}",
            api_version="v1beta",
            async_client_args={"ssl": client_ctx},
        ),
    )
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig(),
        session_resumption=types.SessionResumptionConfig(),
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(silence_duration_ms=300)
        ),
        tools=[
            types.Tool(
                function_declarations=[
                    # Explicitly BLOCKING: on gemini-3.8-live an undeclared behavior is NON_BLOCKING.
                    types.FunctionDeclaration(
                        name="get_weather",
                        description="Current weather in a city.",
                        behavior=types.Behavior.BLOCKING,
                        parameters=types.Schema(
                            type=types.Type.OBJECT,
                            properties={"city": types.Schema(type=types.Type.STRING)},
                            required=["city"],
                        ),
                    )
                ]
            )
        ],
    )
    seen: list[types.LiveServerMessage] = []
    async with client.aio.live.connect(model=MODEL, config=config) as session:
        # Connect: the setup arrived first, with the SDK's own spelling, and the key in a header.
        setup = emu.sessions[0].setup
        assert setup is not None
        assert setup["model"] == f"models/{MODEL}"
        assert setup["realtimeInputConfig"]["automaticActivityDetection"]["silenceDurationMs"] == 300

        # Text turn (greeting).
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="Greet the caller.")]), turn_complete=True
        )
        turn = await _until(session, _turn_complete)
        seen += turn
        assert _text(turn) == "Hello from the emulator."
        assert _audio(turn) == voice.speak("Hello from the emulator.")
        assert any(m.server_content and m.server_content.generation_complete for m in turn)
        assert turn[-1].usage_metadata is not None
        assert turn[-1].usage_metadata.total_token_count

        # Realtime audio: 0.6 s of speech, then silence → chime + echo.
        pcm = tone(0.6) + silence(0.4)
        for i in range(0, len(pcm), 640):
            await session.send_realtime_input(
                audio=types.Blob(data=pcm[i : i + 640], mime_type="audio/pcm;rate=16000")
            )
        turn = await _until(session, _turn_complete)
        seen += turn
        assert _text(turn, input_side=True) == " [speech 0.6 s]"
        assert len(_audio(turn)) == len(voice.chime()) + int(0.6 * 48000)
        assert emu.sessions[0].audio_in_bytes == len(pcm)
        audio_frame = next(
            f
            for f in emu.sessions[0].frames
            if f.direction == "in" and f.payload and "realtimeInput" in f.payload
        )
        assert '"realtime_input"' in str(audio_frame.raw)  # the SDK's snake_case, normalised by the emulator
        assert audio_frame.payload is not None
        assert audio_frame.payload["realtimeInput"]["audio"]["mimeType"] == "audio/pcm;rate=16000"

        # Text → tool call round trip.
        await session.send_realtime_input(text="What's the weather in Paris?")
        before = await _until(session, lambda m: m.tool_call is not None)
        seen += before
        tool_call = before[-1].tool_call
        assert tool_call is not None
        assert tool_call.function_calls
        call = tool_call.function_calls[0]
        assert call.name == "get_weather"
        assert call.args == {"city": "Paris"}
        await session.send_tool_response(
            function_responses=[types.FunctionResponse(id=call.id, name=call.name, response={"temp_c": 21})]
        )
        turn = await _until(session, _turn_complete)
        seen += turn
        assert _text(turn) == 'The result is: {"temp_c": 21}'
        response_frame = await emu.wait_for(lambda f: bool(f.payload and "toolResponse" in f.payload))
        assert response_frame.payload is not None
        assert response_frame.payload["toolResponse"]["functionResponses"][0]["id"] == call.id

        # Barge-in: speak over a long reply.
        await session.send_realtime_input(text="Tell me a story.")
        started = await _until(session, lambda m: bool(m.server_content and m.server_content.model_turn))
        seen += started
        loud = tone(0.2)
        for i in range(0, len(loud), 640):
            await session.send_realtime_input(
                audio=types.Blob(data=loud[i : i + 640], mime_type="audio/pcm;rate=16000")
            )
        turn = await _until(session, _turn_complete)
        seen += turn
        assert any(m.server_content and m.server_content.interrupted for m in turn)
        assert not any(m.server_content and m.server_content.generation_complete for m in started + turn)
        assert len(_audio(started + turn)) < len(voice.speak(STORY)) // 2

        # goAway, then resume on a new connection with the latest resumable handle.
        emu.send_go_away(10.0)
        rest = await _until(session, lambda m: m.go_away is not None)
        seen += rest
        assert rest[-1].go_away is not None
        assert rest[-1].go_away.time_left == "10s"
        handle = _handles(seen)[-1]
        resume_config = config.model_copy(
            update={"session_resumption": types.SessionResumptionConfig(handle=handle)}
        )
        conversation = emu.sessions[0].conversation
        assert conversation is not None
        earlier = len(conversation.history)
        assert earlier >= 9  # greeting, echo, tool call and result, interrupted story
        async with client.aio.live.connect(model=MODEL, config=resume_config) as resumed:
            assert emu.sessions[1].resumed_from == handle
            assert emu.sessions[1].conversation is emu.sessions[0].conversation
            await resumed.send_client_content(
                turns=types.Content(role="user", parts=[types.Part(text="Hello again.")]), turn_complete=True
            )
            turn = await _until(resumed, _turn_complete)
            assert _text(turn) == f"Welcome back! This conversation already has {earlier} turns."

    # What the SDK sent, as recorded: text frames only, every one a known message kind.
    inbound = [f for s in emu.sessions for f in s.frames if f.direction == "in" and f.kind != "close"]
    assert {f.kind for f in inbound} == {"text"}
    kinds = {next(iter(f.payload)) for f in inbound if f.payload}
    assert kinds == {"setup", "clientContent", "realtimeInput", "toolResponse"}
    outbound = [f for s in emu.sessions for f in s.frames if f.direction == "out" and f.kind != "close"]
    assert {f.kind for f in outbound} == {"binary"}
    assert all(json.loads(f.raw) == f.payload for f in outbound[:50])
