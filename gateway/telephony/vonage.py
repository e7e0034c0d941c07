"""Vonage Voice API WebSocket: frames ⇄ telephony events, the answer NCCO, signed-webhook checks and the
Voice REST requests (hang-up, transfer). No I/O.

State table::

    AWAITING_CONNECTED --websocket:connected (text)--> STREAMING
    STREAMING: binary 20 ms L16 | websocket:dtmf | websocket:notify (a mark of ours played)
               | websocket:cleared (our clear done)

What this follows (docs/telephony-providers.md §4; Vonage's "WebSockets in the Vonage Voice API" guide,
developer.vonage.com/en/voice/voice-api/concepts/websockets, and its NCCO reference for ``connect``;
the "Play audio into a WebSocket" tutorial for the buffering note; the Vonage AsyncAPI listing of the
same page for ``clear``/``notify``/``websocket:cleared``/``websocket:notify``):

* the socket's first message is TEXT ``{"event":"websocket:connected","content-type":"audio/l16;rate=16000",
  …}`` with the endpoint's ``headers`` flattened into it; the NCCO puts the call's ``uuid``, ``from``,
  ``to`` and the gateway's stream token there;
* caller audio is BINARY, linear PCM 16-bit little-endian mono at the endpoint's rate, 20 ms a message;
* our audio is BINARY in the same format and **exactly one 20 ms frame per message** (Vonage rejects
  other sizes); the gateway paces it in real time (``provider_buffers=False``: Vonage's buffer holds
  only 1024-3072 messages, and pacing keeps barge-in short);
* ``{"action":"clear"}`` drops Vonage's queued audio (acknowledged by ``websocket:cleared``), and
  ``{"action":"notify","payload":{…}}`` comes back as ``websocket:notify`` with the payload once the
  audio sent before it has played: our marks;
* DTMF: ``{"event":"websocket:dtmf","digit":"5","duration":260}`` (a nested ``dtmf.digit`` is taken too).

As for Plivo, a clear is not documented to answer the notifies it dropped, so ``websocket:cleared``
stands for the newest notify outstanding at the clear (the neutral contract: pending marks come back
on a clear), and a late echo of a dropped one is ignored.

Signed webhooks (Vonage "Signed webhooks"; its support article on verifying Voice API webhooks): a JWT
in ``Authorization: Bearer``, HS256 under the account's signature secret, whose ``payload_hash`` claim
is the SHA-256 (hex) of the body. Voice REST (Vonage Voice API reference, "Modify an in progress
call"): ``PUT /v1/calls/{uuid}`` with ``{"action":"hangup"}`` or a ``transfer`` to an NCCO, authorised
by an application JWT (RS256 with the application's private key; claims ``application_id``, ``iat``,
``jti``, ``exp``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
import time
import warnings
from collections import deque
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final, assert_never
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.warnings import InsecureKeyLengthWarning

from gateway.errors import AuthError, ConfigError, TelephonyProtocolError, ToolError
from gateway.telephony.events import (
    DTMF_DIGITS,
    CallerAudio,
    CallStarted,
    ClearPlayback,
    DtmfPressed,
    MarkReached,
    PlayAudio,
    SetMark,
    TelephonyCommand,
    TelephonyEvent,
)
from gateway.telephony.jsonmsg import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_UNSUPPORTED_DATA,
    StreamState,
    invalid,
    parse,
    pcm_frame,
    violation,
)
from gateway.telephony.provider import AudioFormat, Capabilities
from gateway.telephony.rest import RestRequest

__all__ = [
    "MAX_RINGING_S",
    "RATES",
    "TOKEN_HEADER",
    "VONAGE_API_BASE",
    "VonageCodec",
    "answer_ncco",
    "application_jwt",
    "content_type",
    "create_call_request",
    "hangup_request",
    "talk_ncco",
    "transfer_request",
    "verify_vonage_signature",
]

#: The rates a Voice API WebSocket streams L16 at (Node SDK's WebsocketBitrate: 8000, 16000; 24000 in
#: the current guide).
RATES: Final = (8000, 16000, 24000)
#: The NCCO ``headers`` key carrying the stream token (echoed in ``websocket:connected``).
TOKEN_HEADER: Final = "token"
#: Vonage's API; the gateway's VONAGE_API_BASE replaces it so tests use a local stand-in.
VONAGE_API_BASE: Final = "https://api.nexmo.com"
#: Call UUIDs are spliced into REST paths and compared; they must be this plain.
_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CONTENT_TYPE_RE: Final = re.compile(r"audio/l16;\s*rate=([0-9]{4,5})", re.IGNORECASE)
#: Notifies remembered for a ``websocket:cleared`` (a mark every 200 ms: 10 s of unplayed audio).
_MAX_OUTSTANDING: Final = 64
#: NCCO ``headers`` must fit in 512 bytes (Vonage's NCCO reference, websocket endpoint).
_MAX_HEADERS_BYTES: Final = 512
_CLEAR: Final = '{"action":"clear"}'
_NOTIFY_PREFIX: Final = '{"action":"notify","payload":{"mark":'


def content_type(rate: int) -> str:
    """The endpoint ``content-type`` for L16 at ``rate``."""
    return f"audio/l16;rate={rate}"


def _rate(text: object) -> int:
    if type(text) is not str:
        raise invalid("websocket:connected has no string 'content-type'")
    match = _CONTENT_TYPE_RE.fullmatch(text.strip())
    if match is None or int(match.group(1)) not in RATES:
        raise TelephonyProtocolError(
            f"unsupported content-type {text[:40]!r}; Vonage streams audio/l16 at 8000, 16000 or 24000 Hz",
            close_code=CLOSE_UNSUPPORTED_DATA,
        )
    return int(match.group(1))


class VonageCodec:
    """One Vonage Voice API WebSocket, sans-I/O: binary L16 audio, JSON text control."""

    __slots__ = ("_audio", "_cleared", "_max_in", "_outstanding", "call_uuid", "headers", "state")

    #: Exactly one 20 ms frame per message, paced by the gateway; notify marks, clear; hang-up and
    #: transfer through the Voice REST API (closing the socket would run the NCCO's next action).
    capabilities: ClassVar[Capabilities] = Capabilities(
        marks=True, clear=True, frames_per_message=1, provider_buffers=False, hangup="rest",
        transfer="rest", dtmf_out="inband", binary_audio=True, continuous_media=True,
    )  # fmt: skip

    def __init__(self, rate: int = 16000) -> None:
        """``rate``: what the NCCO asked for; ``websocket:connected``'s content-type replaces it."""
        if rate not in RATES:
            raise ConfigError(f"Vonage streams L16 at {', '.join(map(str, RATES))} Hz, not {rate}")
        self.state = StreamState.AWAITING_CONNECTED
        self.call_uuid: str | None = None
        self.headers: Mapping[str, str] = MappingProxyType({})
        self._audio = AudioFormat("l16", rate)
        self._max_in = self._audio.frame_bytes * 50  # one second: far above Vonage's 20 ms
        self._outstanding: deque[str] = deque(maxlen=_MAX_OUTSTANDING)
        self._cleared: set[str] = set()

    @property
    def audio(self) -> AudioFormat:
        """L16 at the rate ``websocket:connected`` announced (before it, the one asked for)."""
        return self._audio

    # --- inbound -------------------------------------------------------------------------------

    def receive_binary(self, data: bytes) -> CallerAudio:
        """One binary frame of caller audio (the hot path).

        Raises:
            TelephonyProtocolError: audio before ``websocket:connected`` (1008), an odd byte count,
                an empty or over-long frame (1007).
        """
        if self.state is not StreamState.STREAMING:
            raise violation(f"binary audio received in state {self.state.value}")
        return pcm_frame(data, self._max_in)

    def receive_media(self, text: str) -> CallerAudio | None:
        """Vonage carries no audio in text frames: every text goes to :meth:`receive_text`."""
        return None

    def receive_text(self, text: str) -> TelephonyEvent | None:
        """One text frame → one event (None: a frame that needs no action).

        Raises:
            TelephonyProtocolError: malformed JSON or fields (1007), an unknown event or one out of
                order (1008), a content-type the gateway cannot take (1003).
        """
        msg = parse(text, "Vonage")
        event = msg.get("event")
        if type(event) is not str:
            raise invalid("Vonage message has no string 'event' field")
        if event == "websocket:connected":
            if self.state is not StreamState.AWAITING_CONNECTED:
                raise violation(f"'websocket:connected' received in state {self.state.value}")
            return self._connected(msg)
        if event not in ("websocket:dtmf", "websocket:notify", "websocket:cleared"):
            raise violation(f"unknown Vonage event {event[:40]!r}")
        if self.state is not StreamState.STREAMING:
            raise violation(f"{event!r} received in state {self.state.value}")
        if event == "websocket:dtmf":
            return DtmfPressed(self._digit(msg))
        if event == "websocket:notify":
            payload = msg.get("payload")
            if type(payload) is not dict:
                raise invalid("websocket:notify.payload must be an object")
            name = payload.get("mark")
            if type(name) is not str:
                return None  # a notify that is not one of our marks
            if name in self._cleared:  # already reported by the clear that dropped it
                self._cleared.discard(name)
                return None
            if name in self._outstanding:
                self._outstanding.remove(name)
            return MarkReached(name)
        # websocket:cleared: stands for the newest notify the clear dropped (none: nothing to do).
        if not self._outstanding:
            return None
        newest = self._outstanding[-1]
        self._cleared = set(self._outstanding)
        self._cleared.discard(newest)
        self._outstanding.clear()
        return MarkReached(newest)

    def _digit(self, msg: dict[str, Any]) -> str:
        digit = msg.get("digit")
        if digit is None and type(msg.get("dtmf")) is dict:
            digit = msg["dtmf"].get("digit")
        if type(digit) is not str or digit.upper() not in DTMF_DIGITS:
            raise invalid(f"websocket:dtmf digit {str(digit)[:10]!r} is not a DTMF key")
        return digit.upper()

    def _connected(self, msg: dict[str, Any]) -> CallStarted:
        rate = _rate(msg.get("content-type"))
        headers: dict[str, str] = {}
        for key, value in msg.items():
            if key in ("event", "content-type"):
                continue
            if type(value) is str:
                headers[key] = value
        uuid = headers.get("uuid", "")
        if not _ID_RE.fullmatch(uuid):
            raise invalid("websocket:connected must carry the call's 'uuid' header (the answer NCCO sets it)")
        self._audio = AudioFormat("l16", rate)
        self._max_in = self._audio.frame_bytes * 50
        self.call_uuid = uuid
        self.headers = MappingProxyType(headers)
        self.state = StreamState.STREAMING
        return CallStarted(
            stream_sid=uuid,
            call_sid=uuid,
            account_sid="",
            tracks=("inbound",),
            custom_parameters=self.headers,
            encoding="audio/l16",
            sample_rate=rate,
            from_=headers.get("from", ""),
            to=headers.get("to", ""),
        )

    # --- outbound ------------------------------------------------------------------------------

    def encode(self, command: TelephonyCommand) -> bytes | str:
        """One command as Vonage's frame: audio as one binary 20 ms frame, ``notify`` and ``clear`` as text.

        Raises:
            TelephonyProtocolError: used before ``websocket:connected``, or audio that is not exactly
                one 20 ms frame (our bug; close code 1011: Vonage would reject it).
        """
        if self.state is StreamState.AWAITING_CONNECTED:
            raise TelephonyProtocolError(
                f"cannot send {type(command).__name__} before 'websocket:connected'",
                close_code=CLOSE_INTERNAL_ERROR,
            )
        if type(command) is PlayAudio:
            payload = command.payload
            if len(payload) != self._audio.frame_bytes:
                raise TelephonyProtocolError(
                    f"Vonage takes exactly one 20 ms frame ({self._audio.frame_bytes} bytes) per message, "
                    f"not {len(payload)} bytes",
                    close_code=CLOSE_INTERNAL_ERROR,
                )
            return payload
        match command:
            case SetMark(name=name):
                self._outstanding.append(name)
                return _NOTIFY_PREFIX + json.dumps(name) + "}}"
            case ClearPlayback():
                return _CLEAR
            case PlayAudio():  # pragma: no cover - handled above without the match overhead
                raise AssertionError("unreachable")
            case _:
                assert_never(command)


