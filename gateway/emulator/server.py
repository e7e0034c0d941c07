"""The emulator's server: an aiohttp WebSocket endpoint on the Live API's real paths.

:class:`Emulator` owns the listening socket, the sessions, the resumption-handle store and the
frame waiters tests use. Everything a session does is in :mod:`gateway.emulator.session`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import ssl
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from aiohttp import web

from gateway.emulator.scenario import Scenario
from gateway.emulator.session import Conversation, EmulatedSession, RecordedFrame

log = logging.getLogger("gateway.emulator")

#: ``/ws/google.ai.generativelanguage.{version}.GenerativeService.{method}``; the Python SDK sends a
#: leading ``//`` when its base URL ends with ``/``.
_PATH = re.compile(
    r"/+ws/google\.ai\.generativelanguage\.(?P<version>v1|v1beta|v1alpha)\.GenerativeService\."
    r"(?P<method>BidiGenerateContent|BidiGenerateContentConstrained)"
)
LIVE_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
#: Vertex AI's Live path; google-genai uses v1beta1 by default.
_VERTEX_PATH = re.compile(
    r"/+ws/google\.cloud\.aiplatform\.(?P<version>v1|v1beta1)\.LlmBidiService/(?P<method>BidiGenerateContent)"
)
VERTEX_LIVE_PATH = "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent"
#: ``setup.model`` on Vertex: a publisher model's full resource name.
_VERTEX_MODEL = re.compile(
    r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/google/models/(?P<model>[^/]+)"
)
#: Served in regions only: on ``global`` setup is closed 1008 "Publisher model … was not found".
REGIONAL_ONLY_MODELS = frozenset({"gemini-live-2.5-flash-native-audio"})

#: Live model ids served today.
KNOWN_MODELS = frozenset(
    {
        "gemini-3.8-live",
        "gemini-3.8-live-extended-thinking",
        "gemini-3.1-flash-live-preview",
        "gemini-2.5-flash-native-audio-preview-12-2025",
        "gemini-2.5-flash-native-audio-preview-09-2025",
        "gemini-2.5-flash-native-audio-latest",
        "gemini-live-2.5-flash-native-audio",
        "gemini-live-2.5-flash",
        "gemini-3.5-live-translate-preview",
    }
)
#: Shut down on Dec 9 2025: the real service answers 1008 "not found".
RETIRED_MODELS = frozenset({"gemini-2.0-flash-live-001", "gemini-live-2.5-flash-preview"})

_MAX_HANDLES = 100_000


@dataclass(frozen=True, slots=True)
class Handshake:
    """One WebSocket upgrade on a Live path, as tests want to check it."""

    path: str
    dialect: Literal["gemini", "vertex"]
    #: The Vertex bearer token was accepted (always True on the Gemini API path: its key is checked later).
    authorized: bool
    #: ``x-goog-user-project``, the quota project a Vertex client names.
    user_project: str | None


class Emulator:
    """A local Gemini Live API server (see the package docstring for the behaviour).

    ``api_key=None`` accepts any key (or none); ``known_models=None`` accepts the ids in
    :data:`KNOWN_MODELS` plus any other ``gemini-…live…`` / ``…native-audio…`` id that is not retired.
    ``ephemeral_tokens`` lists the tokens ``BidiGenerateContentConstrained`` accepts (``None``: any
    token when ``api_key`` is ``None``, else only ``api_key``). ``record=False`` keeps no frames (load
    tests); :meth:`wait_for` still works for frames that arrive after it is called.

    The Vertex AI path (``/ws/google.cloud.aiplatform.{v1beta1|v1}.LlmBidiService/BidiGenerateContent``)
    is served too, in Vertex's dialect (see :class:`EmulatedSession`): ``access_tokens`` lists the
    bearer tokens it accepts, or is a callable deciding (e.g. :meth:`OAuthStandIn.token_ok
    <gateway.emulator.oauth.OAuthStandIn.token_ok>`); ``None`` accepts any. A refused token is answered
    401 before the upgrade; ``setup.model`` must be a ``projects/…/publishers/google/models/X`` name.
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        api_key: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        known_models: Collection[str] | None = None,
        ephemeral_tokens: Collection[str] | None = None,
        record: bool = True,
        compress: bool = True,
        handle_ttl_s: float = 7200.0,
        access_tokens: Collection[str] | Callable[[str], bool] | None = None,
    ) -> None:
        self.scenario = scenario if scenario is not None else Scenario()
        self._access_tokens = access_tokens
        #: Every upgrade request on a Live path, in order.
        self.handshakes: list[Handshake] = []
        self.scenario.validate()
        self.record = record
        self.sessions: list[EmulatedSession] = []
        self._api_key = api_key
        self._tokens = frozenset(ephemeral_tokens) if ephemeral_tokens is not None else None
        self._ssl = ssl_context
        self._known = (
            frozenset(m.removeprefix("models/") for m in known_models) if known_models is not None else None
        )
        self._compress = compress
        self._handle_ttl_s = handle_ttl_s
        self._handles: dict[str, Conversation] = {}
        self._waiters: list[tuple[Callable[[RecordedFrame], bool], asyncio.Future[RecordedFrame]]] = []
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._host = "127.0.0.1"
        self._port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 = an ephemeral port; read it back from :attr:`base_url`)."""
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=self._ssl)
        await site.start()
        self._runner = runner
        address = runner.addresses[0]
        self._host, self._port = host, int(address[1])

    async def stop(self) -> None:
        """Close every open session (1001) and stop listening."""
        open_sessions = [s for s in self.sessions if not s.closed.is_set()]
        await asyncio.gather(*(s.close(1001, "The emulator is shutting down.") for s in open_sessions))
        await asyncio.gather(*(s.closed.wait() for s in open_sessions))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for _, future in self._waiters:
            future.cancel()
        self._waiters.clear()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        """The Live API *base* URL (``ws://host:port``); clients append :data:`LIVE_PATH`."""
        scheme = "wss" if self._ssl is not None else "ws"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port}"

    # ------------------------------------------------------------------ control from tests

    def _session(self, index: int) -> EmulatedSession:
        try:
            return self.sessions[index]
        except IndexError:
            raise IndexError(f"no emulated session #{index} (have {len(self.sessions)})") from None

    def _own(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def inject_close(self, code: int, reason: str = "", *, session: int = -1) -> None:
        """Close a live session now (1006: drop the TCP connection without a close frame)."""
        self._own(self._session(session).inject_close(code, reason))

    def send_go_away(self, time_left_s: float, *, session: int = -1) -> None:
        """Send ``goAway {timeLeft}`` now; the session closes 1011 when the time is up."""
        self._own(self._session(session).go_away(time_left_s))

    async def wait_for(
        self,
        predicate: Callable[[RecordedFrame], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 - part of the agreed test API, mirrors asyncio.wait_for
    ) -> RecordedFrame:
        """The first recorded frame (any session, either direction) matching ``predicate``."""
        for session in self.sessions:
            for frame in session.frames:
                if predicate(frame):
                    return frame
        future: asyncio.Future[RecordedFrame] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"no matching frame within {timeout} s") from None
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    # ------------------------------------------------------------------ SessionHost

    def notify(self, frame: RecordedFrame) -> None:
        if not self._waiters:
            return
        for predicate, future in list(self._waiters):
            if not future.done() and predicate(frame):
                future.set_result(frame)

    def model_ok(self, model: str) -> bool:
        if not model.startswith("models/"):
            return False
        model_id = model.removeprefix("models/")
        if self._known is not None:
            return model_id in self._known
        if model_id in RETIRED_MODELS:
            return False
        if model_id in KNOWN_MODELS:
            return True
        return model_id.startswith("gemini-") and ("live" in model_id or "native-audio" in model_id)

    def vertex_model_ok(self, model: str) -> bool:
        """A Vertex ``setup.model``: a Google publisher model's resource name, served in its location."""
        match = _VERTEX_MODEL.fullmatch(model)
        if match is None:
            return False
        if match["location"] == "global" and match["model"] in REGIONAL_ONLY_MODELS:
            return False
        return self.model_ok(f"models/{match['model']}")

    def new_handle(self, conversation: Conversation) -> str:
        handle = secrets.token_urlsafe(24)
        if len(self._handles) >= _MAX_HANDLES:
            del self._handles[next(iter(self._handles))]
        self._handles[handle] = conversation
        return handle

    def resolve_handle(self, handle: str) -> Conversation | None:
        conversation = self._handles.get(handle)
        if conversation is None:
            return None
        ended = conversation.ended_at
        expired = ended is not None and time.monotonic() - ended > self._handle_ttl_s
        if conversation.open_session is None and expired:
            return None
        return conversation

    # ------------------------------------------------------------------ HTTP

    def _credential_ok(self, request: web.Request, constrained: bool) -> bool:
        header_key = request.headers.get("x-goog-api-key")
        if constrained:
            auth = request.headers.get("Authorization", "")
            token = request.query.get("access_token") or (auth[6:] if auth.startswith("Token ") else None)
            token = token or header_key
            if self._tokens is not None:
                return token in self._tokens
            return self._api_key is None or token == self._api_key
        if self._api_key is None:
            return True
        key = header_key or request.query.get("key")
        return key is not None and secrets.compare_digest(key.encode(), self._api_key.encode())

    def _bearer_ok(self, request: web.Request) -> bool:
        accepted = self._access_tokens
        if accepted is None:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        if callable(accepted):
            return accepted(token.strip())
        return token.strip() in accepted

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        match = _PATH.fullmatch(request.path)
        vertex = _VERTEX_PATH.fullmatch(request.path) if match is None else None
        if vertex is not None:
            authorized = self._bearer_ok(request)
            user_project = request.headers.get("x-goog-user-project")
            self.handshakes.append(Handshake(request.path, "vertex", authorized, user_project))
            if not authorized:
                # As Google's front end answers a REST call without valid OAuth2 credentials; that the
                # Live upgrade is refused the same way (not closed 1007 later) is [Unverified].
                raise web.HTTPUnauthorized(
                    text=json.dumps(_UNAUTHENTICATED),
                    content_type="application/json",
                    headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
                )
            match = vertex
        elif match is not None:
            self.handshakes.append(Handshake(request.path, "gemini", True, None))
        if match is None:
            if request.path == "/":
                return web.Response(text=f"Gemini Live emulator. Live API base URL: {self.base_url}\n")
            raise web.HTTPNotFound(text="Not Found: the emulator serves the Live API WebSocket paths only.\n")
        # Vertex's bearer token was checked before the upgrade; a Gemini API key is judged at setup.
        credential_ok = vertex is not None or self._credential_ok(
            request, match["method"].endswith("Constrained")
        )
        ws = web.WebSocketResponse(compress=self._compress, max_msg_size=16 * 1024 * 1024, timeout=5.0)
        if not ws.can_prepare(request).ok:
            raise web.HTTPBadRequest(text="This path expects a WebSocket upgrade.\n")
        await ws.prepare(request)
        session = EmulatedSession(
            index=len(self.sessions),
            ws=ws,
            transport=request.transport,
            host=self if vertex is None else _VertexHost(self),
            scenario=self.scenario,
            credential_ok=credential_ok,
            api_version=match["version"],
            dialect="gemini" if vertex is None else "vertex",
        )
        # What the client's upgrade carried, so tests can check how the credential travelled.
        session.handshake_path = request.path_qs
        session.handshake_headers = dict(request.headers)
        self.sessions.append(session)
        try:
            await session.run()
        except Exception:  # a bug in the emulator must not take the server down
            log.exception("emulated session failed", extra={"session": session.index})
            await session.close(1011, "Internal error encountered.")
        return ws


_UNAUTHENTICATED = {
    "error": {
        "code": 401,
        "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential.",
        "status": "UNAUTHENTICATED",
    }
}


class _VertexHost:
    """The emulator as a Vertex session sees it: the same handles, Vertex's model names."""

    def __init__(self, emulator: Emulator) -> None:
        self._emulator = emulator
        self.record = emulator.record

    def notify(self, frame: RecordedFrame) -> None:
        self._emulator.notify(frame)

    def model_ok(self, model: str) -> bool:
        return self._emulator.vertex_model_ok(model)

    def new_handle(self, conversation: Conversation) -> str:
        return self._emulator.new_handle(conversation)

    def resolve_handle(self, handle: str) -> Conversation | None:
        return self._emulator.resolve_handle(handle)
