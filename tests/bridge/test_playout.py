"""Playout pacing and playback bookkeeping, with a virtual clock."""

from __future__ import annotations

import pytest

from gateway.bridge.playout import MarkOut, Playout

FRAME = b"\xff" * 160


def _frames(items: list[bytes | MarkOut]) -> int:
    return sum(1 for i in items if not isinstance(i, MarkOut))


def test_lead_bounds_what_the_provider_holds() -> None:
    """At most lead_s of audio is ever sent ahead of real time."""
    p = Playout(lead_s=0.1, mark_every=1000, batch=1)
    p.enqueue([FRAME] * 100)
    assert _frames(p.due(0.0)) == 5
    assert _frames(p.due(0.0)) == 0
    assert p.next_wakeup(0.0) == pytest.approx(6 * 0.02 - 0.1)
    # 50 ms later 2.5 frames have played: 2 more fit under the lead.
    assert _frames(p.due(0.05)) == 2
    assert p.buffered_s(0.05) <= 0.1 + 1e-9


def test_frames_leave_in_batches_while_enough_is_queued() -> None:
    """With batch=2 each wake-up sends two frames; a lone last frame still leaves on time."""
    p = Playout(lead_s=0.1, mark_every=1000, batch=2)
    p.enqueue([FRAME] * 8)
    assert _frames(p.due(0.0)) == 5  # a reply's first frames leave at once
    wake = p.next_wakeup(0.0)
    assert wake == pytest.approx(7 * 0.02 - 0.1)  # 2 frames' room, not 1
    assert _frames(p.due(wake)) == 2
    assert p.buffered_s(wake) <= 0.1 + 1e-9
    assert p.queued_frames == 1
    wake = p.next_wakeup(wake)
    assert wake == pytest.approx(8 * 0.02 - 0.1)  # only one left: no waiting for a second
    assert _frames(p.due(wake)) == 1
    assert p.next_wakeup(wake) is None


def test_paced_sending_tracks_real_time_over_a_long_reply() -> None:
    """Over 2 s of virtual time, frames leave at real-time rate plus the lead, never in bursts."""
    p = Playout(lead_s=0.1, mark_every=1000)
    p.enqueue([FRAME] * 500)
    sent = 0
    t = 0.0
    while t < 2.0:
        sent += _frames(p.due(t))
        t += 0.001
    assert 100 + 4 <= sent <= 100 + 5


def test_marks_interleave_every_n_frames_and_close_the_turn() -> None:
    """A mark follows every mark_every frames and the end of each reply."""
    p = Playout(lead_s=10.0, mark_every=3)
    p.enqueue([FRAME] * 7)
    p.end_turn()
    items = p.due(0.0)
    marks = [i for i in items if isinstance(i, MarkOut)]
    assert [m.frames for m in marks] == [3, 6, 7]
    assert all(m.turn == 1 for m in marks)
    assert p.marks_sent == 3


def test_mark_echo_advances_heard_frames() -> None:
    """An echoed mark proves the audio before it was heard."""
    p = Playout(lead_s=10.0, mark_every=5)
    p.enqueue([FRAME] * 10)
    marks = [i for i in p.due(0.0) if isinstance(i, MarkOut)]
    turn = p.mark_echoed(marks[0].name)
    assert turn is not None
    assert turn.heard == 5


def test_clear_drops_queue_and_discounts_marks_echoed_by_the_clear() -> None:
    """After clear, Twilio's immediate echo of pending marks does not count as heard audio."""
    p = Playout(lead_s=0.1, mark_every=2)
    p.enqueue([FRAME] * 50)
    items = p.due(0.0)
    pending = [i for i in items if isinstance(i, MarkOut)]
    assert pending
    turn = p.clear(0.05)
    assert turn is not None
    # 5 frames sent at t=0, 2.5 of them played by t=0.05
    assert 2 <= turn.heard <= 3
    assert p.due(1.0) == []
    before = turn.heard
    for m in pending:
        p.mark_echoed(m.name)
    assert turn.heard == before
    assert p.clears == 1


def test_new_reply_after_clear_starts_a_new_turn() -> None:
    """Audio queued after a barge-in belongs to the next reply."""
    p = Playout(lead_s=10.0, mark_every=100)
    p.enqueue([FRAME] * 3)
    p.due(0.0)
    first = p.clear(0.0)
    p.enqueue([FRAME] * 4)
    end = p.end_turn()
    assert first is not None
    assert end is not None
    assert end.turn == first.turn + 1
    assert end.queued == 4


def test_an_echo_settles_every_earlier_mark() -> None:
    """A provider that acknowledges only the newest of several cleared marks leaves none pending."""
    p = Playout(lead_s=1.0, mark_every=1)
    p.enqueue([b"a" * 160] * 3)
    p.end_turn()
    sent = [item.name for item in p.due(0.0) if isinstance(item, MarkOut)]
    assert len(sent) >= 2
    p.clear(0.01)
    p.mark_echoed(sent[-1])
    assert p.marks_acked == p.marks_sent


def test_without_marks_the_goodbye_counts_as_heard_by_the_clock() -> None:
    """A provider with no playback marks: end_call's wait ends when the clock says the audio played,
    not after its 20 s timeout (marks that were never sent cannot come back)."""
    from types import SimpleNamespace

    from gateway.bridge.control import BridgeControl
    from gateway.telephony.provider import Capabilities

    now = [0.0]
    playout = Playout(lead_s=0.1)
    playout.enqueue([b"a" * 160] * 5)
    playout.end_turn()
    playout.due(0.0)  # the marks count as sent: a provider with marks would have to echo them
    while playout.next_wakeup(now[0]) is not None:
        now[0] = playout.next_wakeup(now[0]) or now[0]
        playout.due(now[0])
    for marks, heard in ((True, False), (False, True)):
        bridge = SimpleNamespace(
            playout=playout, _clock=lambda: now[0] + 1.0, capabilities=Capabilities(marks=marks)
        )
        assert BridgeControl(bridge, rest=None).heard_out() is heard  # type: ignore[arg-type]