# --- the answer NCCO --------------------------------------------------------------------------------


def answer_ncco(
    stream_url: str,
    token: str,
    *,
    call_uuid: str,
    from_: str,
    to: str,
    rate: int = 16000,
    event_url: str | None = None,
) -> list[dict[str, Any]]:
    """The NCCO that connects the call to our WebSocket: ``connect`` to a ``websocket`` endpoint.

    The endpoint's ``headers`` (flattened into ``websocket:connected``) carry the call's identity and
    the stream token; its ``authorization`` of type ``custom`` makes Vonage send the token verbatim in
    the upgrade's ``Authorization`` header (Vonage Node SDK, ``WebsocketAuthorization``), so a socket
    without it is refused before any WebSocket exists.

    Raises:
        ConfigError: not a ws(s):// URL, an empty token, a rate Vonage does not stream, or headers over
            Vonage's 512 bytes.
    """
    parts = urlsplit(stream_url)
    if parts.scheme not in ("wss", "ws") or not parts.netloc or parts.fragment:
        raise ConfigError(
            f"stream URL must be wss://host/path (ws:// only for local tests), got {stream_url!r}"
        )
    if not token:
        raise ConfigError("the stream token must not be empty")
    if rate not in RATES:
        raise ConfigError(f"Vonage streams L16 at {', '.join(map(str, RATES))} Hz, not {rate}")
    headers = {"uuid": call_uuid, "from": from_, "to": to, TOKEN_HEADER: token}
    if len(json.dumps(headers, separators=(",", ":")).encode()) > _MAX_HEADERS_BYTES:
        raise ConfigError("the websocket endpoint's headers exceed Vonage's 512 bytes")
    endpoint: dict[str, Any] = {
        "type": "websocket",
        "uri": stream_url,
        "content-type": content_type(rate),
        "headers": headers,
        "authorization": {"type": "custom", "value": token},
    }
    connect: dict[str, Any] = {"action": "connect", "endpoint": [endpoint]}
    if event_url:
        connect["eventUrl"] = [event_url]
        connect["eventMethod"] = "POST"
    return [connect]


