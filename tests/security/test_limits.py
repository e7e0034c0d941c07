"""Server limits as plain bookkeeping: admission, flood detection, the pending gate, the connection cap,
the open-file budget, the duration cap."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import ConfigError, TelephonyProtocolError
from gateway.server.limits import (
    CallAdmission,
    ConnectionCap,
    DurationCap,
    FileBudget,
    Gate,
    LimitState,
    MessageRate,
)
from gateway.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_global_limit_counts_reservations_and_calls() -> None:
    """Reserved (webhook answered) and active calls both count; a released slot frees a place."""
    admission = CallAdmission(max_calls=2)
    assert admission.reserve("CA1", "a")
    slot = admission.admit("CA2", "b")
    assert slot is not None
    assert not admission.reserve("CA3", "a")
    assert admission.admit("CA4", "a") is None
    assert admission.refused == 2
    slot.release()
    slot.release()  # idempotent
    assert admission.in_use() == 1
    assert admission.reserve("CA3", "a")


def test_per_plan_limit_and_wildcard() -> None:
    """A named plan has its own limit; '*' applies to every other plan; the global limit still holds."""
    admission = CallAdmission(max_calls=10, per_plan={"support": 1, "*": 2})
    assert admission.reserve("CA1", "support")
    assert not admission.reserve("CA2", "support")
    assert "dialplan" in (admission.refusal("support") or "")
    assert admission.reserve("CA3", "sales")
    assert admission.reserve("CA4", "sales")
    assert not admission.reserve("CA5", "sales")
    assert admission.reserve("CA6", "other")
    assert admission.in_use("sales") == 2


def test_reservation_becomes_the_slot_and_retries_keep_it() -> None:
    """A stream takes over its webhook's reservation; a repeated webhook does not take a second place."""
    admission = CallAdmission(max_calls=1)
    assert admission.reserve("CA1", "a")
    assert admission.reserve("CA1", "a")  # Twilio retried the webhook
    slot = admission.admit("CA1", "a")
    assert slot is not None
    assert admission.in_use() == 1
    slot.release()
    assert admission.in_use() == 0


def test_unused_reservations_expire() -> None:
    """A webhook whose stream never comes stops holding a place after the reservation time."""
    clock = Clock()
    admission = CallAdmission(max_calls=1, reserve_s=30.0, clock=clock)
    assert admission.reserve("CA1", "a")
    clock.now = 29.0
    assert not admission.reserve("CA2", "a")
    clock.now = 31.0
    assert admission.reserve("CA2", "a")
    assert admission.in_use("a") == 1


def test_zero_means_unlimited() -> None:
    """max_calls=0 and no per-plan limits admit everything."""
    admission = CallAdmission()
    assert all(admission.admit(f"CA{i}", "a") is not None for i in range(1000))


def test_message_rate_passes_a_normal_stream_and_stops_a_flood() -> None:
    """50 messages/s for a minute passes a 100/s limit; 1000 messages in one instant is a flood."""
    clock = Clock()
    rate = MessageRate(100, window_s=5.0, clock=clock)
    for i in range(50 * 60):
        clock.now = i / 50
        rate.tick()
    flood = MessageRate(100, window_s=5.0, clock=clock)
    for _ in range(flood.budget):
        flood.tick()
    with pytest.raises(TelephonyProtocolError, match="flood") as caught:
        flood.tick()
    assert caught.value.close_code == 1008


def test_message_rate_catches_a_flood_that_starts_mid_stream() -> None:
    """A burst after a long normal stretch is caught within two budgets of messages."""
    clock = Clock()
    rate = MessageRate(100, window_s=5.0, clock=clock)
    for i in range(50 * 7):
        clock.now = i / 50
        rate.tick()
    sent = 0
    try:
        while sent <= 2 * rate.budget:
            sent += 1
            rate.tick()
    except TelephonyProtocolError:
        pass
    assert sent <= 2 * rate.budget


def test_gate_evicts_the_oldest_of_a_full_source() -> None:
    """A source at its cap makes room by losing its own oldest waiting socket; other sources keep theirs."""
    gate = Gate(10, per_source=2)
    evicted: list[str] = []
    twilio = gate.enter("twilio")
    twilio.bind(lambda: evicted.append("twilio"))
    first, second = gate.enter("attacker"), gate.enter("attacker")
    first.bind(lambda: evicted.append("first"))
    second.bind(lambda: evicted.append("second"))
    third = gate.enter("attacker")
    assert evicted == ["first"]
    assert first.evicted
    assert not twilio.evicted
    assert (gate.inside, gate.holding("attacker"), gate.evicted) == (3, 2, 1)
    first.leave()  # the evicted socket closing: a no-op
    third.leave()
    third.leave()  # idempotent
    assert gate.inside == 2


def test_full_gate_evicts_from_the_source_holding_most() -> None:
    """Globally full, a new socket (even from a new source) pushes out the oldest socket of the heaviest
    source, never the lone socket of a small one (Twilio's media servers are a handful of addresses)."""
    gate = Gate(4, per_source=0)
    twilio = gate.enter("twilio")
    flood = [gate.enter("attacker") for _ in range(3)]
    newcomer = gate.enter("twilio")
    assert flood[0].evicted
    assert not twilio.evicted
    assert not newcomer.evicted
    assert (gate.holding("twilio"), gate.holding("attacker")) == (2, 2)
    # A tie goes to the source whose oldest socket has waited longest: that one is the likeliest stuck.
    gate.enter("third")
    assert twilio.evicted
    assert not flood[1].evicted


def test_eviction_before_bind_fires_on_bind() -> None:
    """A socket evicted while its upgrade was still being answered learns it as soon as it waits."""
    gate = Gate(1)
    early = gate.enter("a")
    gate.enter("b")
    fired: list[bool] = []
    early.bind(lambda: fired.append(True))
    assert fired == [True]


