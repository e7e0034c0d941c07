"""Server limits as plain bookkeeping: admission, flood detection, the pending gate, the duration cap."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import ConfigError, TelephonyProtocolError
from gateway.server.limits import CallAdmission, DurationCap, Gate, MessageRate
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


def test_gate_caps_holders() -> None:
    """The gate lets in at most its limit and counts refusals."""
    gate = Gate(2)
    assert gate.enter()
    assert gate.enter()
    assert not gate.enter()
    gate.leave()
    assert gate.enter()
    assert gate.refused == 1


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
        }
    )
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
    ]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})
