"""TwiML documents the voice webhook answers with: stream the call, say-and-hang-up, transfer.

Built with :mod:`xml.etree.ElementTree`, so every text and attribute is XML-escaped; values that
XML 1.0 cannot carry at all (control characters) are refused rather than silently corrupted.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from gateway.errors import ConfigError

_XML_DECLARATION: Final = '<?xml version="1.0" encoding="UTF-8"?>'
_NOT_XML: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_safe(value: str, what: str) -> str:
    if _NOT_XML.search(value):
        raise ConfigError(f"{what} contains a control character that XML cannot carry")
    return value


def _render(root: ET.Element) -> str:
    return _XML_DECLARATION + ET.tostring(root, encoding="unicode")


def connect_stream_twiml(
    stream_url: str, parameters: Mapping[str, str], *, status_callback: str | None = None
) -> str:
    """``<Connect><Stream>`` to ``stream_url`` with one ``<Parameter>`` per entry.

    Twilio drops query strings from stream URLs, so per-call data must travel as parameters; a
    URL with a query is refused here instead of failing silently on a live call.

    Raises:
        ConfigError: the URL is not ws(s)://host/path without a query, or a value is not XML-safe.
    """
    parts = urlsplit(stream_url)
    if parts.scheme not in ("wss", "ws") or not parts.netloc:
        raise ConfigError(
            f"stream URL must be wss://host/path (ws:// only for local tests), got {stream_url!r}"
        )
    if parts.query or parts.fragment:
        raise ConfigError("stream URL must not carry a query string: Twilio drops it; use <Parameter>s")
    response = ET.Element("Response")
    connect = ET.SubElement(response, "Connect")
    stream = ET.SubElement(connect, "Stream", url=_xml_safe(stream_url, "stream URL"))
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
    return _render(response)


def say_hangup_twiml(text: str | None = None) -> str:
    """Optionally say ``text``, then hang up (used to refuse a call politely)."""
    response = ET.Element("Response")
    if text:
        ET.SubElement(response, "Say").text = _xml_safe(text, "text")
    ET.SubElement(response, "Hangup")
    return _render(response)


def dial_twiml(number: str, *, caller_id: str | None = None) -> str:
    """Transfer the call to ``number`` (E.164 or SIP URI), optionally presenting ``caller_id``."""
    if not number.strip():
        raise ConfigError("dial target must not be empty")
    response = ET.Element("Response")
    dial = ET.SubElement(response, "Dial")
    if caller_id is not None:
        dial.set("callerId", _xml_safe(caller_id, "caller id"))
    dial.text = _xml_safe(number.strip(), "dial target")
    return _render(response)
