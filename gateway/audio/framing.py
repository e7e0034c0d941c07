"""Cut a stream of variable-size byte chunks into exact fixed-size frames.

Providers want media in exact 20 ms frames (160 bytes of μ-law at 8 kHz) while the resampler's output
size follows whatever the model sent; the remainder waits here for the next chunk.
"""

from __future__ import annotations

from gateway.errors import AudioError

__all__ = ["Reframer"]


class Reframer:
    """Variable-size input → exact ``frame_bytes`` frames; the remainder is kept for the next push.

    When nothing is pending, frames are sliced straight from the input (one copy per frame, no
    intermediate buffer); otherwise input is appended to one reusable ``bytearray``.
    """

    __slots__ = ("_buf", "_pad", "frame_bytes", "pad_byte")

    def __init__(self, frame_bytes: int, pad_byte: int) -> None:
        if frame_bytes <= 0:
            raise AudioError(f"frame size must be positive, got {frame_bytes}")
        if not 0 <= pad_byte <= 0xFF:
            raise AudioError(f"pad byte must be 0..255, got {pad_byte}")
        self.frame_bytes = frame_bytes
        self.pad_byte = pad_byte
        self._pad = bytes((pad_byte,))
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back until a full frame is available."""
        return len(self._buf)

    def push(self, data: bytes) -> list[bytes]:
        """Append ``data``; return every complete frame now available (possibly none)."""
        size = self.frame_bytes
        buf = self._buf
        if not buf:
            n = len(data)
            if n == size:
                return [data]
            full = n - n % size
            if full < n:
                buf += memoryview(data)[full:]
            return [data[i : i + size] for i in range(0, full, size)]
        buf += data
        full = len(buf) - len(buf) % size
        if not full:
            return []
        with memoryview(buf) as view:
            frames = [bytes(view[i : i + size]) for i in range(0, full, size)]
        del buf[:full]
        return frames

    def flush(self) -> bytes | None:
        """Return the remainder padded to a full frame with ``pad_byte``, or ``None`` when empty."""
        buf = self._buf
        if not buf:
            return None
        frame = bytes(buf) + self._pad * (self.frame_bytes - len(buf))
        buf.clear()
        return frame

    def reset(self) -> None:
        """Drop the remainder (barge-in)."""
        self._buf.clear()
