"""G.711 μ-law and A-law ⇄ PCM16 (signed 16-bit little-endian mono) for whole buffers.

Built on :mod:`audioop` (stdlib on 3.11/3.12, the ``audioop-lts`` package from 3.13). We measured it
against numpy lookup tables (``table.take(np.frombuffer(frame))``) on 160-byte (20 ms) frames on the
development machine (``python bench/audio.py``): audioop decodes in ~0.1 µs and encodes in ~0.6 µs,
the tables need ~1.0 µs and ~1.8 µs because each numpy call costs about a microsecond of fixed
overhead that a C loop over 160 samples never pays. audioop also allocates just the result ``bytes``.

Behaviour worth knowing: audioop's μ-law encoder works on 14-bit values, so 381 of the 65536 int16
inputs (negative values on step boundaries) come out one quantisation step away from the textbook
16-bit encoder; both decoders match the standard curves on all 256 codes. Encode → decode error is
at most 515 for |x| ≤ 32124 (μ-law's ceiling; 644 above it, where the curve clips) and at most 512 for
A-law.
"""

from __future__ import annotations

import warnings

from gateway.errors import AudioError

with warnings.catch_warnings():
    # PEP 594 deprecation on 3.11/3.12; we depend on audioop-lts where it was removed.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "alaw_to_pcm16",
    "pcm16_to_alaw",
    "pcm16_to_ulaw",
    "ulaw_to_pcm16",
]

#: μ-law code of digital silence (+0).
ULAW_SILENCE = 0xFF
#: A-law code of digital silence (decodes to +8, the smallest positive step).
ALAW_SILENCE = 0xD5


def ulaw_to_pcm16(data: bytes) -> bytes:
    """Decode μ-law bytes to PCM16 (twice as many bytes)."""
    return audioop.ulaw2lin(data, 2)


def alaw_to_pcm16(data: bytes) -> bytes:
    """Decode A-law bytes to PCM16 (twice as many bytes)."""
    return audioop.alaw2lin(data, 2)


def pcm16_to_ulaw(data: bytes) -> bytes:
    """Encode PCM16 to μ-law; an odd byte count raises :class:`AudioError`."""
    if len(data) & 1:
        raise AudioError(f"PCM16 needs an even number of bytes, got {len(data)}")
    return audioop.lin2ulaw(data, 2)


def pcm16_to_alaw(data: bytes) -> bytes:
    """Encode PCM16 to A-law; an odd byte count raises :class:`AudioError`."""
    if len(data) & 1:
        raise AudioError(f"PCM16 needs an even number of bytes, got {len(data)}")
    return audioop.lin2alaw(data, 2)
