"""Call control for tools: hang up after the goodbye is heard, transfer, play DTMF.

"Heard" comes from the playback marks (:mod:`gateway.bridge.playout`): the provider echoes a mark
once the audio before it has played, and every reply ends with one. So the call has been heard
out when nothing is queued, every mark sent has come back, and the clock says the last frame
sent has finished playing. ``end_call`` waits for that *and* for the model's turn to end (it may
still be speaking after the tool answer), with fallbacks so a silent model or a lost mark can
never keep a call up: a grace period for the turn, then a hard limit.

Rules: one task per pending action, owned by :class:`BridgeControl` and cancelled by
:meth:`BridgeControl.close` when the call ends; waiting polls cheap counters every 50 ms only while
an action is pending, so the media path is untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp

from gateway.dialplan.model import Dialplan
from gateway.errors import ToolError
from gateway.gemini.messages import FunctionResponse
from gateway.gemini.models import capabilities
from gateway.tools.call_rest import CallControlRest
from gateway.tools.context import CallContext
from gateway.tools.dtmf import dtmf_frames
from gateway.tools.registry import ToolRegistry
from gateway.tools.router import ToolRouter

if TYPE_CHECKING:
    from gateway.bridge.call import CallBridge

__all__ = ["BridgeControl", "call_tools"]

#: How often a pending action re-checks playback.
POLL_S = 0.05
#: After end_call: longest wait for the model to finish its turn before hanging up once heard.
TURN_GRACE_S = 4.0
#: … and for the line to have been quiet (no new bot audio sent) that long in that case.
QUIET_S = 1.0
#: Hard limit from end_call to hang-up, whatever the playback says (a lost mark, a chatty model).
GOODBYE_MAX_S = 20.0
#: Longest wait for the bot's last words before a transfer goes ahead anyway.
TRANSFER_WAIT_S = 10.0
#: After a successful transfer the provider ends the stream; if it has not within this, we do.
TRANSFER_GRACE_S = 5.0


class BridgeControl:
    """:class:`~gateway.tools.context.CallControl` for one :class:`CallBridge`."""

    def __init__(self, bridge: CallBridge, *, rest: CallControlRest | None) -> None:
        self.bridge = bridge
        self.rest = rest
        self._ending = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.hangup_reason: str | None = None
        self.transferred_to: str | None = None

    @property
    def ending(self) -> bool:
        return self._ending

    # --- what tools call ---------------------------------------------------------------------------
    def end_call(self, reason: str) -> None:
        if self._ending:
            return
        self._ending = True
        self.hangup_reason = reason
        self._spawn(self._hang_up_after_goodbye(reason, self.bridge.turns_ended))

    async def transfer(self, number: str, *, label: str, by: str = "gateway") -> None:
        if self.bridge.capabilities.transfer == "none":  # the provider has no transfer at all (Exotel)
            raise ToolError("this phone line cannot transfer calls; offer another way to help")
        if self.rest is None:
            raise ToolError("transfers are not set up on this line; offer another way to help")
        if self._ending:
            raise ToolError("the call is already ending")
        self._ending = True
        try:
            await self.wait_heard(TRANSFER_WAIT_S)
            await self.rest.transfer(self.bridge.info.call_sid, number)
        except BaseException:
            self._ending = False
            raise
        self.transferred_to = label
        self.bridge.result.transfer_to = number
        self.bridge.result.released = True
        self.bridge.log.info("call transferred", extra={"target": label})
        # Recorded now (first reason wins), so the provider's `stop` that follows does not read as a hang-up.
        self.bridge._end(by, f"transferred to {label}")
        self._spawn(self._stop_after(TRANSFER_GRACE_S, by, f"transferred to {label}"))

    async def send_dtmf(self, digits: str) -> None:
        frames = dtmf_frames(digits, self.bridge.audio)
        bridge = self.bridge
        bridge.playout.enqueue(frames)
        if bridge._turn_flushed:
            # No model reply in progress: the tones are a playback turn of their own, closed by a mark.
            bridge.playout.end_turn()
        bridge._wake.set()
        await self.wait_heard(len(frames) * bridge.playout.frame_s + 5.0)

    # --- playback ------------------------------------------------------------------------------------
    def heard_out(self) -> bool:
        """Whether everything queued for the caller has been sent, played and its marks echoed.

        A provider without playback marks (``Capabilities.marks`` false) is judged by the playout clock
        alone: sent, and its time to play has passed, so ``end_call`` never waits out its timeout there.
        """
        bridge = self.bridge
        playout, now = bridge.playout, bridge._clock()
        echoed = playout.marks_acked >= playout.marks_sent or not bridge.capabilities.marks
        return playout.next_wakeup(now) is None and echoed and playout.buffered_s(now) <= 0.0

    async def wait_heard(self, max_s: float) -> bool:
        """Wait until :meth:`heard_out` (True) or ``max_s`` passes (False)."""
        deadline = self.bridge._clock() + max_s
        while not self.heard_out():
            if self.bridge._clock() >= deadline:
                return False
            await asyncio.sleep(POLL_S)
        return True

    async def _hang_up_after_goodbye(self, reason: str, turns_at_request: int) -> None:
        bridge = self.bridge
        start = bridge._clock()
        last_sent, quiet_since = bridge.playout.frames_sent, start
        while True:
            now = bridge._clock()
            if bridge.playout.frames_sent != last_sent:
                last_sent, quiet_since = bridge.playout.frames_sent, now
            turn_over = bridge.turns_ended > turns_at_request or (
                now - start >= TURN_GRACE_S and now - quiet_since >= QUIET_S
            )
            if turn_over and self.heard_out():
                break
            if now - start >= GOODBYE_MAX_S:
                bridge.log.warning("goodbye not confirmed heard in time; hanging up anyway")
                break
            await asyncio.sleep(POLL_S)
        bridge.log.info("hanging up after the goodbye", extra={"reason": reason})
        if self.rest is not None:
            try:
                await self.rest.hang_up(bridge.info.call_sid)
                bridge.result.released = True
            except ToolError as exc:
                # Closing the media stream still ends the call: nothing follows <Connect> in our TwiML.
                bridge.log.warning("REST hang-up failed; closing the stream", extra={"error": str(exc)})
        bridge.hang_up("bot", reason)

    async def _stop_after(self, delay_s: float, by: str, reason: str) -> None:
        await asyncio.sleep(delay_s)
        self.bridge.hang_up(by, reason)

    # --- lifecycle -----------------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        # The call owns the task: an unexpected error in it ends the call through the fallback.
        task = self.bridge.spawn("call control", coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """The call is over: stop pending actions (never the task calling this)."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


