"""ResilientSession with manual activity detection, extended thinking and streamed tool answers."""

from __future__ import annotations

from gateway.gemini.messages import (
    FunctionCall,
    FunctionResponse,
    GoAway,
    InteractionStatus,
    SessionResumptionUpdate,
    ToolCall,
    TurnComplete,
)

from .fakes import Connector
from .test_resilient_session import HANDLE, Harness


async def test_an_utterance_during_an_outage_is_framed_with_activity_markers() -> None:
    """Start, speech and end while no connection carries the call: the next one gets them in order."""
    connector = Connector()
    h = Harness(connector)
    old = await connector.wait_opened(1)
    old.push(HANDLE)
    await h.until(lambda: len(h.events) == 1)
    old.drop(1006)
    await h.until(lambda: h.session._live is None or h.session._live is not old)
    h.session.send_activity_start()
    h.session.send_audio(b"s" * 640)
    h.session.send_activity_end()
    new = await connector.wait_opened(2)
    await h.until(lambda: len(h.reconnects) == 1)
    assert new.stream == ["start", b"s" * 640, "end"]
    await h.close()


async def test_an_utterance_in_progress_restarts_on_the_new_connection() -> None:
    """Activity open when the connection drops: the new connection hears activityStart before the
    held audio, and the end when it comes."""
    connector = Connector()
    h = Harness(connector)
    old = await connector.wait_opened(1)
    h.session.send_activity_start()
    h.session.send_audio(b"a" * 640)
    assert old.stream == ["start", b"a" * 640]
    old.unsent = [b"u" * 640]
    old.drop(1011)
    new = await connector.wait_opened(2)
    await h.until(lambda: len(h.reconnects) == 1)
    h.session.send_audio(b"b" * 640)
    h.session.send_activity_end()
    assert new.stream == ["start", b"u" * 640, b"b" * 640, "end"]
    await h.close()


async def test_go_away_waits_for_the_callers_turn_and_the_interaction_to_end() -> None:
    """No switch mid-utterance (manual activity) nor while extended thinking is IN_PROGRESS."""
    connector = Connector()
    h = Harness(connector)
    old = await connector.wait_opened(1)
    h.session.send_activity_start()
    old.push(InteractionStatus(in_progress=True), TurnComplete(), HANDLE, GoAway(30.0))
    await h.until(lambda: len(h.events) == 4)
    assert len(connector.opened) == 1
    h.session.send_activity_end()
    old.push(SessionResumptionUpdate("h2", True))
    await h.until(lambda: len(h.events) == 5)
    assert len(connector.opened) == 1, "the interaction is still in progress"
    old.push(InteractionStatus(in_progress=False), TurnComplete(), SessionResumptionUpdate("h3", True))
    new = await connector.wait_opened(2)
    assert new.resumed_with == "h3"
    await h.close()


async def test_a_streaming_call_stays_pending_until_its_last_answer() -> None:
    """willContinue answers keep the call open (no safe point for goAway); the last one closes it."""
    connector = Connector()
    h = Harness(connector)
    old = await connector.wait_opened(1)
    old.push(ToolCall((FunctionCall("c1", "progress", {}),)), TurnComplete(), HANDLE)
    await h.until(lambda: len(h.events) == 3)
    h.session.send_tool_response([FunctionResponse("c1", "progress", {"output": 1}, "WHEN_IDLE", True)])
    old.push(SessionResumptionUpdate("h2", True), GoAway(30.0))
    await h.until(lambda: len(h.events) == 5)
    assert len(connector.opened) == 1
    h.session.send_tool_response([FunctionResponse("c1", "progress", {}, "SILENT", False)])
    old.push(SessionResumptionUpdate("h3", True))
    new = await connector.wait_opened(2)
    assert new.resumed_with == "h3"
    await h.close()
