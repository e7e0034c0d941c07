"""The gateway's own voice activity detection, for manual turn-taking (``[vad] disabled = true``).

With Gemini's automatic activity detection off, the server treats only audio between a client's
``activityStart`` and ``activityEnd`` as the caller's turn and answers after the end (docs/gemini-live.md
§2.4); without them a call goes silent. :class:`LocalVad` decides those edges from the caller's PCM,
one frame at a time. Sans-I/O and clock-free: durations are counted in samples fed.

How it decides (energy with hysteresis and hangover):

* a frame is *loud* when its RMS is above the onset threshold: the sensitivity's absolute level, or
  ``ONSET_RATIO`` times the line's noise floor when that is higher. The floor is the quietest frame of
  the last ``FLOOR_WINDOW_MS`` (minimum statistics, kept per half-second block): speech always has
  quieter moments, steady hiss or hum does not, so a hum is learnt within the window and stops reading
  as speech. The floor is capped at ``FLOOR_MAX`` (about -30 dBFS, far noisier than a phone line), so
  a caller who talks without a pause from the first moment cannot raise it to their own level;
* ``onset_ms`` of consecutive loud frames start an activity (a click or a tap is shorter). The
  frames before the onset (``preroll_ms``) are kept in a ring, so the caller's first syllable is sent
  right after ``activityStart`` instead of being clipped;
* during an activity a frame is *voiced* above a lower threshold (hysteresis), and ``silence_ms`` of
  unvoiced frames end it (the hangover keeps a breath or a short pause inside one turn);
* ``max_activity_ms`` ends an activity that never goes quiet (noise the floor could not learn while
  it lasted), so the model still answers.

Cost per 20 ms frame: one ``audioop.rms`` (C) and a few comparisons; ``bench/audio.py`` measures it.
"""

from __future__ import annotations

import enum
import warnings
from collections import deque
from typing import Literal

from gateway.audio.formats import FRAME_MS
from gateway.errors import AudioError

with warnings.catch_warnings():
    # PEP 594 deprecation on 3.11/3.12; we depend on audioop-lts where it was removed.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["LocalVad", "VadEdge"]

Sensitivity = Literal["HIGH", "LOW"]

#: Onset level (int16 RMS) per start sensitivity: about -42 dBFS (HIGH: starts more often), -36 dBFS.
_ONSET_RMS = {"HIGH": 250.0, "LOW": 500.0}
#: Voiced level during an activity, relative to the onset level, per end sensitivity. Higher ends
#: speech more often (HIGH); lower holds on through soft endings (LOW).
_VOICED_RATIO = {"HIGH": 0.7, "LOW": 0.35}
#: Default hangover per end sensitivity when the dialplan gives no ``silence_duration_ms``.
_SILENCE_MS = {"HIGH": 400, "LOW": 900}
#: A loud frame must be this many times the noise floor (about +9.5 dB).
ONSET_RATIO = 3.0
#: The noise floor is the quietest frame of this long a past, tracked in blocks of _FLOOR_BLOCK_MS.
FLOOR_WINDOW_MS = 3000
_FLOOR_BLOCK_MS = 500
#: The highest noise floor believed (int16 RMS): an onset then needs about -20 dBFS, still speech.
FLOOR_MAX = 1000


class VadEdge(enum.IntEnum):
    """What one frame changed."""

    NONE = 0
    #: Speech began: send ``activityStart``, then :meth:`LocalVad.take_preroll`.
    START = 1
    #: Speech ended: send ``activityEnd``.
    END = 2


