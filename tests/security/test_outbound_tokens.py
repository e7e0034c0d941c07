"""Outbound-call tokens: signed dial requests, the answer's lifetime, and the stream's binding to its call."""

from __future__ import annotations

import pytest

from gateway.errors import AuthError
from gateway.security.outbound_tokens import ANSWER_TTL_S, CALLBACK_TTL_S, OutboundTokens
from gateway.security.tokens import StreamTokens

SECRET = b"s" * 32
NOW = 1_800_000_000.0


def _issue(tokens: OutboundTokens, **over: object) -> str:
    fields: dict[str, object] = {
        "dialplan": "reminders",
        "to": "+15551230001",
        "from_": "+15550100100",
        "params": {"customer_name": "Ada", "note": "ünïcode {x}"},
        "now": NOW,
        "ring_timeout_s": 30.0,
    } | over
    return tokens.issue(**fields)  # type: ignore[arg-type]


def test_a_token_carries_the_dial_request() -> None:
    """What was signed comes back: plan, numbers, parameter values (any text), zone."""
    tokens = OutboundTokens(SECRET)
    claims = tokens.check(_issue(tokens, timezone="Europe/Paris"), now=NOW + 1)
    assert (claims.dialplan, claims.to, claims.from_) == ("reminders", "+15551230001", "+15550100100")
    assert dict(claims.params) == {"customer_name": "Ada", "note": "ünïcode {x}"}
    assert claims.timezone == "Europe/Paris"
    assert claims.call_sid is None


def test_forged_tampered_or_foreign_tokens_are_refused() -> None:
    """Another secret, a changed body or signature, a stream token, garbage: AuthError saying which."""
    tokens = OutboundTokens(SECRET)
    token = _issue(tokens)
    version, body, mac = token.split(".")
    other = OutboundTokens(b"t" * 32)
    with pytest.raises(AuthError, match="signature"):
        other.check(token, now=NOW)
    with pytest.raises(AuthError, match="signature"):
        tokens.check(f"{version}.{body[:-2]}AA.{mac}", now=NOW)
    stream = StreamTokens(SECRET).issue(call_sid="CA1", to="+1", from_="+2", now=NOW)
    with pytest.raises(AuthError, match="malformed"):
        tokens.check(stream, now=NOW)  # same secret, but a stream token is no outbound token
    for junk in ("", "x", "o1.a.b.c", "é" * 10, "o1." + "a" * 9000 + ".b"):
        with pytest.raises(AuthError):
            tokens.check(junk, now=NOW)


def test_the_answer_expires_after_the_ring_time_the_callbacks_after_a_day() -> None:
    """The answer URL is good for ring timeout + ANSWER_TTL_S; callbacks (max_age_s) for a day."""
    tokens = OutboundTokens(SECRET)
    token = _issue(tokens, ring_timeout_s=30.0)
    tokens.check(token, now=NOW + 30 + ANSWER_TTL_S - 1)
    with pytest.raises(AuthError, match="expired"):
        tokens.check(token, now=NOW + 30 + ANSWER_TTL_S + 1)
    tokens.check(token, now=NOW + 3600, max_age_s=CALLBACK_TTL_S)
    with pytest.raises(AuthError, match="expired"):
        tokens.check(token, now=NOW + CALLBACK_TTL_S + 1, max_age_s=CALLBACK_TTL_S)


def test_the_stream_token_is_bound_to_its_call() -> None:
    """bind() names the call SID: another call's stream, or an unbound answer token, is refused."""
    tokens = OutboundTokens(SECRET)
    claims = tokens.check(_issue(tokens), now=NOW)
    bound = tokens.bind(claims, "CA" + "1" * 32)
    assert tokens.check_stream(bound, call_sid="CA" + "1" * 32, now=NOW + 600).params == claims.params
    with pytest.raises(AuthError, match="another call"):
        tokens.check_stream(bound, call_sid="CA" + "2" * 32, now=NOW)
    with pytest.raises(AuthError, match="another call"):
        tokens.check_stream(_issue(tokens), call_sid="CA" + "1" * 32, now=NOW)
