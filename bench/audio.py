"""Audio-core benchmark: our streaming resampler vs soxr.ResampleStream (HQ, VHQ), and G.711 options.

For each call direction (uplink 8→16 kHz, downlink 24→8 kHz, and the wideband providers' 24→16 kHz) it feeds the same 10 s signal in 20 ms
chunks to each resampler and measures:

* latency_ms_max / latency_ms_median — at every chunk boundary, input time fed minus the signal
  time released so far, after aligning the output with a one-shot soxr VHQ of the whole signal
  (the alignment delay is found by cross-correlation, not taken from the code);
* snr_db — whole output (tail included) against that VHQ reference, edges excluded;
* alias_db — downlink: the output energy of a tone past the stop edge (0.625 × the output rate: 5 kHz
  into 8 kHz, 10 kHz into 16 kHz; it would alias to 3 and 6 kHz) relative to the input; uplink: the 5 kHz image of a 3 kHz tone relative to the tone;
* us_per_chunk — median CPU time per 20 ms chunk (time.perf_counter_ns around each call).

Then what a caller hears of the same 24 kHz reply through the μ-law 8 kHz path and the L16 16 kHz path:
the band kept (-3 dB edge) and the SNR against the 24 kHz original, whole band and below 4 kHz. Plus
G.711 µs per 160-byte frame for audioop and numpy lookup tables, whole-direction costs of
Uplink/Downlink, and the local VAD (gateway/audio/vad.py, manual turn-taking) per 16 kHz frame. Usage: ``python bench/audio.py [--json] [--all]``
(``--all`` adds soxr QQ/LQ/MQ streams and one-shot soxr over a sliding window with look-ahead). This machine is shared: figures are medians.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import timeit
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audio import Downlink, StreamResampler, Uplink, pcm16_to_ulaw, resample
from gateway.audio.transcode import DECODERS
from gateway.audio.vad import LocalVad
from gateway.process import tune_malloc

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SECONDS = 10.0
DIRECTIONS = {
    "uplink_8k_16k": (8000, 16000),
    "downlink_24k_8k": (24000, 8000),
    # Wideband providers (Vonage, Asterisk slin16, FreeSWITCH, jambonz, the softphone: 16 kHz L16). Their
    # uplink, 16 kHz L16 to Gemini's 16 kHz, is a pass-through: no resampler, nothing to measure.
    "downlink_24k_16k": (24000, 16000),
}


def _signal(rate: int, seconds: float, seed: int = 5) -> np.ndarray:
    """Speech-band test signal: 300-3400 Hz noise plus a few tones, int16."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    x = np.fft.irfft(spectrum, n)
    x = x / np.std(x) * 3000
    t = np.arange(n) / rate
    for f in (440.0, 1800.0, 3300.0):
        x += 2000 * np.sin(2 * np.pi * f * t)
    return np.round(x).astype(np.int16)


def _wideband(rate: int, seconds: float, seed: int = 7) -> np.ndarray:
    """A reply as the model speaks it at ``rate`` (24 kHz): speech-shaped noise from 100 Hz to 10 kHz
    (flat to 1 kHz, then falling 6 dB an octave, as voiced speech does) plus tones at 440 Hz, 2.5 kHz and
    the fricative band's 5.5 and 7 kHz, int16."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum[(freqs < 100) | (freqs > 10000)] = 0
    spectrum *= np.where(freqs > 1000, 1000 / np.maximum(freqs, 1), 1.0)
    x = np.fft.irfft(spectrum, n)
    x = x / np.std(x) * 2500
    t = np.arange(n) / rate
    for f, a in ((440.0, 2000), (2500.0, 1200), (5500.0, 600), (7000.0, 500)):
        x += a * np.sin(2 * np.pi * f * t)
    return np.round(np.clip(x, -32768, 32767)).astype(np.int16)


def _heard(path: str, reply: np.ndarray) -> tuple[np.ndarray, int]:
    """What the caller hears of ``reply`` (24 kHz) through the gateway's downlink: μ-law at 8 kHz (the
    G.711 providers) or L16 at 16 kHz (the wideband ones), in 20 ms chunks as the model sends them."""
    codec, rate = {"ulaw_8k": ("ulaw", 8000), "l16_16k": ("l16", 16000)}[path]
    down = Downlink(codec, 24000, rate)
    frames: list[bytes] = []
    for i in range(0, reply.size, 480):
        frames += down.process(reply[i : i + 480].tobytes())
    frames += down.flush()
    encoded = b"".join(frames)
    pcm = DECODERS[codec](encoded)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64), rate


def _band_edge_hz(y: np.ndarray, rate: int, x: np.ndarray) -> float:
    """The highest frequency (100 Hz bands) where what was heard keeps the original's level within 3 dB."""
    ref = soxr.resample(x.astype(np.float64), 24000, rate, quality="VHQ")
    n = min(ref.size, y.size)
    bands = np.arange(0, rate / 2, 100.0)
    power_y = np.abs(np.fft.rfft(y[:n])) ** 2
    power_x = np.abs(np.fft.rfft(ref[:n])) ** 2
    freqs = np.fft.rfftfreq(n, 1 / rate)
    edge = 0.0
    for lo in bands:
        sel = (freqs >= lo) & (freqs < lo + 100)
        if power_x[sel].sum() > 0 and power_y[sel].sum() / power_x[sel].sum() >= 10 ** (-0.3):
            edge = lo + 100
    return edge