def talk_ncco(text: str) -> list[dict[str, Any]]:
    """Say ``text``, then the call ends (nothing follows): refusing a call politely."""
    return [{"action": "talk", "text": text}]


# --- signed webhooks ----------------------------------------------------------------------------------

#: A signed webhook's JWT older than this is refused even without ``exp`` (replays of a captured one).
SIGNATURE_MAX_AGE_S: Final = 300.0


def _payload_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def verify_vonage_signature(
    secret: str, authorization: str, body: bytes, *, now: float, query: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The claims of a signed Vonage webhook, once its JWT checks out: HS256 under ``secret``, not
    expired (``exp``, or ``iat`` within :data:`SIGNATURE_MAX_AGE_S`), and its ``payload_hash`` the
    SHA-256 of ``body`` (a GET's query, as Vonage hashes it: the parameters as compact JSON in order).

    Raises:
        ConfigError: the secret is empty. AuthError: a missing, forged, expired or mismatched signature.
    """
    if not secret:
        raise ConfigError("VONAGE_SIGNATURE_SECRET is empty")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("no Bearer JWT in Authorization")
    try:
        with warnings.catch_warnings():
            # The secret is Vonage's (the dashboard's), whatever its length: no warning per webhook.
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            claims: dict[str, Any] = jwt.decode(
                token.strip(), secret, algorithms=["HS256"], options={"require": ["iat"]}, leeway=30
            )
    except jwt.PyJWTError as exc:
        raise AuthError(f"bad webhook signature: {exc}") from None
    iat = claims.get("iat")
    if "exp" not in claims and (not isinstance(iat, int | float) or now - iat > SIGNATURE_MAX_AGE_S):
        raise AuthError("webhook signature too old")
    expected = claims.get("payload_hash")
    if body:
        if not isinstance(expected, str) or not secrets.compare_digest(expected.lower(), _payload_hash(body)):
            raise AuthError("payload_hash does not match the body")
    elif query and expected is not None:
        compact = json.dumps(dict(query), separators=(",", ":")).encode()
        if not isinstance(expected, str) or expected.lower() != _payload_hash(compact):
            raise AuthError("payload_hash does not match the query")
    return claims


# --- Voice REST: hang-up and transfer ------------------------------------------------------------

#: How long an application JWT lives: one request.
_APP_JWT_TTL_S: Final = 300


def application_jwt(application_id: str, private_key: str, *, now: float | None = None) -> str:
    """An application JWT (RS256 with the application's private key), as the Voice API takes it.

    Raises:
        ConfigError: no application id, or a private key that is not an RSA PEM.
    """
    if not application_id or not private_key:
        raise ConfigError("Vonage REST needs VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY")
    issued = int(time.time() if now is None else now)
    claims = {
        "application_id": application_id,
        "iat": issued,
        "exp": issued + _APP_JWT_TTL_S,
        "jti": secrets.token_hex(16),
    }
    try:
        return jwt.encode(claims, _signing_key(private_key), algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ConfigError(
            f"VONAGE_PRIVATE_KEY is not an RSA private key in PEM: {type(exc).__name__}"
        ) from None


@functools.lru_cache(maxsize=4)
def _signing_key(pem: str) -> RSAPrivateKey:
    """The PEM loaded once: loading checks the RSA key (~35 ms, on the event loop), signing takes ~1 ms.

    Raises:
        ValueError: not an RSA private key in PEM.
    """
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("not an RSA key")
    return key


def _call_url(base_url: str, call_uuid: str) -> str:
    base = urlsplit(base_url)
    if base.scheme not in ("https", "http") or not base.netloc:
        raise ConfigError(f"Vonage API base URL must be https://host, got {base_url!r}")
    if not _ID_RE.fullmatch(call_uuid):
        raise ToolError("this call has no valid provider id, so it cannot be updated")
    return f"{base_url.rstrip('/')}/v1/calls/{call_uuid}"


def _put(
    base_url: str, call_uuid: str, app_jwt: str, body: dict[str, Any], ok: frozenset[int]
) -> RestRequest:
    headers = {
        "Authorization": f"Bearer {app_jwt}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    return RestRequest("PUT", _call_url(base_url, call_uuid), headers, json.dumps(body).encode(), ok)


#: ``ringing_timer``'s documented range (vonage-python-sdk ``voice/models/requests.py``: 1..120 s).
MAX_RINGING_S: Final = 120


def create_call_request(
    *,
    to: str,
    from_: str,
    answer_url: str,
    event_url: str,
    ringing_s: int,
    machine_detection: bool,
    app_jwt: str,
    base_url: str = VONAGE_API_BASE,
) -> RestRequest:
    """``POST /v1/calls`` (Vonage's "Create an outbound call"; vonage-python-sdk ``CreateCallRequest``):
    numbers as Vonage writes them (digits), the answer and event URLs POSTed JSON, the ring time capped
    at Vonage's 120 s. ``machine_detection``: advanced machine detection in its asynchronous mode
    (``default``: the NCCO runs at once, beep detection included: a ``machine`` event, then one with
    ``sub_state`` ``beep_start``, or ``beep_timeout``), ``behavior: continue``: the gateway decides what a
    machine gets, as for every provider.

    Raises:
        ConfigError: a bad base URL, or a number that is not an E.164 one.
    """
    base = urlsplit(base_url)
    if base.scheme not in ("https", "http") or not base.netloc:
        raise ConfigError(f"Vonage API base URL must be https://host, got {base_url!r}")
    numbers = []
    for number in (to, from_):
        digits = number.strip().removeprefix("+")
        if not digits.isascii() or not digits.isdigit() or not 6 <= len(digits) <= 15:
            raise ConfigError(f"not a phone number Vonage can dial: {number!r}")
        numbers.append(digits)
    body: dict[str, Any] = {
        "to": [{"type": "phone", "number": numbers[0]}],
        "from": {"type": "phone", "number": numbers[1]},
        "answer_url": [answer_url],
        "answer_method": "POST",
        "event_url": [event_url],
        "event_method": "POST",
        "ringing_timer": max(1, min(ringing_s, MAX_RINGING_S)),
    }
    if machine_detection:
        body["advanced_machine_detection"] = {"behavior": "continue", "mode": "default"}
    headers = {
        "Authorization": f"Bearer {app_jwt}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    return RestRequest(
        "POST", f"{base_url.rstrip('/')}/v1/calls", headers, json.dumps(body).encode(), frozenset({201})
    )


def hangup_request(*, call_uuid: str, app_jwt: str, base_url: str = VONAGE_API_BASE) -> RestRequest:
    """``PUT /v1/calls/{uuid}`` ``{"action":"hangup"}``: 204 when done; 404 (the call is gone) is a
    hang-up too.

    Raises:
        ConfigError: a bad base URL. ToolError: the call id is not a plain identifier.
    """
    return _put(base_url, call_uuid, app_jwt, {"action": "hangup"}, frozenset({204, 404}))


def transfer_request(
    *, call_uuid: str, number: str, app_jwt: str, base_url: str = VONAGE_API_BASE
) -> RestRequest:
    """``PUT /v1/calls/{uuid}`` ``{"action":"transfer","destination":{"type":"ncco","ncco":[…]}}``:
    the caller's leg runs the NCCO, connecting it to ``number`` (E.164 digits, as Vonage writes numbers).

    Raises:
        ConfigError: a bad base URL or a number that is not one. ToolError: a bad call id.
    """
    digits = number.strip().lstrip("+")
    if not digits.isascii() or not digits.isdigit() or not 6 <= len(digits) <= 15:
        raise ConfigError(f"transfer target must be a phone number, got {number!r}")
    ncco = [{"action": "connect", "endpoint": [{"type": "phone", "number": digits}]}]
    body = {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}}
    return _put(base_url, call_uuid, app_jwt, body, frozenset({204}))
