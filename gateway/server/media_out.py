"""Outbound messages of a media socket, written together: one ``write()`` per playout wake-up.

While the bot talks, the playout (gateway/bridge/playout.py) sends a media message every 80 ms and a
mark every 200 ms. Through ``WebSocketResponse.send_str`` each is its own frame object and its own
``write()`` syscall; on loopback that syscall also runs the peer's TCP receive path, and it was the
largest single cost on the downlink (README, Performance). Here every message due at one wake-up
(media, marks, a ``clear``) goes out as consecutive text frames in a single ``transport.write``.

Only plain writes take this path. A closing socket or one whose peer stopped reading (its write
buffer above :data:`BACKLOG_BYTES`) goes through aiohttp, which raises or waits for the drain.
The socket must be prepared with ``compress=False`` (frames here are never deflated).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from gateway.telephony.provider import Frame
from gateway.wsframes import binary_frame_header, text_frame_header

__all__ = ["BACKLOG_BYTES", "MediaSender"]

#: Unsent bytes above which writes go through aiohttp's drain (about 4 s of μ-law in base64 JSON).
BACKLOG_BYTES = 64 * 1024


class MediaSender:
    """``await sender(frames)``: send messages in order (``str`` as text frames, ``bytes`` as binary
    frames), in one write when nothing is in the way."""

    __slots__ = ("_request", "_ws")

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        if ws.compress:
            raise ValueError("MediaSender needs a WebSocketResponse prepared with compress=False")
        self._request = request
        self._ws = ws

    def writable(self) -> bool:
        """True when :meth:`write` can carry messages now: open, and the peer keeping up."""
        transport = self._request.transport
        return (
            transport is not None
            and not transport.is_closing()
            and not self._ws.closed
            and transport.get_write_buffer_size() <= BACKLOG_BYTES
        )

    def write(self, texts: Sequence[Frame]) -> None:
        """``texts`` as consecutive frames in one ``transport.write``; only when :meth:`writable`."""
        transport = self._request.transport
        assert transport is not None
        parts: list[bytes] = []
        for text in texts:
            if isinstance(text, str):
                payload = text.encode()
                parts.append(text_frame_header(len(payload), masked=False))
                parts.append(payload)
            else:  # raw audio of a binary-frame provider
                parts.append(binary_frame_header(len(text), masked=False))
                parts.append(text)
        transport.write(b"".join(parts))

    async def __call__(self, texts: Sequence[Frame]) -> None:
        if not self.writable():
            for text in texts:
                # Raises on a closed socket, waits on a slow peer.
                await (self._ws.send_str(text) if isinstance(text, str) else self._ws.send_bytes(text))
            return
        self.write(texts)
