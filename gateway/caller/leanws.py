"""Bare RFC 6455 framing and handshakes for the load-test peers, on plain asyncio protocols.

``bench/load.py`` drives hundreds of calls, i.e. tens of thousands of WebSocket messages a second,
from the lean callers (:mod:`gateway.caller.load`) and the lean Live server
(:mod:`gateway.emulator.load`), on one core that is not the gateway's. A library WebSocket (aiohttp,
``websockets``) costs a coroutine, a future and a task switch per message; here a message is parsed
inside the protocol's read callback and sent with one ``transport.write``: ~9 µs of CPU per message
each side on uvloop, against 13.5 for an aiohttp server and 19 for a ``websockets`` one (measured
with ``bench/ws_peers.py``, whose docstring has the figures).

Only what the peers need, but all of it by the RFC: masking (clients mask every frame with a fresh
key, servers never mask), 7/16/64-bit lengths, fragmented messages, ping → pong, the close
handshake, and no extensions (a server may decline permessage-deflate; the gateway does not offer
it towards Gemini).
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Callable

from gateway.wsframes import apply_mask, frame_header

__all__ = [
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "PING",
    "PONG",
    "TEXT",
    "FrameReader",
    "ProtocolViolation",
    "accept_key",
    "close_payload",
    "frame",
    "masked_frame",
]

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_getrandbits = random.getrandbits


class ProtocolViolation(Exception):
    """The peer broke RFC 6455; ``code`` is the close code to fail the connection with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def frame(opcode: int, payload: bytes) -> bytes:
    """One unfragmented, unmasked frame (server → client). Cache it when the payload repeats."""
    return frame_header(opcode, len(payload), masked=False) + payload


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One unfragmented frame masked with a fresh random key (client → server, RFC 6455 §5.3)."""
    key = _getrandbits(32).to_bytes(4, "little")
    n = len(payload)
    if opcode == TEXT and 126 <= n < 65536:  # every media message: no _header() call
        return _TEXT16 + n.to_bytes(2, "big") + key + apply_mask(payload, key)
    return frame_header(opcode, n, masked=True) + key + apply_mask(payload, key)


_TEXT16 = bytes((0x80 | TEXT, 0x80 | 126))


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's body: the code, then the reason cut to 123 UTF-8 bytes (whole characters)."""
    raw = reason.encode("utf-8")[:123].decode("utf-8", errors="ignore").encode("utf-8")
    return code.to_bytes(2, "big") + raw


class FrameReader:
    """Incremental frame parser: :meth:`feed` bytes, ``on_message(opcode, payload)`` per message.

    Data messages come out reassembled (opcode TEXT or BINARY); control frames (CLOSE, PING, PONG)
    come out as they arrive, even between fragments. ``masked`` is what the peer must do: True on a
    server (clients mask), False on a client. Raises :class:`ProtocolViolation` on a broken frame.
    """

    __slots__ = ("_buf", "_fragments", "_masked", "_max", "_on_message", "_opcode")

    def __init__(
        self, on_message: Callable[[int, bytes], None], *, masked: bool, max_size: int = 16 << 20
    ) -> None:
        self._on_message = on_message
        self._masked = masked
        self._max = max_size
        self._buf = b""
        self._fragments: list[bytes] | None = None
        self._opcode = 0

    def feed(self, data: bytes | memoryview) -> None:
        """Parse what arrived. ``data`` may be a view of a reused buffer: nothing keeps a reference
        to it (payloads and any incomplete frame are copied out)."""
        end = len(data)
        if not self._buf and end > 8 and self._fragments is None:
            # The usual read: exactly one whole, unfragmented data frame with a 16-bit length.
            b0, b1 = data[0], data[1]
            if (b0 == 0x81 or b0 == 0x82) and b1 & 0x7F == 126 and bool(b1 & 0x80) is self._masked:
                n = data[2] << 8 | data[3]
                if n > self._max:
                    raise ProtocolViolation(1009, "message too big")
                if self._masked and end == 8 + n:
                    self._on_message(b0 & 0x0F, apply_mask(data[8:], bytes(data[4:8])))
                    return
                if not self._masked and end == 4 + n:
                    self._on_message(b0 & 0x0F, bytes(data[4:]))
                    return
        buf = self._buf + data if self._buf else data
        pos, end = 0, len(buf)
        masked = self._masked
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = pos + 2
            if n == 126:
                if end - head < 2:
                    break
                n = int.from_bytes(buf[head : head + 2], "big")
                head += 2
            elif n == 127:
                if end - head < 8:
                    break
                n = int.from_bytes(buf[head : head + 8], "big")
                head += 8
            if bool(b1 & 0x80) is not masked:
                raise ProtocolViolation(1002, "incorrect masking")
            if b0 & 0x70:
                raise ProtocolViolation(1002, "reserved bits must be 0")
            if n > self._max:
                raise ProtocolViolation(1009, "message too big")
            if masked:
                if end - head < 4 + n:
                    break
                payload = apply_mask(buf[head + 4 : head + 4 + n], bytes(buf[head : head + 4]))
                pos = head + 4 + n
            else:
                if end - head < n:
                    break
                payload = bytes(buf[head : head + n])
                pos = head + n
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
        self._buf = bytes(buf[pos:]) if pos < end else b""

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode >= 0x8:
            if not fin or len(payload) > 125 or opcode > PONG:
                raise ProtocolViolation(1002, "bad control frame")
            self._on_message(opcode, payload)
            return
        fragments = self._fragments
        if opcode == CONTINUATION:
            if fragments is None:
                raise ProtocolViolation(1002, "continuation without a message")
            fragments.append(payload)
            if fin:
                self._fragments = None
                message = b"".join(fragments)
                if len(message) > self._max:
                    raise ProtocolViolation(1009, "message too big")
                self._on_message(self._opcode, message)
            return
        if opcode not in (TEXT, BINARY):
            raise ProtocolViolation(1002, f"unknown opcode {opcode}")
        if fragments is not None:
            raise ProtocolViolation(1002, "new message inside a fragmented one")
        if fin:
            self._on_message(opcode, payload)
        else:
            self._fragments = [payload]
            self._opcode = opcode
