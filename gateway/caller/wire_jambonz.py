"""jambonz ``listen``'s side of the wire, written independently of :mod:`gateway.telephony`.

Sources: the jambonz docs' ``listen`` verb and bidirectional-audio pages; jambonz-feature-server 0.9.8
``lib/tasks/listen.js`` (the metadata: ``{sampleRate, mixType}`` then the call info then the verb's
``metadata``; ``wsAuth`` as basic auth; DTMF as ``{"event":"dtmf","dtmf","duration"}``);
jambonz/freeswitch-modules ``mod_audio_fork/lws_glue.cpp`` (subprotocol ``audio.jambonz.org`` through
``MOD_AUDIO_FORK_SUBPROTOCOL_NAME``; ``processIncomingMessage``: ``killAudio``, ``mark`` with
``data.name``, at most 30 marks, ``playAudio`` only when not streaming; ``send_mark_event``:
``{"type":"mark","data":{"name","event":"playout"|"cleared"}}``; ``processIncomingBinary``: streamed
L16 at ``bidirectionalAudio.sampleRate`` with the in-band marker sample 0xFFFF).
"""

from __future__ import annotations

import array
import base64
import json
import sys
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SUBPROTOCOL = "audio.jambonz.org"
#: ``lws_glue.cpp`` MAX_MARKS: more are discarded.
MAX_MARKS = 30
#: ``listen`` sampleRate values.
RATES = (8000, 16000, 24000, 48000, 64000)


def new_sid() -> str:
    """A jambonz call sid (a UUID)."""
    return str(uuidlib.uuid4())


def frame_bytes(rate: int) -> int:
    return rate // 50 * 2


@dataclass(frozen=True, slots=True)
class Listen:
    """The ``listen`` verb's fields that shape the socket."""

    url: str
    sample_rate: int = 8000
    mix_type: str = "mono"
    #: ``bidirectionalAudio`` merged over jambonz's default ``{"enabled": true}``.
    bidirectional: Mapping[str, Any] = field(default_factory=lambda: {"enabled": True})
    pass_dtmf: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)
    username: str = ""
    password: str = ""

    @property
    def streaming(self) -> bool:
        return bool(self.bidirectional.get("enabled", True)) and bool(self.bidirectional.get("streaming"))

    @property
    def playback_rate(self) -> int:
        return int(self.bidirectional.get("sampleRate") or self.sample_rate)


def parse_listen(verb: Mapping[str, Any]) -> Listen:
    """The ``listen`` verb of an application, as jambonz reads it.

    Raises:
        ValueError: not a listen verb jambonz would run with bidirectional streaming.
    """
    if verb.get("verb") != "listen":
        raise ValueError(f"not a listen verb: {verb.get('verb')!r}")
    url = verb.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("ws", "wss"):
        raise ValueError(f"listen url must be ws(s)://, got {url!r}")
    rate = verb.get("sampleRate", 8000)
    if rate not in RATES:
        raise ValueError(f"listen sampleRate {rate!r} is not one of {RATES}")
    bidi = {
        "enabled": verb.get("disableBidirectionalAudio") is not True,
        **verb.get("bidirectionalAudio", {}),
    }
    if bidi.get("streaming") and not bidi.get("sampleRate"):
        raise ValueError("bidirectionalAudio.streaming needs bidirectionalAudio.sampleRate")
    auth = verb.get("wsAuth") or {}
    return Listen(
        url=url,
        sample_rate=rate,
        mix_type=verb.get("mixType", "mono"),
        bidirectional=bidi,
        pass_dtmf=bool(verb.get("passDtmf")),
        metadata=dict(verb.get("metadata") or {}),
        username=str(auth.get("username", "")),
        password=str(auth.get("password", "")),
    )


def upgrade_headers(listen: Listen) -> dict[str, str]:
    """The handshake's extra headers: the subprotocol, and basic auth from ``wsAuth``."""
    headers = {"Sec-WebSocket-Protocol": SUBPROTOCOL}
    if listen.username or listen.password:
        pair = f"{listen.username}:{listen.password}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    return headers


def rehost(url: str, gateway: str) -> str:
    """``url`` with the scheme and host of ``gateway`` (a test's loopback server), path and query kept."""
    parts, gw = urlsplit(url), urlsplit(gateway)
    scheme = {"http": "ws", "https": "wss"}.get(gw.scheme, gw.scheme)
    return urlunsplit((scheme, gw.netloc, parts.path, parts.query, ""))


def metadata(listen: Listen, *, call_sid: str, from_: str, to: str) -> str:
    """The first text frame: ``{sampleRate, mixType}``, then the call info, then the verb's metadata."""
    info = {
        "callSid": call_sid,
        "direction": "inbound",
        "from": from_,
        "to": to,
        "callId": new_sid() + "@10.0.0.1",
        "sipStatus": 200,
        "sipReason": "OK",
        "callStatus": "in-progress",
        "callerName": from_,
        "accountSid": new_sid(),
        "applicationSid": new_sid(),
        "originatingSipIp": "10.0.0.1",
        "originatingSipTrunkName": "carrier",
        "localSipAddress": "10.0.0.2:5060",
        "traceId": "0" * 32,
    }
    return json.dumps(
        {"sampleRate": listen.sample_rate, "mixType": listen.mix_type, **info, **listen.metadata}
    )


def dtmf(digit: str) -> str:
    """``listen.js`` ``_onDtmf``: the duration is RTP timestamp units (8 kHz samples), as a string."""
    return json.dumps({"event": "dtmf", "dtmf": digit, "duration": "1600"})


def mark_event(name: str, *, cleared: bool) -> str:
    """``send_mark_event``."""
    return json.dumps({"type": "mark", "data": {"name": name, "event": "cleared" if cleared else "playout"}})


@dataclass(frozen=True, slots=True)
class KillAudio:
    """Stop playback, flush the streamed audio; pending marks come back cleared."""


@dataclass(frozen=True, slots=True)
class Mark:
    name: str


def parse_gateway_text(text: str, *, streaming: bool) -> KillAudio | Mark:
    """One text frame from the gateway as the module reads it.

    Raises:
        ValueError: what the module would log and drop (or a ``playAudio`` it ignores while streaming).
    """
    try:
        msg = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"processIncomingMessage - could not parse message: {text[:60]!r}") from exc
    kind = msg.get("type") if isinstance(msg, dict) else None
    if kind == "killAudio":
        return KillAudio()
    if kind == "mark":
        data = msg.get("data")
        name = data.get("name") if isinstance(data, dict) else None
        if not isinstance(name, str):
            raise ValueError("mark without a string data.name (jambonz ignores it)")
        return Mark(name)
    if kind == "playAudio" and streaming:
        raise ValueError("playAudio while bidirectionalAudio.streaming is on: jambonz ignores it")
    raise ValueError(f"unsupported msg type {kind!r} (the gateway streams audio, marks and killAudio)")


def check_audio(data: bytes) -> None:
    """Raise ValueError for audio jambonz would mishandle: a -1 sample reads as its in-band mark."""
    samples = array.array("h", data[: len(data) & ~1])
    if sys.byteorder == "big":  # pragma: no cover - L16 on the wire is little-endian
        samples.byteswap()
    if -1 in samples:
        i = samples.index(-1)
        raise ValueError(f"sample {i} is -1: jambonz takes 0xFFFF for a mark while marks are pending")
