"""Test signals and measurements shared by the audio tests (speech-band tones, band-limited noise, SNR)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from gateway.audio import StreamResampler

Array = npt.NDArray[np.float64]


def tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 10000.0) -> npt.NDArray[np.int16]:
    """A sine tone as int16 samples."""
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def band_noise(
    rate: int, seconds: float = 1.0, low: float = 300.0, high: float = 3400.0, seed: int = 7
) -> npt.NDArray[np.int16]:
    """Gaussian noise band-limited (brick-wall, in the frequency domain) to ``low``..``high`` Hz."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(rate * seconds))
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    spectrum[(freqs < low) | (freqs > high)] = 0
    y = np.fft.irfft(spectrum, x.size)
    return np.round(y / np.std(y) * 4000).astype(np.int16)


def vhq(x: npt.NDArray[np.int16], in_rate: int, out_rate: int) -> Array:
    """The quality reference: one-shot soxr VHQ of the whole signal."""
    return np.asarray(soxr.resample(x.astype(np.float64), in_rate, out_rate, quality="VHQ"), dtype=np.float64)


def stream(resampler: StreamResampler, x: npt.NDArray[np.int16], sizes: list[int] | int) -> list[bytes]:
    """Feed ``x`` in chunks (a fixed sample count, or a list of counts cycled) and return every output."""
    sizes = [sizes] if isinstance(sizes, int) else sizes
    out: list[bytes] = []
    i = k = 0
    while i < x.size:
        n = sizes[k % len(sizes)]
        out.append(resampler.process(x[i : i + n].tobytes()))
        i += n
        k += 1
    return out


def samples(chunks: list[bytes]) -> Array:
    """Concatenate PCM16 chunks into float samples."""
    return np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float64)


def snr_db(y: Array, ref: Array) -> float:
    """Signal-to-error ratio of ``y`` against ``ref`` (same length), in dB."""
    err = y - ref
    return float(10 * np.log10(np.sum(ref**2) / np.sum(err**2)))


def best_lag(y: Array, ref: Array, max_lag: int = 64) -> int:
    """Delay of ``y`` behind ``ref`` in samples, found by cross-correlation."""
    n = min(ref.size, y.size - max_lag) - max_lag
    scores = [float(np.dot(y[lag : lag + n], ref[:n])) for lag in range(max_lag)]
    return int(np.argmax(scores))
