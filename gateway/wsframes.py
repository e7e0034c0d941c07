"""WebSocket frame headers and masking (RFC 6455 §5.2-5.3) for the write paths that skip their library.

The media path writes ~100 WebSocket messages a second per call. websockets (client side, to Gemini)
and aiohttp (server side, to Twilio) each spend several µs and one ``write()`` syscall per message;
:mod:`gateway.gemini.session` and :mod:`gateway.server.media_out` build plain data frames themselves
so that one ``write()`` can carry several messages and no per-frame objects are made. Everything else
(handshake, control frames, closing, back-pressure) stays with the libraries. The load-test peers
(:mod:`gateway.caller.leanws`) frame with the same functions.
"""

from __future__ import annotations

import struct

try:  # websockets' C routine: 0.1 µs for a 460-byte message, where its pure-Python fallback takes 1.4
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - only where websockets was installed without its extension
    from websockets.utils import apply_mask

__all__ = ["apply_mask", "binary_frame_header", "frame_header", "text_frame_header"]

_SHORT = struct.Struct("!BB").pack
_MID = struct.Struct("!BBH").pack
_LONG = struct.Struct("!BBQ").pack
_FIN = 0x80
_TEXT = 0x1
_BINARY = 0x2


def frame_header(opcode: int, length: int, *, masked: bool) -> bytes:
    """Header of one unfragmented frame with a ``length``-byte payload (a mask key follows if masked)."""
    first, mask_bit = _FIN | opcode, 0x80 if masked else 0
    if length < 126:
        return _SHORT(first, mask_bit | length)
    if length < 65536:
        return _MID(first, mask_bit | 126, length)
    return _LONG(first, mask_bit | 127, length)


def text_frame_header(length: int, *, masked: bool) -> bytes:
    """Header of one unfragmented text frame: what the media path sends."""
    return frame_header(_TEXT, length, masked=masked)


def binary_frame_header(length: int, *, masked: bool) -> bytes:
    """Header of one unfragmented binary frame: raw audio of the binary-frame providers (Vonage…)."""
    return frame_header(_BINARY, length, masked=masked)
