"""Stream tokens: signed, bound to the call, short-lived and single-use."""

from __future__ import annotations

import pytest

from gateway.errors import AuthError
from gateway.security.tokens import StreamTokens

SECRET = b"0123456789abcdef0123456789abcdef"
SID = "CA" + "1" * 32


def _tokens(ttl: float = 30.0) -> StreamTokens:
    return StreamTokens(SECRET, ttl_s=ttl)


def test_valid_token_verifies_once() -> None:
    """A fresh token for the right call verifies and yields its claims."""
    tokens = _tokens()
    token = tokens.issue(call_sid=SID, to="+15551230000", from_="+15550001111", now=100.0)
    claims = tokens.verify(token, call_sid=SID, now=101.0)
    assert (claims.to, claims.from_) == ("+15551230000", "+15550001111")


def test_replay_is_rejected() -> None:
    """The same token cannot open a second stream."""
    tokens = _tokens()
    token = tokens.issue(call_sid=SID, to="+1", from_="+2", now=0.0)
    tokens.verify(token, call_sid=SID, now=1.0)
    with pytest.raises(AuthError, match="already used"):
        tokens.verify(token, call_sid=SID, now=1.5)


def test_expired_token_is_rejected() -> None:
    """A token used after its lifetime fails."""
    tokens = _tokens(ttl=5.0)
    token = tokens.issue(call_sid=SID, to="+1", from_="+2", now=0.0)
    with pytest.raises(AuthError, match="expired"):
        tokens.verify(token, call_sid=SID, now=6.0)


def test_token_for_another_call_is_rejected() -> None:
    """A token is bound to the call SID it was issued for."""
    tokens = _tokens()
    token = tokens.issue(call_sid=SID, to="+1", from_="+2", now=0.0)
    with pytest.raises(AuthError, match="another call"):
        tokens.verify(token, call_sid="CA" + "2" * 32, now=1.0)


@pytest.mark.parametrize(
    "mutate", [lambda t: t[:-2] + "AA", lambda t: "v1.e30." + t.split(".")[2], lambda t: "junk"]
)
def test_tampered_or_malformed_token_is_rejected(mutate) -> None:  # type: ignore[no-untyped-def]
    """Changing any part of a token breaks it."""
    tokens = _tokens()
    token = tokens.issue(call_sid=SID, to="+1", from_="+2", now=0.0)
    with pytest.raises(AuthError):
        tokens.verify(mutate(token), call_sid=SID, now=1.0)


def test_token_from_another_secret_is_rejected() -> None:
    """A token signed with another gateway's secret fails."""
    other = StreamTokens(b"f" * 32)
    token = other.issue(call_sid=SID, to="+1", from_="+2", now=0.0)
    with pytest.raises(AuthError, match="signature"):
        _tokens().verify(token, call_sid=SID, now=1.0)