class LocalVad:
    """Energy-based speech detector for one call's caller audio (PCM16 mono at ``rate``)."""

    __slots__ = (
        "_active_samples",
        "_block_len",
        "_block_min",
        "_block_samples",
        "_blocks",
        "_floor",
        "_max_samples",
        "_onset",
        "_onset_rms",
        "_onset_samples",
        "_preroll_samples",
        "_quiet",
        "_ring",
        "_silence_samples",
        "_voiced_ratio",
        "active",
        "rate",
    )

    def __init__(
        self,
        *,
        rate: int = 16000,
        start_sensitivity: Sensitivity | None = None,
        end_sensitivity: Sensitivity | None = None,
        silence_ms: int | None = None,
        preroll_ms: int | None = None,
        onset_ms: int = 60,
        max_activity_ms: int = 30_000,
    ) -> None:
        """``None`` settings take the defaults: HIGH start sensitivity, a 600 ms hangover (400 / 900 ms
        for HIGH / LOW end sensitivity) and a 240 ms pre-roll. ``onset_ms`` is the speech needed before
        a start is committed (what Gemini calls ``prefixPaddingMs``)."""
        if not 8000 <= rate <= 48000:
            raise AudioError(f"local VAD: unsupported rate {rate}")
        if onset_ms < 0 or max_activity_ms <= 0 or (preroll_ms is not None and preroll_ms < 0):
            raise AudioError("local VAD: onset_ms and preroll_ms must be >= 0, max_activity_ms > 0")
        per_ms = rate / 1000
        self.rate = rate
        self.active = False
        self._onset_rms = _ONSET_RMS[start_sensitivity or "HIGH"]
        self._voiced_ratio = _VOICED_RATIO.get(end_sensitivity or "", 0.5)
        if silence_ms is None:
            silence_ms = _SILENCE_MS.get(end_sensitivity or "", 600)
        self._silence_samples = max(1, int(silence_ms * per_ms))
        self._onset_samples = int(onset_ms * per_ms)
        self._preroll_samples = int((240 if preroll_ms is None else preroll_ms) * per_ms)
        self._max_samples = int(max_activity_ms * per_ms)
        self._floor = 0
        self._block_len = int(_FLOOR_BLOCK_MS * per_ms)
        self._block_min = 1 << 16
        self._block_samples = 0
        self._blocks: deque[int] = deque(maxlen=FLOOR_WINDOW_MS // _FLOOR_BLOCK_MS)
        self._onset = 0
        self._quiet = 0
        self._active_samples = 0
        # Counted in 20 ms frames (what a phone line delivers), so appending never needs a loop.
        nominal = max(1, int(FRAME_MS * per_ms))
        self._ring: deque[bytes] = deque(
            maxlen=max(1, -(-(self._preroll_samples + self._onset_samples) // nominal))
        )

    @property
    def noise_floor(self) -> int:
        """The line's estimated noise level (int16 RMS): the quietest recent frame."""
        return self._floor

    def feed(self, pcm: bytes) -> VadEdge:
        """Account one frame; returns the edge it caused, if any. While :attr:`active`, send the frame."""
        n = len(pcm) >> 1
        if n == 0:
            return VadEdge.NONE
        level = audioop.rms(pcm, 2)
        # Minimum statistics: down at once, up only as quieter blocks leave the window.
        if level < self._floor:
            self._floor = level
        if level < self._block_min:
            self._block_min = level
        self._block_samples += n
        if self._block_samples >= self._block_len:
            self._blocks.append(self._block_min)
            self._floor = min(min(self._blocks), FLOOR_MAX)
            self._block_min = 1 << 16
            self._block_samples = 0
        onset = self._onset_rms
        floor = self._floor * ONSET_RATIO
        if floor > onset:
            onset = floor
        if self.active:
            self._active_samples += n
            if level >= onset * self._voiced_ratio:
                self._quiet = 0
            else:
                self._quiet += n
            if self._quiet >= self._silence_samples or self._active_samples >= self._max_samples:
                self.active = False
                self._onset = 0
                return VadEdge.END
            return VadEdge.NONE
        # Not speaking: keep the pre-roll (plus the onset frames themselves) and watch for an onset.
        self._ring.append(pcm)
        if level >= onset:
            self._onset += n
            if self._onset >= self._onset_samples:
                self.active = True
                self._quiet = 0
                self._active_samples = self._onset
                return VadEdge.START
            return VadEdge.NONE
        self._onset = 0
        return VadEdge.NONE

    def take_preroll(self) -> list[bytes]:
        """The audio from before and during the onset, oldest first, to send after ``activityStart``."""
        chunks = list(self._ring)
        self._ring.clear()
        return chunks
