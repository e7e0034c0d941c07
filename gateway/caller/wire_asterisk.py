"""Asterisk chan_websocket's side of the wire, written independently of :mod:`gateway.telephony`.

Built from Asterisk's own source, ``channels/chan_websocket.c`` (asterisk/asterisk, Aug 2026): the
events it writes (``_create_event_MEDIA_START`` and friends, in the plain-text and the JSON control
formats), the commands ``handle_command`` accepts (text frames of at most 128 bytes: longer ones are
ignored with a warning; plain text ``NAME [data]`` or JSON ``{"command": NAME, …}``, per the format the
channel was dialled with) and how ``process_binary_message`` takes media (cut into ``optimal_frame_size``
frames; a shorter remainder is dropped outside bulk mode; a message over 65500 bytes is refused).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Literal

#: What ``ast_format_get_name`` calls the codecs a dial string's ``c()`` may name here, with their rate
#: and bytes per sample; ``optimal_frame_size`` is 20 ms of each (default_ms × minimum_bytes / minimum_ms).
FORMATS: dict[str, tuple[int, int]] = {
    "ulaw": (8000, 1),
    "alaw": (8000, 1),
    "slin16": (16000, 2),
    "slin": (8000, 2),
}
ControlFormat = Literal["plain-text", "json"]
#: Commands handle_command knows (the gateway uses a few of them).
COMMANDS = frozenset(
    {
        "ANSWER", "HANGUP", "START_MEDIA_BUFFERING", "STOP_MEDIA_BUFFERING", "MARK_MEDIA", "FLUSH_MEDIA",
        "GET_STATUS", "REPORT_QUEUE_DRAINED", "PAUSE_MEDIA", "CONTINUE_MEDIA", "SET_MEDIA_DIRECTION",
    }
)  # fmt: skip
MAX_TEXT_MESSAGE_LEN = 128
MAX_BINARY = 65500


def optimal_frame_size(fmt: str) -> int:
    rate, width = FORMATS[fmt]
    return rate // 50 * width


def new_uniqueid() -> str:
    """A channel uniqueid as Asterisk writes them: epoch seconds, a dot, a sequence number."""
    return f"{int(time.time())}.{random.randrange(1, 100000)}"


def media_start(
    fmt: ControlFormat,
    *,
    connection_id: str,
    channel: str,
    channel_id: str,
    codec: str,
    optimal: int,
    ptime: int = 20,
    variables: dict[str, str] | None = None,
) -> str:
    if fmt == "json":
        return json.dumps(
            {
                "event": "MEDIA_START",
                "connection_id": connection_id,
                "channel": channel,
                "channel_id": channel_id,
                "format": codec,
                "optimal_frame_size": optimal,
                "ptime": ptime,
                "channel_variables": variables or {},
            },
            separators=(",", ":"),
        )
    return (
        f"MEDIA_START connection_id:{connection_id} channel:{channel} channel_id:{channel_id} "
        f"format:{codec} optimal_frame_size:{optimal} ptime:{ptime}"
    )


def event(fmt: ControlFormat, name: str, channel_id: str) -> str:
    """An event without data (MEDIA_XOFF, MEDIA_XON, QUEUE_DRAINED)."""
    return json.dumps({"event": name, "channel_id": channel_id}) if fmt == "json" else name


def dtmf_end(fmt: ControlFormat, digit: str, channel_id: str) -> str:
    if fmt == "json":
        return json.dumps({"event": "DTMF_END", "channel_id": channel_id, "digit": digit})
    return f"DTMF_END digit:{digit} channel_id:{channel_id}"


def mark_processed(fmt: ControlFormat, correlation_id: str, channel_id: str) -> str:
    if fmt == "json":
        return json.dumps(
            {"event": "MEDIA_MARK_PROCESSED", "channel_id": channel_id, "correlation_id": correlation_id}
        )
    return "MEDIA_MARK_PROCESSED" + (f" {correlation_id}" if correlation_id else "")


def error(fmt: ControlFormat, text: str, channel_id: str) -> str:
    if fmt == "json":
        return json.dumps({"event": "ERROR", "channel_id": channel_id, "error_text": text})
    return f"ERROR channel_id:{channel_id} error_text:{text}"


@dataclass(frozen=True, slots=True)
class Command:
    """One command from the app, as handle_command reads it."""

    name: str
    correlation_id: str = ""


def parse_command(fmt: ControlFormat, text: str) -> Command:
    """Read one text frame as Asterisk does. Raises ValueError naming what Asterisk would do with it."""
    if len(text.encode()) > MAX_TEXT_MESSAGE_LEN:
        raise ValueError(f"a {len(text.encode())}-byte command: Asterisk ignores text over 128 bytes")
    text = text.strip()
    if fmt == "json":
        try:
            msg = json.loads(text)
        except ValueError:
            raise ValueError(f"Asterisk cannot parse {text[:40]!r} as a JSON command (format json)") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("command"), str):
            raise ValueError("a JSON command without a string 'command'")
        name, data = msg["command"], msg.get("correlation_id", "")
        if not isinstance(data, str):
            raise ValueError("correlation_id must be a string")
    else:
        name, _, data = text.partition(" ")
    if name not in COMMANDS:
        raise ValueError(f"unknown command {name[:30]!r} (Asterisk logs 'command unknown' and ignores it)")
    return Command(name, data)


def check_media(data: bytes, optimal: int) -> None:
    """Raise ValueError for media Asterisk would drop in part or refuse."""
    if len(data) > MAX_BINARY:
        raise ValueError(f"binary message of {len(data)} bytes: Asterisk closes the socket over {MAX_BINARY}")
    if len(data) % optimal:
        raise ValueError(
            f"binary message of {len(data)} bytes: Asterisk drops the last {len(data) % optimal} "
            f"(not a whole {optimal}-byte frame)"
        )
