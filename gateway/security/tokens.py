"""Per-call stream tokens: the webhook vouches for a call, the media socket proves it.

Twilio drops query strings from stream URLs, so the token travels as a TwiML ``<Parameter>`` and
arrives in the media stream's ``start.customParameters``. A token is

* **signed**: HMAC-SHA256 with the gateway secret over its claims;
* **bound** to the call SID and the dialled number it was issued for;
* **short-lived**: it expires ``ttl_s`` after issue (Twilio connects within a second or two);
* **single-use**: its nonce is claimed in a :class:`ReplayGuard`, so a replay is refused. The guard
  is a one-method interface so that several processes can share one
  (:class:`gateway.security.replay.RedisReplayGuard`, Redis ``SET NX PX``);
* **one stream per call**: the call SID is claimed in the same guard for a day. Twilio's webhook
  signature has no timestamp, so a captured signed webhook can be replayed for ever, each time for
  a fresh token; this claim makes such a token worthless once the real call's stream has run (our
  TwiML has nothing after ``<Connect>``, so a call never streams twice).

The token logic is sans-I/O (the caller supplies the clock); only the replay claim is awaited,
because a shared guard is a network round trip.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import AuthError, ConfigError

TOKEN_PARAMETER = "token"
#: Real tokens are about 200 characters; a longer one is refused before any work is spent on it.
MAX_TOKEN_LENGTH = 1024
_VERSION = "v1"


@dataclass(frozen=True, slots=True)
class StreamClaims:
    """What a verified token says about its call."""

    call_sid: str
    to: str
    from_: str
    expires_at: float
    nonce: str


#: How long a call SID stays claimed after its stream started: past Twilio's longest call (24 h).
CALL_CLAIM_S = 86_400.0
_CALL_KEY = "call:"
_WEBHOOK_KEY = "webhook:"


class ReplayGuard(Protocol):
    """Remembers which keys (token nonces, call SIDs) have been used, at least until they expire."""

    async def claim(self, nonce: str, expires_at: float, now: float) -> bool:
        """Record ``nonce`` as used; False when it was already used.

        Raises:
            AuthError: the guard cannot tell (e.g. its store is unreachable): refuse the stream.
        """
        ...


class InMemoryReplayGuard:
    """Single-process replay guard; forgets each key once it has expired."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._seen: dict[str, float] = {}
        # Expiries in a heap: nonces live seconds and call SIDs a day, so insertion order is no guide.
        self._expiry: list[tuple[float, str]] = []
        self._max = max_entries

    async def claim(self, nonce: str, expires_at: float, now: float) -> bool:
        return self.claim_now(nonce, expires_at, now)

    def claim_now(self, nonce: str, expires_at: float, now: float) -> bool:
        """:meth:`claim` without the await (it never waits on anything)."""
        seen, expiry = self._seen, self._expiry
        while expiry and (expiry[0][0] <= now or len(seen) >= self._max):
            _, old = heapq.heappop(expiry)
            del seen[old]
        if nonce in seen:
            return False
        seen[nonce] = expires_at
        heapq.heappush(expiry, (expires_at, nonce))
        return True


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StreamTokens:
    """Issues and verifies stream tokens with one secret."""

    def __init__(
        self,
        secret: bytes,
        *,
        ttl_s: float = 30.0,
        guard: ReplayGuard | None = None,
        call_claim_s: float = CALL_CLAIM_S,
    ) -> None:
        if len(secret) < 16:
            raise ConfigError("GATEWAY_SECRET must be at least 16 bytes (e.g. `openssl rand -hex 32`)")
        self._secret = secret
        self.ttl_s = ttl_s
        self.call_claim_s = call_claim_s
        self._guard: ReplayGuard = guard if guard is not None else InMemoryReplayGuard()

    @property
    def guard(self) -> ReplayGuard:
        return self._guard

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode("ascii"), hashlib.sha256).digest())

    def issue(self, *, call_sid: str, to: str, from_: str, now: float) -> str:
        claims = {
            "c": call_sid,
            "t": to,
            "f": from_,
            "e": round(now + self.ttl_s, 3),
            "n": secrets.token_hex(8),
        }
        body = _VERSION + "." + _b64(json.dumps(claims, separators=(",", ":")).encode())
        return body + "." + self._mac(body)

    async def verify(self, token: str, *, call_sid: str, now: float) -> StreamClaims:
        """Check signature, binding, expiry, single use and one stream per call. Raises
        :class:`AuthError` saying which failed; the reason never repeats the token itself.
        """
        claims = self.check(token, call_sid=call_sid, now=now)
        if not await self._guard.claim(claims.nonce, claims.expires_at, now):
            raise AuthError("stream token was already used")
        await self.claim_stream(call_sid, now)
        return claims

    async def claim_stream(self, call_sid: str, now: float) -> None:
        """One media stream per call, for a day: also for streams without a token (a provider's static
        stream URL, authenticated by its upgrade), whose call SID is not bound to any webhook.

        Raises:
            AuthError: the call already had a stream, or the guard cannot tell.
        """
        if not await self._guard.claim(_CALL_KEY + call_sid, now + self.call_claim_s, now):
            raise AuthError("this call already had a media stream")

    async def first_webhook(self, call_sid: str, now: float) -> bool:
        """True the first time (in a day) a webhook for ``call_sid`` is seen, False for a repeat or when
        the guard cannot tell. Only a first webhook may open a Gemini session ahead of its stream: a
        replayed one must not spend anything (a Twilio retry just goes without the head start)."""
        try:
            return await self._guard.claim(_WEBHOOK_KEY + call_sid, now + self.call_claim_s, now)
        except AuthError:
            return False

    def check(self, token: str, *, call_sid: str, now: float) -> StreamClaims:
        """Everything :meth:`verify` checks except single use; does not consume the token."""
        if not token:  # a start without one: say so, rather than blame a token that was never sent
            raise AuthError("stream token is missing")
        # compare_digest refuses non-ASCII str, and attackers choose these strings: check first.
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise AuthError("stream token is malformed")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _VERSION:
            raise AuthError("stream token is malformed")
        body = parts[0] + "." + parts[1]
        if not hmac.compare_digest(self._mac(body), parts[2]):
            raise AuthError("stream token signature is invalid")
        try:
            raw = json.loads(_unb64(parts[1]))
            claims = StreamClaims(
                call_sid=str(raw["c"]),
                to=str(raw["t"]),
                from_=str(raw["f"]),
                expires_at=float(raw["e"]),
                nonce=str(raw["n"]),
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise AuthError("stream token claims are unreadable") from exc
        if not hmac.compare_digest(claims.call_sid.encode(), call_sid.encode()):
            raise AuthError("stream token was issued for another call")
        if now > claims.expires_at:
            raise AuthError("stream token has expired")
        return claims
