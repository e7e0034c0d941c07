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


def test_a_key_sent_as_text_is_not_also_a_caller_turn() -> None:
    """The model transcribes the text a key press was sent as; that echo is not the caller speaking."""
    t = Transcript()
    key_text = "[The caller pressed the phone key 1]"
    t.note("dtmf", "1", now=1.0, sent_as=key_text)
    t.caller_text(key_text, now=1.1)  # whole
    t.note("dtmf", "2", now=2.0, sent_as=key_text.replace("1", "2"))
    t.caller_text("[The caller pressed", now=2.1)  # or in fragments
    t.caller_text(" the phone key 2]", now=2.2)
    t.bot_text("You pressed 1 and 2.", now=2.5)
    t.caller_text("one more thing", now=3.0)
    t.close(now=4.0)
    assert [(x.role, x.text) for x in t.turns] == [
        ("dtmf", "1"),
        ("dtmf", "2"),
        ("caller", "one more thing"),
        ("bot", "You pressed 1 and 2."),
    ]
