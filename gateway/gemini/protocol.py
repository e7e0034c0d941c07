"""The Live session state machine and close-code classification, without I/O.

Rules (docs/gemini-live.md §2.1, §3.6, §5.3):

* ``setup`` is the first and only setup message; nothing else may be sent before ``setupComplete``;
* the first server message must be ``setupComplete``;
* the only handle worth resuming with is the latest one that came with ``resumable: true``;
* errors arrive as close frames; the code and the phase decide whether reconnecting can help.

States: ``CONNECTING → SETUP_SENT → READY → CLOSED``. Everything that changes the state lives here;
:mod:`gateway.gemini.session` only moves bytes.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Sequence

from gateway.errors import (
    LiveConnectError,
    LiveProtocolError,
    LiveSessionClosed,
    LiveSessionError,
    LiveSessionNotFound,
)
from gateway.gemini.messages import (
    FunctionResponse,
    ServerEvent,
    SessionConfig,
    SessionResumptionUpdate,
    SetupComplete,
    encode_activity_end,
    encode_activity_start,
    encode_audio_stream_end,
    encode_client_content,
    encode_realtime_audio,
    encode_realtime_text,
    encode_tool_response,
    parse_server_message,
    setup_message,
)
from gateway.gemini.models import capabilities

__all__ = ["LiveProtocol", "LiveState", "classify_close"]

#: Close codes after which a new connection (resuming if a handle exists) can succeed.
#: 1001 going away, 1006 dropped, 1011 internal/unavailable/deadline, 1012 restart, 1013 try later,
#: 1014 bad gateway (a proxy in between).
RETRYABLE_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})

_NOT_FOUND = "session not found"


class LiveState(enum.Enum):
    """Where a Live connection is in its life."""

    CONNECTING = "connecting"
    SETUP_SENT = "setup_sent"
    READY = "ready"
    CLOSED = "closed"


def classify_close(code: int | None, reason: str, *, during_setup: bool) -> LiveSessionError:
    """Turn a close (code, reason) into the error a caller should see.

    ``code`` is ``None`` (or 1006) when the connection dropped without a close frame. Before
    ``setupComplete`` the result is a :class:`LiveConnectError`: 1007 (bad argument or API key) and 1008
    (unknown model, policy) are not retryable, and 1008 "session not found" is a
    :class:`LiveSessionNotFound` (resume failed: start fresh). After it, the result is a
    :class:`LiveSessionClosed`. A 1000 close *from the server* in mid-session is retryable too: the
    service ends connections with a clean close ("The operation was cancelled."), and for a phone call
    that is a loss to recover from (resume, else fallback), never a reason for dead air or a hang-up.
    """
    effective = 1006 if code is None else code
    retryable = effective in RETRYABLE_CODES or (effective == 1000 and not during_setup)
    if during_setup:
        detail = f"Live setup failed: close {effective}" + (f" {reason!r}" if reason else "")
        if effective == 1008 and _NOT_FOUND in reason.lower():
            return LiveSessionNotFound(detail, code=effective, retryable=False)
        return LiveConnectError(detail, code=effective, retryable=retryable)
    return LiveSessionClosed(effective, reason, retryable=retryable)


class LiveProtocol:
    """Sans-I/O Live client: hands out the text to send, takes frames received, tracks state.

    Send methods return the text frame to write and raise :class:`LiveSessionError` before
    ``setupComplete`` or after the close, so a premature send is impossible rather than a silent
    protocol violation (the server would close 1007).
    """

    __slots__ = ("_handle", "_scheduling", "config", "state", "vertex")

    def __init__(self, config: SessionConfig, *, vertex: bool = False) -> None:
        self.config = config
        #: Vertex AI's dialect: tool responses without ``scheduling``/``willContinue``, no ``audioStreamEnd``.
        self.vertex = vertex
        self.state = LiveState.CONNECTING
        # Whether FunctionResponse.scheduling/willContinue are read by this model (gemini/models.py).
        self._scheduling = capabilities(config.model).scheduling
        # Start from the handle we resume with: if this connection dies before the server sends a
        # new resumable point, the old handle is still the right one.
        self._handle: str | None = config.resumption_handle

    @property
    def resumption_handle(self) -> str | None:
        """The latest handle that came with ``resumable: true`` (or the one we resumed with)."""
        return self._handle

    def setup(self) -> str:
        """Return the ``setup`` frame. Only once, first."""
        if self.state is not LiveState.CONNECTING:
            raise LiveSessionError(f"setup already sent (state {self.state.value})")
        self.state = LiveState.SETUP_SENT
        return _json(setup_message(self.config))

    def receive(self, data: str | bytes) -> list[ServerEvent]:
        """Feed one received frame; return its events.

        Raises :class:`LiveProtocolError` for a malformed frame, or when the first message is not
        ``setupComplete``. Frames after the close are ignored.
        """
        state = self.state
        if state is LiveState.CLOSED:
            return []
        if state is LiveState.CONNECTING:
            raise LiveProtocolError("server message before setup was sent")
        events = parse_server_message(data)
        if state is LiveState.SETUP_SENT:
            if not events or not isinstance(events[0], SetupComplete):
                raise LiveProtocolError("first server message was not setupComplete")
            self.state = LiveState.READY
        for event in events:
            if type(event) is SessionResumptionUpdate and event.resumable and event.new_handle:
                self._handle = event.new_handle
        return events

    def closed(self, code: int | None, reason: str) -> LiveSessionError:
        """Record that the socket closed; return the error describing it (see :func:`classify_close`)."""
        during_setup = self.state is not LiveState.READY and self.state is not LiveState.CLOSED
        self.state = LiveState.CLOSED
        return classify_close(code, reason, during_setup=during_setup)

    def _require_ready(self) -> None:
        if self.state is not LiveState.READY:
            raise LiveSessionError(f"cannot send in state {self.state.value}: wait for setupComplete")

    def audio(self, pcm: bytes, rate: int = 16000) -> str:
        """``realtimeInput.audio`` frame for PCM16 mono."""
        if self.state is not LiveState.READY:
            self._require_ready()
        return encode_realtime_audio(pcm, rate)

    def text(self, text: str) -> str:
        """``realtimeInput.text`` frame."""
        self._require_ready()
        return encode_realtime_text(text)

    def audio_stream_end(self) -> str:
        """``realtimeInput.audioStreamEnd`` frame (automatic activity detection only, §2.4)."""
        self._require_ready()
        if self.config.vad.disabled:
            raise LiveSessionError("audioStreamEnd is only valid with automatic activity detection")
        if self.vertex:
            # google-genai refuses it in Vertex mode (_live_converters._LiveClientRealtimeInput_to_vertex).
            raise LiveSessionError("audioStreamEnd is not supported on Vertex AI")
        return encode_audio_stream_end()

    def activity_start(self) -> str:
        """``realtimeInput.activityStart`` frame (manual activity detection only, §2.4)."""
        self._require_ready()
        if not self.config.vad.disabled:
            raise LiveSessionError("activityStart is only valid with automatic activity detection disabled")
        return encode_activity_start()

    def activity_end(self) -> str:
        """``realtimeInput.activityEnd`` frame (manual activity detection only, §2.4)."""
        self._require_ready()
        if not self.config.vad.disabled:
            raise LiveSessionError("activityEnd is only valid with automatic activity detection disabled")
        return encode_activity_end()

    def client_content(self, turns: Sequence[tuple[str, str]], turn_complete: bool = True) -> str:
        """``clientContent`` frame."""
        self._require_ready()
        return encode_client_content(turns, turn_complete)

    def tool_response(self, responses: Sequence[FunctionResponse]) -> str:
        """``toolResponse`` frame. ``scheduling`` and ``willContinue`` are left out for a model that
        does not read them (3.1, extended thinking): sending what a model does not support is how a
        session gets closed with 1007."""
        self._require_ready()
        # Vertex drops scheduling (docs/gemini-live.md §2.5, §6) and google-genai refuses willContinue there.
        if (self.vertex or not self._scheduling) and any(
            r.scheduling is not None or r.will_continue is not None for r in responses
        ):
            responses = [dataclasses.replace(r, scheduling=None, will_continue=None) for r in responses]
        return encode_tool_response(responses)


def _json(doc: object) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
