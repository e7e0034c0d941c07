"""What Twilio does with the audio a gateway sends, on an 8 kHz sample clock; no I/O, no clock.

Twilio buffers outbound ``media`` and plays it in order at real time; a ``mark`` is echoed when
everything queued before it has played (at once if nothing is queued); ``clear`` drops the unplayed
audio and echoes every pending mark immediately. The caller feeds this model with the current
sample position (``now``, samples since the stream started) so the rules are testable without a
loop, and renders what the caller heard, silence included.
"""

from __future__ import annotations

from collections import deque

SAMPLE_RATE = 8000
ULAW_SILENCE = 0xFF


class Playout:
    """The outbound buffer of one simulated call; all positions are in 8 kHz samples."""

    def __init__(self) -> None:
        #: Where the queued audio ends; when ``end <= now`` the buffer is empty.
        self.end = 0
        #: Played or queued audio as (start sample, μ-law bytes); contiguous chunks are merged.
        self._segments: list[tuple[int, bytearray]] = []
        self._pending: deque[tuple[int, str]] = deque()
        self.dropped_samples = 0

    def busy(self, now: int) -> bool:
        """Whether audio is still queued at ``now``."""
        return self.end > now

    def media(self, now: int, payload: bytes) -> int:
        """Queue ``payload``; returns the sample where it starts playing."""
        start = max(now, self.end)
        if self._segments and self.end == start:
            self._segments[-1][1].extend(payload)
        else:
            self._segments.append((start, bytearray(payload)))
        self.end = start + len(payload)
        return start

    def idle(self, now: int) -> bool:
        """Nothing left to play at ``now`` and no mark waiting for its echo: what was sent has played."""
        return self.end <= now and not self._pending

    def mark(self, now: int, name: str) -> bool:
        """Queue a mark; True when it is due at once (nothing queued before it)."""
        if not self._pending and self.end <= now:
            return True
        self._pending.append((max(now, self.end), name))
        return False

    def due_marks(self, now: int) -> list[str]:
        """Marks whose audio has finished playing by ``now``, in order."""
        due: list[str] = []
        while self._pending and self._pending[0][0] <= now:
            due.append(self._pending.popleft()[1])
        return due

    def clear(self, now: int) -> list[str]:
        """Drop unplayed audio; returns every pending mark, all due at once."""
        if self.end > now:
            self.dropped_samples += self.end - now
            kept: list[tuple[int, bytearray]] = []
            for start, data in self._segments:
                if start >= now:
                    continue
                if start + len(data) > now:
                    del data[now - start :]
                kept.append((start, data))
            self._segments = kept
            self.end = now
        names = [name for _, name in self._pending]
        self._pending.clear()
        return names

    def heard_samples(self, until: int) -> int:
        """How many samples of bot audio had played by ``until``."""
        return sum(max(0, min(len(d), until - s)) for s, d in self._segments)

    def render(self, total: int) -> bytes:
        """The caller's ear from sample 0 to ``total``: played audio, silence in the gaps, as μ-law."""
        timeline = bytearray([ULAW_SILENCE]) * total
        for start, data in self._segments:
            if start >= total:
                break
            stop = min(total, start + len(data))
            timeline[start:stop] = data[: stop - start]
        return bytes(timeline)
