"""The two directions of a call's audio, composed from G.711, the streaming resampler and the reframer.

One :class:`Uplink` and one :class:`Downlink` per call; both are plain synchronous objects with no
clock, so the bridge decides when to flush (end of a bot turn) and when to reset (barge-in).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.audio.formats import CODEC_WIDTH, FRAME_MS, check_codec, frame_bytes
from gateway.audio.framing import Reframer
from gateway.audio.g711 import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from gateway.audio.resample import StreamResampler
from gateway.errors import AudioError

__all__ = ["DECODERS", "ENCODERS", "SILENCE_BYTE", "Downlink", "Uplink"]


def _same(pcm: bytes) -> bytes:
    """L16 is already PCM16 little-endian: nothing to decode or encode (no copy)."""
    return pcm


#: codec → PCM16 decoder, encoder from PCM16, and the byte of silence: every layer converts with these.
DECODERS: dict[str, Callable[[bytes], bytes]] = {"ulaw": ulaw_to_pcm16, "alaw": alaw_to_pcm16, "l16": _same}
ENCODERS: dict[str, Callable[[bytes], bytes]] = {"ulaw": pcm16_to_ulaw, "alaw": pcm16_to_alaw, "l16": _same}
SILENCE_BYTE: dict[str, int] = {"ulaw": ULAW_SILENCE, "alaw": ALAW_SILENCE, "l16": 0}


class Uplink:
    """Caller → Gemini: G.711 (μ-law or A-law) or L16 at ``in_rate`` → PCM16 at ``out_rate``.

    Wideband L16 at 16 kHz to a 16 kHz uplink is a pass-through: no decode, no resampler, no copy.

    Per 20 ms frame (160 bytes in, 640 bytes out at 8→16 kHz): one G.711 decode in C (one ``bytes``);
    then the resampler converts the samples into its preallocated float buffer (no allocation),
    ``np.dot`` gathers the strided windows into a temporary 160×30 float64 matrix and multiplies it
    by the taps (one result array), rounding and clipping run in place, and the result becomes an
    int16 array and the returned ``bytes``: five buffers, ~8 µs of CPU (``python bench/audio.py``).
    Latency: the resampler's group delay (1.8 ms) and nothing else; every frame in gives a whole
    frame out.
    """

    __slots__ = ("_decode", "_resampler", "codec", "delay_ms", "in_rate", "out_rate")

    def __init__(self, codec: str = "ulaw", in_rate: int = 8000, out_rate: int = 16000) -> None:
        self.codec = check_codec(codec)
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._decode = DECODERS[codec]
        self._resampler = StreamResampler(in_rate, out_rate) if in_rate != out_rate else None
        #: Algorithmic latency added by this direction.
        self.delay_ms = self._resampler.delay_ms if self._resampler else 0.0

    def process(self, encoded: bytes) -> bytes:
        """Decode and resample one chunk of caller audio; returns PCM16 bytes (maybe empty)."""
        if self.codec == "l16" and len(encoded) & 1:
            raise AudioError(f"L16 audio must have an even byte count, got {len(encoded)}")
        pcm = self._decode(encoded)
        return self._resampler.process(pcm) if self._resampler else pcm

    def reset(self) -> None:
        """Drop the resampler's history (e.g. after a gap in the caller's stream)."""
        if self._resampler:
            self._resampler.reset()


class Downlink:
    """Gemini → caller: PCM16 at ``in_rate`` → G.711 or L16 at ``out_rate`` in exact ``frame_ms`` frames.

    Per 20 ms of model audio (960 bytes at 24 kHz → one 160-byte frame): the resampler as in
    :class:`Uplink` (its temporary window matrix is 160×91 float64 here; result, int16 array and
    ``bytes``), one G.711 encode in C (one ``bytes``) and, because 20 ms in gives exactly 20 ms out,
    the encoded chunk *is* the frame (no copy) whenever the model's chunks are whole frames: five
    buffers, ~10 µs of CPU (``python bench/audio.py``). Latency: the resampler's group delay
    (1.9 ms) plus whatever part of a frame the model's chunk sizes leave pending (:attr:`pending_ms`).
    """

    __slots__ = (
        "_active",
        "_bytes_per_ms",
        "_encode",
        "_framer",
        "_resampler",
        "codec",
        "delay_ms",
        "frame_ms",
        "in_rate",
        "out_rate",
    )

    def __init__(
        self, codec: str = "ulaw", in_rate: int = 24000, out_rate: int = 8000, frame_ms: int = FRAME_MS
    ) -> None:
        self.codec = check_codec(codec)
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.frame_ms = frame_ms
        self._encode = ENCODERS[codec]
        self._resampler = StreamResampler(in_rate, out_rate) if in_rate != out_rate else None
        #: Algorithmic latency added by this direction (excluding partial-frame waits).
        self.delay_ms = self._resampler.delay_ms if self._resampler else 0.0
        width = CODEC_WIDTH[codec]
        self._framer = Reframer(frame_bytes(out_rate, width, frame_ms), SILENCE_BYTE[codec])
        self._bytes_per_ms = out_rate * width / 1000
        self._active = False

    @property
    def pending_ms(self) -> float:
        """Audio accepted but not yet in a frame: the partial frame plus the filter tail of a turn."""
        held = self._framer.pending / self._bytes_per_ms
        return held + self.delay_ms if self._active else held

    def process(self, pcm: bytes) -> list[bytes]:
        """Take one chunk of model audio; return zero or more complete frames."""
        if self._resampler:
            pcm = self._resampler.process(pcm)
            self._active = True
        return self._framer.push(self._encode(pcm))

    def flush(self) -> list[bytes]:
        """End of a bot turn: the resampler's tail and the last partial frame, padded with silence."""
        frames = self._framer.push(self._encode(self._resampler.flush())) if self._resampler else []
        self._active = False
        last = self._framer.flush()
        if last is not None:
            frames.append(last)
        return frames

    def reset(self) -> None:
        """Barge-in: drop everything held so no stale audio reaches the caller."""
        if self._resampler:
            self._resampler.reset()
        self._framer.reset()
        self._active = False
