"""ResilientSession against in-memory connections: hand-overs, held audio, seeding, giving up."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator

import pytest

from gateway.bridge.resilience import (
    Reconnect,
    ResiliencePolicy,
    ResilientSession,
    render_lines,
    transcript_lines,
)
from gateway.errors import LiveConnectError, LiveSessionNotFound
from gateway.gemini.messages import (
    FunctionCall,
    FunctionResponse,
    GoAway,
    ModelAudio,
    OutputTranscription,
    ServerEvent,
    SessionResumptionUpdate,
    ToolCall,
    TurnComplete,
)

from .fakes import LOG, Connector, FakeConnection, refused


def _no_wait() -> Iterator[float]:
    return itertools.repeat(0.0)


FAST = ResiliencePolicy(max_attempts=3, give_up_after_s=2.0, switch_margin_s=0.05, backoff=_no_wait)


class Harness:
    def __init__(self, connector: Connector, policy: ResiliencePolicy = FAST) -> None:
        self.connector = connector
        self.reconnects: list[Reconnect] = []
        self.session = ResilientSession(
            connector, log=LOG, policy=policy, on_reconnect=self.reconnects.append
        )
        self.events: list[ServerEvent] = []
        self.error: BaseException | None = None
        self.seen = asyncio.Event()
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        try:
            async for event in self.session.events():
                self.events.append(event)
                self.seen.set()
        except Exception as exc:
            self.error = exc

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait (at most 2 s) until ``predicate`` holds after some event or hand-over."""
        async with asyncio.timeout(2.0):
            while not predicate():  # noqa: ASYNC110 - nothing signals it; poll briefly
                await asyncio.sleep(0.005)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.session.close()


AUDIO = ModelAudio(b"\x00\x00" * 480)
HANDLE = SessionResumptionUpdate("h1", True)


async def test_relays_events_and_audio_of_the_first_connection() -> None:
    """Caller audio reaches the connection and its events reach the consumer unchanged."""
    h = Harness(Connector())
    conn = await h.connector.wait_opened(1)
    h.session.send_audio(b"a" * 640)
    conn.push(AUDIO, TurnComplete())
    await h.until(lambda: len(h.events) == 2)
    assert conn.audio == [b"a" * 640]
    assert h.events == [AUDIO, TurnComplete()]
    assert h.reconnects == []
    await h.close()


async def test_audio_before_the_first_connection_is_held_and_delivered() -> None:
    """Audio and the greeting sent before setupComplete arrive on the connection, greeting first."""
    connector = Connector()
    session = ResilientSession(connector, log=LOG, policy=FAST)
    session.send_client_content([("user", "Greet the caller.")])
    session.send_audio(b"1" * 640)
    task = asyncio.create_task(anext(session.events()))
    conn = await connector.wait_opened(1)
    assert conn.control == [("content", ((("user", "Greet the caller."),), True))]
    assert conn.audio == [b"1" * 640]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await session.close()


async def test_go_away_when_idle_resumes_at_once_without_losing_audio() -> None:
    """goAway at a safe point: the next connection resumes with the handle and gets the unsent audio."""
    h = Harness(Connector())
    old = await h.connector.wait_opened(1)
    old.push(AUDIO, TurnComplete(), HANDLE)
    await h.until(lambda: len(h.events) == 3)
    old.unsent = [b"u" * 640]
    old.push(GoAway(30.0))
    new = await h.connector.wait_opened(2)
    await h.until(lambda: len(h.reconnects) == 1)
    h.session.send_audio(b"n" * 640)
    assert new.resumed_with == "h1"
    assert new.audio == [b"u" * 640, b"n" * 640]
    assert old.closed
    assert new.control == []  # a fresh handle needs no note
    r = h.reconnects[0]
    assert (r.cause, r.outcome, r.stale, r.held_chunks) == ("go_away", "resumed", False, 1)
    old.push(AUDIO)  # a let-go connection is never relayed
    new.push(TurnComplete())
    await h.until(lambda: h.events[-1] == TurnComplete() and len(h.events) == 5)
    assert h.events.count(AUDIO) == 1
    await h.close()


async def test_go_away_mid_utterance_waits_for_the_end_of_the_reply() -> None:
    """goAway while the bot talks: the switch happens only after turnComplete and a new handle."""
    h = Harness(Connector())
    old = await h.connector.wait_opened(1)
    old.push(HANDLE, AUDIO, GoAway(30.0), AUDIO, OutputTranscription("hello"))
    await h.until(lambda: len(h.events) == 5)
    h.session.send_audio(b"during" * 100)
    assert len(h.connector.opened) == 1
    assert old.audio == [b"during" * 100]  # the old connection still hears the caller meanwhile
    old.push(TurnComplete(), SessionResumptionUpdate("h2", True))
    new = await h.connector.wait_opened(2)
    assert new.resumed_with == "h2"
    await h.until(lambda: len(h.reconnects) == 1)
    assert h.reconnects[0].outcome == "resumed"
    await h.close()


