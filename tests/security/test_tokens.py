"""Stream tokens: signed, bound to the call, short-lived and single-use."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings, strategies as st

from gateway.errors import AuthError, ConfigError
from gateway.security.tokens import MAX_TOKEN_LENGTH, InMemoryReplayGuard, StreamTokens, _b64

SECRET = b"0123456789abcdef0123456789abcdef"
SID = "CA" + "1" * 32


def _tokens(ttl: float = 30.0) -> StreamTokens:
    return StreamTokens(SECRET, ttl_s=ttl)


async def test_valid_token_verifies_once() -> None:
    """A fresh token for the right call verifies and yields its claims."""
    tokens = _tokens()
    token = tokens.issue(call_sid=SID, to="+15551230000", from_="+15550001111", now=100.0)
    claims = await tokens.verify(token, call_sid=SID, now=101.0)
    assert (claims.call_sid, claims.to, claims.from_) == (SID, "+15551230000", "+15550001111")


async def test_replay_is_rejected() -> None:
    """The same token cannot open a second stream."""
    tokens = _tokens()
    token = tokens.issue(call_sid=SID, to="+1", from_="+2", now=0.0)
    await tokens.verify(token, call_sid=SID, now=1.0)
    with pytest.raises(AuthError, match="already used"):
        await tokens.verify(token, call_sid=SID, now=1.5)


async def test_a_call_streams_once_whatever_token_it_shows() -> None:
    """A second, valid token for a call whose stream already started (a replayed webhook) is refused,
    for the call-claim period; other calls are unaffected."""
    tokens = StreamTokens(SECRET, call_claim_s=3600.0)
    await tokens.verify(tokens.issue(call_sid=SID, to="+1", from_="+2", now=0.0), call_sid=SID, now=1.0)
    again = tokens.issue(call_sid=SID, to="+1", from_="+2", now=1000.0)
    with pytest.raises(AuthError, match="already had a media stream"):
        await tokens.verify(again, call_sid=SID, now=1001.0)
    other = "CA" + "2" * 32
    await tokens.verify(tokens.issue(call_sid=other, to="+1", from_="+2", now=1.0), call_sid=other, now=2.0)
    later = tokens.issue(call_sid=SID, to="+1", from_="+2", now=3700.0)
    await tokens.verify(later, call_sid=SID, now=3701.0)


async def test_only_a_calls_first_webhook_counts_as_first() -> None:
    tokens = StreamTokens(SECRET, call_claim_s=3600.0)
    assert await tokens.first_webhook(SID, now=0.0)
    assert not await tokens.first_webhook(SID, now=10.0)
    assert await tokens.first_webhook("CA" + "2" * 32, now=10.0)
    assert await tokens.first_webhook(SID, now=3700.0)


async def test_a_guard_that_cannot_answer_means_no_first_webhook() -> None:
    class Down:
        async def claim(self, nonce: str, expires_at: float, now: float) -> bool:
            raise AuthError("replay guard unavailable")

    assert not await StreamTokens(SECRET, guard=Down()).first_webhook(SID, now=0.0)


async def test_check_does_not_consume_the_token() -> None:
    """check() validates without claiming, so verify() still succeeds once afterwards."""
    tokens = _tokens()
    token = tokens.issue(call_sid=SID, to="+1", from_="+2", now=0.0)
    tokens.check(token, call_sid=SID, now=1.0)
    tokens.check(token, call_sid=SID, now=1.0)
    await tokens.verify(token, call_sid=SID, now=1.0)


async def test_expired_token_is_rejected() -> None:
    """A token used after its lifetime fails, even on its first use."""
    tokens = _tokens(ttl=5.0)
    token = tokens.issue(call_sid=SID, to="+1", from_="+2", now=0.0)
    with pytest.raises(AuthError, match="expired"):
        await tokens.verify(token, call_sid=SID, now=6.0)


async def test_token_for_another_call_is_rejected() -> None:
    """A token is bound to the call SID it was issued for."""
    tokens = _tokens()
    token = tokens.issue(call_sid=SID, to="+1", from_="+2", now=0.0)
    with pytest.raises(AuthError, match="another call"):
        await tokens.verify(token, call_sid="CA" + "2" * 32, now=1.0)


def _resign(token: str, change: Callable[[dict[str, object]], None], secret: bytes) -> str:
    """Rewrite a token's claims and sign them with ``secret`` (an attacker without ours cannot)."""
    version, body, _mac = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    change(claims)
    body = _b64(json.dumps(claims).encode())
    return f"{version}.{body}.{StreamTokens(secret)._mac(version + '.' + body)}"


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda t: t[:-2] + "AA", id="mac-changed"),
        pytest.param(lambda t: "v1.e30." + t.split(".")[2], id="claims-swapped"),
        pytest.param(lambda t: "junk", id="junk"),
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: "v2" + t[2:], id="version"),
        pytest.param(lambda t: t + ".x", id="extra-part"),
        pytest.param(lambda t: t[:-1] + "é", id="non-ascii"),
        pytest.param(lambda t: t + "A" * MAX_TOKEN_LENGTH, id="oversized"),
        pytest.param(lambda t: _resign(t, lambda c: c.update(c="CA" + "3" * 32), b"x" * 32), id="other-key"),
    ],
)
async def test_tampered_or_malformed_token_is_rejected(mutate: Callable[[str], str]) -> None:
    """Changing any part of a token breaks it, with AuthError and nothing else."""
    tokens = _tokens()
    token = tokens.issue(call_sid=SID, to="+1", from_="+2", now=0.0)
    with pytest.raises(AuthError):
        await tokens.verify(mutate(token), call_sid=SID, now=1.0)


