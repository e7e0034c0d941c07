"""Signed tokens of outbound calls: what the gateway asked Twilio to dial, proved when Twilio calls back.

Placing a call hands Twilio three URLs of ours (the answer webhook, the status callback, the AMD
callback); each carries the same token in its query string. The token is the dial request itself —
dialplan name, parameter values, callee, caller id, when it was issued and a nonce — signed with
HMAC-SHA256 under a key derived from the gateway secret (so it can never pass for a stream token, and
any replica can check it). Twilio's ``X-Twilio-Signature`` proves the request came from Twilio; this
token proves *we* asked for that call and says how to run it.

* The answer webhook accepts a token for :data:`ANSWER_TTL_S` plus the ring timeout, once (its nonce is
  claimed in the replay guard by the caller); callbacks accept it for a day (a call's status arrives
  until it ends).
* The answer hands the media stream a second token, :meth:`OutboundTokens.bind`, that also names the
  call SID, so the stream of one call cannot run another call's plan.
* Parameter values are signed, not encrypted: they appear in the URLs Twilio logs. Keep secrets out
  of them (README, "Outbound calls").

Sans-I/O: the caller supplies the clock; only the replay claim (done by the caller) is awaited.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gateway.errors import AuthError

__all__ = ["ANSWER_TTL_S", "CALLBACK_TTL_S", "OutboundClaims", "OutboundTokens"]

_VERSION = "o1"
#: The query-string parameter carrying the token on Twilio's requests, and the stream ``<Parameter>``.
QUERY_PARAMETER = "t"
STREAM_PARAMETER = "outbound"
#: Beyond the ring timeout, how long Twilio may take to fetch the answer URL (queueing, retries).
ANSWER_TTL_S = 120.0
#: Status and AMD callbacks arrive until the call ends (Twilio's longest call: 24 h).
CALLBACK_TTL_S = 86_400.0
#: Longest token accepted (parameters are bounded: gateway/dialplan/outbound.py MAX_TOTAL_CHARS).
MAX_TOKEN_LENGTH = 8192


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class OutboundClaims:
    """What a verified outbound token says."""

    dialplan: str
    to: str
    from_: str
    issued_at: float
    nonce: str
    ring_timeout_s: float = 30.0
    params: Mapping[str, str] = field(default_factory=_empty, hash=False)
    #: The callee's time zone given with the call, if any.
    timezone: str | None = None
    #: Only on a stream token (:meth:`OutboundTokens.bind`).
    call_sid: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class OutboundTokens:
    """Issues and checks outbound-call tokens with a key derived from the gateway secret."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"gateway outbound-call token v1", hashlib.sha256).digest()

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())

    def _seal(self, claims: dict[str, object]) -> str:
        body = _VERSION + "." + _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
        return body + "." + self._mac(body)

    def issue(
        self,
        *,
        dialplan: str,
        to: str,
        from_: str,
        params: Mapping[str, str],
        now: float,
        ring_timeout_s: float = 30.0,
        timezone: str | None = None,
    ) -> str:
        """A token for one dial request."""
        claims: dict[str, object] = {
            "d": dialplan,
            "t": to,
            "f": from_,
            "p": dict(params),
            "i": round(now, 3),
            "r": ring_timeout_s,
            "n": secrets.token_hex(8),
        }
        if timezone:
            claims["z"] = timezone
        return self._seal(claims)

    def bind(self, claims: OutboundClaims, call_sid: str) -> str:
        """The stream's token: ``claims`` bound to the call SID Twilio gave the call."""
        doc: dict[str, object] = {
            "d": claims.dialplan,
            "t": claims.to,
            "f": claims.from_,
            "p": dict(claims.params),
            "i": claims.issued_at,
            "r": claims.ring_timeout_s,
            "n": claims.nonce,
            "c": call_sid,
        }
        if claims.timezone:
            doc["z"] = claims.timezone
        return self._seal(doc)

    def check(self, token: str, *, now: float, max_age_s: float | None = None) -> OutboundClaims:
        """The claims of a genuine token no older than ``max_age_s`` (default: ring timeout +
        :data:`ANSWER_TTL_S`, the answer webhook's limit).

        Raises:
            AuthError: missing, malformed, forged or expired; the reason never repeats the token.
        """
        if not token:
            raise AuthError("outbound token is missing")
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise AuthError("outbound token is malformed")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _VERSION:
            raise AuthError("outbound token is malformed")
        if not hmac.compare_digest(self._mac(parts[0] + "." + parts[1]), parts[2]):
            raise AuthError("outbound token signature is invalid")
        try:
            raw = json.loads(_unb64(parts[1]))
            params = raw["p"]
            if not isinstance(params, dict):
                raise TypeError("params")
            claims = OutboundClaims(
                dialplan=str(raw["d"]),
                to=str(raw["t"]),
                from_=str(raw["f"]),
                issued_at=float(raw["i"]),
                nonce=str(raw["n"]),
                ring_timeout_s=float(raw["r"]),
                params=MappingProxyType({str(k): str(v) for k, v in params.items()}),
                timezone=str(raw["z"]) if "z" in raw else None,
                call_sid=str(raw["c"]) if "c" in raw else None,
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise AuthError("outbound token claims are unreadable") from exc
        limit = claims.ring_timeout_s + ANSWER_TTL_S if max_age_s is None else max_age_s
        if now > claims.issued_at + limit:
            raise AuthError("outbound token has expired")
        return claims

    def check_stream(self, token: str, *, call_sid: str, now: float) -> OutboundClaims:
        """A stream token (:meth:`bind`) of ``call_sid``.

        Raises:
            AuthError: as :meth:`check`, or the token is for another call (or is not a stream token).
        """
        claims = self.check(token, now=now, max_age_s=CALLBACK_TTL_S)
        if claims.call_sid is None or not hmac.compare_digest(claims.call_sid.encode(), call_sid.encode()):
            raise AuthError("outbound stream token was issued for another call")
        return claims
