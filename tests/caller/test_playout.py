"""Playout: Twilio's outbound buffer rules on a sample clock, without an event loop."""

from __future__ import annotations

from gateway.caller.playout import Playout


def test_audio_queues_back_to_back_and_marks_wait_for_it() -> None:
    """Audio plays in order from arrival; a mark is due when the audio before it has played."""
    p = Playout()
    assert p.media(0, b"\x01" * 160) == 0
    assert p.media(40, b"\x02" * 160) == 160
    assert p.mark(50, "m") is False
    assert p.due_marks(319) == []
    assert p.due_marks(320) == ["m"]
    assert not p.busy(320)


def test_idle_only_once_the_audio_has_played_and_every_mark_is_echoed() -> None:
    """What "the reply has played" means to a caller hanging up when done: no audio queued and no mark
    still waiting for its echo (a mark behind trailing silence keeps the line busy)."""
    p = Playout()
    p.media(0, b"\x01" * 160)
    p.mark(10, "end")
    assert not p.idle(100)
    assert not p.idle(160)  # played, but the mark's echo is still to go
    assert p.due_marks(160) == ["end"]
    assert p.idle(160)


def test_mark_on_idle_line_is_due_at_once() -> None:
    """With nothing queued a mark is echoed immediately, as Twilio does."""
    p = Playout()
    assert p.mark(100, "now") is True
    p.media(200, b"\x01" * 80)
    assert p.mark(300, "after") is True


def test_marks_keep_their_order() -> None:
    """A mark set on an idle line behind a pending mark waits for it (echoes stay in order)."""
    p = Playout()
    p.media(0, b"\x01" * 160)
    assert p.mark(0, "a") is False
    assert p.mark(500, "b") is False
    assert p.due_marks(500) == ["a", "b"]


def test_clear_truncates_and_returns_pending_marks() -> None:
    """clear drops the unplayed part, returns every pending mark and counts what was dropped."""
    p = Playout()
    p.media(0, b"\x01" * 800)
    p.mark(0, "x")
    p.media(0, b"\x02" * 800)
    p.mark(0, "y")
    assert p.clear(100) == ["x", "y"]
    assert p.dropped_samples == 1500
    assert p.heard_samples(10_000) == 100
    assert p.render(300) == b"\x01" * 100 + b"\xff" * 200
    assert p.clear(200) == []


def test_render_places_audio_on_the_timeline_with_silence_between() -> None:
    """The rendered timeline has audio where it played and μ-law silence in the gaps, cut at the end."""
    p = Playout()
    p.media(10, b"\x01" * 20)
    p.media(100, b"\x02" * 50)
    out = p.render(120)
    assert out == b"\xff" * 10 + b"\x01" * 20 + b"\xff" * 70 + b"\x02" * 20
    assert p.heard_samples(120) == 40
