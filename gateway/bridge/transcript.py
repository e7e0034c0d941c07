"""What was said on a call, turn by turn, including what the caller actually heard of a cut reply."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["caller", "bot", "dtmf", "system"]


@dataclass(slots=True)
class Turn:
    role: Role
    text: str
    started_at: float
    ended_at: float | None = None
    #: For bot turns: True when the caller barged in before the reply finished.
    interrupted: bool = False
    #: For interrupted bot turns: the part of ``text`` the caller heard (estimated from playback).
    heard: str | None = None

    def as_dict(self) -> dict[str, object]:
        doc: dict[str, object] = {"role": self.role, "text": self.text, "at": round(self.started_at, 3)}
        if self.interrupted:
            doc["interrupted"] = True
            doc["heard"] = self.heard or ""
        return doc


def heard_prefix(text: str, fraction: float) -> str:
    """The words of ``text`` a caller heard when ``fraction`` of its audio played.

    Speech rate is roughly even within a reply, so a proportional cut at a word boundary is a
    good estimate without word timestamps (the Live API sends none by default).
    """
    if fraction >= 1.0:
        return text
    if fraction <= 0.0:
        return ""
    words = text.split()
    return " ".join(words[: int(len(words) * fraction + 0.5)])


@dataclass(slots=True)
class Transcript:
    """Accumulates transcription fragments into finished turns."""

    turns: list[Turn] = field(default_factory=list)
    #: Called with each turn as it finishes (the call record writes it at once).
    on_turn: Callable[[Turn], None] | None = None
    _caller: Turn | None = None
    _bot: Turn | None = None
    #: Text the gateway sent the model on the caller's behalf (a key press as text), which the model's
    #: input transcription echoes back: that echo is not something the caller said.
    _echoes: list[str] = field(default_factory=list)

    def _finished(self, turn: Turn) -> None:
        self.turns.append(turn)
        if self.on_turn is not None:
            self.on_turn(turn)

    def caller_text(self, text: str, now: float | None = None) -> None:
        if text.strip() in self._echoes:
            self._echoes.remove(text.strip())
            return
        if self._caller is None:
            self._caller = Turn("caller", "", now if now is not None else time.time())
        self._caller.text += text

    def bot_text(self, text: str, now: float | None = None) -> None:
        # The model answering means the caller's utterance is over.
        self.end_caller(now)
        if self._bot is None:
            self._bot = Turn("bot", "", now if now is not None else time.time())
        self._bot.text += text

    def note(self, role: Role, text: str, now: float | None = None, *, sent_as: str = "") -> Turn:
        """A turn that is not transcribed (a key press); ``sent_as``: the text the model got for it."""
        if sent_as:
            self._echoes.append(sent_as.strip())
            del self._echoes[:-16]  # a model that never echoes must not grow this
        turn = Turn(role, text, now if now is not None else time.time())
        turn.ended_at = turn.started_at
        self._finished(turn)
        return turn

    def end_caller(self, now: float | None = None) -> Turn | None:
        turn, self._caller = self._caller, None
        if turn is None or not turn.text.strip():
            return None
        turn.text = turn.text.strip()
        if turn.text in self._echoes:  # the echo came in fragments
            self._echoes.remove(turn.text)
            return None
        turn.ended_at = now if now is not None else time.time()
        self._finished(turn)
        return turn

    def end_bot(self, *, heard_fraction: float | None = None, now: float | None = None) -> Turn | None:
        """Close the current bot turn. ``heard_fraction`` < 1 marks it as cut off by the caller."""
        self.end_caller(now)
        turn, self._bot = self._bot, None
        if turn is None:
            return None
        turn.text = turn.text.strip()
        turn.ended_at = now if now is not None else time.time()
        if heard_fraction is not None and heard_fraction < 1.0:
            turn.interrupted = True
            turn.heard = heard_prefix(turn.text, heard_fraction)
        if turn.text or turn.interrupted:
            self._finished(turn)
            return turn
        return None

    def close(self, now: float | None = None) -> None:
        self.end_caller(now)
        self.end_bot(now=now)

    def as_list(self) -> list[dict[str, object]]:
        live = [t for t in (self._caller, self._bot) if t is not None and t.text.strip()]
        return [t.as_dict() for t in (*self.turns, *live)]
