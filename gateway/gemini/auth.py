"""Credentials for the Live socket's handshake: an API key header, or a Vertex AI bearer token.

Vertex AI wants ``Authorization: Bearer <OAuth2 access token>`` (plus ``x-goog-user-project`` when the
credentials name a quota project, as the google-genai SDK sends it) from Application Default
Credentials: the service-account key file ``GOOGLE_APPLICATION_CREDENTIALS`` names, gcloud's user
credentials, or the metadata server on Google Cloud. google-auth finds and refreshes them; it is
imported here only, and only in Vertex mode (``pip install 'gemini-phone-gateway[vertex]'``).

Why a background refresher: google-auth refreshes with blocking HTTP (``requests``) and a token lives
about an hour. Refreshing on the event loop would stall every call's audio; refreshing at connect
time would delay a call's first words. So one task per gateway fetches tokens in a worker thread
(:func:`asyncio.to_thread`) and replaces each well before it expires; :meth:`VertexCredentials.headers`
answers at once and waits only when there is no usable token yet (the first call after start, or
after the token endpoint has failed for so long that the token ran out).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from gateway.errors import ConfigError, GatewayError, LiveConnectError
from gateway.log import add_secrets, forget_secrets

__all__ = [
    "CLOUD_PLATFORM_SCOPE",
    "AccessToken",
    "ApiKeyHeaders",
    "CredentialSource",
    "TokenFetcher",
    "VertexCredentials",
    "load_application_default",
]

_LOG = logging.getLogger("gateway.gemini.auth")

#: The scope the google-genai SDK asks ADC for in Vertex mode (``_api_client.load_auth``).
CLOUD_PLATFORM_SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
#: A token is replaced this long before it expires (half its life when it lives shorter than twice this).
REFRESH_AHEAD_S: Final = 300.0
#: A token this close to its expiry is not handed to a new connection (a tenth of its life when shorter).
HANDSHAKE_MARGIN_S: Final = 10.0
#: One HTTP exchange with the token endpoint or the metadata server (google-auth's default is 120 s).
TOKEN_HTTP_TIMEOUT_S: Final = 10.0
#: Failed fetches are retried after 1, 2, 4 … s, at most this far apart.
RETRY_MAX_S: Final = 30.0
#: Calls asking for a token while none is usable wake the refresher, but not more often than this.
MIN_ATTEMPT_GAP_S: Final = 1.0
#: Assumed lifetime when the credentials do not say when their token expires.
DEFAULT_LIFETIME_S: Final = 3600.0


class CredentialSource(Protocol):
    """Where a Live connection's handshake headers come from."""

    async def headers(self) -> dict[str, str]:
        """The headers for one handshake; may wait for a first token, never for a refresh."""
        ...

    async def start(self) -> None:
        """Get ready before the first call (find the credentials; start refreshing)."""
        ...

    async def aclose(self) -> None:
        """Stop background work."""
        ...


@dataclass(frozen=True)
class ApiKeyHeaders:
    """The Gemini API's credential: ``x-goog-api-key``, as the Python SDK sends it."""

    api_key: str = field(repr=False)

    async def headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.api_key}

    async def start(self) -> None:
        add_secrets([self.api_key])

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class AccessToken:
    """One OAuth2 access token. Times are wall-clock seconds (``time.time()``), as expiries are."""

    value: str = field(repr=False)
    expires_at: float
    obtained_at: float
    #: The project billed for quota when it is not the one in the URL (``x-goog-user-project``).
    quota_project: str | None = None

    @property
    def lifetime_s(self) -> float:
        return max(0.0, self.expires_at - self.obtained_at)

    def usable(self, now: float) -> bool:
        """Still good for a handshake starting ``now``."""
        return now < self.expires_at - min(HANDSHAKE_MARGIN_S, self.lifetime_s / 10)

    @property
    def refresh_at(self) -> float:
        """When to fetch the next one: :data:`REFRESH_AHEAD_S` early, or half-way for short tokens."""
        return self.expires_at - min(REFRESH_AHEAD_S, self.lifetime_s / 2)

    def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.value}"}
        if self.quota_project:
            headers["x-goog-user-project"] = self.quota_project
        return headers


