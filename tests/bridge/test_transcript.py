"""Transcript assembly, including what the caller heard of a cut reply."""

from __future__ import annotations

from gateway.bridge.transcript import Transcript, heard_prefix


def test_fragments_join_into_turns_in_order() -> None:
    """Caller fragments end when the bot starts answering; bot fragments end at turn end."""
    t = Transcript()
    t.caller_text("Hello ")
    t.caller_text("there")
    t.bot_text("Hi, ")
    t.bot_text("how can I help?")
    t.end_bot()
    assert [(d["role"], d["text"]) for d in t.as_list()] == [
        ("caller", "Hello there"),
        ("bot", "Hi, how can I help?"),
    ]


def test_cut_reply_records_what_was_heard() -> None:
    """A barged-in reply keeps its full text and the prefix the caller heard."""
    t = Transcript()
    t.bot_text("one two three four five six seven eight nine ten")
    turn = t.end_bot(heard_fraction=0.3)
    assert turn is not None
    assert turn.interrupted
    assert turn.heard == "one two three"
    assert t.as_list()[0]["heard"] == "one two three"


def test_heard_prefix_bounds() -> None:
    """Nothing heard is empty; everything heard is the whole text."""
    assert heard_prefix("a b c", 0.0) == ""
    assert heard_prefix("a b c", 1.0) == "a b c"


def test_live_turns_are_visible_before_they_end() -> None:
    """The admin view shows the turn in progress."""
    t = Transcript()
    t.caller_text("still talking")
    assert t.as_list() == [{"role": "caller", "text": "still talking", "at": t.as_list()[0]["at"]}]
