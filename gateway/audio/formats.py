"""Rates and sizes of the audio the gateway moves, and the byte ↔ time arithmetic between them.

Kept tiny and dependency-free so every layer (telephony codecs, bridge, playout) can size buffers
without importing numpy.
"""

from __future__ import annotations

from gateway.errors import AudioError

#: Telephone audio: G.711 at 8 kHz, one byte per sample.
TELEPHONY_RATE = 8000
#: What Gemini Live expects from us (PCM16 little-endian, mono).
LIVE_INPUT_RATE = 16000
#: What Gemini Live sends back (PCM16 little-endian, mono).
LIVE_OUTPUT_RATE = 24000
#: Bytes per PCM16 sample.
PCM16_WIDTH = 2
#: Duration of one telephony media frame; providers pace and count in these.
FRAME_MS = 20
#: Codec names the transcoders accept: G.711 μ-law and A-law (a byte per sample), and linear PCM16
#: little-endian ("l16", two bytes per sample: wideband providers' 16 kHz, Asterisk's slin).
CODECS = ("ulaw", "alaw", "l16")
#: Bytes per sample of each codec.
CODEC_WIDTH = {"ulaw": 1, "alaw": 1, "l16": PCM16_WIDTH}


def bytes_per_ms(rate: int, width: int = PCM16_WIDTH) -> float:
    """Bytes per millisecond of mono audio at ``rate`` Hz with ``width``-byte samples."""
    return rate * width / 1000


def frame_bytes(rate: int, width: int = PCM16_WIDTH, frame_ms: int = FRAME_MS) -> int:
    """Exact byte size of one ``frame_ms`` frame; raises when the frame is not a whole number of samples."""
    samples, rest = divmod(rate * frame_ms, 1000)
    if rest or samples <= 0:
        raise AudioError(f"{frame_ms} ms at {rate} Hz is not a whole, positive number of samples")
    return samples * width


def duration_ms(nbytes: int, rate: int, width: int = PCM16_WIDTH) -> float:
    """Milliseconds of audio held in ``nbytes`` bytes."""
    return nbytes * 1000 / (rate * width)


def check_codec(codec: str) -> str:
    """Return ``codec`` if the audio core knows it, else raise :class:`AudioError`."""
    if codec not in CODECS:
        raise AudioError(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")
    return codec
