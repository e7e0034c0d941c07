"""FreeSWITCH mod_audio_stream's side of the wire, written independently of :mod:`gateway.telephony`.

What the module does (amigniter/mod_audio_stream ec2a781: ``mod_audio_stream.c`` ``stream_function``,
``audio_streamer_glue.cpp``): the API command ``uuid_audio_stream <uuid> start <url> <mix> <rate>
[metadata]`` is split on spaces into at most six arguments (the metadata is the rest of the line);
the URL must be ``ws://`` or ``wss://`` with a plain host; the rate is ``8k``, ``16k`` or a number
divisible by 8000. On connect the metadata goes out as the first text frame, then binary L16 frames of
20 ms. A text frame from the server that is JSON with ``"type":"streamAudio"`` is checked
(``processMessage``: ``data.audioData`` a base64 string, ``audioDataType`` raw/wav/mp3/ogg/pcmu/pcma,
raw ``sampleRate`` 8000/16000/24000/32000/48000/64000) and written to a file for the FreeSWITCH
application to play; any other text becomes a ``mod_audio_stream::json`` event.

The FreeSWITCH side of the gateway's conventions (examples/freeswitch/gemini_events.lua) is also
here: a ``{"type":"killAudio"}`` event breaks playback, and DTMF is forwarded with ``send_text``.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid as uuidlib
from dataclasses import dataclass

from gateway.errors import TelephonyProtocolError

#: ``processMessage``'s raw sample rates (each has a ``.rN`` file type).
RAW_RATES = (8000, 16000, 24000, 32000, 48000, 64000)
#: ``processMessage``'s audio types.
AUDIO_TYPES = ("raw", "wav", "mp3", "ogg", "pcmu", "pcma")


def new_uuid() -> str:
    """A FreeSWITCH channel uuid."""
    return str(uuidlib.uuid4())


def frame_bytes(rate: int) -> int:
    """20 ms of 16-bit mono at ``rate`` (the module's default packet)."""
    return rate // 50 * 2


@dataclass(frozen=True, slots=True)
class StartCommand:
    """``uuid_audio_stream <uuid> start <url> <mix> <rate> [metadata]``, as the module reads it."""

    uuid: str
    url: str
    mix: str
    rate: int
    metadata: str | None


def parse_start(command: str) -> StartCommand:
    """Read an expanded ``uuid_audio_stream`` command the way ``stream_function`` does.

    Raises:
        TelephonyProtocolError: a command the module would answer with ``-USAGE`` or ``-ERR``.
    """
    text = command.strip()
    if text.startswith("uuid_audio_stream "):
        text = text[len("uuid_audio_stream ") :]
    argv = text.split(" ", 5)  # switch_separate_string with argv[6]: the last takes the rest
    if len(argv) < 4 or argv[1] != "start":
        raise TelephonyProtocolError(f"-USAGE: not a start command: {command[:80]!r}")
    uuid, _, url, mix = argv[:4]
    if mix not in ("mono", "mixed", "stereo"):
        raise TelephonyProtocolError(f"invalid mix type: {mix}")
    rate = 8000
    if len(argv) > 4:
        rate = {"16k": 16000, "8k": 8000}.get(argv[4]) or (int(argv[4]) if argv[4].isdigit() else 0)
    if not rate or rate % 8000:
        raise TelephonyProtocolError(f"invalid sample rate: {argv[4] if len(argv) > 4 else ''}")
    if not _valid_ws_uri(url):
        raise TelephonyProtocolError(f"invalid websocket uri: {url}")
    return StartCommand(uuid=uuid, url=url, mix=mix, rate=rate, metadata=argv[5] if len(argv) > 5 else None)


def _valid_ws_uri(url: str) -> bool:
    """``validate_ws_uri``: ws:// or wss://, a host of letters, digits, '-' and '.', an optional numeric
    port, then anything after a '/' (so no ``user:password@``, and a query needs a path before it)."""
    for scheme in ("ws://", "wss://"):
        if url.startswith(scheme):
            rest = url[len(scheme) :]
            break
    else:
        return False
    i = 0
    while i < len(rest) and rest[i] not in ":/":
        if not (rest[i].isascii() and (rest[i].isalnum() or rest[i] in "-.")):
            return False
        i += 1
    if i == 0:
        return False
    if i < len(rest) and rest[i] == ":":
        j = i + 1
        while j < len(rest) and rest[j] != "/":
            if not rest[j].isdigit():
                return False
            j += 1
    return True


def start_command(*, uuid: str, url: str, rate: int, metadata: str | None, mix: str = "mono") -> str:
    """The API command, as a dialplan or ESL application writes it."""
    words = ["uuid_audio_stream", uuid, "start", url, mix, {8000: "8k", 16000: "16k"}.get(rate, str(rate))]
    if metadata:
        words.append(metadata)
    return " ".join(words)


def dtmf(digit: str) -> str:
    """What the event script forwards for a ``DTMF`` event (``send_text``: one word, no spaces)."""
    return json.dumps({"type": "dtmf", "digit": digit}, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class StreamAudio:
    """A ``streamAudio`` message: the file the module would write, and what it says it holds."""

    audio_type: str
    rate: int
    audio: bytes


@dataclass(frozen=True, slots=True)
class KillAudio:
    """The gateway's barge-in: a ``mod_audio_stream::json`` event the event script breaks playback on."""


def parse_gateway_text(text: str) -> StreamAudio | KillAudio:
    """One text frame from the gateway as the module (and the event script) would take it.

    Raises:
        ValueError: what the module would log as an error, or a message nothing on the FreeSWITCH side
            acts on.
    """
    try:
        msg = json.loads(text)
    except ValueError as exc:
        raise ValueError(
            f"not JSON (the module would fire it as a json event, unplayed): {text[:60]!r}"
        ) from exc
    if not isinstance(msg, dict):
        raise ValueError("not a JSON object")
    kind = msg.get("type")
    if kind == "killAudio":
        return KillAudio()
    if kind != "streamAudio":
        raise ValueError(f"type {kind!r}: neither streamAudio nor killAudio, nothing would act on it")
    data = msg.get("data")
    if not isinstance(data, dict):
        raise ValueError("processMessage - no data in streamAudio")
    audio_type = data.get("audioDataType") or ""
    b64 = data.get("audioData")
    if not isinstance(b64, str):
        raise ValueError("processMessage - 'audioData' is not a string (expected base64 string)")
    rate = data.get("sampleRate")
    if audio_type == "raw":
        if not isinstance(rate, int) or rate not in RAW_RATES:
            raise ValueError(f"processMessage - unsupported sample rate: {rate!r}")
    elif audio_type not in AUDIO_TYPES:
        raise ValueError(f"processMessage - unsupported audio type: {audio_type!r}")
    try:
        audio = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"processMessage - base64 decode error: {exc}") from exc
    return StreamAudio(audio_type=audio_type, rate=rate if isinstance(rate, int) else 0, audio=audio)
