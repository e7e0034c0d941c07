"""Pure signal processing for call audio: G.711, streaming resampling, framing, per-direction transcoding.

Sans-I/O and clock-free: no event loop, no timers, no ``time``. Callers decide when a turn ends
(``flush``) and when the caller barges in (``reset``).
"""

from __future__ import annotations

from gateway.audio.formats import (
    FRAME_MS,
    LIVE_INPUT_RATE,
    LIVE_OUTPUT_RATE,
    TELEPHONY_RATE,
    bytes_per_ms,
    duration_ms,
    frame_bytes,
)
from gateway.audio.framing import Reframer
from gateway.audio.g711 import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from gateway.audio.resample import SUPPORTED_RATE_PAIRS, StreamResampler
from gateway.audio.transcode import Downlink, Uplink

__all__ = [
    "ALAW_SILENCE",
    "FRAME_MS",
    "LIVE_INPUT_RATE",
    "LIVE_OUTPUT_RATE",
    "SUPPORTED_RATE_PAIRS",
    "TELEPHONY_RATE",
    "ULAW_SILENCE",
    "Downlink",
    "Reframer",
    "StreamResampler",
    "Uplink",
    "alaw_to_pcm16",
    "bytes_per_ms",
    "duration_ms",
    "frame_bytes",
    "pcm16_to_alaw",
    "pcm16_to_ulaw",
    "ulaw_to_pcm16",
]
