"""Active calls and recently finished ones, for the admin API and for graceful shutdown."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from gateway.bridge.call import CallBridge, CallResult


class CallRegistry:
    """Calls in progress (by call SID) and the last ``keep`` finished calls' results."""

    def __init__(self, keep: int = 500) -> None:
        self.active: dict[str, CallBridge] = {}
        self._done: OrderedDict[str, CallResult] = OrderedDict()
        self._keep = keep
        #: Told ``(bridge, running)`` when a call starts and ends (the cluster's shared registry).
        self.watchers: list[Callable[[CallBridge, bool], None]] = []

    def started(self, bridge: CallBridge) -> None:
        self.active[bridge.info.call_sid] = bridge
        for watch in self.watchers:
            watch(bridge, True)

    def finished(self, bridge: CallBridge, result: CallResult) -> None:
        self.active.pop(bridge.info.call_sid, None)
        for watch in self.watchers:
            watch(bridge, False)
        self._done[result.call_sid] = result
        while len(self._done) > self._keep:
            self._done.popitem(last=False)

    def get(self, call_sid: str) -> dict[str, Any] | None:
        bridge = self.active.get(call_sid)
        if bridge is not None:
            return {"state": "active", **bridge.snapshot()}
        result = self._done.get(call_sid)
        if result is not None:
            return {"state": "ended", **asdict(result)}
        return None

    def list(self) -> dict[str, Any]:
        return {
            "active": [b.snapshot() for b in self.active.values()],
            "recent": [
                {k: v for k, v in asdict(r).items() if k != "transcript"}
                for r in reversed(self._done.values())
            ],
        }
