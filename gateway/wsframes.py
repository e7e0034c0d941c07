"""WebSocket text frame headers (RFC 6455 §5.2) for the two hot write paths that skip their library.

The media path writes ~100 WebSocket messages a second per call. websockets (client side, to Gemini)
and aiohttp (server side, to Twilio) each spend several µs and one ``write()`` syscall per message;
:mod:`gateway.gemini.session` and :mod:`gateway.server.media` build plain data frames themselves so
that one ``write()`` can carry several messages and no per-frame objects are made. Everything else
(handshake, control frames, closing, back-pressure) stays with the libraries.
"""

from __future__ import annotations

import struct

__all__ = ["text_frame_header"]

_SHORT = struct.Struct("!BB").pack
_MID = struct.Struct("!BBH").pack
_LONG = struct.Struct("!BBQ").pack
_FIN_TEXT = 0x81


def text_frame_header(length: int, *, masked: bool) -> bytes:
    """Header of one unfragmented text frame with a ``length``-byte payload (the mask key follows)."""
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return _SHORT(_FIN_TEXT, mask_bit | length)
    if length < 65536:
        return _MID(_FIN_TEXT, mask_bit | 126, length)
    return _LONG(_FIN_TEXT, mask_bit | 127, length)
