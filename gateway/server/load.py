"""Overload protection: refuse new calls before the calls already accepted start to suffer.

Past one core, every call on the event loop degrades together: at 500 calls one process ran its
frames 167–310 ms late (p99), every call audibly broken. A phone gateway should instead keep the calls
it has and say "busy" to the next one (or let the load balancer send it elsewhere), so admission asks
:class:`LoadMonitor` before counting a new call (``CallAdmission.pressure``).

Two signals, sampled four times a second by the task that already measures loop lag (no work per
frame):

* **CPU, projected**: the process's CPU share over the last two seconds, as a fraction of what it may
  use (one core for the event loop, or less under a container's CPU quota), plus what one more call
  costs. A call's cost is learnt from the running calls (CPU per call-second, smoothed), and the calls
  admission counts are also projected at that cost: a burst
  of webhooks cannot all slip in during the seconds before their audio shows up as CPU.
* **Event-loop lag**, sustained over the last two seconds (a quarter of the samples or more): the
  symptom callers hear, whatever its cause (CPU stolen by a neighbour, a blocking handler), and the
  backstop before any cost is known. One garbage-collection pause refuses nothing.

Both thresholds are settings (``GATEWAY_MAX_CPU_PERCENT``, ``GATEWAY_MAX_LOOP_LAG_MS``); the benchmark
``bench/load.py --overload`` shows where they keep accepted calls within the 20 ms p99 target.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["LoadMonitor"]

#: The CPU share is measured over this window (eight samples of the loop-lag task).
CPU_WINDOW_S = 2.0
#: Loop lag is judged over this window (eight samples) ...
LAG_WINDOW_S = 2.0
#: ... which holds this many samples once the process has run that long (gateway/server/admin.py
#: samples four times a second); before that, the samples not yet taken count as on time.
LAG_SAMPLES = 8
#: ... by the lateness that a quarter of its samples or more reached: sustained lateness refuses
#: calls, one garbage-collection pause or slow disk write does not.
LAG_QUANTILE = 0.75
#: Per-call cost is learnt only from this many streaming calls or more, on average (fewer: noise).
MIN_CALLS_TO_LEARN = 4
#: Weight of a new per-call cost sample in the running average: a dearer call is believed at once, a
#: cheaper one slowly (a window that happened to catch calls between turns must not let a burst in).
COST_RISING, COST_FALLING = 0.5, 0.1


class LoadMonitor:
    """Decides whether this process can take one more call (module docstring)."""

    def __init__(
        self,
        *,
        max_cpu: float,
        max_lag_s: float,
        cpu_allowance: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        cpu_time: Callable[[], float] = time.process_time,
    ) -> None:
        """``max_cpu``: fraction of ``cpu_allowance`` (cores) the process may use, 0 for no check;
        ``max_lag_s``: loop lag that refuses calls, 0 for no check."""
        self.max_cpu = max_cpu
        self.max_lag_s = max_lag_s
        self.cpu_allowance = cpu_allowance
        self._clock = clock
        self._cpu_time = cpu_time
        #: (wall, cpu, streaming calls) readings, oldest first, spanning about CPU_WINDOW_S.
        self._cpu: deque[tuple[float, float, int]] = deque()
        #: (wall, lag) samples of the last LAG_WINDOW_S.
        self._lag: deque[tuple[float, float]] = deque()
        #: CPU share of the allowance used now, and what one call costs of it (None: not learnt yet).
        self.share = 0.0
        self.per_call: float | None = None
        self.refused = 0

    @property
    def enabled(self) -> bool:
        return self.max_cpu > 0 or self.max_lag_s > 0

    def sample(self, lag_s: float, streaming: int) -> None:
        """One reading, with the loop's lateness just measured and the calls streaming now."""
        now = self._clock()
        self._lag.append((now, lag_s))
        while self._lag and self._lag[0][0] < now - LAG_WINDOW_S:
            self._lag.popleft()
        readings = self._cpu
        readings.append((now, self._cpu_time(), streaming))
        while len(readings) > 2 and readings[1][0] <= now - CPU_WINDOW_S:
            readings.popleft()
        (t0, c0, _), (t1, c1, _) = readings[0], readings[-1]
        if t1 - t0 < CPU_WINDOW_S / 2:
            return  # not enough history for a share yet
        self.share = max(0.0, (c1 - c0) / (t1 - t0)) / self.cpu_allowance
        # A call's cost: CPU per call-second over the window (the mean number of calls streaming in
        # it), so a ramp-up is read right too. A call's first seconds (its Gemini session's TLS
        # set-up) cost more than its steady state, so a ramp errs on the safe side.
        calls = sum(r[2] for r in list(readings)[1:]) / (len(readings) - 1)
        if calls >= MIN_CALLS_TO_LEARN:
            cost = self.share / calls
            per_call = self.per_call
            if per_call is None:
                self.per_call = cost
            else:
                weight = COST_RISING if cost > per_call else COST_FALLING
                self.per_call = per_call + weight * (cost - per_call)

    @property
    def lag_s(self) -> float:
        """How late the loop ran in a quarter or more of the last two seconds' samples. A window not yet
        full is padded with on-time samples: one pause just after start-up (a module imported, a key
        loaded) is one pause, not a quarter of the samples."""
        lags = sorted(lag for _, lag in self._lag)
        lags[:0] = [0.0] * max(0, LAG_SAMPLES - len(lags))
        return lags[int(len(lags) * LAG_QUANTILE)]

    def refusal(self, in_use: int) -> str | None:
        """Why one more call would be refused now, or None. ``in_use``: the calls admission counts
        (streaming, or answered and about to stream)."""
        if self.max_lag_s and (lag := self.lag_s) > self.max_lag_s:
            limit_ms = self.max_lag_s * 1000
            return (
                f"overloaded: the event loop has been running {lag * 1000:.0f} ms late "
                f"(limit {limit_ms:.0f} ms)"
            )
        if self.max_cpu and self.per_call is not None:
            # By count as well as by measure: calls just admitted cost nothing measurable yet.
            projected = max(self.share, self.per_call * in_use) + self.per_call
            if projected > self.max_cpu:
                return (
                    f"overloaded: one more call would take the CPU to {projected:.1%} of "
                    f"{self._allowance_text()} (limit {self.max_cpu:.0%})"
                )
        return None

    def _allowance_text(self) -> str:
        return "one core" if self.cpu_allowance == 1.0 else f"{self.cpu_allowance:g} cores"
