"""What call control needs of a provider's REST API: hang up a live call, and transfer it.

Each provider's client (``gateway/tools/twilio_rest.py`` and the others) implements this; the bridge's
call control (``gateway/bridge/control.py``) only sees the protocol. A failure raises
:class:`~gateway.errors.ToolError` with a message safe to show the model.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["CallControlRest"]


class CallControlRest(Protocol):
    async def transfer(self, call_sid: str, number: str) -> None:
        """Move the live call to ``number`` (the provider ends the media stream)."""
        ...

    async def hang_up(self, call_sid: str) -> None:
        """End the live call (an already-ended call is not an error)."""
        ...
