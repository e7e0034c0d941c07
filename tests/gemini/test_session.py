"""LiveSession against the local Gemini Live emulator (and a few hand-made servers) over loopback.

The emulator serves ``wss://`` with the test CA, which the client trusts through ``SSL_CERT_FILE``:
the TLS path production takes to Google. The hand-made servers of a few edge-case tests speak plain
``ws://`` (they script raw frames), which is said where they are.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import ssl
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.emulator import Emulator, Rule, Scenario
from gateway.emulator.pki import TestPKI
from gateway.errors import (
    AudioError,
    LiveConnectError,
    LiveSessionClosed,
    LiveSessionError,
    LiveSessionNotFound,
)
from gateway.gemini.messages import (
    FunctionDeclaration,
    FunctionResponse,
    GenerationComplete,
    GoAway,
    InputTranscription,
    Interrupted,
    ModelAudio,
    OutputTranscription,
    ServerEvent,
    SessionConfig,
    SessionResumptionUpdate,
    ToolCall,
    ToolCallCancellation,
    TurnComplete,
    UsageMetadata,
    setup_message,
)
from gateway.gemini.protocol import LiveState
from gateway.gemini.session import LiveEndpoint, LiveSession, _BufferedReads, _LiveConnection

MODEL = "gemini-3.8-live"
KEY = "AIzaSy-test-key-0123456789abcdef"
FAST = Scenario(first_audio_delay_s=0.0, speed=0.0, playback_wait=False)
PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


def _cfg(**kwargs: Any) -> SessionConfig:
    return SessionConfig(model=MODEL, voice="Kore", system_instruction="Be brief.", **kwargs)


#: The emulators of these tests serve wss:// with the session's test CA (set per test by ``_tls``).
_TLS: list[ssl.SSLContext] = []


@pytest.fixture(autouse=True)
def _tls(trust_test_ca: TestPKI) -> None:
    _TLS[:] = [trust_test_ca.server_context()]


def _emulator(*args: Any, **kwargs: Any) -> Emulator:
    return Emulator(*args, ssl_context=_TLS[0], **kwargs)


def _endpoint(emu: Emulator, **kwargs: Any) -> LiveEndpoint:
    return LiveEndpoint(base_url=emu.base_url, api_key=kwargs.pop("api_key", KEY), **kwargs)


class Reader:
    """Pulls events from one session with a timeout, keeping what it saw."""

    def __init__(self, session: LiveSession) -> None:
        self.it = session.events().__aiter__()
        self.seen: list[ServerEvent] = []

    async def until(self, pred: Callable[[ServerEvent], bool], limit_s: float = 5.0) -> list[ServerEvent]:
        """Read until an event matches ``pred``; return the events read in this call."""
        got: list[ServerEvent] = []
        async with asyncio.timeout(limit_s):
            while True:
                event = await anext(self.it)
                got.append(event)
                self.seen.append(event)
                if pred(event):
                    return got

    async def drain(self, limit_s: float = 5.0) -> list[ServerEvent]:
        """Read to the end of the stream (raises what the stream raises)."""
        got: list[ServerEvent] = []
        async with asyncio.timeout(limit_s):
            async for event in self.it:
                got.append(event)
        return got


def _is(kind: type) -> Callable[[ServerEvent], bool]:
    return lambda e: isinstance(e, kind)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with _emulator(FAST, api_key=KEY) as e:
        yield e


@pytest.fixture
async def session(emu: Emulator) -> AsyncIterator[LiveSession]:
    s = await LiveSession.connect(_endpoint(emu), _cfg())
    yield s
    await s.close()


def _tone(ms: int, rate: int = 16000, amp: int = 8000, freq: float = 440.0) -> bytes:
    n = rate * ms // 1000
    return struct.pack(f"<{n}h", *(int(amp * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)))


def _audio_frames_in(emu: Emulator, index: int = 0) -> list[dict[str, Any]]:
    frames = []
    for f in emu.sessions[index].frames:
        if f.direction == "in" and f.payload and "realtimeInput" in f.payload:
            audio = f.payload["realtimeInput"].get("audio")
            if audio:
                frames.append(audio)
    return frames


# ------------------------------------------------------------------------------------- setup


async def test_setup_reaches_ready_and_the_server_sees_our_setup(emu: Emulator, session: LiveSession) -> None:
    """connect() sends setup as the first (text) frame and returns once setupComplete arrived."""
    assert not session.closed
    assert session.stats.setup_ms > 0
    recorded = emu.sessions[0]
    first = recorded.frames[0]
    assert first.direction == "in"
    assert first.kind == "text"
    assert recorded.setup is not None
    expected = setup_message(_cfg())["setup"]
    assert recorded.setup["model"] == expected["model"]
    assert recorded.setup["generationConfig"] == expected["generationConfig"]
    assert recorded.setup["sessionResumption"] == {}
    assert recorded.setup["systemInstruction"] == expected["systemInstruction"]


async def test_the_live_socket_is_read_through_the_shared_buffer(session: LiveSession) -> None:
    """Over TLS the transport reads into _BufferedReads' buffer, not a fresh 256 KiB ``bytes`` per read
    (gateway/gemini/session.py). websockets' connect is extended at ``open_tcp_connection``: a version
    that renamed it would fall back silently to the costly path, so this test says so."""
    assert isinstance(session._ws.transport.get_protocol(), _BufferedReads)
    assert session._ws.transport.get_extra_info("ssl_object") is not None  # wss://, verified


async def test_server_messages_are_taken_in_the_read_callback(session: LiveSession) -> None:
    """Every message after setupComplete is parsed where the socket is read (_LiveConnection), not by the
    reader task a turn of the loop later. websockets' ``process_event`` is the hook: a version that
    renamed it would fall back silently to the slower path, so this test says so."""
    assert isinstance(session._ws, _LiveConnection)
    reader = Reader(session)
    session.send_client_content([("user", "hello")])
    events = await reader.until(_is(TurnComplete))
    assert any(isinstance(e, ModelAudio) for e in events)
    assert session._ws.taken > 1
    # setupComplete came through recv() during connect; everything since was taken.
    assert session._ws.taken == session.stats.messages_received - 1
    assert not session._reader.done()  # still there, for a fragmented message and for the close


async def test_a_direct_taker_gets_audio_in_the_read_callback_while_the_consumer_waits() -> None:
    """``direct`` (the call's, through ResilientSession) is handed the events it accepts while a consumer
    waits on events() and nothing is queued: that audio never wakes the consumer (a chunk that follows
    a queued event in the same read queues behind it, so this emulator's bursts queue most); the rest
    still reach it. Here the emulator paces its chunks (its default speed), as Gemini streams them."""
    async with _emulator(Scenario(first_audio_delay_s=0.0, playback_wait=False), api_key=KEY) as emu:
        session = await LiveSession.connect(_endpoint(emu), _cfg())
        try:
            await _audio_is_taken_directly(session)
        finally:
            await session.close()


async def _audio_is_taken_directly(session: LiveSession) -> None:
    direct: list[ServerEvent] = []

    def take_audio(event: ServerEvent) -> bool:
        if isinstance(event, ModelAudio):
            direct.append(event)
            return True
        return False

    session.direct = take_audio
    reader = Reader(session)
    session.send_client_content([("user", "hello")])
    events = await reader.until(_is(TurnComplete))
    queued = sum(isinstance(e, ModelAudio) for e in events)
    assert len(direct) > queued
    assert any(isinstance(e, OutputTranscription) for e in events)


async def test_with_nobody_waiting_a_direct_taker_is_passed_over(session: LiveSession) -> None:
    """While no consumer waits (the call's task busy with an earlier event), events queue for it in order,
    as without a direct taker: the direct path never overtakes what is already due."""
    direct: list[ServerEvent] = []

    def take_all(event: ServerEvent) -> bool:
        direct.append(event)
        return True

    session.direct = take_all
    before = session.stats.messages_received
    session.send_client_content([("user", "hello")])
    async with asyncio.timeout(5):
        while session.stats.messages_received < before + 3:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.01)
    assert direct == []
    events = await Reader(session).until(_is(ModelAudio))
    assert isinstance(events[-1], ModelAudio)


async def test_through_an_https_proxy_the_session_tunnels_with_connect(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY (a corporate egress proxy): websockets' own proxy path, an HTTP CONNECT tunnel with TLS
    to the Live host inside it, certificate verified end to end; the proxy sees only the CONNECT."""
    seen: list[bytes] = []

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n", 1)[0])
        host, _, port = head.split(b" ")[1].decode().rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    proxy = await asyncio.start_server(tunnel, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    try:
        s = await LiveSession.connect(_endpoint(emu), _cfg())
        try:
            assert s._proto.state is LiveState.READY
            assert not isinstance(s._ws.transport.get_protocol(), _BufferedReads)  # websockets' own path
        finally:
            await s.close()
    finally:
        proxy.close()
    host = emu.base_url.split("://", 1)[1]
    assert seen == [f"CONNECT {host} HTTP/1.1".encode()]
    assert emu.sessions[0].setup is not None


async def test_nothing_is_sent_before_setup_complete() -> None:
    """Messages queued right after connect() arrive after setupComplete; only setup precedes it."""
    async with _emulator(Scenario(setup_delay_s=0.3, first_audio_delay_s=0.0, speed=0.0), api_key=KEY) as emu:
        s = await LiveSession.connect(_endpoint(emu), _cfg())
        s.send_text("hello")
        s.send_audio(b"\0\0" * 320)
        await emu.wait_for(
            lambda f: f.direction == "in" and f.payload is not None and "realtimeInput" in f.payload
        )
        frames = emu.sessions[0].frames
        first_out = next(i for i, f in enumerate(frames) if f.direction == "out")
        assert [f.payload is not None and "setup" in f.payload for f in frames[:first_out]] == [True]
        assert frames[first_out].payload == {"setupComplete": {}}
        await s.close()


async def test_keyless_endpoint_reaches_an_emulator_that_accepts_any_key() -> None:
    """The embedded-emulator setup (no API key anywhere) connects."""
    async with _emulator(FAST) as emu:
        s = await LiveSession.connect(LiveEndpoint(base_url=emu.base_url), _cfg())
        assert not s.closed
        await s.close()


async def test_bad_api_key_is_a_final_connect_error() -> None:
    """A wrong key is closed 1007 after setup and reported as a non-retryable LiveConnectError."""
    async with _emulator(FAST, api_key=KEY) as emu:
        with pytest.raises(LiveConnectError) as info:
            await LiveSession.connect(_endpoint(emu, api_key="wrong-key-0000000000"), _cfg())
    assert info.value.code == 1007
    assert not info.value.retryable
    assert not isinstance(info.value, LiveSessionNotFound)


async def test_unknown_model_is_a_final_connect_error() -> None:
    """An unknown model is closed 1008 and is not retryable."""
    async with _emulator(FAST, api_key=KEY, known_models={MODEL}) as emu:
        with pytest.raises(LiveConnectError) as info:
            await LiveSession.connect(_endpoint(emu), SessionConfig(model="gemini-2.0-flash-live-001"))
    assert info.value.code == 1008
    assert not info.value.retryable
    assert "not found" in str(info.value)


async def test_setup_timeout_is_a_retryable_connect_error() -> None:
    """A server that does not answer setup in time fails soon after setup_timeout_s, retryable."""
    async with _emulator(Scenario(setup_delay_s=1.0), api_key=KEY) as emu:
        started = time.monotonic()
        with pytest.raises(LiveConnectError) as info:
            await LiveSession.connect(_endpoint(emu), _cfg(), setup_timeout_s=0.3)
        assert time.monotonic() - started < 1.5
    assert info.value.retryable


# ------------------------------------------------------------------------------------- turns


async def test_text_turn_streams_audio_transcript_and_turn_end(session: LiveSession) -> None:
    """A clientContent turn yields 24 kHz audio, transcription, generationComplete, turnComplete."""
    reader = Reader(session)
    session.send_client_content([("user", "hello")])
    events = await reader.until(_is(TurnComplete))
    audio = [e for e in events if isinstance(e, ModelAudio)]
    assert audio
    assert all(a.rate == 24000 and len(a.pcm) % 2 == 0 for a in audio)
    transcript = "".join(e.text for e in events if isinstance(e, OutputTranscription))
    assert "emulator" in transcript.lower()
    kinds = [type(e) for e in events]
    assert kinds.index(GenerationComplete) < kinds.index(TurnComplete)
    assert max(i for i, k in enumerate(kinds) if k is OutputTranscription) < kinds.index(GenerationComplete)
    usage = await reader.until(lambda e: True)  # rides on the turnComplete message, so it comes next
    assert isinstance(usage[0], UsageMetadata)
    assert usage[0].total_tokens > 0
    assert session.stats.messages_received > len(audio)


async def test_realtime_text_is_transcribed_and_answered(session: LiveSession) -> None:
    """realtimeInput.text produces an input transcription and a reply."""
    reader = Reader(session)
    session.send_client_content([("user", "hi")])
    await reader.until(_is(TurnComplete))
    session.send_text("what time is it")
    events = await reader.until(_is(TurnComplete))
    assert InputTranscription("what time is it") in events
    assert "what time is it" in "".join(e.text for e in events if isinstance(e, OutputTranscription))


async def test_caller_audio_is_sent_as_16k_pcm_and_echoed(emu: Emulator, session: LiveSession) -> None:
    """Audio goes out as realtimeInput.audio at 16 kHz; the emulator's VAD hears it and replies."""
    reader = Reader(session)
    speech, silence = _tone(20), b"\0\0" * 320
    sent = 0
    for _ in range(25):
        session.send_audio(speech)
        sent += len(speech)
        await asyncio.sleep(0.004)
    for _ in range(40):
        session.send_audio(silence)
        sent += len(silence)
        await asyncio.sleep(0.004)
    events = await reader.until(_is(TurnComplete))
    assert any(isinstance(e, ModelAudio) for e in events)
    assert any(isinstance(e, InputTranscription) for e in events)
    assert emu.sessions[0].audio_in_bytes == sent
    blobs = _audio_frames_in(emu)
    assert {b["mimeType"] for b in blobs} == {"audio/pcm;rate=16000"}
    assert session.stats.audio_bytes_sent == sent
    assert session.stats.audio_sent == len(blobs)


async def test_text_barge_in_interrupts_the_model() -> None:
    """New input while the model speaks yields Interrupted then TurnComplete without GenerationComplete."""
    async with _emulator(Scenario(first_audio_delay_s=0.0, speed=1.0), api_key=KEY) as emu:
        s = await LiveSession.connect(_endpoint(emu), _cfg())
        reader = Reader(s)
        s.send_client_content([("user", "hello")])
        await reader.until(_is(ModelAudio))
        s.send_client_content([("user", "stop, please")])
        events = await reader.until(_is(TurnComplete))
        kinds = [type(e) for e in events]
        assert Interrupted in kinds
        assert GenerationComplete not in kinds
        assert kinds.index(Interrupted) < kinds.index(TurnComplete)
        await s.close()


async def test_speech_barge_in_interrupts_the_model() -> None:
    """Loud caller audio during model speech is detected by server VAD and interrupts it."""
    async with _emulator(Scenario(first_audio_delay_s=0.0, speed=1.0), api_key=KEY) as emu:
        s = await LiveSession.connect(_endpoint(emu), _cfg())
        reader = Reader(s)
        s.send_client_content([("user", "hello")])
        await reader.until(_is(ModelAudio))
        tone = _tone(20)
        for _ in range(15):
            s.send_audio(tone)
            await asyncio.sleep(0.02)
        events = await reader.until(_is(Interrupted), limit_s=5.0)
        assert not any(isinstance(e, GenerationComplete) for e in events)
        await s.close()


async def test_tool_call_round_trip() -> None:
    """A toolCall is answered with toolResponse echoing the id, and the model speaks the result."""
    scenario = Scenario(
        first_audio_delay_s=0.0,
        speed=0.0,
        playback_wait=False,
        rules=[
            Rule(text_contains="weather", tool="get_weather", args={"city": "Paris"}, reply="It is {result}")
        ],
    )
    tool = FunctionDeclaration("get_weather", "Weather for a city", {"type": "object", "properties": {}})
    async with _emulator(scenario, api_key=KEY) as emu:
        s = await LiveSession.connect(_endpoint(emu), _cfg(tools=(tool,)))
        assert emu.sessions[0].setup is not None
        assert emu.sessions[0].setup["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
        reader = Reader(s)
        s.send_client_content([("user", "what is the weather?")])
        call_event = (await reader.until(_is(ToolCall)))[-1]
        assert isinstance(call_event, ToolCall)
        (call,) = call_event.calls
        assert call.name == "get_weather"
        assert call.args == {"city": "Paris"}
        s.send_tool_response([FunctionResponse(call.id, call.name, {"temperature_c": 21})])
        events = await reader.until(_is(TurnComplete))
        assert "21" in "".join(e.text for e in events if isinstance(e, OutputTranscription))
        frame = await emu.wait_for(
            lambda f: f.direction == "in" and f.payload is not None and "toolResponse" in f.payload
        )
        assert frame.payload is not None
        (resp,) = frame.payload["toolResponse"]["functionResponses"]
        assert resp["id"] == call.id
        await s.close()


async def test_audio_stream_end_flushes_the_callers_utterance(emu: Emulator, session: LiveSession) -> None:
    """audioStreamEnd after speech (no trailing silence) makes the server answer at once."""
    reader = Reader(session)
    tone = _tone(20)
    for _ in range(20):
        session.send_audio(tone)
        await asyncio.sleep(0.004)
    session.send_audio_stream_end()
    events = await reader.until(_is(TurnComplete))
    assert any(isinstance(e, ModelAudio) for e in events)
    frame = await emu.wait_for(
        lambda f: (
            f.direction == "in"
            and f.payload is not None
            and "audioStreamEnd" in f.payload.get("realtimeInput", {})
        )
    )
    assert frame.kind == "text"


def _tool_scenario(non_blocking: bool = False) -> Scenario:
    rule = Rule(
        text_contains="book",
        tool="book_table",
        args={"people": 2},
        non_blocking=non_blocking,
        reply="Done: {result}",
    )
    return Scenario(first_audio_delay_s=0.0, speed=0.0, playback_wait=False, rules=[rule])


async def test_barge_in_during_a_blocking_tool_call_cancels_it() -> None:
    """Input during a pending blocking call: Interrupted, ToolCallCancellation(its id), TurnComplete."""
    async with _emulator(_tool_scenario(), api_key=KEY) as emu:
        s = await LiveSession.connect(
            _endpoint(emu), _cfg(tools=(FunctionDeclaration("book_table", "Book"),))
        )
        reader = Reader(s)
        s.send_client_content([("user", "book a table")])
        call = (await reader.until(_is(ToolCall)))[-1]
        assert isinstance(call, ToolCall)
        s.send_client_content([("user", "actually, never mind")])
        events = await reader.until(_is(TurnComplete))
        kinds = [type(e) for e in events]
        assert kinds[:3] == [Interrupted, ToolCallCancellation, TurnComplete]
        assert events[1] == ToolCallCancellation((call.calls[0].id,))
        await s.close()


async def test_non_blocking_tool_response_carries_scheduling() -> None:
    """A NON_BLOCKING tool is declared as such and its response's scheduling reaches the server."""
    tool = FunctionDeclaration("book_table", "Book", non_blocking=True)
    async with _emulator(_tool_scenario(non_blocking=True), api_key=KEY) as emu:
        s = await LiveSession.connect(_endpoint(emu), _cfg(tools=(tool,)))
        assert emu.sessions[0].setup is not None
        assert emu.sessions[0].setup["tools"][0]["functionDeclarations"][0]["behavior"] == "NON_BLOCKING"
        reader = Reader(s)
        s.send_client_content([("user", "book a table")])
        call = (await reader.until(_is(ToolCall)))[-1]
        assert isinstance(call, ToolCall)
        (fc,) = call.calls
        s.send_tool_response([FunctionResponse(fc.id, fc.name, {"ok": True}, scheduling="SILENT")])
        frame = await emu.wait_for(
            lambda f: f.direction == "in" and f.payload is not None and "toolResponse" in f.payload
        )
        assert frame.payload is not None
        assert frame.payload["toolResponse"]["functionResponses"][0]["scheduling"] == "SILENT"
        await s.close()


# -------------------------------------------------------------------------------- lifecycle


async def test_go_away_is_a_typed_event(emu: Emulator, session: LiveSession) -> None:
    """goAway arrives as GoAway with the time left in seconds."""
    reader = Reader(session)
    emu.send_go_away(7.5)
    events = await reader.until(_is(GoAway))
    assert events[-1] == GoAway(7.5)


async def test_resumption_handle_is_tracked_and_resumes(emu: Emulator, session: LiveSession) -> None:
    """The latest resumable handle is kept, and a new connection with it resumes the conversation."""
    reader = Reader(session)
    session.send_client_content([("user", "hello")])
    events = await reader.until(lambda e: isinstance(e, SessionResumptionUpdate) and e.resumable)
    update = events[-1]
    assert isinstance(update, SessionResumptionUpdate)
    assert update.new_handle
    assert session.resumption_handle == update.new_handle
    await session.close()
    resumed = await LiveSession.connect(_endpoint(emu), _cfg(resumption_handle=update.new_handle))
    try:
        assert emu.sessions[1].resumed_from == update.new_handle
        assert emu.sessions[1].setup is not None
        assert emu.sessions[1].setup["sessionResumption"] == {"handle": update.new_handle}
        assert resumed.resumption_handle == update.new_handle
    finally:
        await resumed.close()


async def test_unknown_resumption_handle_is_session_not_found(emu: Emulator) -> None:
    """Resuming with a handle the server does not know raises LiveSessionNotFound (1008, start fresh)."""
    with pytest.raises(LiveSessionNotFound) as info:
        await LiveSession.connect(_endpoint(emu), _cfg(resumption_handle="no-such-handle"))
    assert info.value.code == 1008
    assert not info.value.retryable


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (1011, "Internal error encountered."),
        (1011, "Deadline expired before operation could complete."),
        (1006, ""),
    ],
)
async def test_abnormal_close_mid_session_is_retryable(
    emu: Emulator, session: LiveSession, code: int, reason: str
) -> None:
    """1011 and a TCP drop (1006) end events() with a retryable LiveSessionClosed."""
    reader = Reader(session)
    emu.inject_close(code, reason)
    with pytest.raises(LiveSessionClosed) as info:
        await reader.drain()
    assert info.value.code == code
    assert info.value.reason == reason
    assert info.value.retryable
    assert session.closed
    with pytest.raises(LiveSessionClosed):
        session.send_text("anyone?")
    session.send_audio(b"\0\0")  # the uplink racing teardown must not crash


async def test_policy_close_mid_session_is_not_retryable(emu: Emulator, session: LiveSession) -> None:
    """A 1008 mid-session is final."""
    emu.inject_close(1008, "Operation is not implemented")
    with pytest.raises(LiveSessionClosed) as info:
        await Reader(session).drain()
    assert info.value.code == 1008
    assert not info.value.retryable


async def test_clean_server_close_is_a_retryable_loss(emu: Emulator, session: LiveSession) -> None:
    """A 1000 close the server made mid-session raises a retryable LiveSessionClosed: for a phone call
    it is a loss to recover from (resume, else fallback), not the end of the conversation."""
    emu.inject_close(1000, "The operation was cancelled.")
    with pytest.raises(LiveSessionClosed) as info:
        await Reader(session).drain()
    assert info.value.code == 1000
    assert info.value.retryable
    assert session.closed
    assert session.close_code == 1000
    with pytest.raises(LiveSessionClosed):  # a later reader sees it at once too
        await Reader(session).drain()


async def test_a_close_nobody_reads_yet_still_shows_and_is_reported_later(
    emu: Emulator, session: LiveSession
) -> None:
    """A server close while nobody iterates marks the session closed at once (the uplink then holds
    its audio), and the next read reports it."""
    emu.inject_close(1011, "Internal error")
    deadline = time.monotonic() + 5
    while not session.closed:
        assert time.monotonic() < deadline, "the close never showed"
        await asyncio.sleep(0.01)
    session.send_audio(b"\0\0")  # discarded, not raised
    with pytest.raises(LiveSessionClosed) as info:
        await Reader(session).drain()
    assert info.value.code == 1011
    assert info.value.retryable


async def test_a_read_cancelled_while_waiting_loses_no_event(session: LiveSession) -> None:
    """Cancelling a consumer waiting in events() drops nothing: the next read gets every event."""
    waiting = asyncio.create_task(anext(session.events().__aiter__()))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    session.send_client_content([("user", "Say hello.")])
    events = await Reader(session).until(lambda e: isinstance(e, TurnComplete))
    assert any(isinstance(e, ModelAudio) for e in events)


async def test_close_is_clean_idempotent_and_ends_the_reader(emu: Emulator, session: LiveSession) -> None:
    """close() sends 1000, stops the tasks, ends a waiting consumer, and can be called again."""
    consumer = asyncio.create_task(Reader(session).drain())
    await asyncio.sleep(0.05)
    await asyncio.gather(session.close(), session.close())
    await session.close()
    assert await asyncio.wait_for(consumer, 2.0) == []
    frame = await emu.wait_for(lambda f: f.direction == "in" and f.kind == "close")
    assert frame.close_code == 1000
    assert session.closed
    with pytest.raises(LiveSessionError):
        session.send_client_content([("user", "late")])


async def test_events_has_a_single_consumer(session: LiveSession) -> None:
    """Two tasks reading events at once is refused rather than splitting the stream."""

    async def read_one() -> ServerEvent:
        return await anext(session.events().__aiter__())

    first = asyncio.create_task(read_one())
    await asyncio.sleep(0.01)
    with pytest.raises(LiveSessionError, match="already"):
        await anext(session.events().__aiter__())
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_text_frames_from_the_server_are_accepted_too() -> None:
    """The client reads text frames as well as binary ones."""
    async with _emulator(
        Scenario(first_audio_delay_s=0.0, speed=0.0, playback_wait=False, text_frames=True)
    ) as emu:
        s = await LiveSession.connect(_endpoint(emu), _cfg())
        reader = Reader(s)
        s.send_client_content([("user", "hello")])
        events = await reader.until(_is(TurnComplete))
        assert any(isinstance(e, ModelAudio) for e in events)
        await s.close()


# ------------------------------------------------------------------------------ audio queue


async def test_audio_overflow_drops_oldest_counts_and_logs_once_per_burst(
    emu: Emulator, session: LiveSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A full audio queue drops the oldest chunks without blocking; one warning per burst; newest survive."""
    caplog.set_level(logging.INFO, logger="gateway.gemini")
    frames = [struct.pack("<160h", *([i] * 160)) for i in range(200)]  # 10 ms each, distinct content
    for f in frames:
        # No await: the writer cannot run (send_audio is synchronous, so it cannot block either). The
        # first chunk finds the writer idle and goes straight to the socket; the other 199 overflow
        # the queue (50).
        session.send_audio(f)
    assert session.stats.audio_dropped == 149
    assert session.stats.drop_bursts == 1
    warnings = [r for r in caplog.records if "dropping" in r.getMessage()]
    assert len(warnings) == 1
    expected = frames[0] + b"".join(frames[150:])
    async with asyncio.timeout(5):
        while emu.sessions[0].audio_in_bytes < len(expected):  # noqa: ASYNC110 - the emulator's counter
            await asyncio.sleep(0.01)
    received = b"".join(base64.b64decode(b["data"]) for b in _audio_frames_in(emu))
    assert received == expected
    # Backlog is coalesced into ≤ 100 ms messages (3200 bytes at 16 kHz), not 50 tiny ones.
    assert all(len(base64.b64decode(b["data"])) <= 3200 for b in _audio_frames_in(emu))
    assert len(_audio_frames_in(emu)) <= 11
    for f in frames:
        session.send_audio(f)
    assert session.stats.drop_bursts == 2
    assert len([r for r in caplog.records if "dropping" in r.getMessage()]) == 2


async def test_control_messages_jump_the_audio_queue(emu: Emulator, session: LiveSession) -> None:
    """Queued text goes out before queued audio and is never dropped."""
    session.send_audio(b"\1\0" * 160)  # the writer is idle: this first chunk goes straight out
    for _ in range(59):
        session.send_audio(b"\0\0" * 160)
    session.send_text("priority")
    await emu.wait_for(
        lambda f: (
            f.direction == "in" and f.payload is not None and "audio" in f.payload.get("realtimeInput", {})
        )
    )
    inputs = [
        f.payload
        for f in emu.sessions[0].frames
        if f.direction == "in" and f.payload and "realtimeInput" in f.payload
    ]
    assert base64.b64decode(inputs[0]["realtimeInput"]["audio"]["data"]) == b"\1\0" * 160
    assert inputs[1] == {"realtimeInput": {"text": "priority"}}


async def test_odd_sized_audio_is_rejected_at_the_call_site(session: LiveSession) -> None:
    """Half a sample is an AudioError from send_audio, not a broken writer."""
    with pytest.raises(AudioError):
        session.send_audio(b"\0\0\0")


# ---------------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("in_query", [False, True])
async def test_api_key_never_appears_in_logs_or_errors(
    caplog: pytest.LogCaptureFixture, in_query: bool
) -> None:
    """Neither our logs, websockets' debug logs nor error messages contain the key, even with ?key=."""
    caplog.set_level(logging.DEBUG)
    async with _emulator(FAST, api_key=KEY) as emu:
        s = await LiveSession.connect(_endpoint(emu, key_in_query=in_query), _cfg())
        reader = Reader(s)
        s.send_client_content([("user", "hello")])
        await reader.until(_is(TurnComplete))
        await s.close()
        bad = "wrong-" + KEY
        with pytest.raises(LiveConnectError) as info:
            await LiveSession.connect(_endpoint(emu, api_key=bad, key_in_query=in_query), _cfg())
    assert "live session ready" in caplog.text
    assert KEY not in caplog.text
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value.__cause__)
