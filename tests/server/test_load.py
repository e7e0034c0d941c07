"""Overload protection: the load monitor's decisions, on an injected clock and CPU counter."""

from __future__ import annotations

from pathlib import Path

from gateway.process import cpu_allowance
from gateway.server.load import LoadMonitor


class Machine:
    """A clock and a process CPU counter that the test advances: ``run(seconds, share)``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.cpu = 50.0

    def run(self, seconds: float, share: float) -> None:
        self.now += seconds
        self.cpu += seconds * share


def _monitor(m: Machine, **kw: float) -> LoadMonitor:
    args = {"max_cpu": 0.85, "max_lag_s": 0.04} | kw
    return LoadMonitor(clock=lambda: m.now, cpu_time=lambda: m.cpu, **args)


def _steady(mon: LoadMonitor, m: Machine, *, calls: int, share: float, seconds: float = 3.0) -> None:
    for _ in range(int(seconds / 0.25)):
        m.run(0.25, share)
        mon.sample(0.001, calls)


def test_a_call_cost_is_learnt_and_the_next_call_refused_when_it_would_not_fit() -> None:
    m = Machine()
    mon = _monitor(m)
    _steady(mon, m, calls=40, share=0.60)  # 1.5 % of a core per call
    assert mon.per_call is not None
    assert abs(mon.per_call - 0.015) < 1e-6
    assert abs(mon.share - 0.60) < 1e-6
    assert mon.refusal(40) is None  # 60 % + 1.5 %
    assert mon.refusal(55) is None  # 55 × 1.5 % + 1.5 % = 84 %
    why = mon.refusal(56)  # 85.5 %
    assert why is not None
    assert "CPU to 85.5% of one core (limit 85%)" in why


def test_a_burst_is_judged_by_count_before_its_cpu_shows() -> None:
    m = Machine()
    mon = _monitor(m)
    _steady(mon, m, calls=20, share=0.30)  # 1.5 % each
    # 60 webhooks answered in the last instant: their audio is not in the measured share yet.
    why = mon.refusal(60)
    assert why is not None
    assert "one more call would take the CPU to 91.5%" in why
    assert mon.refusal(20) is None


def test_the_cost_is_learnt_while_calls_ramp_up() -> None:
    m = Machine()
    mon = _monitor(m)
    for calls in range(0, 100, 5):  # 20 calls a second arrive, each costing 1 % of the core
        m.run(0.25, 0.01 * calls)
        mon.sample(0.001, calls)
    assert mon.per_call is not None
    assert abs(mon.per_call - 0.01) < 0.002
    why = mon.refusal(95)
    assert why is not None
    assert "CPU to 96" in why


def test_nothing_is_refused_on_cpu_before_a_cost_is_known() -> None:
    m = Machine()
    mon = _monitor(m)
    _steady(mon, m, calls=2, share=0.9)
    assert mon.per_call is None
    assert mon.refusal(100) is None  # only the lag can refuse


def test_sustained_event_loop_lag_refuses_then_lets_calls_in_again() -> None:
    m = Machine()
    mon = _monitor(m)
    for _ in range(8):
        m.run(0.25, 0.1)
        mon.sample(0.002, 0)
    m.run(0.25, 0.1)
    mon.sample(0.300, 0)  # one pause (a full garbage collection): nothing refused
    assert mon.refusal(0) is None
    for lag in (0.120, 0.090, 0.060):  # late again and again: overloaded
        m.run(0.25, 0.1)
        mon.sample(lag, 0)
    why = mon.refusal(0)
    assert why is not None
    assert "event loop has been running 90 ms late (limit 40 ms)" in why
    for _ in range(6):
        m.run(0.25, 0.1)
        mon.sample(0.002, 0)
    assert mon.refusal(0) is not None  # two of the last eight samples still late
    m.run(0.25, 0.1)
    mon.sample(0.002, 0)
    assert mon.refusal(0) is None


def test_one_pause_just_after_start_up_refuses_nothing() -> None:
    """The window is not yet full: the samples not taken count as on time, so one pause in the first
    seconds (a module imported, a key loaded on the first request) is a pause, not an overload."""
    m = Machine()
    mon = _monitor(m)
    m.run(0.25, 0.1)
    mon.sample(0.126, 0)  # the first sample of a fresh process
    assert mon.refusal(0) is None
    m.run(0.25, 0.1)
    mon.sample(0.110, 0)  # two of eight: a quarter of the window, sustained
    why = mon.refusal(0)
    assert why is not None
    assert "110 ms late" in why


def test_zero_turns_each_check_off() -> None:
    m = Machine()
    mon = _monitor(m, max_cpu=0.0, max_lag_s=0.0)
    _steady(mon, m, calls=50, share=0.99)
    mon.sample(1.0, 50)
    assert not mon.enabled
    assert mon.refusal(500) is None


def test_a_container_quota_scales_the_share() -> None:
    m = Machine()
    mon = _monitor(m, cpu_allowance=0.5)
    _steady(mon, m, calls=10, share=0.40)  # 80 % of half a core
    assert abs(mon.share - 0.80) < 1e-6
    why = mon.refusal(10)
    assert why is not None
    assert "of 0.5 cores" in why


def test_cpu_allowance_reads_the_cgroup(tmp_path: Path) -> None:
    assert cpu_allowance(str(tmp_path)) == 1.0  # nothing there: one core
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_allowance(str(tmp_path)) == 1.0
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert cpu_allowance(str(tmp_path)) == 0.5
    (tmp_path / "cpu.max").write_text("400000 100000\n")
    assert cpu_allowance(str(tmp_path)) == 1.0  # one event loop uses one core at most
    (tmp_path / "cpu.max").unlink()
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("25000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_allowance(str(tmp_path)) == 0.25
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_allowance(str(tmp_path)) == 1.0


def test_a_dearer_call_is_believed_at_once_a_cheaper_one_slowly() -> None:
    m = Machine()
    mon = _monitor(m)
    _steady(mon, m, calls=40, share=0.60)  # 1.5 %
    m.run(0.25, 0.40)  # a quarter-second where the calls happened to be quiet: the 2 s window reads 1.44 %
    mon.sample(0.001, 40)
    assert mon.per_call is not None
    assert 0.0149 < mon.per_call < 0.015  # moved a tenth of the way down
    _steady(mon, m, calls=40, share=0.60, seconds=2.0)
    m.run(0.25, 1.20)  # suddenly dearer: the window reads 1.69 %
    mon.sample(0.001, 40)
    assert mon.per_call > 0.0158  # half of the way up in one sample (a tenth would give 1.52 %)
