"""StreamResampler: latency, quality against soxr VHQ, alias/image rejection, chunking, flush and reset.

Every test runs twice: on the C inner loop (``_polyphase.c``, when built) and on the NumPy one, whose
outputs must also be equal to the bit (the same sums; their order differs from BLAS's only far below the
rounding to int16).
"""

from __future__ import annotations

import numpy as np
import pytest
from audio_signals import band_noise, best_lag, samples, snr_db, stream, tone, vhq
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway.audio import SUPPORTED_RATE_PAIRS, StreamResampler, resample
from gateway.errors import AudioError
from tests.needs import unavailable

PAIRS = sorted(SUPPORTED_RATE_PAIRS)
EDGE = 0.05  # seconds skipped at both ends when comparing with the one-shot reference


@pytest.fixture(autouse=True, params=["C", "NumPy"])
def inner_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which inner loop the resamplers built in the test run (the default one, ``compiled=None``)."""
    if request.param == "NumPy":
        monkeypatch.setattr(resample, "_compiled_process", None)
    elif not resample.COMPILED:
        unavailable("the resampler's C extension is not built (a C compiler and Python's headers; setup.py)")
    return str(request.param)


def _delay(r: StreamResampler) -> int:
    return round(r.delay_ms * r.out_rate / 1000)


def _aligned_snr(r: StreamResampler, x: np.ndarray) -> float:
    y = samples([*stream(r, x, r.in_rate // 50), r.flush()])
    ref = vhq(x, r.in_rate, r.out_rate)
    d, edge = _delay(r), int(EDGE * r.out_rate)
    return snr_db(y[d + edge : d + ref.size - edge], ref[edge:-edge])


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(8000, 8000), (8000, 24000), (44100, 8000), (16000, 24000)]
)
def test_unsupported_rate_pair_is_an_audio_error(in_rate: int, out_rate: int) -> None:
    """Rate pairs outside the supported set raise AudioError naming the pair."""
    with pytest.raises(AudioError, match=f"{in_rate}→{out_rate}"):
        StreamResampler(in_rate, out_rate)


def test_odd_byte_count_is_an_audio_error() -> None:
    """A chunk that is not whole PCM16 samples raises AudioError and leaves the stream usable."""
    r = StreamResampler(8000, 16000)
    with pytest.raises(AudioError, match="even number of bytes"):
        r.process(b"\x00\x00\x00")
    assert len(r.process(bytes(320))) == 640


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_declared_delay_is_small_and_matches_cross_correlation(in_rate: int, out_rate: int) -> None:
    """delay_ms is ≤ 5 ms (about 2 ms) and is the delay actually measured against soxr VHQ."""
    r = StreamResampler(in_rate, out_rate)
    assert 0 < r.delay_ms <= 5
    x = band_noise(in_rate, 0.5)
    y = samples([*stream(r, x, in_rate // 50), r.flush()])
    assert best_lag(y, vhq(x, in_rate, out_rate)) == _delay(r)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_measured_latency_over_ten_seconds_is_at_most_five_ms(in_rate: int, out_rate: int) -> None:
    """Fed 10 s in 20 ms chunks, every chunk yields output and input time − aligned output time ≤ 5 ms."""
    r = StreamResampler(in_rate, out_rate)
    chunk = in_rate // 50
    x = tone(1000, in_rate, 10.0)
    released = 0
    lags = []
    for i in range(0, x.size, chunk):
        out = r.process(x[i : i + chunk].tobytes())
        assert out, "a burst-free resampler emits output for every chunk"
        released += len(out) // 2
        lags.append((i + chunk) / in_rate - (released - _delay(r)) / out_rate)
    assert max(lags) * 1000 <= 5
    assert max(lags) * 1000 == pytest.approx(r.delay_ms, abs=0.2)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
@pytest.mark.parametrize("freq", [300, 1000, 2200, 3400])
def test_snr_against_soxr_vhq_on_tones(in_rate: int, out_rate: int, freq: int) -> None:
    """Speech-band tones come out within 50 dB SNR of a one-shot soxr VHQ resample, after delay alignment."""
    assert _aligned_snr(StreamResampler(in_rate, out_rate), tone(freq, in_rate)) >= 50


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_snr_against_soxr_vhq_on_band_limited_noise(in_rate: int, out_rate: int) -> None:
    """300-3400 Hz noise comes out within 50 dB SNR of a one-shot soxr VHQ resample."""
    assert _aligned_snr(StreamResampler(in_rate, out_rate), band_noise(in_rate)) >= 50


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "freq"), [(24000, 8000, 5000), (16000, 8000, 5000), (24000, 16000, 10000)]
)
def test_out_of_band_tone_does_not_alias(in_rate: int, out_rate: int, freq: int) -> None:
    """A tone above the output Nyquist (e.g. 5 kHz into 24→8 kHz) comes out ≥ 60 dB down, not as an alias."""
    r = StreamResampler(in_rate, out_rate)
    x = tone(freq, in_rate)
    y = samples(stream(r, x, in_rate // 50))[int(EDGE * out_rate) :]
    level = 10 * np.log10(np.mean(y**2) / np.mean(x.astype(np.float64) ** 2))
    assert level <= -60


def test_upsampling_image_is_rejected() -> None:
    """8→16 kHz: a 3 kHz tone leaves its 5 kHz image ≥ 60 dB below the tone."""
    r = StreamResampler(8000, 16000)
    y = samples(stream(r, tone(3000, 8000), 160))[800:]
    spectrum = np.abs(np.fft.rfft(y * np.blackman(y.size)))
    freqs = np.fft.rfftfreq(y.size, 1 / 16000)
    image = spectrum[np.abs(freqs - 5000) < 50].max()
    assert 20 * np.log10(image / spectrum.max()) <= -60
    assert abs(freqs[np.argmax(spectrum)] - 3000) < 5


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_output_does_not_depend_on_chunking(in_rate: int, out_rate: int, data: st.DataObject) -> None:
    """Random chunk sizes (including empty and large ones) give the same output as 20 ms chunks (±1 LSB)."""
    x = band_noise(in_rate, 0.25, seed=3)
    sizes = data.draw(st.lists(st.integers(0, in_rate // 10), min_size=1, max_size=20).filter(any))
    ref = StreamResampler(in_rate, out_rate)
    expected = samples([*stream(ref, x, in_rate // 50), ref.flush()])
    r = StreamResampler(in_rate, out_rate)
    got = samples([*stream(r, x, sizes), r.flush()])
    assert got.size == expected.size
    assert np.abs(got - expected).max() <= 1


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
@pytest.mark.parametrize("seconds", [0.02, 0.137, 1.0])
def test_flush_returns_the_tail(in_rate: int, out_rate: int, seconds: float) -> None:
    """flush() hands out the filter tail: output = ⌈input × ratio⌉ + delay samples; the tail holds signal."""
    r = StreamResampler(in_rate, out_rate)
    x = tone(1000, in_rate, seconds)
    body = b"".join(stream(r, x, in_rate // 50))
    tail = r.flush()
    total = (len(body) + len(tail)) // 2
    assert total == -(-x.size * out_rate // in_rate) + _delay(r)
    assert np.abs(np.frombuffer(tail, dtype="<i2")).max() > 1000
    assert r.flush() == b""


def test_flush_then_new_turn_behaves_like_a_fresh_stream() -> None:
    """After flush() the next turn's output is identical to a new resampler's."""
    used, fresh = StreamResampler(24000, 8000), StreamResampler(24000, 8000)
    stream(used, tone(700, 24000, 0.3), 480)
    used.flush()
    x = band_noise(24000, 0.3)
    assert stream(used, x, 480) == stream(fresh, x, 480)


def test_reset_drops_held_state() -> None:
    """After reset() (barge-in) nothing of the previous audio leaks into the next output."""
    used, fresh = StreamResampler(8000, 16000), StreamResampler(8000, 16000)
    stream(used, tone(1000, 8000, 0.3, amplitude=30000), 77)
    used.reset()
    assert used.flush() == b""
    x = band_noise(8000, 0.3)
    assert stream(used, x, 160) == stream(fresh, x, 160)


def test_full_scale_input_clips_instead_of_wrapping() -> None:
    """Filter overshoot on a full-scale square wave saturates at the int16 limits rather than wrapping."""
    r = StreamResampler(24000, 8000)
    square = np.where(np.sin(2 * np.pi * 300 * np.arange(24000) / 24000) >= 0, 32767, -32768).astype(np.int16)
    y = samples(stream(r, square, 480))[100:]
    reference = np.clip(vhq(square, 24000, 8000), -32768, 32767)[100 - _delay(r) : y.size + 100 - _delay(r)]
    assert y.max() == 32767
    assert y.min() == -32768
    assert np.abs(y - reference).max() < 3000


def test_empty_chunk_returns_nothing() -> None:
    """An empty chunk is accepted and yields no output."""
    assert StreamResampler(24000, 16000).process(b"") == b""


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_a_long_chunk_in_one_call_equals_the_stream_of_20_ms_chunks(in_rate: int, out_rate: int) -> None:
    """Two seconds at once: the gather goes through the scratch buffer in several passes (a chunk that
    large is more than one buffer's worth of windows), and the result is the 20 ms stream's exactly."""
    x = band_noise(in_rate, 2.0, seed=11)
    ref = StreamResampler(in_rate, out_rate)
    expected = samples([*stream(ref, x, in_rate // 50), ref.flush()])
    r = StreamResampler(in_rate, out_rate)
    got = samples([r.process(x.tobytes()), r.flush()])
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("inner_loop", ["C"], indirect=True)
@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_c_loop_equals_the_numpy_loop_to_the_bit(
    in_rate: int, out_rate: int, data: st.DataObject, inner_loop: str
) -> None:
    """Any chunking, with resets and flushes between: the two inner loops give the same bytes."""
    loud = band_noise(in_rate, 0.3, seed=data.draw(st.integers(0, 1000))).astype(np.int32) * 8
    x = np.clip(loud, -32768, 32767).astype(np.int16)  # clipped in, and the outputs clip too
    steps = data.draw(
        st.lists(st.one_of(st.integers(0, in_rate // 5), st.sampled_from(["reset", "flush"])), max_size=25)
    )
    c = StreamResampler(in_rate, out_rate, compiled=True)
    py = StreamResampler(in_rate, out_rate, compiled=False)
    at = 0
    for step in [*steps, x.size]:
        if step == "reset":
            c.reset()
            py.reset()
        elif step == "flush":
            assert c.flush() == py.flush()
        else:
            chunk = x[at : at + int(step)].tobytes()
            at += int(step)
            assert c.process(chunk) == py.process(chunk)
    assert c.flush() == py.flush()


@pytest.mark.parametrize("inner_loop", ["C"], indirect=True)
def test_the_c_loop_refuses_sizes_that_do_not_fit_its_buffers(inner_loop: str) -> None:
    """The C loop checks every size against the buffers it is given before touching them."""
    from gateway.audio._polyphase import process

    taps = np.zeros((2, 30))
    buf = np.zeros(100)
    assert process(buf, 29, bytes(142), taps, 30, 2, 1)[1] == 29  # fills the buffer exactly: fine
    with pytest.raises(ValueError, match="no room"):
        process(buf, 29, bytes(144), taps, 30, 2, 1)
    with pytest.raises(ValueError, match="no room"):
        process(buf, 101, b"", taps, 30, 2, 1)
    with pytest.raises(ValueError, match="even"):
        process(buf, 29, bytes(3), taps, 30, 2, 1)
    with pytest.raises(ValueError, match="matrix"):
        process(buf, 29, bytes(2), taps, 31, 2, 1)
    with pytest.raises(ValueError, match="zero"):
        process(buf, 29, bytes(2), taps, 30, 2, 0)
    with pytest.raises(ValueError, match="zero"):
        process(buf, -1, bytes(2), taps, 30, 2, 1)
    frozen = np.zeros(100)
    frozen.setflags(write=False)
    with pytest.raises((BufferError, ValueError)):
        process(frozen, 29, bytes(2), taps, 30, 2, 1)
    with pytest.raises(ValueError, match="float64"):
        process(buf.astype(np.float32), 29, bytes(2), taps, 30, 2, 1)
    with pytest.raises(ValueError, match="float64"):
        process(buf, 29, bytes(2), np.zeros((2, 60), dtype=np.float32), 30, 2, 1)
    with pytest.raises(ValueError, match="too large"):
        process(buf, 29, bytes(2), taps, 30, 2**40, 1)
    with pytest.raises(TypeError):
        process(buf, 29, bytes(2), taps, 30, 2)  # type: ignore[call-arg]


@pytest.mark.parametrize("inner_loop", ["NumPy"], indirect=True)
def test_compiled_true_needs_the_extension(inner_loop: str) -> None:
    """Asking for the C loop where it is not built is an AudioError that says how it gets built."""
    with pytest.raises(AudioError, match="GATEWAY_BUILD_EXTENSION"):
        StreamResampler(8000, 16000, compiled=True)
