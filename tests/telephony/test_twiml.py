"""TwiML builders: well-formed XML that parses back to the same URL, parameters and text."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from gateway.errors import ConfigError
from gateway.telephony import connect_stream_twiml, dial_twiml, say_hangup_twiml


def test_connect_stream_parses_back_with_escaped_parameters() -> None:
    """<Connect><Stream url><Parameter…/> carries every value intact, whatever XML specials it holds."""
    params = {"from_number": "+1555<0001>", "token": "a&b\"c'd", "note": "line1\nline2"}
    text = connect_stream_twiml("wss://gw.example.com/twilio/media", params)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream ')
    root = ET.fromstring(text)
    assert root.tag == "Response"
    stream = root.find("./Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "wss://gw.example.com/twilio/media"
    assert stream.get("statusCallback") is None
    got = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert got == params


def test_connect_stream_status_callback() -> None:
    """status_callback adds statusCallback with method POST."""
    text = connect_stream_twiml("wss://h/m", {}, status_callback="https://h/twilio/stream-status?a=1&b=2")
    stream = ET.fromstring(text).find("./Connect/Stream")
    assert stream is not None
    assert stream.get("statusCallback") == "https://h/twilio/stream-status?a=1&b=2"
    assert stream.get("statusCallbackMethod") == "POST"
    assert "&amp;" in text


@pytest.mark.parametrize(
    "url",
    ["https://h/m", "wss://h/m?token=1", "h/m", "wss:///m"],
)
def test_connect_stream_refuses_urls_twilio_cannot_use(url: str) -> None:
    """Non-WebSocket URLs and URLs with a query string (Twilio drops it) raise ConfigError."""
    with pytest.raises(ConfigError):
        connect_stream_twiml(url, {})


def test_control_characters_are_refused() -> None:
    """A value XML cannot carry raises ConfigError instead of producing broken TwiML."""
    with pytest.raises(ConfigError):
        connect_stream_twiml("wss://h/m", {"x": "bell\x07"})
    with pytest.raises(ConfigError):
        say_hangup_twiml("\x00")


def test_say_hangup() -> None:
    """say_hangup_twiml says the escaped text then hangs up; without text it only hangs up."""
    root = ET.fromstring(say_hangup_twiml("Sorry <all> lines & agents are busy"))
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert root[0].text == "Sorry <all> lines & agents are busy"
    assert [child.tag for child in ET.fromstring(say_hangup_twiml())] == ["Hangup"]


def test_dial() -> None:
    """dial_twiml dials the number, with callerId only when given."""
    root = ET.fromstring(dial_twiml("+15551234567", caller_id="+15550001111"))
    dial = root.find("Dial")
    assert dial is not None
    assert (dial.text, dial.get("callerId")) == ("+15551234567", "+15550001111")
    dial = ET.fromstring(dial_twiml(" sip:agent@example.com ")).find("Dial")
    assert dial is not None
    assert (dial.text, dial.get("callerId")) == ("sip:agent@example.com", None)
    with pytest.raises(ConfigError):
        dial_twiml("  ")
