"""Per-call timers from the dialplan's limits: silence timeout and maximum duration. Sans-I/O.

Rules:

* **Silence**: after ``silence_timeout_s`` with neither caller speech nor bot audio, the bot says the
  ``silence_prompt`` once; if the line stays silent another ``silence_timeout_s``, the call ends
  politely with ``silence_action``. Any caller activity (speech, a key) re-arms the prompt. The clock
  does not run while the bot is talking: a long answer is not the caller's silence.
* **Duration**: the ``max_duration_warning`` is said once at :attr:`Limits.warning_at_s`; at
  ``max_duration_s`` the ``max_duration_action`` runs.

The bridge feeds activity (:meth:`CallTimers.caller_active`, :meth:`CallTimers.bot_active`) and asks
:meth:`CallTimers.due` when :meth:`CallTimers.next_at` comes; this module reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.dialplan.model import Action, Limits

__all__ = ["DEFAULT_GOODBYES", "DEFAULT_SILENCE_PROMPT", "CallTimers", "Say", "TimerAction"]

DEFAULT_SILENCE_PROMPT = "Are you still there?"
#: Said before ending when the plan's action has no ``say``: ending politely, never a bare click.
DEFAULT_GOODBYES = {
    "silence": "I haven't heard anything for a while, so I'll end the call now. Goodbye.",
    "max_duration": "We've reached the time limit for this call. Thank you for calling. Goodbye.",
}


@dataclass(frozen=True, slots=True)
class Say:
    """The bot should say ``text`` now (a prompt or a warning); the call goes on."""

    text: str
    why: str


@dataclass(frozen=True, slots=True)
class TimerAction:
    """A limit was reached: say ``say``, then run ``action`` (hang up or transfer)."""

    action: Action
    say: str
    why: str


class CallTimers:
    """The silence and duration timers of one call; times are monotonic seconds."""

    __slots__ = ("_activity_at", "_done", "_limits", "_prompted", "_started", "_warned")

    def __init__(self, limits: Limits, now: float) -> None:
        self._limits = limits
        self._started = now
        self._activity_at = now
        self._prompted = False
        self._warned = False
        self._done = False

    @property
    def active(self) -> bool:
        """False once no limit is set or an action has been handed out."""
        lim = self._limits
        return not self._done and (lim.silence_timeout_s is not None or lim.max_duration_s is not None)

    def caller_active(self, now: float) -> None:
        """The caller spoke or pressed a key: restart the silence clock and re-arm the prompt."""
        self._activity_at = max(self._activity_at, now)
        self._prompted = False

    def bot_active(self, until: float) -> None:
        """The bot is heard until ``until``: silence is counted from then."""
        if until > self._activity_at:
            self._activity_at = until

    def next_at(self) -> float | None:
        """When :meth:`due` may next return something, or None with nothing left to time."""
        if self._done:
            return None
        lim = self._limits
        times: list[float] = []
        if lim.silence_timeout_s is not None:
            times.append(self._activity_at + lim.silence_timeout_s)
        if lim.max_duration_s is not None:
            times.append(self._started + lim.max_duration_s)
            warn = lim.warning_at_s
            if warn is not None and not self._warned:
                times.append(self._started + warn)
        return min(times) if times else None

    def due(self, now: float) -> Say | TimerAction | None:
        """What to do at ``now``: the end of the call first, then the warning, then silence."""
        if self._done:
            return None
        lim = self._limits
        if lim.max_duration_s is not None and now >= self._started + lim.max_duration_s:
            self._done = True
            action = lim.max_duration_action
            return TimerAction(
                action, action.say or DEFAULT_GOODBYES["max_duration"], "maximum call duration"
            )
        warn = lim.warning_at_s
        if warn is not None and not self._warned and now >= self._started + warn:
            self._warned = True
            assert lim.max_duration_warning is not None
            return Say(lim.max_duration_warning, "max duration warning")
        if lim.silence_timeout_s is not None and now >= self._activity_at + lim.silence_timeout_s:
            if not self._prompted:
                self._prompted = True
                self._activity_at = now
                return Say(lim.silence_prompt or DEFAULT_SILENCE_PROMPT, "silence prompt")
            self._done = True
            action = lim.silence_action
            return TimerAction(action, action.say or DEFAULT_GOODBYES["silence"], "silence timeout")
        return None
