"""The gateway's one exception tree.

::

    GatewayError
    ├── ConfigError                  settings or environment are wrong; fix and restart
    │   ├── DialplanError            a dialplan file is wrong; names the file and the field
    │   └── DialplanErrors           every DialplanError of a load at once (``errors``)
    ├── AudioError                   audio of the wrong shape (odd byte count, unsupported rate)
    ├── TelephonyProtocolError       the phone provider sent something malformed or out of order
    ├── AuthError                    a webhook signature or stream token did not verify
    ├── LiveProtocolError            Gemini (or the emulator) sent something we cannot handle
    ├── LiveSessionError             a Live session could not be opened or ended
    │   ├── LiveConnectError         never reached setupComplete
    │   │   └── LiveSessionNotFound  the resumption handle is unknown or expired: start a fresh session
    │   └── LiveSessionClosed        the socket closed; carries code, reason and `retryable`
    ├── ToolError                    raised by tool handlers; its message is safe to show the model
    └── RecordError                  the call-record store failed (disk, database); calls go on

Foreign exceptions (aiohttp, websockets, json) are translated into this tree where they enter,
with ``raise … from exc``, so callers never catch a library's exception type.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """Settings or environment are wrong."""


class DialplanError(ConfigError):
    """A dialplan is invalid. The message names the file and the field."""

    def __init__(self, file: str, field: str, problem: str) -> None:
        self.file = file
        self.field = field
        self.problem = problem
        super().__init__(f"{file}: {field}: {problem}")


class AudioError(GatewayError):
    """Audio of a shape the audio core cannot take."""


class TelephonyProtocolError(GatewayError):
    """The phone provider broke its media-stream protocol.

    ``close_code`` is the WebSocket close code the media socket should be closed with.
    """

    def __init__(self, message: str, *, close_code: int = 1008) -> None:
        self.close_code = close_code
        super().__init__(message)


class AuthError(GatewayError):
    """A webhook signature or a stream token failed verification."""


class LiveProtocolError(GatewayError):
    """The Live API server sent something we cannot handle."""


class LiveSessionError(GatewayError):
    """A Live session could not be opened, or ended."""

    retryable: bool = False


class LiveConnectError(LiveSessionError):
    """The session never reached ``setupComplete``."""

    def __init__(self, message: str, *, code: int | None = None, retryable: bool = False) -> None:
        self.code = code
        self.retryable = retryable
        super().__init__(message)


class LiveSessionClosed(LiveSessionError):
    """The Live socket closed. ``retryable`` says whether reconnecting can help."""

    def __init__(self, code: int | None, reason: str, *, retryable: bool) -> None:
        self.code = code
        self.reason = reason
        self.retryable = retryable
        super().__init__(f"Live session closed: code={code} reason={reason!r} retryable={retryable}")


class ToolError(GatewayError):
    """Raised by a tool handler; the message is sent to the model as the tool's error."""


class RecordError(GatewayError):
    """The call-record store could not read or write. Calls never end because of it."""


class DialplanErrors(ConfigError):
    """Every problem found while loading dialplans, so an operator fixes them all in one pass."""

    def __init__(self, errors: list[DialplanError]) -> None:
        self.errors = errors
        noun = "problem" if len(errors) == 1 else "problems"
        lines = "".join(f"\n  {error}" for error in errors)
        super().__init__(f"{len(errors)} dialplan {noun}:{lines}")


class LiveSessionNotFound(LiveConnectError):
    """Resuming failed: the server does not know the handle (close 1008 "session not found").

    Retrying with the same handle cannot help (``retryable`` is false); start a fresh session instead.
    """
