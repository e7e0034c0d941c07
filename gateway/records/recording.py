"""Optional audio recording of a call: both legs in one stereo WAV, and the retention purge.

Left channel: the caller, as Twilio sent it. Right channel: the bot, as the gateway sent it to the
caller (after barge-in clears, so it is what the line carried, not everything Gemini generated).
The caller's 20 ms frames are the clock: each one is paired with the next bot frame sent (or
silence), which keeps the legs aligned to within the playout lead without timestamps.

Both legs are in the stream's own format (μ-law or A-law 8 kHz, L16 at 8/16/24 kHz from a wideband
provider), and the WAV is written at the stream's rate.

Cost on the media path while recording: one interleave of two frames by slice assignment (done in C,
one per byte of a sample) per caller frame. Decoding G.711 to PCM16 and file writes run on a worker
thread, one second of audio at a time, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import logging
import time
import wave
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Executor
from pathlib import Path

from gateway.audio.formats import CODEC_WIDTH
from gateway.audio.transcode import DECODERS, SILENCE_BYTE

_LOG = logging.getLogger("gateway.records")

RATE = 8000
#: Bot frames waiting for a caller frame to pair with; more means the caller's stream stalled.
MAX_BOT_BACKLOG = 250


def recording_path(root: Path, dialplan: str, call_id: str, now: float | None = None) -> Path:
    """``root/<dialplan>/<YYYY-MM-DD>/<call id>.wav``: per plan, so each plan's retention applies."""
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() if now is None else now))
    safe = "".join(c for c in call_id if c.isalnum() or c in "-_") or "call"
    return root / dialplan / day / f"{safe}.wav"


class CallRecording:
    """Records one call to ``path``. Call :meth:`close` (awaited) when the call ends."""

    def __init__(self, path: Path, executor: Executor, *, codec: str = "ulaw", rate: int = RATE) -> None:
        self.path = path
        self._executor = executor
        self._decode = DECODERS[codec]
        self._width = CODEC_WIDTH[codec]
        self._rate = rate
        #: Interleaved bytes handed to the writer thread at once: one second of stereo audio.
        self._chunk_bytes = 2 * rate * self._width
        self._silent_frame = bytes([SILENCE_BYTE[codec]]) * (rate // 50 * self._width)
        self._bot: deque[bytes] = deque(maxlen=MAX_BOT_BACKLOG)
        self._buf = bytearray()
        self._writer: wave.Wave_write | None = None
        self._pending: list[asyncio.Future[None]] = []
        self._failed = False
        self.frames = 0

    # --- media path -------------------------------------------------------------------------------
    def caller(self, payload: bytes) -> None:
        """One caller frame arrived: write it beside the bot frame playing at the same time."""
        n, width, silent = len(payload), self._width, self._silent_frame
        bot = self._bot.popleft() if self._bot else silent
        if len(bot) != n:
            bot = (bot + silent * (n // len(silent) + 1))[:n]
        buf = self._buf
        start = len(buf)
        buf.extend(payload)
        buf.extend(bot)
        step, end = 2 * width, start + 2 * n
        for b in range(width):  # sample by sample: caller left, bot right
            buf[start + b : end : step] = payload[b::width]
            buf[start + width + b : end : step] = bot[b::width]
        self.frames += 1
        if len(buf) >= self._chunk_bytes:
            self._hand_off()

    def bot(self, frame: bytes) -> None:
        """One bot frame was sent to the caller."""
        self._bot.append(frame)

    def clear_bot(self) -> None:
        """Barge-in: Twilio drops what it had not played yet, so the recording does too."""
        self._bot.clear()

    # --- writer thread ----------------------------------------------------------------------------
    def _hand_off(self) -> None:
        chunk, self._buf = bytes(self._buf), bytearray()
        if self._failed:
            return
        loop = asyncio.get_running_loop()
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(asyncio.wrap_future(self._executor.submit(self._write, chunk), loop=loop))

    def _write(self, chunk: bytes) -> None:
        if self._failed:
            return
        try:
            if self._writer is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                writer = wave.open(str(self.path), "wb")  # noqa: SIM115  closed in _finish
                writer.setnchannels(2)
                writer.setsampwidth(2)
                writer.setframerate(self._rate)
                self._writer = writer
            # G.711 decodes byte by byte (and L16 is samples already): the stereo stays interleaved.
            self._writer.writeframesraw(self._decode(chunk))
        except (OSError, wave.Error) as exc:
            self._failed = True
            _LOG.error(
                "recording failed; the call goes on", extra={"path": str(self.path), "error": str(exc)}
            )

    def _finish(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()  # patches the header with the final length
            except (OSError, wave.Error) as exc:
                _LOG.error("recording not finalised", extra={"path": str(self.path), "error": str(exc)})

    async def close(self) -> None:
        """Write what is buffered and finalise the file."""
        if self._buf:
            self._hand_off()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._finish)
        self._pending.clear()


def purge_recordings(root: Path, retention_days: Mapping[str, int | None], now: float | None = None) -> int:
    """Delete recordings older than their dialplan's retention; returns how many were deleted.

    ``retention_days`` maps dialplan name → days to keep (``None``: keep forever). A folder whose
    plan is not in the map (a plan since removed) is left alone: deleting recordings is never a
    side effect of editing dialplans.
    """
    if not root.is_dir():
        return 0
    now = time.time() if now is None else now
    deleted = 0
    for plan_dir in root.iterdir():
        days = retention_days.get(plan_dir.name)
        if days is None or not plan_dir.is_dir():
            continue
        cutoff = now - days * 86_400
        for day_dir in plan_dir.iterdir():
            if not day_dir.is_dir():
                continue
            for file in day_dir.glob("*.wav"):
                try:
                    if file.stat().st_mtime < cutoff:
                        file.unlink()
                        deleted += 1
                except FileNotFoundError:
                    continue
            try:
                day_dir.rmdir()  # only succeeds once empty
            except OSError:
                pass
    return deleted