async def test_changed_claims_break_the_signature() -> None:
    """Extending the expiry or re-binding the number without the secret fails the signature check."""
    tokens = _tokens()
    token = tokens.issue(call_sid=SID, to="+1", from_="+2", now=0.0)
    mac = token.split(".")[2]
    forged = _resign(token, lambda c: c.update(e=10**9, t="+19005550000"), b"y" * 32)
    with pytest.raises(AuthError, match="signature"):
        await tokens.verify(forged.rsplit(".", 1)[0] + "." + mac, call_sid=SID, now=1.0)


async def test_token_from_another_secret_is_rejected() -> None:
    """A token signed with another gateway's secret fails."""
    other = StreamTokens(b"f" * 32)
    token = other.issue(call_sid=SID, to="+1", from_="+2", now=0.0)
    with pytest.raises(AuthError, match="signature"):
        await _tokens().verify(token, call_sid=SID, now=1.0)


def test_short_secret_is_a_config_error() -> None:
    """A guessable stream-token secret is refused at start-up with a ConfigError."""
    with pytest.raises(ConfigError, match="16 bytes"):
        StreamTokens(b"short")


async def test_in_memory_guard_forgets_expired_nonces() -> None:
    """The in-memory guard drops nonces whose tokens expired, so it stays small."""
    guard = InMemoryReplayGuard()
    assert await guard.claim("a", expires_at=10.0, now=0.0)
    assert not await guard.claim("a", expires_at=10.0, now=5.0)
    assert await guard.claim("b", expires_at=30.0, now=20.0)
    assert len(guard._seen) == 1


async def test_in_memory_guard_forgets_short_keys_behind_long_ones() -> None:
    """A day-long call claim does not keep the seconds-long nonces claimed after it alive."""
    guard = InMemoryReplayGuard()
    assert await guard.claim("call:CA1", expires_at=86_400.0, now=0.0)
    for i in range(100):
        assert await guard.claim(f"nonce{i}", expires_at=i + 30.0, now=float(i))
    assert await guard.claim("last", expires_at=1030.0, now=1000.0)
    assert set(guard._seen) == {"call:CA1", "last"}
    assert not await guard.claim("call:CA1", expires_at=90_000.0, now=1000.0)


async def test_in_memory_guard_stays_bounded() -> None:
    guard = InMemoryReplayGuard(max_entries=10)
    for i in range(50):
        assert await guard.claim(f"n{i}", expires_at=1000.0 + i, now=0.0)
    assert len(guard._seen) == 10
    assert set(guard._seen) == {f"n{i}" for i in range(40, 50)}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.text(max_size=40))
def test_fuzz_arbitrary_tokens_and_call_sids_raise_only_auth_error(token: str, call_sid: str) -> None:
    """Any token and call SID an attacker makes up are refused with AuthError, never another exception."""
    with pytest.raises(AuthError):
        _tokens().check(token, call_sid=call_sid, now=1.0)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_tokens_raise_only_auth_error(data: st.DataObject) -> None:
    """A real token with characters replaced, inserted or deleted is refused with AuthError."""
    tokens = _tokens()
    token = tokens.issue(call_sid=SID, to="+15551230000", from_="+15550001111", now=0.0)
    i = data.draw(st.integers(0, len(token) - 1))
    op = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    ch = data.draw(st.characters())
    mutated = {
        "replace": token[:i] + ch + token[i + 1 :],
        "insert": token[:i] + ch + token[i:],
        "delete": token[:i] + token[i + 1 :],
    }[op]
    if mutated == token:
        return
    with pytest.raises(AuthError):
        tokens.check(mutated, call_sid=SID, now=1.0)


async def test_a_missing_token_is_reported_as_missing() -> None:
    """A start without a token says the token is missing, not that it is malformed."""
    with pytest.raises(AuthError, match="stream token is missing"):
        await _tokens().verify("", call_sid=SID, now=1.0)