async def test_go_away_mid_tool_call_waits_for_the_answer() -> None:
    """A pending tool call is not a safe point: the switch follows the answer and the end of the turn."""
    h = Harness(Connector())
    old = await h.connector.wait_opened(1)
    call = ToolCall((FunctionCall("c1", "lookup", {}),))
    old.push(HANDLE, call, GoAway(30.0))
    await h.until(lambda: len(h.events) == 3)
    await asyncio.sleep(0.02)
    assert len(h.connector.opened) == 1
    h.session.send_tool_response([FunctionResponse("c1", "lookup", {"ok": True})])
    assert ("tool", ("c1",)) in old.control
    old.push(AUDIO, TurnComplete(), SessionResumptionUpdate("h3", True))
    new = await h.connector.wait_opened(2)
    assert new.resumed_with == "h3"
    await h.close()


async def test_forced_switch_near_the_deadline_closes_the_cut_turn_and_notes_it() -> None:
    """No safe point before the deadline: switch anyway, end the cut reply, tell the model what it missed."""
    h = Harness(Connector())
    old = await h.connector.wait_opened(1)
    old.push(HANDLE, OutputTranscription("The answer is"), AUDIO, GoAway(0.1))
    new = await h.connector.wait_opened(2)
    await h.until(lambda: h.events[-1] == TurnComplete())
    assert new.resumed_with == "h1"
    (kind, (turns, turn_complete)), *_ = new.control
    assert kind == "content"
    assert turn_complete is True
    assert "The answer is" in turns[0][1]
    assert "finish it" in turns[0][1]
    assert h.reconnects[0].stale
    await h.close()


async def test_drop_reconnects_with_the_handle_and_keeps_caller_audio_in_order() -> None:
    """1006 mid-call: resume with the latest handle; unsent and outage audio arrive in order."""
    connector = Connector(fail=[])
    h = Harness(connector)
    old = await connector.wait_opened(1)
    old.push(HANDLE)
    await h.until(lambda: len(h.events) == 1)
    old.unsent = [b"1" * 640]
    connector.fail.append(refused())  # the first reconnect attempt fails too
    old.drop(1006)
    h.session.send_audio(b"2" * 640)  # the reader saw the close: held
    new = await connector.wait_opened(2)
    await h.until(lambda: len(h.reconnects) == 1)
    assert connector.handles == [None, "h1", "h1"]
    assert new.audio == [b"1" * 640, b"2" * 640]
    r = h.reconnects[0]
    assert (r.cause, r.code, r.outcome, r.attempts) == ("closed", 1006, "resumed", 2)
    await h.close()


async def test_drop_mid_reply_ends_the_turn_and_asks_to_finish_it() -> None:
    """A reply cut by a drop gets a synthetic turnComplete; the new connection is asked to finish it."""
    h = Harness(Connector())
    old = await h.connector.wait_opened(1)
    old.push(HANDLE, AUDIO)
    await h.until(lambda: len(h.events) == 2)
    old.drop(1011, "Internal error encountered.")
    new = await h.connector.wait_opened(2)
    await h.until(lambda: len(h.events) == 3)
    assert h.events[-1] == TurnComplete()
    assert new.control
    assert new.control[0][1][1] is True
    await h.close()


async def test_session_not_found_starts_fresh_seeded_with_the_transcript() -> None:
    """1008 session not found: a fresh session gets the conversation so far as one user note."""
    connector = Connector()
    h = Harness(connector)
    h.session.bind_history(lambda: [("caller", "My order is 42."), ("bot", "Let me check.")])
    old = await connector.wait_opened(1)
    old.push(OutputTranscription("Hi"), TurnComplete(), HANDLE)
    await h.until(lambda: len(h.events) == 3)
    connector.fail.append(LiveSessionNotFound("not found", code=1008))
    old.drop(1011)
    new = await connector.wait_opened(2)
    await h.until(lambda: len(h.reconnects) == 1)
    assert connector.handles == [None, "h1", None]
    kind, (turns, turn_complete) = new.control[0]  # type: ignore[misc]
    assert kind == "content"
    assert turn_complete is False
    assert "Caller: My order is 42.\nYou: Let me check." in turns[0][1]
    assert h.reconnects[0].outcome == "fresh"
    assert h.session.resumption_handle is None
    await h.close()


async def test_fresh_restart_before_the_bot_spoke_replays_the_greeting() -> None:
    """Dropped before anything was said: the fresh session gets the greeting prompt again."""
    connector = Connector()
    h = Harness(connector)
    h.session.send_client_content([("user", "Greet the caller.")])
    old = await connector.wait_opened(1)
    old.drop(1006)
    new = await connector.wait_opened(2)
    await h.until(lambda: len(h.reconnects) == 1)
    assert new.control == [("content", ((("user", "Greet the caller."),), True))]
    await h.close()


