"""A local stand-in for Google's OAuth2 token endpoint: the service-account JWT-bearer grant.

google-auth turns a service-account key file into access tokens by POSTing
``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`` to the file's
``token_uri``; the JWT is RS256-signed with the account's private key and claims ``iss`` (the
account's e-mail), ``aud`` (Google's token URL), ``scope``, ``iat`` and ``exp`` (RFC 7523). This
server checks all of that as Google does: the signature against the account's registered public key,
the audience, the issuer, the time window and the scope. It answers like Google
(``{"access_token", "expires_in", "token_type": "Bearer"}``, or ``400 {"error": "invalid_grant"}``),
so the gateway's Vertex mode runs its real google-auth code against it. The emulator accepts the
tokens issued here (``Emulator(access_tokens=standin.token_ok)``).

:meth:`OAuthStandIn.service_account` writes a key file (a fresh RSA key) whose ``token_uri`` points
here. Serve it over TLS (:mod:`gateway.emulator.pki`) so google-auth verifies the certificate, as it
verifies Google's. Needs ``cryptography`` (installed with google-auth; imported only when used).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

__all__ = ["GOOGLE_TOKEN_AUDIENCE", "TOKEN_PATH", "IssuedToken", "OAuthStandIn"]

#: google-auth always claims this audience, whatever ``token_uri`` says (``service_account.py``).
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
TOKEN_PATH = "/token"
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Google refuses assertions valid for longer than an hour, and tolerates a little clock skew.
_MAX_ASSERTION_S = 3600
_SKEW_S = 60


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """An access token this server handed out."""

    value: str = field(repr=False)
    account: str
    scope: str
    issued_at: float  # time.time()
    expires_at: float


class _Refused(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


def _b64url(data: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _Refused(400, "invalid_grant", "Invalid JWT: bad base64.") from exc


class OAuthStandIn:
    """The token endpoint. ``token_lifetime_s`` is each token's ``expires_in``; ``delay_s`` holds every
    answer back (a slow token endpoint); ``refuse`` set to an OAuth2 error code (e.g.
    ``"invalid_grant"``) makes it answer 400 with it, and to ``"unavailable"`` 503."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        token_lifetime_s: int = 3600,
        delay_s: float = 0.0,
        scope: str = "https://www.googleapis.com/auth/cloud-platform",
    ) -> None:
        self.token_lifetime_s = token_lifetime_s
        self.delay_s = delay_s
        self.refuse: str | None = None
        self.scope = scope
        #: Every token issued, oldest first.
        self.issued: list[IssuedToken] = []
        #: Every request's outcome: ``"issued"`` or the error code sent back.
        self.outcomes: list[str] = []
        self._keys: dict[str, tuple[str, Any]] = {}  # client_email → (private_key_id, public key)
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self._host = "127.0.0.1"
        self._port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application()
        app.router.add_post(TOKEN_PATH, self._token)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, host, port, ssl_context=self._ssl).start()
        self._runner = runner
        self._host, self._port = host, int(runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OAuthStandIn:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def token_uri(self) -> str:
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{self._host}:{self._port}{TOKEN_PATH}"

    # ------------------------------------------------------------------ accounts and tokens

    def service_account(
        self,
        path: Path,
        *,
        project_id: str = "test-project",
        email: str | None = None,
    ) -> Path:
        """Write a service-account key file for a new account (fresh RSA-2048 key) and register its
        public key; ``token_uri`` points here. Returns ``path``. (A quota project comes from
        ``GOOGLE_CLOUD_QUOTA_PROJECT``, as google-auth reads it, not from the file.)"""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_id = secrets.token_hex(20)
        email = email or f"gateway-{secrets.token_hex(3)}@{project_id}.iam.gserviceaccount.com"
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")
        info: dict[str, Any] = {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": email,
            "client_id": str(secrets.randbelow(10**20)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "universe_domain": "googleapis.com",
        }
        path.write_text(json.dumps(info, indent=2))
        path.chmod(0o600)
        self._keys[email] = (key_id, key.public_key())
        return path

    def token_ok(self, token: str) -> bool:
        """True for a token issued here that has not expired (the emulator's bearer check)."""
        now = time.time()
        return any(
            secrets.compare_digest(t.value.encode(), token.encode()) and now < t.expires_at
            for t in self.issued
        )

    # ------------------------------------------------------------------ HTTP

    async def _token(self, request: web.Request) -> web.Response:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        try:
            if self.refuse == "unavailable":
                raise _Refused(503, "unavailable", "The service is currently unavailable.")
            if self.refuse:
                raise _Refused(400, self.refuse, "Refused by the stand-in.")
            form = await request.post()
            if form.get("grant_type") != _JWT_BEARER:
                raise _Refused(400, "unsupported_grant_type", "Invalid grant_type.")
            assertion = form.get("assertion")
            if not isinstance(assertion, str):
                raise _Refused(400, "invalid_request", "Missing required parameter: assertion")
            account, scope = self._verify(assertion)
        except _Refused as refused:
            self.outcomes.append(refused.error)
            body = {"error": refused.error, "error_description": refused.description}
            return web.json_response(body, status=refused.status)
        now = time.time()
        token = IssuedToken(
            "standin." + secrets.token_urlsafe(32), account, scope, now, now + self.token_lifetime_s
        )
        self.issued.append(token)
        self.outcomes.append("issued")
        return web.json_response(
            {"access_token": token.value, "expires_in": self.token_lifetime_s, "token_type": "Bearer"}
        )

    def _verify(self, assertion: str) -> tuple[str, str]:
        """Check an RS256 JWT-bearer assertion; return (account, scope)."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        parts = assertion.split(".")
        if len(parts) != 3:
            raise _Refused(400, "invalid_grant", "Invalid JWT: not three segments.")
        try:
            header = json.loads(_b64url(parts[0]))
            claims = json.loads(_b64url(parts[1]))
        except ValueError as exc:
            raise _Refused(400, "invalid_grant", "Invalid JWT: bad JSON.") from exc
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise _Refused(400, "invalid_grant", "Invalid JWT: not an object.")
        if header.get("alg") != "RS256":
            raise _Refused(400, "invalid_grant", "Invalid JWT: the algorithm must be RS256.")
        account = claims.get("iss")
        known = self._keys.get(account) if isinstance(account, str) else None
        if known is None or not isinstance(account, str):
            raise _Refused(400, "invalid_grant", "Invalid JWT: unknown issuer.")
        key_id, public_key = known
        if header.get("kid") not in (None, key_id):
            raise _Refused(400, "invalid_grant", "Invalid JWT: unknown key id.")
        try:
            public_key.verify(
                _b64url(parts[2]),
                f"{parts[0]}.{parts[1]}".encode("ascii"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, UnicodeEncodeError) as exc:
            raise _Refused(400, "invalid_grant", "Invalid JWT Signature.") from exc
        if claims.get("aud") not in (GOOGLE_TOKEN_AUDIENCE, self.token_uri):
            raise _Refused(400, "invalid_grant", "Invalid JWT: wrong audience.")
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            raise _Refused(400, "invalid_grant", "Invalid JWT: iat and exp are required.")
        if iat > now + _SKEW_S or exp <= now - _SKEW_S or exp - iat > _MAX_ASSERTION_S:
            raise _Refused(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token.")
        scope = claims.get("scope")
        if not isinstance(scope, str) or self.scope not in scope.split():
            raise _Refused(400, "invalid_scope", f"The assertion must ask for {self.scope}.")
        return account, scope