def _aligned(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``y`` moved onto ``ref``: the delay found by cross-correlation, to a fraction of a sample (a
    parabola through the peak), removed by a phase shift. A half-sample misalignment alone would read
    as -10 dB of error at the top of the band."""
    n = 1 << int(np.ceil(np.log2(y.size + ref.size)))
    corr = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(ref, n)), n)
    k = int(np.argmax(corr[:4800]))
    a, b, c = corr[k - 1], corr[k], corr[k + 1]
    delay = k + 0.5 * (a - c) / (a - 2 * b + c)
    spectrum = np.fft.rfft(y, n) * np.exp(2j * np.pi * np.fft.rfftfreq(n) * delay)
    return np.asarray(np.fft.irfft(spectrum, n)[: ref.size])


def _lowpass(x: np.ndarray, cutoff: float = 3800.0) -> np.ndarray:
    """``x`` (24 kHz) with everything above ``cutoff`` removed (an ideal filter, in the frequency domain)."""
    spectrum = np.fft.rfft(x)
    spectrum[np.fft.rfftfreq(x.size, 1 / 24000) > cutoff] = 0
    return np.asarray(np.fft.irfft(spectrum, x.size))


def measure_heard() -> dict[str, dict[str, float]]:
    """The same 24 kHz reply heard through the μ-law 8 kHz path and the L16 16 kHz path: the band the
    caller gets, and the SNR against the 24 kHz original (the heard audio brought back to 24 kHz by soxr
    VHQ and aligned): over the whole band, where what is missing above the path's band counts as error,
    and below 4 kHz, the band both carry, where what is lost is the codec's (μ-law's quantisation)."""
    x = _wideband(24000, SECONDS)
    ref = x.astype(np.float64)
    edge = 2400

    def snr(heard: np.ndarray, original: np.ndarray) -> float:
        n = min(heard.size, original.size) - 2 * edge
        err = heard[edge : edge + n] - original[edge : edge + n]
        return round(float(10 * np.log10(np.sum(original[edge : edge + n] ** 2) / np.sum(err**2))), 1)

    out: dict[str, dict[str, float]] = {}
    for path, (codec, rate) in {"ulaw_8k": ("ulaw", 8000), "l16_16k": ("l16", 16000)}.items():
        y, _ = _heard(path, x)
        back = _aligned(np.asarray(soxr.resample(y, rate, 24000, quality="VHQ"), dtype=np.float64), ref)
        out[path] = {
            "band_edge_hz": _band_edge_hz(y, rate, x),
            "snr_db_vs_24k": snr(back, ref),
            "snr_db_below_4k": snr(_lowpass(back), _lowpass(ref)),
            "latency_ms": round(Downlink(codec, 24000, rate).delay_ms, 2),
        }
    return out


def _tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    return np.round(10000 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.int16)


class _Ours:
    def __init__(self, in_rate: int, out_rate: int, compiled: bool | None = None) -> None:
        self.r = StreamResampler(in_rate, out_rate, compiled=compiled)

    def chunk(self, x: np.ndarray) -> np.ndarray:
        return np.frombuffer(self.r.process(x.tobytes()), dtype="<i2")

    def last(self) -> np.ndarray:
        return np.frombuffer(self.r.flush(), dtype="<i2")


class _Soxr:
    def __init__(self, in_rate: int, out_rate: int, quality: str) -> None:
        self.r = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def chunk(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.r.resample_chunk(x))

    def last(self) -> np.ndarray:
        return np.asarray(self.r.resample_chunk(np.zeros(0, dtype=np.int16), last=True))


class _Window:
    """One-shot soxr.resample over history + chunk + look-ahead, the other way to stream with soxr."""

    def __init__(
        self, in_rate: int, out_rate: int, quality: str, look_ms: float, history_ms: float = 40
    ) -> None:
        self.in_rate, self.out_rate, self.quality = in_rate, out_rate, quality
        self.look = int(in_rate * look_ms / 1000)
        self.history = int(in_rate * history_ms / 1000)
        self.x = np.zeros(0, dtype=np.float64)
        self.offset = 0  # absolute input index of self.x[0]
        self.done_in = 0  # input samples whose output was released
        self.done_out = 0

    def _emit(self, end_in: int) -> np.ndarray:
        lo = max(0, self.done_in - self.history)
        y = soxr.resample(self.x[lo - self.offset :], self.in_rate, self.out_rate, quality=self.quality)
        end_out = end_in * self.out_rate // self.in_rate
        skip = lo * self.out_rate // self.in_rate
        out = np.round(y[self.done_out - skip : end_out - skip]).astype(np.int16)
        self.done_in, self.done_out = end_in, end_out
        keep_from = max(0, end_in - self.history)
        self.x = self.x[keep_from - self.offset :]
        self.offset = keep_from
        return out

    def chunk(self, x: np.ndarray) -> np.ndarray:
        self.x = np.concatenate([self.x, x.astype(np.float64)])
        end = self.offset + self.x.size - self.look
        return self._emit(end) if end > self.done_in else np.zeros(0, dtype=np.int16)

    def last(self) -> np.ndarray:
        return self._emit(self.offset + self.x.size)


Factory = Callable[[int, int], Any]
CONTENDERS: dict[str, Factory] = {
    # Our filter with its C inner loop (gateway/audio/_polyphase.c, when built) and with the NumPy one:
    # the same output to the bit, so only us_per_chunk differs.
    **({"ours_c": lambda i, o: _Ours(i, o, compiled=True)} if resample.COMPILED else {}),
    "ours_numpy": lambda i, o: _Ours(i, o, compiled=False),
    "soxr_hq": lambda i, o: _Soxr(i, o, "HQ"),
    "soxr_vhq": lambda i, o: _Soxr(i, o, "VHQ"),
}
#: Extra soxr modes measured with --all (they justify writing our own filter; see gateway/audio/resample.py).
MORE_CONTENDERS: dict[str, Factory] = {
    "soxr_qq": lambda i, o: _Soxr(i, o, "QQ"),
    "soxr_lq": lambda i, o: _Soxr(i, o, "LQ"),
    "soxr_mq": lambda i, o: _Soxr(i, o, "MQ"),
    "window_lq_5ms": lambda i, o: _Window(i, o, "LQ", 5),
    "window_mq_3ms": lambda i, o: _Window(i, o, "MQ", 3),
    "window_hq_5ms": lambda i, o: _Window(i, o, "HQ", 5),
}


def _lag(y: np.ndarray, ref: np.ndarray, max_lag: int) -> int:
    """Delay of y behind ref (samples), by FFT cross-correlation over lags -max_lag..max_lag."""
    n = 1 << int(np.ceil(np.log2(y.size + ref.size)))
    corr = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(ref, n)), n)
    lags = np.r_[np.arange(0, max_lag + 1), np.arange(-max_lag, 0)]
    scores = np.r_[corr[: max_lag + 1], corr[-max_lag:]]
    return int(lags[np.argmax(scores)])


def _stream(
    make: Factory, x: np.ndarray, in_rate: int, out_rate: int
) -> tuple[list[int], np.ndarray, list[int]]:
    r = make(in_rate, out_rate)
    chunk = in_rate // 50
    released, outs, costs = [], [], []
    total = 0
    for i in range(0, x.size, chunk):
        piece = x[i : i + chunk]
        t0 = time.perf_counter_ns()
        y = r.chunk(piece)
        costs.append(time.perf_counter_ns() - t0)
        outs.append(y)
        total += y.size
        released.append(total)
    outs.append(r.last())
    return released, np.concatenate(outs).astype(np.float64), costs


def _alias_db(make: Factory, in_rate: int, out_rate: int) -> float:
    r = make(in_rate, out_rate)
    if in_rate > out_rate:  # a tone past the filter's stop edge has no place in the output: all is alias
        x = _tone(out_rate * 0.625, in_rate)
        y = np.concatenate(
            [r.chunk(x[i : i + in_rate // 50]) for i in range(0, x.size, in_rate // 50)] + [r.last()]
        )
        y = y.astype(np.float64)[out_rate // 20 : -out_rate // 20]
        return float(
            max(-150.0, 10 * np.log10(max(float(np.mean(y**2)), 1e-30) / np.mean(x.astype(np.float64) ** 2)))
        )
    x = _tone(3000, in_rate)
    y = np.concatenate(
        [r.chunk(x[i : i + in_rate // 50]) for i in range(0, x.size, in_rate // 50)] + [r.last()]
    )
    y = y.astype(np.float64)[out_rate // 10 : -out_rate // 10]
    spectrum = np.abs(np.fft.rfft(y * np.blackman(y.size)))
    freqs = np.fft.rfftfreq(y.size, 1 / out_rate)
    image = spectrum[np.abs(freqs - (in_rate - 3000)) < 50].max()
    return float(20 * np.log10(image / spectrum.max()))


def measure_direction(
    in_rate: int, out_rate: int, contenders: dict[str, Factory]
) -> dict[str, dict[str, float]]:
    x = _signal(in_rate, SECONDS)
    ref = np.asarray(soxr.resample(x.astype(np.float64), in_rate, out_rate, quality="VHQ"), dtype=np.float64)
    chunk_s = 1 / 50
    result: dict[str, dict[str, float]] = {}
    for name, make in contenders.items():
        released, y, costs = _stream(make, x, in_rate, out_rate)
        for _ in range(2):  # more timing samples; the machine is noisy
            costs += _stream(make, x, in_rate, out_rate)[2]
        d = _lag(y, ref, out_rate // 5)
        lags = [(k + 1) * chunk_s - (n - d) / out_rate for k, n in enumerate(released)]
        steady = lags[len(lags) // 10 :]  # skip the first second (start-up)
        edge = out_rate // 10
        n = min(ref.size, y.size - d) - 2 * edge
        err = y[d + edge : d + edge + n] - ref[edge : edge + n]
        snr = 10 * np.log10(np.sum(ref[edge : edge + n] ** 2) / np.sum(err**2))
        result[name] = {
            "latency_ms_max": round(max(lags) * 1000, 2),
            "latency_ms_median": round(float(np.median(steady)) * 1000, 2),
            "snr_db": round(float(snr), 1),
            "alias_db": round(_alias_db(make, in_rate, out_rate), 1),
            "us_per_chunk": round(float(np.median(costs)) / 1000, 1),
        }
    return result


def _us(fn: Callable[[], object], number: int = 20000) -> float:
    return round(min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6, 2)


def measure_g711() -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(1)
    pcm = rng.integers(-20000, 20000, 160).astype("<i2").tobytes()
    ulaw = pcm16_to_ulaw(pcm)
    decode_table = np.frombuffer(audioop.ulaw2lin(bytes(range(256)), 2), dtype="<i2").copy()
    every = np.arange(-32768, 32768, dtype=np.int16).astype("<i2")
    encode_table = np.frombuffer(audioop.lin2ulaw(every.tobytes(), 2), dtype=np.uint8).copy()

    def numpy_decode() -> bytes:
        return decode_table.take(np.frombuffer(ulaw, dtype=np.uint8)).tobytes()

    def numpy_encode() -> bytes:
        return encode_table.take(np.frombuffer(pcm, dtype="<i2").astype(np.intp) + 32768).tobytes()

    if numpy_decode() != audioop.ulaw2lin(ulaw, 2) or numpy_encode() != ulaw:
        raise SystemExit("numpy tables disagree with audioop")
    return {
        "audioop": {
            "decode_us": _us(lambda: audioop.ulaw2lin(ulaw, 2)),
            "encode_us": _us(lambda: audioop.lin2ulaw(pcm, 2)),
        },
        "numpy_table": {"decode_us": _us(numpy_decode), "encode_us": _us(numpy_encode)},
    }


def measure_transcode(compiled: bool) -> dict[str, float]:
    """Uplink and Downlink as the gateway runs them, with the C or the NumPy inner loop."""
    up, down = Uplink(), Downlink()
    if not compiled:
        for r in (up._resampler, down._resampler):
            assert r is not None
            r._kernel = None
    frame = pcm16_to_ulaw(_signal(8000, 0.02).tobytes())
    model = _signal(24000, 0.02).tobytes()
    chunk = _signal(24000, 0.08).tobytes()  # what Gemini (and bench/load.py's Live server) send at a time
    return {
        "uplink_us_per_frame": _us(lambda: up.process(frame), 5000),
        "downlink_us_per_frame": _us(lambda: down.process(model), 5000),
        "downlink_us_per_80ms_chunk": _us(lambda: down.process(chunk), 2000),
    }


def measure_vad() -> dict[str, float]:
    """LocalVad.feed per 20 ms frame at 16 kHz: line noise (waiting for an onset) and during speech."""
    rng = np.random.default_rng(3)
    noise = (rng.standard_normal(320) * 40).astype("<i2").tobytes()
    speech = _signal(16000, 0.02).tobytes()
    quiet, talking = LocalVad(), LocalVad(max_activity_ms=10**9)
    for _ in range(5):
        talking.feed(speech)
    assert talking.active
    return {
        "quiet_us_per_frame": _us(lambda: quiet.feed(noise), 50000),
        "speech_us_per_frame": _us(lambda: talking.feed(speech), 50000),
    }


def run(everything: bool = False) -> dict[str, Any]:
    contenders = {**CONTENDERS, **MORE_CONTENDERS} if everything else CONTENDERS
    out: dict[str, Any] = {name: measure_direction(*rates, contenders) for name, rates in DIRECTIONS.items()}
    out["heard"] = measure_heard()
    out["g711_160_bytes"] = measure_g711()
    out["transcode"] = {"numpy": measure_transcode(False)}
    if resample.COMPILED:
        out["transcode"]["c"] = measure_transcode(True)
    out["local_vad"] = measure_vad()
    return out


def _table(results: dict[str, Any]) -> str:
    lines = []
    cols = ("latency_ms_max", "latency_ms_median", "snr_db", "alias_db", "us_per_chunk")
    for direction in DIRECTIONS:
        lines.append(f"\n{direction} (20 ms chunks, {SECONDS:.0f} s signal, SNR vs one-shot soxr VHQ)")
        lines.append(f"  {'':14}" + "".join(f"{c:>19}" for c in cols))
        for name, row in results[direction].items():
            lines.append(f"  {name:14}" + "".join(f"{row[c]:>19}" for c in cols))
    h = results["heard"]
    lines.append("\nWhat the caller hears of one 24 kHz reply (speech-shaped, 0.1-10 kHz), per downlink path")
    lines.append(
        f"  {'':10}{'band to (-3 dB)':>17}{'SNR vs 24 kHz':>15}{'SNR below 4 kHz':>17}{'added ms':>10}"
    )
    for name, row in h.items():
        lines.append(
            f"  {name:10}{row['band_edge_hz']:>14.0f} Hz{row['snr_db_vs_24k']:>12} dB"
            f"{row['snr_db_below_4k']:>14} dB{row['latency_ms']:>10}"
        )
    g = results["g711_160_bytes"]
    lines.append("\nG.711 μ-law, µs per 160-byte frame (best of 5)")
    for name, row in g.items():
        lines.append(f"  {name:12} decode {row['decode_us']:>6}   encode {row['encode_us']:>6}")
    for loop, t in results["transcode"].items():
        lines.append(
            f"{'' if loop == 'c' else chr(10)}Whole direction, {loop} inner loop, µs per 20 ms frame: Uplink "
            f"{t['uplink_us_per_frame']}, Downlink {t['downlink_us_per_frame']} (an 80 ms chunk of Gemini's: "
            f"{t['downlink_us_per_80ms_chunk']}; malloc tuned as the gateway runs)"
        )
    v = results["local_vad"]
    lines.append(
        f"Local VAD, µs per 20 ms 16 kHz frame: quiet {v['quiet_us_per_frame']}, speech {v['speech_us_per_frame']}"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--all", action="store_true", help="also measure soxr QQ/LQ/MQ and sliding-window one-shot soxr"
    )
    args = parser.parse_args()
    tune_malloc()  # as `gateway serve` does: large temporaries are then mmap'd, as in production
    results = run(args.all)
    print(json.dumps(results) if args.json else _table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
