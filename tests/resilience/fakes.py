"""In-memory Live connections for ResilientSession unit tests: scripted events, recorded sends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field

from gateway.errors import LiveConnectError, LiveSessionClosed, LiveSessionError
from gateway.gemini.messages import FunctionResponse, ServerEvent
from gateway.log import call_logger


class FakeConnection:
    """One connection: push events or a close in; read what the session sent out."""

    def __init__(self, handle: str | None) -> None:
        self.resumed_with = handle
        self.resumption_handle = handle
        self.audio: list[bytes] = []
        self.unsent: list[bytes] = []
        self.control: list[tuple[str, object]] = []
        #: Audio chunks and activity markers in the order they were sent ("start", "end", or the chunk).
        self.stream: list[bytes | str] = []
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self._queue: asyncio.Queue[ServerEvent | BaseException | None] = asyncio.Queue()

    # driving
    def push(self, *events: ServerEvent) -> None:
        for event in events:
            self._queue.put_nowait(event)

    def drop(self, code: int = 1006, reason: str = "", *, retryable: bool = True) -> None:
        """The server side goes away: sends now fail silently and the stream raises."""
        self.closed = True
        self.close_code, self.close_reason = code, reason
        self._queue.put_nowait(LiveSessionClosed(code, reason, retryable=retryable))

    def end(self) -> None:
        self.closed = True
        self.close_code = 1000
        self._queue.put_nowait(None)

    # LiveConnection
    def send_audio(self, pcm16k: bytes) -> None:
        if not self.closed:
            self.audio.append(pcm16k)
            self.stream.append(pcm16k)

    def send_activity_start(self) -> None:
        self._check()
        self.stream.append("start")

    def send_activity_end(self) -> None:
        self._check()
        self.stream.append("end")

    def send_text(self, text: str) -> None:
        self._check()
        self.control.append(("text", text))

    def send_client_content(self, turns: Sequence[tuple[str, str]], turn_complete: bool = True) -> None:
        self._check()
        self.control.append(("content", (tuple(turns), turn_complete)))

    def send_tool_response(self, responses: Sequence[FunctionResponse]) -> None:
        self._check()
        self.control.append(("tool", tuple(r.id for r in responses)))

    def send_audio_backlog(self, chunks: Iterable[bytes]) -> None:
        self._check()
        for chunk in chunks:  # all of it, in order (a real LiveSession never drops a backlog)
            self.send_audio(chunk)

    @property
    def audio_queued(self) -> int:
        return len(self.unsent)

    def take_unsent_audio(self) -> list[bytes]:
        chunks, self.unsent = self.unsent, []
        return chunks

    def _check(self) -> None:
        if self.closed:
            raise LiveSessionError("closed")

    async def _events(self) -> AsyncIterator[ServerEvent]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def events(self) -> AsyncIterator[ServerEvent]:
        return self._events()

    async def close(self) -> None:
        self.closed = True


@dataclass
class Connector:
    """Opens FakeConnections; ``fail`` holds errors the next attempts raise, in order."""

    fail: list[BaseException] = field(default_factory=list)
    opened: list[FakeConnection] = field(default_factory=list)
    handles: list[str | None] = field(default_factory=list)
    opened_event: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, handle: str | None) -> FakeConnection:
        self.handles.append(handle)
        await asyncio.sleep(0)
        if self.fail:
            raise self.fail.pop(0)
        conn = FakeConnection(handle)
        self.opened.append(conn)
        self.opened_event.set()
        return conn

    async def wait_opened(self, count: int) -> FakeConnection:
        while len(self.opened) < count:
            self.opened_event.clear()
            await asyncio.wait_for(self.opened_event.wait(), 2)
        return self.opened[count - 1]


LOG = call_logger("tests.resilience")


def refused(retryable: bool = True) -> LiveConnectError:
    return LiveConnectError("refused", code=1011 if retryable else 1007, retryable=retryable)
