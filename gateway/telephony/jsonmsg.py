"""What every JSON-text media codec repeats, sans-I/O: close codes, the two error kinds, parsing one
message, typed field getters and the stream state.

One place so the providers (Twilio, SignalWire, Plivo, Telnyx, Exotel) reject bad input with the same
close codes and wording. The getters are plain functions, not methods, so a codec's media path calls
them exactly as often as it did its own private copies.
"""

from __future__ import annotations

import binascii
import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from gateway.errors import TelephonyProtocolError
from gateway.jsonfast import loads
from gateway.telephony.events import DTMF_DIGITS, CallerAudio, DtmfPressed, MarkReached

__all__ = [
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_INVALID_DATA",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_UNSUPPORTED_DATA",
    "StreamState",
    "counter",
    "dtmf_pressed",
    "invalid",
    "mark_reached",
    "object_field",
    "optional_string",
    "parse",
    "string_field",
    "string_map",
    "violation",
]

#: WebSocket close codes (RFC 6455 §7.4.1) a codec's errors carry: the server closes the socket with them.
CLOSE_UNSUPPORTED_DATA: Final = 1003
CLOSE_INVALID_DATA: Final = 1007
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_INTERNAL_ERROR: Final = 1011


class StreamState(enum.Enum):
    """Where a media socket is in its provider's message sequence (Plivo has no ``connected`` step)."""

    AWAITING_CONNECTED = "awaiting_connected"
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


def invalid(message: str) -> TelephonyProtocolError:
    """Undecodable or mistyped data (1007)."""
    return TelephonyProtocolError(message, close_code=CLOSE_INVALID_DATA)


def violation(message: str) -> TelephonyProtocolError:
    """A protocol violation: wrong order, unknown event, another stream's message (1008)."""
    return TelephonyProtocolError(message, close_code=CLOSE_POLICY_VIOLATION)


def parse(text: str, provider: str) -> dict[str, Any]:
    """One text frame as a JSON object; ``provider`` names the sender in the error."""
    try:
        msg = loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise invalid(f"{provider} message is not valid JSON: {exc}") from exc
    if type(msg) is not dict:
        raise invalid(f"{provider} message must be a JSON object, got {type(msg).__name__}")
    return msg


def _name(key: str, where: str) -> str:
    return f"{where}.{key}" if where else key


def object_field(obj: Mapping[str, Any], key: str, where: str = "") -> dict[str, Any]:
    """``obj[key]``, which must be an object; ``where`` prefixes the key in the error."""
    value = obj.get(key)
    if type(value) is not dict:
        raise invalid(f"{_name(key, where)} must be an object, got {type(value).__name__}")
    return value


def string_field(obj: Mapping[str, Any], key: str, where: str) -> str:
    """``obj[key]``, which must be a string."""
    value = obj.get(key)
    if type(value) is not str:
        raise invalid(f"{where}.{key} must be a string, got {type(value).__name__}")
    return value


def optional_string(obj: Mapping[str, Any], key: str, where: str) -> str:
    """``obj[key]`` if present (then a string), else ""."""
    value = obj.get(key, "")
    if type(value) is not str:
        raise invalid(f"{where}.{key} must be a string, got {type(value).__name__}")
    return value


_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})


def string_map(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, str]:
    """``obj[key]`` if present (then an object of strings, copied read-only), else an empty mapping."""
    value = obj.get(key)
    if value is None:
        return _EMPTY
    if type(value) is not dict or not all(type(v) is str for v in value.values()):
        raise invalid(f"{where}.{key} must be an object of strings")
    return MappingProxyType(dict(value))


def counter(value: object, name: str) -> int | None:
    """A non-negative integer sent as a decimal string (``"chunk": "3"``) or a number, or absent (None).

    Providers' docs and samples disagree on which, so both are accepted everywhere.
    """
    if value is None:
        return None
    if type(value) is str and value.isascii() and value.isdigit():
        return int(value)
    if type(value) is int and value >= 0:
        return value
    raise invalid(f"{name} must be a non-negative integer or decimal string, got {value!r}")


def media_payload(media: object) -> tuple[Mapping[str, Any], bytes]:
    """The ``media`` object of a JSON media message and its audio: the base64 ``payload``, decoded
    strictly. Twilio's shape, which SignalWire, Plivo, Telnyx and Exotel share; each checks its own
    stream id and track around this.

    Raises:
        TelephonyProtocolError: no ``media`` object, or a payload that is not a base64 string (1007).
    """
    if type(media) is not dict:
        raise invalid("media.media must be an object")
    payload = media.get("payload")
    if type(payload) is not str:
        raise invalid("media.payload must be a base64 string")
    try:
        return media, binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid(f"media.payload is not valid base64: {exc}") from exc


def caller_audio(media: Mapping[str, Any], audio: bytes) -> CallerAudio:
    """The caller-audio event of a media message, with its ``timestamp`` and ``chunk`` counters."""
    return CallerAudio(
        audio, counter(media.get("timestamp"), "media.timestamp"), counter(media.get("chunk"), "media.chunk")
    )


def dtmf_pressed(msg: Mapping[str, Any]) -> DtmfPressed:
    """The key of a ``dtmf`` message in Twilio's shape (``"dtmf": {"digit": "5"}``), which Telnyx shares.

    Raises:
        TelephonyProtocolError: no ``dtmf.digit`` string, or one that is not a key (1007).
    """
    digit = string_field(object_field(msg, "dtmf", "dtmf"), "digit", "dtmf.dtmf")
    if digit not in DTMF_DIGITS:
        raise invalid(f"dtmf.digit {digit[:8]!r} is not a DTMF key")
    return DtmfPressed(digit)


def mark_reached(msg: Mapping[str, Any]) -> MarkReached:
    """The echo of one of our marks in Twilio's shape (``"mark": {"name": …}``), which Telnyx shares."""
    return MarkReached(string_field(object_field(msg, "mark", "mark"), "name", "mark.mark"))


def pcm_frame(data: bytes, max_bytes: int) -> CallerAudio:
    """One binary frame of 16-bit caller audio (Vonage, FreeSWITCH, jambonz, the softphone): whole
    samples, not empty, at most ``max_bytes`` (a second of audio).

    Raises:
        TelephonyProtocolError: an empty, odd-sized or over-long frame (1007).
    """
    n = len(data)
    if not n or n & 1 or n > max_bytes:
        raise invalid(f"a binary audio frame of {n} bytes is not 16-bit audio of at most one second")
    return CallerAudio(data)
