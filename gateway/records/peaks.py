"""Waveform peaks of a call recording, for the call inspector's timeline.

The page draws both channels from a few thousand numbers per call rather than downloading the WAV:
each bucket holds the loudest absolute sample of each channel (left: the caller, right: the bot; see
:mod:`gateway.records.recording`), scaled to 0–1000. The file is read in blocks, so an hour-long
wideband recording never sits in memory whole. Blocking: run it on a worker thread.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path
from typing import Any

import numpy as np

#: Finest bucket: 50 ms, so a short call's syllables show.
MIN_BUCKET_S = 0.05
#: At most this many buckets per channel: a long call gets coarser buckets, not a bigger answer.
MAX_BUCKETS = 6000
#: Buckets read per block (bounds memory whatever the call's length).
_BLOCK_BUCKETS = 200


def wav_peaks(path: Path, *, max_buckets: int = MAX_BUCKETS) -> dict[str, Any]:
    """The peaks of a stereo 16-bit WAV, as the inspector's ``/peaks`` endpoint returns them.

    Raises:
        OSError, EOFError, wave.Error: the file is missing, unfinished or not such a WAV.
    """
    with wave.open(str(path), "rb") as w:
        channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        if width != 2 or channels not in (1, 2):
            raise wave.Error(f"{path.name}: expected 16-bit mono or stereo, got {channels} x {width * 8} bit")
        bucket = max(round(rate * MIN_BUCKET_S), math.ceil(frames / max(1, max_buckets)))
        caller: list[int] = []
        bot: list[int] = []
        while True:
            raw = w.readframes(bucket * _BLOCK_BUCKETS)
            if not raw:
                break
            samples = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)
            level = np.abs(samples.astype(np.int32))
            n = len(level)
            whole = n - n % bucket
            blocks = [level[:whole].reshape(-1, bucket, channels).max(axis=1)] if whole else []
            if whole < n:
                blocks.append(level[whole:].max(axis=0, keepdims=True))
            for block in blocks:
                scaled = np.minimum(1000, block * 1000 // 32768).astype(int)
                caller += scaled[:, 0].tolist()
                bot += scaled[:, -1].tolist() if channels == 2 else [0] * len(scaled)
    return {
        "rate": rate,
        "duration_s": frames / rate if rate else 0.0,
        "bucket_s": bucket / rate if rate else 0.0,
        "caller": caller,
        "bot": bot,
    }
