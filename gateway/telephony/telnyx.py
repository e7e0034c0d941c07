"""Telnyx media streaming (bidirectional RTP mode) JSON ⇄ telephony events, its answers and webhooks; no I/O.

Sources: Telnyx "Stream call media over WebSocket" (AsyncAPI page, developers.telnyx.com), the TeXML
``<Stream>`` page, the Call Control ``answer``/``hangup``/``transfer`` types and
``lib/webhook_verification.py`` of team-telnyx/telnyx-python (``6d68c8c``, 2026-08-21); see
docs/telephony-providers.md §2.

State table (one :class:`TelnyxCodec` per media socket)::

    AWAITING_CONNECTED --connected--> AWAITING_START --start--> STREAMING --stop--> STOPPED
    AWAITING_CONNECTED --start------> STREAMING        (lenient: a missing ``connected`` is tolerated)
    STREAMING: media | dtmf | mark (echo of ours) | error (raises: Telnyx refused what we sent)

Telnyx names everything in snake case (``stream_id``, ``sequence_number``, ``media_format``), puts the
stream id at the top level and the call's identity (``call_control_id``, ``from``, ``to``) in ``start``,
and takes outbound ``media``/``mark``/``clear`` without a stream id. With ``stream_bidirectional_mode``
``rtp`` our ``media`` payloads are raw RTP payloads in the bidirectional codec, 20 ms to 30 s each.

Audio: ``PCMU``/``PCMA`` at 8 kHz, or ``L16``. RTP's L16 is network byte order (RFC 3551 §4.5.11) and
Telnyx sends RTP payloads; Telnyx does not state the order, the Telnyx plugin of GetStream/Vision-Agents
decodes and encodes it big-endian [S: confirm on a live call]. The audio core's ``l16`` is
little-endian, so L16 payloads are byte-swapped here, in both directions.

The gateway's stream token: the Call Control ``answer`` command has no ``custom_parameters`` (only
``streaming_start`` and ``dial`` do), so both answers put it in the stream URL's query string
(:func:`stream_url_with_token`), which Telnyx keeps [S: Pipecat Cloud's own Telnyx TeXML routes
calls on a ``?serviceHost=`` query, daily-co/pipecat-cloud-images ``pipecat-starters/telnyx``]; the media
handler reads it from the upgrade request. (``stream_auth_token``, sent as the
``x-telnyx-streaming-auth-token`` header, exists only on ``streaming_start`` and ``dial``.)
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

from gateway.errors import AudioError, ConfigError, TelephonyProtocolError
from gateway.jsonfast import loads
from gateway.telephony.events import (
    DTMF_DIGITS,
    CallStarted,
    CallStopped,
    Connected,
    TelephonyEvent,
)
from gateway.telephony.jsoncodec import JsonMediaCodec
from gateway.telephony.jsonmsg import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_UNSUPPORTED_DATA,
    StreamState,
    dtmf_pressed,
    invalid,
    mark_reached,
    object_field,
    string_field,
    string_map,
)
from gateway.telephony.provider import PCMU_8K, AudioFormat, Capabilities
from gateway.telephony.rest import RestRequest

__all__ = [
    "AMD_MODES",
    "DEFAULT_API_BASE",
    "REPLAY_WINDOW_S",
    "SIGNATURE_HEADER",
    "TEXML_CODECS",
    "TIMESTAMP_HEADER",
    "TOKEN_QUERY_PARAM",
    "AmdMode",
    "CallControlEvent",
    "RestRequest",
    "TelnyxCodec",
    "TelnyxRest",
    "TelnyxState",
    "connect_stream_texml",
    "load_public_key",
    "parse_call_control_event",
    "stream_url_with_token",
    "verify_telnyx_signature",
]


#: ``start.media_format.encoding`` → the audio core's codec; L16's rate comes from ``sample_rate``.
_CODECS: Final = {"PCMU": "ulaw", "PCMA": "alaw", "L16": "l16"}


#: Where a media socket is in Telnyx's message sequence (the shared enum; the name stays for callers).
TelnyxState = StreamState


def _audio_format(fmt: Mapping[str, Any]) -> AudioFormat:
    encoding, rate, channels = fmt.get("encoding"), fmt.get("sample_rate"), fmt.get("channels")
    if not isinstance(encoding, str) or type(rate) is not int or type(channels) is not int:
        raise invalid("start.media_format needs a string encoding and integer sample_rate and channels")
    codec = _CODECS.get(encoding)
    try:
        audio = AudioFormat(codec, rate) if codec is not None and channels == 1 else None
    except AudioError:
        audio = None
    if audio is None or (codec != "l16" and rate != 8000):
        raise TelephonyProtocolError(
            f"unsupported media format {encoding[:40]} {rate} Hz x{channels}; the gateway takes "
            "PCMU or PCMA at 8000 Hz and L16, mono (answer with stream_codec set, not 'default')",
            close_code=CLOSE_UNSUPPORTED_DATA,
        )
    return audio


class TelnyxCodec(JsonMediaCodec[TelephonyEvent]):
    """Sans-I/O codec for one Telnyx media WebSocket in bidirectional RTP mode; the message flow is
    :class:`JsonMediaCodec`'s.

    Attributes:
        state: where the socket is in the message sequence (:class:`TelnyxState`).
        stream_id, call_control_id, user_id: known once ``start`` has arrived.
        caller, callee: ``start.from`` and ``start.to`` as Telnyx reports them (not a trust anchor:
            the signed webhook is).
        audio: the format ``start.media_format`` announced (μ-law 8 kHz until then); L16 is handed over LE.
        messages_in: every message accepted; media_in / bytes_in, media_out / bytes_out: audio
            messages and bytes (in the stream's own format) each way.
    """

    __slots__ = ("call_control_id", "callee", "caller", "user_id")

    _provider = "Telnyx"
    _sid_key = "stream_id"
    _events = ("dtmf", "mark", "stop", "error")
    #: Inbound tracks as Telnyx labels them (``inbound``; ``inbound_track`` seen in third-party code).
    _inbound_aliases = ("inbound_track",)
    _track_hint = "; the gateway asks for inbound_track"
    _odd_payload = "L16 media.payload has an odd number of bytes"

    #: Marks and ``clear`` as Twilio; any 20 ms–30 s of audio per message, queued by Telnyx; hang-up,
    #: transfer and DTMF go through Call Control (closing the socket leaves the call up).
    capabilities: ClassVar[Capabilities] = Capabilities(
        marks=True, clear=True, frames_per_message=None, provider_buffers=True, hangup="rest",
        transfer="rest", dtmf_out="rest", binary_audio=False, continuous_media=True,
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(PCMU_8K)
        self.call_control_id: str | None = None
        self.user_id: str | None = None
        self.caller: str | None = None
        self.callee: str | None = None

    @property
    def stream_id(self) -> str | None:
        """Known once ``start`` has arrived."""
        return self._stream

    # --- inbound: the hooks of JsonMediaCodec's message flow ------------------------------------
    # ``receive_text`` also raises for Telnyx's ``error`` (Telnyx refused what we sent).

    def _connected(self, msg: dict[str, Any]) -> Connected:
        version = msg.get("version", "")
        if not isinstance(version, str):
            raise invalid("connected.version must be a string")
        return Connected("", version)

    def _streaming(self, event: str, msg: dict[str, Any]) -> TelephonyEvent:
        if event == "dtmf":
            return dtmf_pressed(msg)
        if event == "mark":
            return mark_reached(msg)
        if event == "error":
            # Telnyx reports frames of ours it refused (100003 malformed_frame, 100004 invalid_media,
            # 100005 rate_limit_reached) or its own failure (100002): a bug to surface, not to skip.
            body = msg.get("payload")
            body = body if isinstance(body, dict) else {}
            detail = " ".join(str(body.get(k, ""))[:80] for k in ("code", "title", "detail")).strip()
            raise TelephonyProtocolError(
                f"Telnyx stream error: {detail or 'no detail'}", close_code=CLOSE_INTERNAL_ERROR
            )
        stop = msg.get("stop")
        call_id = self.call_control_id or ""
        if stop is not None:
            if type(stop) is not dict:
                raise invalid("stop.stop must be an object")
            call_id = stop.get("call_control_id", call_id)
            if not isinstance(call_id, str):
                raise invalid("stop.call_control_id must be a string")
        self.state = StreamState.STOPPED
        return CallStopped(call_id)

    def _start(self, msg: dict[str, Any]) -> CallStarted:
        stream_id = msg.get("stream_id")
        if not isinstance(stream_id, str) or not stream_id:
            raise invalid("start.stream_id must be a non-empty string")
        start = object_field(msg, "start", "start")
        call_control_id = string_field(start, "call_control_id", "start.start")
        if not call_control_id:
            raise invalid("start.call_control_id must not be empty")
        user_id = start.get("user_id", "")
        caller, callee = start.get("from"), start.get("to")
        if not isinstance(user_id, str) or not all(v is None or isinstance(v, str) for v in (caller, callee)):
            raise invalid("start.user_id, from and to must be strings")
        params = string_map(start, "custom_parameters", "start")
        fmt = object_field(start, "media_format", "start.start")
        audio = _audio_format(fmt)
        self._stream, self.call_control_id, self.user_id = stream_id, call_control_id, user_id
        self.caller, self.callee = caller, callee
        # RTP's L16 is big-endian: checked for whole samples and swapped to the core's LE, both ways.
        self._audio = audio
        self._pcm16 = self._swap16 = audio.codec == "l16"
        # No stream id in outbound messages: Telnyx does not need it.
        self._media_prefix = '{"event":"media","media":{"payload":"'
        self._mark_prefix = '{"event":"mark","mark":{"name":'
        self._clear_text = '{"event":"clear"}'
        self.state = StreamState.STREAMING
        return CallStarted(
            stream_id, call_control_id, user_id, ("inbound",), params, fmt["encoding"], audio.rate, 1
        )


# --- the stream token ---------------------------------------------------------------------------

#: Query parameter of the stream URL that carries the gateway's per-call stream token.
TOKEN_QUERY_PARAM: Final = "token"


def stream_url_with_token(stream_url: str, token: str) -> str:
    """``stream_url`` with ``token=<token>`` added to its query string.

    Raises:
        ConfigError: not a ws(s) URL, a fragment, an empty token, or the URL already has a ``token``.
    """
    parts = urlsplit(stream_url)
    if parts.scheme not in ("wss", "ws") or not parts.netloc or parts.fragment:
        raise ConfigError(
            f"stream URL must be wss://host/path (ws:// only for local tests), got {stream_url!r}"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not token or any(name == TOKEN_QUERY_PARAM for name, _ in query):
        raise ConfigError("the stream token must be non-empty and the URL must not carry one already")
    return urlunsplit(parts._replace(query=urlencode([*query, (TOKEN_QUERY_PARAM, token)])))


# --- TeXML answer -------------------------------------------------------------------------------

_NOT_XML: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
#: Codecs a TeXML ``<Stream>`` documents for both directions (L16 is Call Control only).
TEXML_CODECS: Final = ("PCMU", "PCMA")


def _xml_safe(value: str, what: str) -> str:
    if _NOT_XML.search(value):
        raise ConfigError(f"{what} contains a control character that XML cannot carry")
    return value


def _xml(root: ET.Element) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root, encoding="unicode")


def connect_stream_texml(
    stream_url: str,
    token: str,
    *,
    codec: Literal["PCMU", "PCMA"] = "PCMU",
    status_callback: str | None = None,
) -> str:
    """The TeXML answer: ``<Connect><Stream bidirectionalMode="rtp">`` to ``stream_url`` + the token.

    Inbound and outbound use the same ``codec`` (``codec`` and ``bidirectionalCodec``), at 8 kHz, and
    only the caller's track is streamed, so the bot does not hear itself.

    Raises:
        ConfigError: a bad URL or token (see :func:`stream_url_with_token`), codec, or non-XML text.
    """
    if codec not in TEXML_CODECS:
        raise ConfigError(f"TeXML stream codec must be PCMU or PCMA, got {codec!r}")
    url = _xml_safe(stream_url_with_token(stream_url, token), "stream URL")
    response = ET.Element("Response")
    stream = ET.SubElement(ET.SubElement(response, "Connect"), "Stream", url=url)
    for name, value in (
        ("track", "inbound_track"), ("codec", codec), ("bidirectionalMode", "rtp"),
        ("bidirectionalCodec", codec), ("bidirectionalSamplingRate", "8000"),
    ):  # fmt: skip
        stream.set(name, value)
    if status_callback is not None:
        stream.set("statusCallback", _xml_safe(status_callback, "status callback URL"))
        stream.set("statusCallbackMethod", "POST")
    return _xml(response)


# --- webhook signatures (Ed25519) ----------------------------------------------------------------

SIGNATURE_HEADER: Final = "telnyx-signature-ed25519"
TIMESTAMP_HEADER: Final = "telnyx-timestamp"
#: Telnyx's SDKs refuse webhooks whose timestamp is further than this from now, either way.
REPLAY_WINDOW_S: Final = 300
#: DER SubjectPublicKeyInfo prefix of an Ed25519 key: some tools export the portal key this way.
_SPKI_PREFIX: Final = bytes.fromhex("302a300506032b6570032100")


def load_public_key(public_key: str) -> Ed25519PublicKey:
    """The account's webhook public key (Mission Control, base64 of 32 bytes, or of its SPKI DER form).

    Raises:
        ConfigError: not base64 of an Ed25519 public key.
    """
    try:
        raw = base64.b64decode(public_key.strip(), validate=True)
        if len(raw) == 32:
            return Ed25519PublicKey.from_public_bytes(raw)
        if len(raw) == 44 and raw.startswith(_SPKI_PREFIX):
            key = load_der_public_key(raw)
            if isinstance(key, Ed25519PublicKey):
                return key
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("TELNYX_PUBLIC_KEY is not a base64 Ed25519 public key") from exc
    raise ConfigError("TELNYX_PUBLIC_KEY is not a base64 Ed25519 public key (32 bytes)")


def verify_telnyx_signature(
    public_key: Ed25519PublicKey, body: bytes, signature: str, timestamp: str, *, now: float
) -> bool:
    """Whether ``signature`` is Telnyx's Ed25519 signature of ``f"{timestamp}|"`` + the raw ``body``.

    ``timestamp`` must be Unix seconds within :data:`REPLAY_WINDOW_S` of ``now``, as Telnyx's SDK
    checks; ``body`` must be the bytes received (re-serialised JSON would not verify).
    """
    stamp = timestamp.strip()
    if (
        not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12)
        or abs(now - int(stamp)) > REPLAY_WINDOW_S
    ):
        return False
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw) != 64:
        return False
    try:
        public_key.verify(raw, stamp.encode("ascii") + b"|" + body)
    except InvalidSignature:
        return False
    return True


# --- Call Control webhooks ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class CallControlEvent:
    """What a Call Control webhook says about a call (``data.event_type`` and ``data.payload``)."""

    event_type: str
    call_control_id: str
    call_leg_id: str = ""
    call_session_id: str = ""
    connection_id: str = ""
    caller: str = ""
    callee: str = ""
    direction: str = ""
    client_state: str | None = None
    #: ``call.machine.*`` events: the verdict (``human``, ``machine``, ``not_sure``; ``beep_detected``…).
    result: str = ""
    #: ``call.hangup``: why (``normal_clearing``, ``user_busy``, ``timeout``…) and which side.
    hangup_cause: str = ""
    hangup_source: str = ""


def parse_call_control_event(body: bytes) -> CallControlEvent:
    """Parse a Call Control webhook (``{"data": {"event_type": …, "payload": {…}}, "meta": …}``).

    Raises:
        TelephonyProtocolError: not JSON, or no ``data.event_type`` / ``data.payload.call_control_id``.
    """
    try:
        doc = loads(body)
    except (ValueError, RecursionError) as exc:
        raise invalid(f"Telnyx webhook is not valid JSON: {exc}") from exc
    data = doc.get("data") if type(doc) is dict else None
    if type(data) is not dict:
        raise invalid("Telnyx webhook has no 'data' object")
    event_type = string_field(data, "event_type", "data")
    payload = object_field(data, "payload", "data")

    def text(key: str) -> str:
        value = payload.get(key)
        return value if isinstance(value, str) else ""

    state = payload.get("client_state")
    return CallControlEvent(
        event_type,
        string_field(payload, "call_control_id", "data.payload"),
        call_leg_id=text("call_leg_id"),
        call_session_id=text("call_session_id"),
        connection_id=text("connection_id"),
        caller=text("from"),
        callee=text("to"),
        direction=text("direction"),
        client_state=state if isinstance(state, str) else None,
        result=text("result")[:64],
        hangup_cause=text("hangup_cause")[:64],
        hangup_source=text("hangup_source")[:64],
    )


# --- REST, as request descriptions ---------------------------------------------------------------

#: ``answering_machine_detection`` of the Dial command (Telnyx's "Answering Machine Detection" page):
#: ``detect`` sends ``call.machine.detection.ended`` (``human``/``machine``/``not_sure``);
#: ``greeting_end`` also ``call.machine.greeting.ended`` once a machine's greeting is over (silence or a
#: beep: ``beep_detected``/``ended``/``not_sure``), which is when a message can be left.
AmdMode = Literal["disabled", "detect", "greeting_end"]
AMD_MODES: Final = ("disabled", "detect", "greeting_end")

#: Telnyx API v2.
DEFAULT_API_BASE: Final = "https://api.telnyx.com/v2"
#: Call control ids look like ``v3:T02llQ…`` (base64url after a version prefix).
_CALL_ID: Final = re.compile(r"[A-Za-z0-9:_.=-]{1,256}")
_ACCOUNT_ID: Final = re.compile(r"[A-Za-z0-9-]{1,64}")


def _stream_fields(stream_url: str, token: str, codec: str, command_id: str | None) -> dict[str, str]:
    """The stream of a call, as ``answer``, ``streaming_start`` and Dial take it (the caller's track to
    us, ours back in RTP mode, one codec both ways)."""
    if codec not in _CODECS:
        raise ConfigError(f"Telnyx stream codec must be PCMU, PCMA or L16, got {codec!r}")
    body = {
        "stream_url": stream_url_with_token(stream_url, token),
        "stream_track": "inbound_track",
        "stream_codec": codec,
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": codec,
    }
    if command_id is not None:
        body["command_id"] = command_id
    return body


class TelnyxRest:
    """Builds Call Control and TeXML REST requests with a Bearer API key; ``base_url`` is swappable.

    Call Control: ``POST {base}/calls/{call_control_id}/actions/{answer,reject,hangup,transfer,send_dtmf}``
    with a JSON body. TeXML calls: ``POST {base}/texml/Accounts/{account_sid}/Calls/{call_sid}``,
    form-encoded ``Status``/``Texml`` (the TeXML "Update call" operation).
    """

    def __init__(self, api_key: str, *, base_url: str = DEFAULT_API_BASE) -> None:
        if not api_key.strip():
            raise ConfigError("Telnyx REST needs TELNYX_API_KEY")
        if urlsplit(base_url).scheme not in ("https", "http"):
            raise ConfigError(f"Telnyx API base URL must be http(s), got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._auth = f"Bearer {api_key.strip()}"

    def _action(self, call_control_id: str, action: str, body: Mapping[str, Any]) -> RestRequest:
        if not _CALL_ID.fullmatch(call_control_id):
            raise ConfigError("this call has no valid Telnyx call_control_id")
        headers = {
            "Authorization": self._auth,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        url = f"{self.base_url}/calls/{quote(call_control_id, safe=':=')}/actions/{action}"
        return RestRequest("POST", url, headers, json.dumps(body, separators=(",", ":")).encode())

    def answer(
        self,
        call_control_id: str,
        stream_url: str,
        token: str,
        *,
        codec: Literal["PCMU", "PCMA", "L16"] = "PCMU",
        command_id: str | None = None,
    ) -> RestRequest:
        """Answer and stream the caller's track both ways in ``codec`` (RTP mode) to ``stream_url`` + token.

        ``stream_codec`` is set (not ``default``) so the stream is never in a codec the gateway cannot
        take; L16 runs at Telnyx's L16 rate, 16 kHz. ``command_id`` makes a retried answer harmless.
        """
        return self._action(call_control_id, "answer", _stream_fields(stream_url, token, codec, command_id))

    def dial(
        self,
        *,
        connection_id: str,
        to: str,
        from_: str,
        webhook_url: str,
        timeout_s: int,
        machine_detection: AmdMode,
        command_id: str | None = None,
    ) -> RestRequest:
        """Place an outbound call (Call Control "Dial", ``POST {base}/calls``; telnyx-python
        ``types/call_dial_params.py``): every webhook of the call goes to ``webhook_url`` (the gateway's,
        with the call's token), whatever the application's own URL. No stream yet: it is started on
        ``call.answered`` (:meth:`streaming_start`), once the call has been admitted, as an inbound one is.
        ``command_id`` makes a retried request harmless."""
        if not connection_id.strip():
            raise ConfigError("dialling through Telnyx needs TELNYX_CONNECTION_ID")
        if machine_detection not in AMD_MODES:
            raise ConfigError(f"not a Telnyx answering_machine_detection mode: {machine_detection!r}")
        body: dict[str, str | int] = {
            "connection_id": connection_id.strip(),
            "to": to,
            "from": from_,
            "webhook_url": webhook_url,
            "webhook_url_method": "POST",
            "timeout_secs": timeout_s,
            "answering_machine_detection": machine_detection,
        }
        if command_id is not None:
            body["command_id"] = command_id
        headers = {
            "Authorization": self._auth,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        return RestRequest(
            "POST", f"{self.base_url}/calls", headers, json.dumps(body, separators=(",", ":")).encode()
        )

    def streaming_start(
        self,
        call_control_id: str,
        stream_url: str,
        token: str,
        *,
        codec: Literal["PCMU", "PCMA", "L16"] = "PCMU",
        command_id: str | None = None,
    ) -> RestRequest:
        """Stream an answered call both ways (``actions/streaming_start``): the fields of :meth:`answer`,
        for a call the gateway placed (an outbound call is answered by the callee, not by a command)."""
        body = _stream_fields(stream_url, token, codec, command_id)
        return self._action(call_control_id, "streaming_start", body)

    def reject(
        self, call_control_id: str, *, cause: Literal["CALL_REJECTED", "USER_BUSY"] = "USER_BUSY"
    ) -> RestRequest:
        """Refuse an inbound call that has not been answered (telnyx-python ``actions.reject``)."""
        return self._action(call_control_id, "reject", {"cause": cause})

    def hangup(self, call_control_id: str) -> RestRequest:
        """Hang up (an already-ended call answers 422 with error code 90018: done anyway)."""
        return self._action(call_control_id, "hangup", {})

    def transfer(self, call_control_id: str, to: str, *, from_: str | None = None) -> RestRequest:
        """Transfer the call to ``to`` (E.164 or SIP URI), optionally presenting ``from_``."""
        if not to.strip():
            raise ConfigError("transfer target must not be empty")
        body = {"to": to.strip()} | ({"from": from_} if from_ else {})
        return self._action(call_control_id, "transfer", body)

    def send_dtmf(self, call_control_id: str, digits: str) -> RestRequest:
        """Play ``digits`` (``0-9*#A-D``, ``w``/``W`` pauses) into the call."""
        if not digits or not set(digits) <= DTMF_DIGITS | {"w", "W"}:
            raise ConfigError(f"not DTMF digits: {digits[:20]!r}")
        return self._action(call_control_id, "send_dtmf", {"digits": digits})

    def texml_update(self, account_sid: str, call_sid: str, form: Mapping[str, str]) -> RestRequest:
        """``POST`` ``form`` to a TeXML call (the call_sid is the call's call_control_id)."""
        if not _ACCOUNT_ID.fullmatch(account_sid) or not _CALL_ID.fullmatch(call_sid):
            raise ConfigError("this call has no valid Telnyx account and call SID")
        headers = {
            "Authorization": self._auth,
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        url = f"{self.base_url}/texml/Accounts/{account_sid}/Calls/{quote(call_sid, safe=':=')}"
        return RestRequest("POST", url, headers, urlencode(form).encode("ascii"))

    def texml_hangup(self, account_sid: str, call_sid: str) -> RestRequest:
        """End a TeXML call."""
        return self.texml_update(account_sid, call_sid, {"Status": "completed"})

    def texml_transfer(self, account_sid: str, call_sid: str, number: str) -> RestRequest:
        """Replace a TeXML call's instructions with ``<Dial>number</Dial>`` (ends the stream)."""
        if not number.strip():
            raise ConfigError("dial target must not be empty")
        response = ET.Element("Response")
        ET.SubElement(response, "Dial").text = _xml_safe(number.strip(), "dial target")
        return self.texml_update(account_sid, call_sid, {"Texml": _xml(response)})