class TokenFetcher(Protocol):
    """Blocking token source; runs in a worker thread, one fetch at a time."""

    def fetch(self) -> AccessToken: ...

    def close(self) -> None: ...


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """google-auth errors carry tuples and multi-line text; log and raise one short line."""
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _AdcFetcher:
    """google-auth credentials plus the HTTP transport their refresh uses."""

    def __init__(self, credentials: Any, request: Any) -> None:
        self._credentials = credentials
        self._request = request

    def _http(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        # google-auth calls the transport with its own 120 s default; a token request that slow is dead.
        return self._request(
            url, method=method, body=body, headers=headers, timeout=timeout or TOKEN_HTTP_TIMEOUT_S, **kwargs
        )

    def fetch(self) -> AccessToken:
        from google.auth import exceptions as auth_errors

        started = time.time()
        creds = self._credentials
        try:
            creds.refresh(self._http)
        except auth_errors.RefreshError as exc:
            # google-auth marks 5xx/429-like refusals retryable; invalid_grant and friends are not.
            retryable = bool(getattr(exc, "retryable", False))
            raise LiveConnectError(
                f"Vertex AI: the token endpoint refused an access token: {_one_line(exc)}",
                retryable=retryable,
            ) from exc
        except auth_errors.TransportError as exc:
            raise LiveConnectError(
                f"Vertex AI: the token endpoint could not be reached: {_one_line(exc)}", retryable=True
            ) from exc
        except (auth_errors.GoogleAuthError, ValueError, OSError) as exc:
            raise LiveConnectError(
                f"Vertex AI: getting an access token failed: {type(exc).__name__}: {_one_line(exc)}",
                retryable=True,
            ) from exc
        token = creds.token
        if not isinstance(token, str) or not token:
            raise LiveConnectError(
                "Vertex AI: the credentials refreshed without an access token", retryable=True
            )
        expiry = creds.expiry  # naive UTC datetime (google-auth's convention), or None
        if isinstance(expiry, datetime.datetime):
            expires_at = expiry.replace(tzinfo=datetime.UTC).timestamp()
        else:
            expires_at = started + DEFAULT_LIFETIME_S
        quota = getattr(creds, "quota_project_id", None)
        return AccessToken(token, expires_at, started, quota if isinstance(quota, str) and quota else None)

    def close(self) -> None:
        session = getattr(self._request, "session", None)
        if session is not None:
            session.close()


def load_application_default(scopes: tuple[str, ...] = (CLOUD_PLATFORM_SCOPE,)) -> TokenFetcher:
    """Find Application Default Credentials, as the google-genai SDK does. Blocking: run it in a thread.

    Raises:
        ConfigError: google-auth is not installed, or no usable credentials were found (no
            ``GOOGLE_APPLICATION_CREDENTIALS``, an unreadable or malformed key file, no metadata server).
    """
    try:
        import google.auth
        from google.auth import exceptions as auth_errors
        from google.auth.transport.requests import Request
    except ImportError as exc:
        raise ConfigError(
            "Vertex AI mode needs google-auth and requests: pip install 'gemini-phone-gateway[vertex]'"
        ) from exc
    try:
        credentials, _project = google.auth.default(scopes=list(scopes))
    except auth_errors.DefaultCredentialsError as exc:
        raise ConfigError(
            f"Vertex AI: no usable Application Default Credentials ({_one_line(exc, 200)}); set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or attach a service account"
        ) from exc
    except (auth_errors.GoogleAuthError, ValueError, OSError) as exc:
        raise ConfigError(f"Vertex AI: loading credentials failed: {_one_line(exc, 200)}") from exc
    return _AdcFetcher(credentials, Request())


class VertexCredentials:
    """Vertex AI bearer tokens from ADC, refreshed in the background before they expire.

    ``loader`` finds the credentials (blocking; default :func:`load_application_default`). Tokens are
    registered with :func:`gateway.log.add_secrets` as they arrive, so none reaches a log line.
    """

    def __init__(self, loader: Callable[[], TokenFetcher] = load_application_default) -> None:
        self._loader = loader
        self._fetcher: TokenFetcher | None = None
        self._token: AccessToken | None = None
        self._previous: AccessToken | None = None  # still masked in logs; it may be in use for a while
        self._error: GatewayError | None = None
        self._task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._attempt_done = asyncio.Event()
        self._closed = False
        #: Finished fetch attempts, successful or not (for tests and metrics).
        self.attempts = 0
        self.fetched = 0

    @property
    def token(self) -> AccessToken | None:
        """The current token, if any (may be unusable when refreshing keeps failing)."""
        return self._token

    async def start(self) -> None:
        """Find the credentials now, so a missing or broken ADC stops the gateway at start-up with a
        :class:`ConfigError`; then fetch the first token in the background."""
        if self._fetcher is None:
            self._fetcher = await asyncio.to_thread(self._loader)
        self._ensure_running()

    async def headers(self) -> dict[str, str]:
        """``Authorization`` (and ``x-goog-user-project``) for one handshake.

        Returns at once while the current token is usable. Without one it wakes the refresher and
        waits for its next attempt; if that fails, raises its error (:class:`LiveConnectError`, or
        :class:`ConfigError` when no credentials can be found).
        """
        token = self._token
        if token is not None and token.usable(time.time()):
            return token.headers()
        if self._closed:
            raise LiveConnectError("Vertex AI credentials are closed", retryable=False)
        self._ensure_running()
        done = self._attempt_done
        self._kick.set()
        await done.wait()
        token = self._token
        if token is not None and token.usable(time.time()):
            return token.headers()
        if self._error is not None:
            raise self._error
        raise LiveConnectError("Vertex AI: no usable access token", retryable=True)

    async def aclose(self) -> None:
        """Stop refreshing and release the HTTP session."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        fetcher, self._fetcher = self._fetcher, None
        if fetcher is not None:
            await asyncio.to_thread(fetcher.close)
        self._attempt_done.set()  # nobody waits for an attempt that will not come

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="vertex-token-refresh")

    async def _run(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if self._fetcher is None:
                    self._fetcher = await asyncio.to_thread(self._loader)
                token = await asyncio.to_thread(self._fetcher.fetch)
            except GatewayError as exc:
                failures += 1
                self._error = exc
                delay = min(RETRY_MAX_S, 2.0 ** (failures - 1))
                _LOG.warning(
                    "vertex access token not obtained",
                    extra={"error": str(exc), "failures": failures, "retry_in_s": delay},
                )
            except Exception as exc:  # a bug must not end refreshing silently: every later call would wait
                failures += 1
                self._error = LiveConnectError(f"Vertex AI: token refresh failed: {exc!r}", retryable=True)
                delay = min(RETRY_MAX_S, 2.0 ** (failures - 1))
                _LOG.exception("vertex access token refresh crashed")
            else:
                add_secrets([token.value])  # before anything can log a header holding it
                failures = 0
                older, self._previous = self._previous, self._token
                self._token, self._error = token, None
                # The token before the previous one has expired (each is replaced 5 min early); the
                # metadata server may hand out the same value again, which must stay masked.
                live = {token.value} | ({self._previous.value} if self._previous is not None else set())
                if older is not None and older.value not in live:
                    forget_secrets([older.value])
                self.fetched += 1
                delay = token.refresh_at - time.time()
                _LOG.info(
                    "vertex access token obtained",
                    extra={
                        "expires_in_s": round(token.expires_at - time.time()),
                        "refresh_in_s": round(delay),
                    },
                )
            self.attempts += 1
            finished = loop.time()
            done, self._attempt_done = self._attempt_done, asyncio.Event()
            self._kick.clear()
            done.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, delay)):
                    await self._kick.wait()
            gap = finished + MIN_ATTEMPT_GAP_S - loop.time()
            if gap > 0:
                await asyncio.sleep(gap)
