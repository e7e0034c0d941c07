"""X-Twilio-Signature: matches Twilio's own RequestValidator, rejects tampering, compares in constant time."""

from __future__ import annotations

import hmac

import pytest
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from gateway.errors import ConfigError
from gateway.telephony import twilio_signature, verify_twilio_signature

TOKEN = "12345678901234567890123456789012"
FORM = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
    "Ünïcode": "välue ☎",
}

CASES = [
    ("https://mycompany.com/myapp.php?foo=1&bar=2", FORM),
    ("https://gw.example.com/twilio/voice", FORM),
    ("http://127.0.0.1:8080/twilio/voice", {"A": "1", "a": "2", "B": ""}),
    ("https://gw.example.com:8443/twilio/voice", FORM),
    ("wss://gw.example.com/twilio/media", None),
    ("https://gw.example.com/twilio/voice", {}),
]


@pytest.mark.parametrize(("url", "params"), CASES)
def test_signature_matches_twilios_validator(url: str, params: dict[str, str] | None) -> None:
    """Our signature equals RequestValidator.compute_signature and passes RequestValidator.validate."""
    validator = RequestValidator(TOKEN)
    ours = twilio_signature(TOKEN, url, params)
    assert ours == validator.compute_signature(url, params or {})
    assert validator.validate(url, params or {}, ours)
    assert verify_twilio_signature(TOKEN, url, params, ours)


def test_multivalued_parameters_match_twilio() -> None:
    """Repeated form names (aiohttp's MultiDict) sign like Twilio: names sorted, then values sorted."""
    params = MultiDict([("b", "2"), ("a", "z"), ("a", "y"), ("a", "y")])
    theirs = RequestValidator(TOKEN).compute_signature("https://h/v", params)
    assert twilio_signature(TOKEN, "https://h/v", params) == theirs


@pytest.mark.parametrize(("url", "params"), CASES[:4])
def test_tampering_fails(url: str, params: dict[str, str]) -> None:
    """A changed parameter, an added parameter, another URL or another token fails verification."""
    good = twilio_signature(TOKEN, url, params)
    assert not verify_twilio_signature(TOKEN, url, {**params, "To": "+19995550000"}, good)
    assert not verify_twilio_signature(TOKEN, url, {**params, "Extra": "1"}, good)
    assert not verify_twilio_signature(TOKEN, url + "x", params, good)
    assert not verify_twilio_signature(TOKEN[::-1], url, params, good)
    assert not verify_twilio_signature(TOKEN, url, params, good[:-2] + "AA")
    assert not verify_twilio_signature(TOKEN, url, params, "")
    assert not verify_twilio_signature(TOKEN, url, params, "☎ not base64")


@pytest.mark.parametrize(
    ("signed", "checked"),
    [
        ("https://h.example.com/twilio/voice", "https://h.example.com:443/twilio/voice"),
        ("https://h.example.com:443/twilio/voice", "https://h.example.com/twilio/voice"),
        ("http://h.example.com:80/twilio/voice", "http://h.example.com/twilio/voice"),
        ("wss://h.example.com/twilio/media", "wss://h.example.com:443/twilio/media"),
    ],
)
def test_port_variants_are_accepted(signed: str, checked: str) -> None:
    """A URL signed with or without the default port verifies either way, as Twilio's SDK allows."""
    assert verify_twilio_signature(TOKEN, checked, FORM, twilio_signature(TOKEN, signed, FORM))


def test_other_port_is_not_accepted() -> None:
    """Only the default port is interchangeable; another explicit port is a different URL."""
    sig = twilio_signature(TOKEN, "https://h.example.com:8443/v", FORM)
    assert not verify_twilio_signature(TOKEN, "https://h.example.com:9443/v", FORM, sig)


def test_constant_time_compare_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verification goes through hmac.compare_digest for every URL variant."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    url = "https://h.example.com/v"
    assert verify_twilio_signature(TOKEN, url, FORM, twilio_signature(TOKEN, url, FORM))
    assert len(calls) == 2


def test_empty_token_is_a_config_error() -> None:
    """An empty auth token raises ConfigError rather than signing with an empty key."""
    with pytest.raises(ConfigError):
        twilio_signature("", "https://h/v")
    with pytest.raises(ConfigError):
        verify_twilio_signature("", "https://h/v", None, "x")