def call_tools(
    registry: ToolRegistry,
    *,
    plan: Dialplan,
    model: str,
    rest: CallControlRest | None = None,
    http: aiohttp.ClientSession | None = None,
) -> Callable[[CallBridge], ToolRouter]:
    """The ``tools`` factory for a :class:`CallBridge` on ``plan``: its router, context and control.

    Uses the same :meth:`ToolRegistry.session_tools` as the session's declarations, so what the
    router runs is exactly what the model was told.
    """
    tools = registry.session_tools(plan, model)
    streams = capabilities(model).scheduling  # willContinue is read where scheduling is

    def make(bridge: CallBridge) -> ToolRouter:
        control = BridgeControl(bridge, rest=rest)
        context = CallContext(
            call_id=bridge.info.call_sid,
            from_=bridge.info.from_,
            to=bridge.info.to,
            dialplan=plan.name,
            control=control,
            log=bridge.log,
            metadata=plan.metadata,
            transfer_targets=plan.transfer_targets,
            http=http,
        )

        def send(responses: Sequence[FunctionResponse]) -> None:
            # Looked up per answer: the bridge's session may be replaced (reconnects).
            bridge.session.send_tool_response(responses)

        return ToolRouter(
            registry=registry,
            tools=tools,
            context=context,
            send=send,
            on_close=control.close,
            streams=streams,
        )

    return make