async def test_configuration_error_is_not_retried() -> None:
    """A non-retryable setup failure (1007/1008) gives up after one attempt."""
    connector = Connector(fail=[refused(retryable=False)])
    h = Harness(connector)
    await h.task
    assert isinstance(h.error, LiveConnectError)
    assert connector.handles == [None]
    assert h.reconnects[0].outcome == "failed"
    await h.session.close()


async def test_retryable_failures_give_up_after_max_attempts() -> None:
    """Retryable failures are bounded: max_attempts, then events() raises for the fallback."""
    connector = Connector(fail=[refused() for _ in range(10)])
    h = Harness(connector)
    await h.task
    assert isinstance(h.error, LiveConnectError)
    assert len(connector.handles) == FAST.max_attempts
    await h.session.close()


async def test_answer_to_a_call_of_a_lost_connection_becomes_a_note() -> None:
    """A tool answer for a call made on a dropped connection is told to the new one as context."""
    h = Harness(Connector())
    old = await h.connector.wait_opened(1)
    old.push(HANDLE, ToolCall((FunctionCall("c9", "lookup", {}),)))
    await h.until(lambda: len(h.events) == 2)
    old.drop(1006)
    new = await h.connector.wait_opened(2)
    await h.until(lambda: len(h.reconnects) == 1)
    new.control.clear()
    h.session.send_tool_response([FunctionResponse("c9", "lookup", {"status": "shipped"})])
    assert len(new.control) == 1
    kind, (turns, turn_complete) = new.control[0]  # type: ignore[misc]
    assert kind == "content"
    assert turn_complete is True
    assert "shipped" in turns[0][1]
    await h.close()


async def test_clean_server_close_mid_call_resumes() -> None:
    """A 1000 close from the server mid-call is a loss like any other: the call resumes on a new one."""
    h = Harness(Connector())
    old = await h.connector.wait_opened(1)
    old.push(HANDLE)
    await h.until(lambda: HANDLE in h.events)
    old.drop(1000, "The operation was cancelled.", retryable=True)
    new = await h.connector.wait_opened(2)
    assert new.resumed_with == "h1"
    assert h.error is None
    await h.close()


async def test_own_close_ends_the_stream() -> None:
    """Only a connection's end without an error (our own close) ends events(): no reconnect."""
    h = Harness(Connector())
    old = await h.connector.wait_opened(1)
    old.end()
    await h.task
    assert h.error is None
    assert len(h.connector.opened) == 1


async def test_slow_first_connection_gives_up_within_the_budget() -> None:
    """A preconnect that never completes is abandoned at give_up_after_s."""
    never: asyncio.Future[FakeConnection] = asyncio.get_running_loop().create_future()
    policy = ResiliencePolicy(give_up_after_s=0.05, backoff=_no_wait)
    session = ResilientSession(Connector(), log=LOG, policy=policy, first=never)
    with pytest.raises(LiveConnectError):
        await anext(session.events())
    assert never.cancelled()
    await session.close()


def test_render_lines_merges_speakers_and_keeps_the_newest() -> None:
    """Consecutive chunks of one speaker merge; the oldest lines go first when over the limit."""
    lines = [("caller", "one"), ("caller", "two"), ("bot", "three"), ("caller", "x" * 50)]
    assert render_lines(lines, 1000) == "Caller: one two\nYou: three\nCaller: " + "x" * 50
    assert render_lines(lines, 60) == "Caller: " + "x" * 50


def test_transcript_lines_use_what_the_caller_heard() -> None:
    """Cut bot turns count as their heard part; key presses become caller lines."""
    turns: list[dict[str, object]] = [
        {"role": "caller", "text": "hi"},
        {"role": "bot", "text": "hello there friend", "interrupted": True, "heard": "hello"},
        {"role": "dtmf", "text": "5"},
    ]
    assert transcript_lines(turns) == [("caller", "hi"), ("bot", "hello"), ("caller", "[pressed 5]")]


async def test_audio_queued_counts_held_and_unsent_audio() -> None:
    """``gateway_queue_depth{queue="gemini_audio"}`` reads this: held audio plus the connection's queue."""
    h = Harness(Connector())
    conn = await h.connector.wait_opened(1)
    conn.unsent = [b"u" * 640, b"v" * 640]
    assert h.session.audio_queued == 2
    conn.drop(1011)
    await h.until(lambda: h.session.audio_queued == 0 or len(h.connector.opened) == 2)
    await h.close()
    held = ResilientSession(Connector(fail=[refused()] * 3), log=LOG, policy=FAST)
    for _ in range(3):
        held.send_audio(b"\0\0" * 320)  # no connection yet: held for the first one
    assert held.audio_queued == 3
    await held.close()
