"""Caller audio handled where aiohttp parses it: no future, task wake-up or coroutine per 20 ms frame.

aiohttp hands every WebSocket message to the handler through a queue: the message is appended, a
future is resolved, the handler task is scheduled, and ``receive()``, ``__anext__`` and two async
iterators run before the bridge sees the frame. At 50 caller frames a second per call that is a task
switch per frame, and under load each frame waits behind everything else the loop has scheduled:
at 150 calls on one core the uplink p99 was 35-148 ms that way and 9-53 ms directly (README,
Performance).

:class:`MediaSocket` is a ``WebSocketResponse`` whose message queue offers each text message to a
synchronous *direct handler* first (:meth:`MediaSocket.handle_directly`). The handler takes the
messages it wants (caller audio) and returns ``False`` for the rest, which take aiohttp's normal path
to the reading task, as does everything while the queue holds anything (so order is kept), and every
close or ping frame; binary messages likewise go to an optional binary handler (the caller audio of the
binary-frame providers, Vonage and the PBX connectors), else the usual way. An exception in a handler
ends direct handling and reaches the reading task in order, as an ``ERROR`` message carrying it
(:func:`direct_failure` recovers it).

This relies on two aiohttp internals: ``WebSocketResponse._post_start`` builds the queue, and the
queue's ``feed_data`` is overridable. When either is missing, :meth:`MediaSocket.handle_directly`
returns ``False`` and the socket is a plain ``WebSocketResponse``; the test suite asserts the direct
path is live with the installed aiohttp, so an upgrade that moves them fails loudly, not slowly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import WSMessage, WSMsgType, web

__all__ = ["BinaryHandler", "DirectHandler", "MediaSocket", "direct_failure"]

#: Takes one text message; True: handled here, False: deliver it to the reading task as usual.
DirectHandler = Callable[[str], bool]
#: The same for one binary message (the caller audio of the binary-frame providers: Vonage…).
BinaryHandler = Callable[[bytes], bool]

try:  # aiohttp's message queue (its C version when built) and parser; both internal
    from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
    from aiohttp.helpers import DEFAULT_CHUNK_SIZE
except ImportError:  # pragma: no cover - an aiohttp that moved them: plain sockets
    _DirectQueue: Any = None
else:

    class _DirectQueue(WebSocketDataQueue):  # type: ignore[no-redef]
        """aiohttp's queue, offering each text message to the direct handler before queueing it."""

        handler: DirectHandler | None = None
        binary: BinaryHandler | None = None

        def feed_data(self, data: Any, size: int) -> None:
            handler = self.handler
            if handler is not None and data[0] is WSMsgType.TEXT and not self._buffer:
                try:
                    if handler(data[1]):
                        return
                except Exception as exc:  # the reading task raises it, after what came before
                    self.handler = self.binary = None
                    data, size = WSMessage(WSMsgType.ERROR, _Failed(exc), None), 0
            elif (binary := self.binary) is not None and data[0] is WSMsgType.BINARY and not self._buffer:
                try:
                    if binary(data[1]):
                        return
                except Exception as exc:  # as for text: in order, through the reading task
                    self.handler = self.binary = None
                    data, size = WSMessage(WSMsgType.ERROR, _Failed(exc), None), 0
            super().feed_data(data, size)


class _Failed:
    """Wraps the direct handler's exception in the ``ERROR`` message (aiohttp's own carry an error)."""

    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


def direct_failure(msg: WSMessage) -> Exception | None:
    """The direct handler's exception, if ``msg`` is the ``ERROR`` message that carries it."""
    data = msg.data
    return data.exc if isinstance(data, _Failed) else None


class MediaSocket(web.WebSocketResponse):
    """A ``WebSocketResponse`` that can hand text messages to a synchronous handler (module doc)."""

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        if _DirectQueue is None:  # pragma: no cover - see module doc
            super()._post_start(request, protocol, writer)
            return
        # aiohttp 3.14's _post_start, with the direct queue in place of WebSocketDataQueue.
        try:
            queue = _DirectQueue(request._protocol, DEFAULT_CHUNK_SIZE, loop=self._loop)
            parser = WebSocketReader(
                queue, self._max_msg_size, compress=bool(self._compress), decode_text=self._decode_text
            )
            data_received = None if self._heartbeat is None else self._on_data_received
        except (AttributeError, TypeError):  # pragma: no cover - another aiohttp: plain socket
            super()._post_start(request, protocol, writer)
            return
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        self._reader, self._parser = queue, parser
        request.protocol.set_parser(self._parser, data_received_cb=data_received)
        request.protocol.keep_alive(False)  # as aiohttp does: no HTTP keep-alive after an upgrade

    def handle_directly(self, handler: DirectHandler | None, binary: BinaryHandler | None = None) -> bool:
        """Offer text messages to ``handler`` and binary ones to ``binary`` from now on (None: stop).
        False: not supported here."""
        queue = self._reader
        if _DirectQueue is None or not isinstance(queue, _DirectQueue):
            return False
        queue.handler, queue.binary = handler, binary
        return True