def test_unlimited_gate_never_evicts() -> None:
    gate = Gate(0, per_source=0)
    tickets = [gate.enter("a") for _ in range(500)]
    assert gate.inside == 500
    assert not any(t.evicted for t in tickets)


def test_connection_cap_closes_the_oldest_idle_first() -> None:
    """Idle connections past their share give way oldest first; busy ones are never chosen."""
    cap: ConnectionCap[str] = ConnectionCap(limit=5, idle_limit=3)
    assert cap.opened("a") == ([], True)
    assert cap.opened("b") == ([], True)
    cap.busy("a")  # a request is being handled on "a"
    assert cap.opened("c") == ([], True)
    assert cap.opened("d") == ([], True)
    assert cap.opened("e") == (["b"], True)  # idle share (3) full: the oldest idle one goes
    cap.idle("a")  # "a" finished its request: now the newest idle connection
    assert cap.opened("f") == (["c", "d"], True)
    assert (cap.total, cap.idle_count, cap.evicted) == (3, 3, 3)
    cap.closed("b")  # the evicted connection's close arrives later: a no-op
    cap.busy("b")  # and a late handler on it is not counted
    assert cap.total == 3


def test_connection_cap_refuses_only_when_everything_is_busy() -> None:
    cap: ConnectionCap[int] = ConnectionCap(limit=3, idle_limit=3)
    for conn in range(3):
        cap.opened(conn)
        cap.busy(conn)
    assert cap.opened(99) == ([], False)
    assert cap.refused == 1
    cap.closed(0)
    assert cap.opened(100) == ([], True)


def test_file_budget_leaves_room_for_each_calls_two_sockets() -> None:
    """1024 files: every call holds two sockets, 64 files stay reserved, idle connections get what live
    calls, pending streams and health checks leave; a small limit caps the calls themselves."""
    budget = FileBudget.compute(Settings(max_calls=200, max_pending_streams=100), 1024)
    assert (budget.calls, budget.calls_by_files, budget.connections) == (200, 480, 760)
    assert budget.idle_connections == 760 - (200 + 100 + 16)
    assert "room for 200 concurrent calls" in budget.describe()
    small = FileBudget.compute(Settings(max_calls=200), 256)
    assert small.calls == 96
    assert "the limit allows" not in small.describe()
    assert small.idle_connections >= small.connections // 4
    assert FileBudget.compute(Settings(max_calls=0), 0).calls == (2**20 - 64) // 2
    assert FileBudget.compute(Settings(max_connections=50), 1024).connections == 50
    limits = LimitState.from_settings(Settings(max_calls=200), files=256)
    assert limits.admission.max_calls == 96  # over that, the webhook plays the fallback, no EMFILE


async def test_duration_cap_marks_then_cancels() -> None:
    """At the cap, the callback runs before the body is cancelled, and the block leaves with TimeoutError."""
    seen: list[str] = []

    async def body() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    cap = DurationCap(0.05, lambda: seen.append("reached"))
    with pytest.raises(TimeoutError):
        async with cap:
            await body()
    assert cap.reached
    assert seen == ["reached", "cancelled"]


async def test_duration_cap_does_not_touch_a_short_body() -> None:
    """A body that ends before the cap returns normally and the callback never runs."""
    cap = DurationCap(60.0, lambda: pytest.fail("cap fired"))
    async with cap:
        await asyncio.sleep(0)
    assert not cap.reached


def test_settings_parse_limits_and_reject_nonsense() -> None:
    """Limits come from GATEWAY_* variables; malformed values are ConfigErrors naming the variable."""
    s = Settings.from_env(
        {
            "GATEWAY_MAX_CALLS": "5",
            "GATEWAY_MAX_CALLS_PER_DIALPLAN": "support=2, *=3",
            "GATEWAY_MAX_STREAM_RATE": "120",
            "GATEWAY_MAX_CALL_S": "600",
            "GATEWAY_REDIS_URL": "redis://:pw-long-enough@127.0.0.1:6379/0",
            "GATEWAY_MAX_PENDING_PER_SOURCE": "7",
            "GATEWAY_MAX_CONNECTIONS": "900",
            "GATEWAY_HTTP_IDLE_TIMEOUT_S": "30",
            "GATEWAY_HTTP_BODY_TIMEOUT_S": "4",
        }
    )
    assert (s.max_pending_per_source, s.max_connections) == (7, 900)
    assert (s.http_idle_timeout_s, s.http_body_timeout_s) == (30.0, 4.0)
    assert (s.max_calls, s.max_stream_messages_per_s, s.max_call_s) == (5, 120, 600.0)
    assert s.max_calls_per_dialplan == (("support", 2), ("*", 3))
    assert "pw-long-enough" in s.secrets()
    assert "pw-long-enough" not in repr(s)
    assert Settings.from_env({"GATEWAY_MAX_CALLS_PER_DIALPLAN": "4"}).max_calls_per_dialplan == (("*", 4),)
    for name, value in [
        ("GATEWAY_MAX_CALLS", "many"),
        ("GATEWAY_MAX_CALLS", "-1"),
        ("GATEWAY_MAX_CALLS_PER_DIALPLAN", "support=lots"),
        ("GATEWAY_MAX_CALLS_PER_DIALPLAN", "=3"),
        ("GATEWAY_MAX_PENDING_PER_SOURCE", "some"),
        ("GATEWAY_MAX_CONNECTIONS", "-5"),
        ("GATEWAY_HTTP_IDLE_TIMEOUT_S", "0"),
        ("GATEWAY_HTTP_BODY_TIMEOUT_S", "soon"),
    ]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})
