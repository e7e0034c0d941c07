"""SignalWire cXML media streams: Twilio's protocol plus SignalWire's documented differences; no I/O.

SignalWire's bidirectional ``<Connect><Stream>`` speaks Twilio's Media Streams messages. What differs,
as SignalWire documents it (compatibility-api ``cxml/voice/stream.mdx`` in signalwire/docs at
``668371b``, 2026-08-21), and what this module does about it:

* ``connected.version`` is ``"0.2.0"``, Twilio's ``"1.0.0"``: any string is accepted, as by TwilioCodec.
* ``codec="L16@16000h"`` or ``"L16@24000h"`` turns ``start.mediaFormat`` into ``audio/x-L16`` at 16 or
  24 kHz (default ``PCMU@8000h``, ``audio/x-mulaw``): :class:`SignalWireCodec` takes all three and says
  which in :attr:`~SignalWireCodec.audio`. SignalWire does not state the L16 byte order; its own example
  (signalwire/cXML-realtime-agent-stream) passes ``L16@24000h`` payloads unchanged to and from OpenAI's
  little-endian ``pcm16``, so they are taken as little-endian, the audio core's ``l16``. [S: confirm live]
* ``start`` and ``media`` may lack the top-level ``streamSid``, ``stop`` may be only ``sequenceNumber``,
  ``dtmf`` carries ``duration``: TwilioCodec already tolerates all of these.
* We may send ``{"event": "dtmf"}`` to play a key into the call: :meth:`SignalWireCodec.encode_dtmf`.
* The stream URL takes no query string ("use Custom Parameters instead"): per-call data, the gateway's
  stream token included, travels as ``<Parameter>`` and arrives in ``start.customParameters``.
  ``authBearerToken`` is also offered: SignalWire sends it as ``Authorization: Bearer`` on the upgrade.
* Webhooks are signed with the project's Signing Key, in ``X-SignalWire-Signature`` (``X-Twilio-Signature``
  is the compatibility alias): :func:`verify_signalwire_signature`.
* Call control is the Twilio-shaped Compatibility REST API with Basic ``ProjectID:APIToken``; its
  call update documents ``Status`` and ``Url`` but not inline ``Twiml``, so a transfer redirects the call
  to a URL that answers with ``<Dial>`` (:meth:`SignalWireRest.redirect`).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from operator import itemgetter
from typing import Any, ClassVar, Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from gateway.errors import ConfigError, TelephonyProtocolError
from gateway.telephony.events import CallStarted, TelephonyEvent
from gateway.telephony.jsonmsg import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_UNSUPPORTED_DATA,
    StreamState,
    invalid,
    parse,
    violation,
)
from gateway.telephony.provider import PCMU_8K, AudioFormat, Capabilities
from gateway.telephony.rest import RestRequest
from gateway.telephony.twilio import TwilioCodec

__all__ = [
    "CODECS",
    "COMPAT_SIGNATURE_HEADER",
    "SIGNATURE_HEADER",
    "RestRequest",
    "SignalWireCodec",
    "SignalWireRest",
    "connect_stream_cxml",
    "signalwire_json_signature",
    "signalwire_signature",
    "verify_signalwire_signature",
]

#: The ``codec`` attribute values SignalWire documents for ``<Stream>``, and the format each gives.
CODECS: Final[Mapping[str, AudioFormat]] = {
    "PCMU@8000h": PCMU_8K,
    "L16@16000h": AudioFormat("l16", 16000),
    "L16@24000h": AudioFormat("l16", 24000),
}
#: ``start.mediaFormat`` (encoding lower-cased: media types are case-insensitive) → audio format.
_MEDIA_FORMATS: Final[Mapping[tuple[str, int], AudioFormat]] = {
    ("audio/x-mulaw", 8000): PCMU_8K,
    ("audio/x-l16", 16000): CODECS["L16@16000h"],
    ("audio/x-l16", 24000): CODECS["L16@24000h"],
}
#: What TwilioCodec's ``start`` parser is handed once the SignalWire format has been checked here.
_TWILIO_FORMAT: Final = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
_DTMF_KEYS: Final = frozenset("0123456789*#ABCD")

SIGNATURE_HEADER: Final = "X-SignalWire-Signature"
COMPAT_SIGNATURE_HEADER: Final = "X-Twilio-Signature"


class SignalWireCodec(TwilioCodec):
    """Sans-I/O codec for one SignalWire media WebSocket: TwilioCodec with SignalWire's formats and DTMF out.

    Only the ``start`` message differs in a way TwilioCodec refuses (the L16 formats), so this subclass
    checks SignalWire's ``mediaFormat`` itself and hands the parent a μ-law view of the same message,
    once per call, keeping the format it announced as :attr:`audio`; the media paths in both directions
    are TwilioCodec's, unchanged (L16 payloads are little-endian, like the audio core's ``l16``, so
    nothing is converted).
    """

    __slots__ = ()

    #: As Twilio, plus keys sent into the call with a stream message. Hang-up is closing the stream:
    #: the answer has no verb after ``<Connect>``, and SignalWire ends a call with nothing left to run
    #: (documented for ``<Start>``; assumed for ``<Connect>`` as on Twilio [U]). ``realtime="true"`` only
    #: changes how SignalWire plays what we send, so the gateway's real-time pacing suits both settings.
    capabilities: ClassVar[Capabilities] = Capabilities(
        marks=True, clear=True, frames_per_message=None, provider_buffers=True, hangup="close",
        transfer="rest", dtmf_out="command", binary_audio=False, continuous_media=True,
    )  # fmt: skip

    # The MediaCodec protocol allows None ("nothing to do"); TwilioCodec never returns it, hence the ignore.
    def receive_text(self, text: str) -> TelephonyEvent | None:  # type: ignore[override]
        """As TwilioCodec, plus SignalWire's acknowledgement of our ``clear`` (None: nothing to do).

        A later revision of the Stream page (signalwire/docs ``01670d0``, "Clear message") says SignalWire
        sends a ``clear`` event back once it has flushed its queue. Twilio sends none, so TwilioCodec would
        refuse it as an unknown event and end the call at the first barge-in. [U: confirm live]
        """
        if '"clear"' in text and parse(text, "Twilio").get("event") == "clear":
            if self.state is not StreamState.STREAMING:
                raise violation(f"'clear' received in state {self.state.value}")
            self.messages_in += 1
            return None
        return super().receive_text(text)

    def _start(self, msg: dict[str, Any]) -> CallStarted:
        start = msg.get("start")
        fmt = start.get("mediaFormat") if isinstance(start, dict) else None
        if not isinstance(start, dict) or not isinstance(fmt, dict):
            return super()._start(msg)  # the parent reports the missing object with its close code
        encoding, rate, channels = fmt.get("encoding"), fmt.get("sampleRate"), fmt.get("channels")
        if not isinstance(encoding, str) or type(rate) is not int or type(channels) is not int:
            raise invalid("start.mediaFormat needs a string encoding and integer sampleRate and channels")
        audio = _MEDIA_FORMATS.get((encoding.lower(), rate))
        if audio is None or channels != 1:
            raise TelephonyProtocolError(
                f"unsupported media format {encoding[:40]} {rate} Hz x{channels}; SignalWire streams "
                "audio/x-mulaw 8000 Hz or audio/x-L16 16000/24000 Hz, mono",
                close_code=CLOSE_UNSUPPORTED_DATA,
            )
        started = super()._start({**msg, "start": {**start, "mediaFormat": _TWILIO_FORMAT}})
        self._audio = audio
        return dataclasses.replace(started, encoding=encoding, sample_rate=rate)

    def encode_dtmf(self, digit: str) -> str:
        """The text frame that plays one DTMF key (``0``–``9``, ``*``, ``#``, ``A``–``D``) into the call.

        Raises:
            TelephonyProtocolError: not a DTMF key, or used before ``start`` (our bug; close code 1011).
        """
        if digit not in _DTMF_KEYS or self.stream_sid is None:
            raise TelephonyProtocolError(
                f"cannot send DTMF {digit[:4]!r} "
                + ("" if self.stream_sid else "before SignalWire's 'start'"),
                close_code=CLOSE_INTERNAL_ERROR,
            )
        return '{"event":"dtmf","streamSid":"' + self.stream_sid + '","dtmf":{"digit":"' + digit + '"}}'


# --- webhook signatures ------------------------------------------------------------------------
# SignalWire documents two schemes (its SDKs' WebhookValidator, "porting-sdk/webhooks.md"; the
# compatibility Python SDK's RequestValidator): A, lower-case hex HMAC-SHA1 of ``url + raw body`` (JSON
# webhooks); B, Twilio's base64 HMAC-SHA1 of ``url`` + the form's ``name + value`` pairs sorted by name
# (cXML form webhooks, what a voice webhook carries). Unlike Twilio, B keeps repeated names in the order
# sent and does not sort or de-duplicate their values, and only http(s) URLs get port variants. A URL
# carrying ``bodySHA256`` must also match the body's SHA-256 (JSON sent to a compatibility endpoint).

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _hmac_sha1(key: str, *parts: bytes) -> bytes:
    mac = hmac.new(key.encode(), digestmod=hashlib.sha1)
    for part in parts:
        mac.update(part)
    return mac.digest()


def _form_text(params: Mapping[str, str] | list[tuple[str, str]] | None) -> str:
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params or ())
    return "".join(name + value for name, value in sorted(pairs, key=itemgetter(0)))


def signalwire_signature(
    signing_key: str, url: str, params: Mapping[str, str] | list[tuple[str, str]] | None = None
) -> str:
    """Scheme B, what SignalWire sends for a cXML form webhook: base64 HMAC-SHA1 of URL + sorted pairs.

    Raises:
        ConfigError: the signing key is empty.
    """
    if not signing_key:
        raise ConfigError("SignalWire signing key is empty")
    digest = _hmac_sha1(signing_key, (url + _form_text(params)).encode())
    return base64.b64encode(digest).decode("ascii")


def signalwire_json_signature(signing_key: str, url: str, body: bytes) -> str:
    """Scheme A, for JSON webhooks: lower-case hex HMAC-SHA1 of URL + raw body.

    Raises:
        ConfigError: the signing key is empty.
    """
    if not signing_key:
        raise ConfigError("SignalWire signing key is empty")
    return _hmac_sha1(signing_key, url.encode(), body).hex()


def _candidate_urls(url: str) -> list[str]:
    """``url``, plus the same URL with its default http(s) port added or removed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return [url]
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    host = parts.hostname or ""
    if default is None or not host:
        return [url]
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    if port is None:
        return [url, urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}"))]
    if port == default:
        return [url, urlunsplit(parts._replace(netloc=prefix + host))]
    return [url]


def verify_signalwire_signature(signing_key: str, url: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` is SignalWire's for a request to ``url`` with raw ``body``, either scheme.

    ``body`` is the request body exactly as received (a form body is parsed here for scheme B).
    Every candidate is computed and compared in constant time, so timing does not tell which failed.

    Raises:
        ConfigError: the signing key is empty.
    """
    if not signing_key:
        raise ConfigError("SignalWire signing key is empty")
    given = signature.strip().encode("utf-8", "replace")
    if not given:
        return False
    ok = hmac.compare_digest(signalwire_json_signature(signing_key, url, body).encode("ascii"), given)
    form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    for candidate in _candidate_urls(url):
        for params in (form, []):
            expected = signalwire_signature(signing_key, candidate, params).encode("ascii")
            match = hmac.compare_digest(expected, given)
            body_hash = dict(parse_qsl(urlsplit(candidate).query, keep_blank_values=True)).get("bodySHA256")
            if body_hash is not None:
                actual = hashlib.sha256(body).hexdigest().encode("ascii")
                match &= hmac.compare_digest(actual, body_hash.encode("utf-8", "replace"))
            ok |= match
    return ok


# --- the cXML answer -----------------------------------------------------------------------------

_NOT_XML: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_safe(value: str, what: str) -> str:
    if _NOT_XML.search(value):
        raise ConfigError(f"{what} contains a control character that XML cannot carry")
    return value


def connect_stream_cxml(
    stream_url: str,
    parameters: Mapping[str, str],
    *,
    codec: str = "PCMU@8000h",
    realtime: bool | None = None,
    auth_bearer_token: str | None = None,
    status_callback: str | None = None,
) -> str:
    """``<Connect><Stream>`` to ``stream_url`` in ``codec``, with one ``<Parameter>`` per entry.

    Put the gateway's stream token in ``parameters``: SignalWire's stream URL takes no query string.

    Raises:
        ConfigError: the URL is not ws(s)://host/path without a query, the codec is not one SignalWire
            documents, or a value is not XML-safe.
    """
    parts = urlsplit(stream_url)
    if parts.scheme not in ("wss", "ws") or not parts.netloc:
        raise ConfigError(
            f"stream URL must be wss://host/path (ws:// only for local tests), got {stream_url!r}"
        )
    if parts.query or parts.fragment:
        raise ConfigError("SignalWire stream URLs take no query string; pass per-call data as parameters")
    if codec not in CODECS:
        raise ConfigError(f"SignalWire stream codec must be one of {', '.join(CODECS)}, got {codec!r}")
    response = ET.Element("Response")
    stream = ET.SubElement(
        ET.SubElement(response, "Connect"), "Stream", url=_xml_safe(stream_url, "stream URL")
    )
    if codec != "PCMU@8000h":
        stream.set("codec", codec)
    if realtime is not None:
        stream.set("realtime", "true" if realtime else "false")
    if auth_bearer_token is not None:
        stream.set("authBearerToken", _xml_safe(auth_bearer_token, "bearer token"))
    if status_callback is not None:
        stream.set("statusCallback", _xml_safe(status_callback, "status callback URL"))
        stream.set("statusCallbackMethod", "POST")
    for name, value in parameters.items():
        ET.SubElement(
            stream,
            "Parameter",
            name=_xml_safe(name, "parameter name"),
            value=_xml_safe(value, f"parameter {name!r}"),
        )
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(response, encoding="unicode")


# --- Compatibility REST, as request descriptions -------------------------------------------------


_ID: Final = re.compile(r"[A-Za-z0-9-]{1,64}")


class SignalWireRest:
    """Builds Compatibility API requests for one project; ``base_url`` is the Space (a stand-in in tests).

    ``POST {base}/api/laml/2010-04-01/Accounts/{ProjectID}/Calls/{CallSid}.json``, form-encoded, HTTP
    Basic ``ProjectID:APIToken`` (SignalWire's Compatibility API "Update a Call").
    """

    def __init__(self, *, base_url: str, project_id: str, api_token: str) -> None:
        if not _ID.fullmatch(project_id) or not api_token:
            raise ConfigError("SignalWire REST needs the project ID and an API token")
        if urlsplit(base_url).scheme not in ("https", "http"):
            raise ConfigError(
                f"SignalWire space URL must be https://<space>.signalwire.com, got {base_url!r}"
            )
        basic = base64.b64encode(f"{project_id}:{api_token}".encode()).decode("ascii")
        self._headers = {
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        self._calls = f"{base_url.rstrip('/')}/api/laml/2010-04-01/Accounts/{project_id}/Calls/"

    def update_call(self, call_sid: str, form: Mapping[str, str]) -> RestRequest:
        """``POST`` ``form`` to the call resource.

        Raises:
            ConfigError: the call SID is not a SignalWire identifier.
        """
        if not _ID.fullmatch(call_sid):
            raise ConfigError("this call has no valid SignalWire call SID")
        url = self._calls + quote(call_sid) + ".json"
        return RestRequest("POST", url, self._headers, urlencode(form).encode("ascii"))

    def hangup(self, call_sid: str) -> RestRequest:
        """End the call, answered or not."""
        return self.update_call(call_sid, {"Status": "completed"})

    def redirect(self, call_sid: str, url: str) -> RestRequest:
        """Move the call to the cXML at ``url``: a transfer when that answers ``<Dial>`` (ends the stream)."""
        return self.update_call(call_sid, {"Url": url, "Method": "POST"})
