"""How a call ends when things go wrong or run long: fallback, silence timeout, maximum duration.

:class:`CallGuard` belongs to one :class:`~gateway.bridge.call.CallBridge` and does two jobs:

* :meth:`CallGuard.fall_back` — Gemini cannot be reached (at call start, or after the resilient
  session gave up): the caller hears the dialplan's fallback line (:mod:`gateway.bridge.fallback`),
  then its fallback action runs. Never dead air. The time from the start of the call to the first
  fallback frame is recorded as ``CallResult.fallback_ms``.
* :meth:`CallGuard.watch` — the timers of :mod:`gateway.bridge.timers`: a prompt or warning is
  spoken by the model; an action (after a polite last line, once it has been heard) hangs up or
  transfers.

Hanging up means ending the media stream: after ``<Connect>`` there is no more TwiML, so Twilio
ends the phone call. A transfer uses the bridge's call control when it has one (``bridge.control``,
with ``transfer(number, label=)``); without one the target is recorded in ``CallResult.transfer_to``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from gateway.bridge.fallback import fallback_frames
from gateway.bridge.timers import CallTimers, Say, TimerAction
from gateway.dialplan.model import Action
from gateway.errors import AudioError, GatewayError, LiveSessionError

if TYPE_CHECKING:
    from gateway.bridge.call import CallBridge

__all__ = ["CallGuard"]

#: After the last line was asked for, give up waiting for it to be heard after this long.
SAY_TIMEOUT_S = 12.0
_POLL_S = 0.05


def say_prompt(text: str) -> str:
    """The user turn that makes the model speak ``text`` (there is no TTS of our own)."""
    return f'[Say exactly this to the caller, and nothing else: "{text}"]'


class CallGuard:
    """Fallback and limit timers of one call (see the module docstring)."""

    def __init__(self, bridge: CallBridge) -> None:
        self.bridge = bridge
        self._t0 = bridge._clock()
        self.timers = CallTimers(bridge.dialplan.limits, self._t0)
        self._turn_done = asyncio.Event()
        self._cut = False  # an ``interrupted`` since the last line was asked for
        self._acting = False

    # --- activity, fed by the bridge (never per frame) -----------------------------------------------
    def caller_active(self) -> None:
        self.timers.caller_active(self.bridge._clock())

    def caller_active_at(self, now: float) -> None:
        """Caller speech heard in the audio itself (per voiced frame: keep it this cheap)."""
        self.timers.caller_active(now)

    def interrupted(self) -> None:
        """Gemini cut its reply short: usually the caller spoke (activity), and a last line may be lost."""
        self._cut = True
        self.caller_active()

    def turn_complete(self) -> None:
        """The model finished a turn: silence is counted from when its audio stops playing."""
        self._turn_done.set()
        self.timers.bot_active(self._heard_until())

    def _heard_until(self) -> float:
        b = self.bridge
        now = b._clock()
        queued = b.playout.queued_frames if b.playout.next_wakeup(now) is not None else 0
        return now + b.playout.buffered_s(now) + queued * b.playout.frame_s

    def _drained(self) -> bool:
        playout, now = self.bridge.playout, self.bridge._clock()
        return playout.next_wakeup(now) is None and playout.buffered_s(now) <= 0.0

    # --- limits -------------------------------------------------------------------------------------
    async def watch(self) -> None:
        """Run the dialplan's timers; returns only when a limit ended the call."""
        timers, clock = self.timers, self.bridge._clock
        while True:
            at = timers.next_at()
            if at is None:
                await asyncio.Future()  # nothing to time: wait to be cancelled with the call
                return
            delay = at - clock()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            if not self._drained():
                timers.bot_active(self._heard_until())  # the bot is talking: not the caller's silence
            step = timers.due(clock())
            if isinstance(step, Say):
                self.bridge.log.info("limit prompt", extra={"why": step.why})
                self._speak(step.text)
            elif isinstance(step, TimerAction):
                self.bridge.log.info("limit reached", extra={"why": step.why, "action": step.action.kind})
                self.bridge.caller_muted = True
                await self._say_and_wait(step.say)
                await self._act(step.action, step.why)
                return

    def _speak(self, text: str) -> bool:
        try:
            self.bridge.session.send_client_content([("user", say_prompt(text))], turn_complete=True)
            return True
        except LiveSessionError:
            return False

    async def _say_and_wait(self, text: str) -> None:
        """Have the model say ``text`` and wait until the caller has heard it (bounded).

        The line is a turn of its own: asked for once the model's reply in progress is over (a
        ``clientContent`` turn would interrupt it, docs/gemini-live.md §3), and asked for once more
        if something cut it (caller speech already on its way when the caller was muted). Its
        ``turnComplete`` is the first whole one after it was asked for.
        """
        clock = self.bridge._clock
        deadline = clock() + SAY_TIMEOUT_S
        await self._settle(clock() + SAY_TIMEOUT_S / 2)
        for ask in (1, 2):
            if not self._speak(text):
                return
            whole = await self._next_turn(deadline)
            if ask == 2 and whole is False:
                whole = await self._next_turn(deadline)  # the turn our own ask cut; the line's follows
            if whole is not False:
                break  # said whole, or out of time
        await self._until_heard(deadline)

    async def _next_turn(self, deadline: float) -> bool | None:
        """Wait for the model's next ``turnComplete``: whether its turn was whole (None: ``deadline``)."""
        self._turn_done.clear()
        self._cut = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(deadline - self.bridge._clock(), 0.0)):
                await self._turn_done.wait()
                return not self._cut
        return None

    async def _settle(self, deadline: float) -> None:
        """Wait (bounded) until the model is not mid-reply and what it said has been heard."""
        if self.bridge.model_turn_open:
            await self._next_turn(deadline)
        await self._until_heard(deadline)

    async def _until_heard(self, deadline: float) -> None:
        """Sleep until everything queued for the caller has played, or ``deadline``."""
        clock = self.bridge._clock
        while True:
            now = clock()
            wait = min(self._heard_until(), deadline) - now
            if wait <= 0:
                return
            await asyncio.sleep(max(wait, _POLL_S))

    async def _act(self, action: Action, why: str) -> None:
        """Hang up or transfer; the call ends when this returns."""
        bridge = self.bridge
        if action.kind == "transfer" and action.target:
            control: Any = getattr(bridge, "control", None)
            bridge.result.transfer_to = action.target
            if control is not None:
                try:
                    await control.transfer(action.target, label=why)
                except GatewayError as exc:
                    bridge.log.warning("transfer failed; hanging up", extra={"why": why, "error": str(exc)})
            bridge._end("gateway", f"{why}: transfer")
            return
        bridge._end("gateway", why)

    async def wind_down(self, goodbye: str, why: str) -> None:
        """Say ``goodbye``, wait until it is heard (bounded), hang up: the gateway is going away."""
        if self._acting:
            return  # already ending through the fallback
        self._acting = True
        self.bridge.log.info("ending the call with a goodbye", extra={"why": why})
        self.bridge.caller_muted = True  # nothing said now may start a turn over the goodbye
        await self._say_and_wait(goodbye)
        self.bridge.hang_up("gateway", why)

    # --- fallback -----------------------------------------------------------------------------------
    async def fall_back(self, error: BaseException) -> None:
        """Gemini is unreachable, or the call failed inside the gateway: play the fallback line, wait
        until it is heard, run the fallback action. ``error`` is what went wrong (for the log)."""
        bridge = self.bridge
        if self._acting:
            return
        self._acting = True
        plan = bridge.dialplan
        try:
            frames, source = fallback_frames(plan, bridge.audio)
        except AudioError as exc:  # even the shipped asset failed: act at once rather than hang
            bridge.log.error("fallback audio unavailable", extra={"error": str(exc)})
            frames, source = (), "none"
        clock = bridge._clock
        bridge.downlink.reset()
        bridge.playout.end_turn()
        if frames:
            bridge.playout.enqueue(list(frames))
            bridge.playout.end_turn()
            bridge._wake.set()
        elapsed_ms = (clock() - self._t0) * 1000.0
        bridge.result.fallback_ms = round(elapsed_ms, 1)
        bridge.log.warning(
            "gemini unavailable: playing fallback"
            if isinstance(error, LiveSessionError)
            else "call failed: playing fallback",
            extra={
                "error": str(error),
                "source": source,
                "fallback_ms": round(elapsed_ms, 1),
                "action": plan.fallback.action.kind,
            },
        )
        bridge.observer.event(
            "fallback", {"error": str(error)[:300], "source": source, "action": plan.fallback.action.kind}
        )
        await self._until_heard(clock() + len(frames) * bridge.playout.frame_s + 3.0)
        await self._act(plan.fallback.action, f"fallback: {error}")
