"""The Live API wire format as the emulator reads and writes it.

Deliberately independent of ``gateway.gemini``: the emulator has its own JSON handling so that it
catches the client's mistakes instead of sharing them. Everything here is pure (no I/O).

Input is parsed the way a proto3 JSON parser would: lowerCamel *and* snake_case keys, standard *and*
URL-safe base64 with or without padding. Output follows proto3 JSON: lowerCamel keys, default values
omitted, int64 as strings, durations as ``"50s"``.
"""

from __future__ import annotations

import binascii
import json
import re
from typing import Any

#: Close reasons are cut to this many UTF-8 bytes (the WebSocket limit for a control frame payload).
MAX_REASON_BYTES = 123

#: Status messages the real service uses in its close frames.
INVALID_ARGUMENT = "Request contains an invalid argument."
BAD_API_KEY = "API key not valid. Please pass a valid API key."
SESSION_NOT_FOUND = "BidiGenerateContent session not found"
DEADLINE_EXPIRED = "Deadline expired before operation could complete."
INTERNAL_ERROR = "Internal error encountered."

#: The one-of members of ``BidiGenerateContentClientMessage``.
CLIENT_MESSAGE_KINDS = frozenset({"setup", "clientContent", "realtimeInput", "toolResponse", "contextUpdate"})

#: Keys whose values are user data (function args, tool results, JSON schemas): their inner keys are
#: names chosen by the user and must not be rewritten.
_OPAQUE_KEYS = frozenset(
    {"args", "response", "properties", "parametersJsonSchema", "responseJsonSchema", "labels"}
)

_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
_RATE = re.compile(r"rate=(\d+)")


class CloseRequest(Exception):
    """Control-flow signal: the client broke the protocol and the socket must close with ``code``.

    Never escapes the emulator: the session turns it into a close frame.
    """

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code} {reason}")


_camel_cache: dict[str, str] = {}


def camel(key: str) -> str:
    """``mime_type`` → ``mimeType``; keys already in lowerCamel come back unchanged."""
    cached = _camel_cache.get(key)
    if cached is not None:
        return cached
    if "_" not in key:
        result = key
    else:
        head, *rest = key.split("_")
        result = head + "".join(p[:1].upper() + p[1:] for p in rest)
    if len(_camel_cache) < 4096:  # bounded: keys come from clients
        _camel_cache[key] = result
    return result


def normalise(value: Any) -> Any:
    """Rewrite every structural key of a parsed client message to lowerCamel, recursively."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = camel(key)
            out[name] = item if name in _OPAQUE_KEYS else normalise(item)
        return out
    if isinstance(value, list):
        return [normalise(item) for item in value]
    return value


def parse_client_message(raw: str | bytes) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Parse one client frame into ``(kind, body, whole normalised message)``.

    Raises :class:`CloseRequest` (1007) for anything a proto3 JSON parser would reject: invalid
    JSON, a non-object, several one-of members at once, or an unknown member.
    """
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CloseRequest(1007, f"Invalid JSON payload received. {exc}") from exc
    if not isinstance(doc, dict):
        raise CloseRequest(1007, "Invalid JSON payload received. Expected an object.")
    message = normalise(doc)
    if not message:
        return "", {}, message
    if len(message) > 1:
        raise CloseRequest(1007, INVALID_ARGUMENT)
    ((kind, body),) = message.items()
    if kind not in CLIENT_MESSAGE_KINDS:
        raise CloseRequest(1007, f'Invalid JSON payload received. Unknown name "{kind}": Cannot find field.')
    if not isinstance(body, dict):
        raise CloseRequest(1007, f'Invalid value at "{kind}": expected an object.')
    return kind, body, message


def b64decode(data: str, field: str = "data") -> bytes:
    """Decode standard or URL-safe base64, padded or not (proto3 JSON accepts all four)."""
    text = data.translate(_URLSAFE_TO_STANDARD)
    missing = -len(text) % 4
    if missing:
        text += "=" * missing
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise CloseRequest(1007, f"Invalid value at '{field}' (TYPE_BYTES), Base64 decoding failed") from exc


def b64encode(data: bytes | memoryview) -> str:
    """Standard base64 without newlines, as the real server sends audio."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


_rate_cache: dict[str, int | None] = {}


def pcm_rate(mime_type: str) -> int | None:
    """Sample rate of an ``audio/pcm;rate=N`` blob (16 kHz when unstated); ``None`` if not raw PCM."""
    try:
        return _rate_cache[mime_type]
    except KeyError:
        pass
    mime = mime_type.strip().lower()
    rate: int | None = None
    if mime.startswith(("audio/pcm", "audio/l16")):
        match = _RATE.search(mime)
        rate = int(match.group(1)) if match else 16000
        if not 4000 <= rate <= 192000:
            rate = None
    if len(_rate_cache) < 256:
        _rate_cache[mime_type] = rate
    return rate


def duration(seconds: float) -> str:
    """proto3 JSON ``Duration``: ``"50s"``, ``"5.500s"`` (0, 3, 6 or 9 fractional digits)."""
    nanos = round(seconds * 1_000_000_000)
    whole, frac = divmod(nanos, 1_000_000_000)
    if frac == 0:
        return f"{whole}s"
    if frac % 1_000_000 == 0:
        return f"{whole}.{frac // 1_000_000:03d}s"
    if frac % 1000 == 0:
        return f"{whole}.{frac // 1000:06d}s"
    return f"{whole}.{frac:09d}s"


def truncate_reason(reason: str, limit: int = MAX_REASON_BYTES) -> str:
    """Cut ``reason`` to at most ``limit`` UTF-8 bytes without splitting a character."""
    encoded = reason.encode("utf-8")
    if len(encoded) <= limit:
        return reason
    return encoded[:limit].decode("utf-8", errors="ignore")


def encode(message: dict[str, Any]) -> bytes:
    """Serialise a server message compactly as UTF-8 JSON."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def text_of(content: Any) -> str:
    """The concatenated text parts of a ``Content`` object (other parts are ignored)."""
    if not isinstance(content, dict):
        return ""
    parts = content.get("parts")
    if not isinstance(parts, list):
        return ""
    return " ".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))
