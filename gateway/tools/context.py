"""What a tool handler knows about its call, and how it acts on it.

A handler that declares a parameter annotated :class:`CallContext` receives one; it is never part
of the schema the model sees. The context is read-only apart from :attr:`CallContext.control`,
the narrow set of actions a tool may take on the phone call (end it, transfer it, send tones).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.log import CallLogger

if TYPE_CHECKING:
    import aiohttp


#: The id of the function call a handler is running for (set by the router in the handler's task).
FUNCTION_CALL_ID: ContextVar[str] = ContextVar("function_call_id", default="")


class CallControl(Protocol):
    """Actions on the phone call. Implemented by :class:`gateway.bridge.control.BridgeControl`."""

    @property
    def ending(self) -> bool:
        """Whether the call is already on its way out (hang-up or transfer requested)."""
        ...

    def end_call(self, reason: str) -> None:
        """Hang up once everything the bot has said (and is still saying) has been heard."""
        ...

    async def transfer(self, number: str, *, label: str, by: str = "gateway") -> None:
        """Hand the call to ``number`` after the bot's last words are heard.

        ``label`` names the target in logs and the call record; ``by`` is who ended the call
        (``"bot"`` when the model asked for it, ``"gateway"`` for limits and fallbacks).

        Raises:
            ToolError: transfers are not configured, or the provider refused (safe for the model).
        """
        ...

    async def send_dtmf(self, digits: str) -> None:
        """Play ``digits`` as in-band DTMF tones to the far end; returns once they have played.

        Raises:
            ToolError: ``digits`` holds something other than 0-9, *, #, A-D or ``w`` (a pause).
        """
        ...


@dataclass(frozen=True, slots=True)
class CallContext:
    """The call a tool runs for. ``metadata`` is the dialplan's ``[metadata]`` table (read-only)."""

    call_id: str
    from_: str
    to: str
    dialplan: str
    control: CallControl
    log: CallLogger
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: Target name → E.164 number, from the dialplan's ``[transfer]`` table.
    transfer_targets: Mapping[str, str] = field(default_factory=dict)
    #: The gateway's shared HTTP client (pooled connections); ``None`` outside a running server.
    http: aiohttp.ClientSession | None = None

    def public(self) -> dict[str, Any]:
        """The context as JSON for an HTTP tool: identities and metadata, nothing secret."""
        return {
            "call_id": self.call_id,
            "from": self.from_,
            "to": self.to,
            "dialplan": self.dialplan,
            "metadata": _plain(self.metadata),
        }


def _plain(value: Any) -> Any:
    """Read-only mappings (MappingProxyType) → dicts, so ``json`` can encode dialplan metadata."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
