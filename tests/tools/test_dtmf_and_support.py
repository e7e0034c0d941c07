"""In-band DTMF synthesis, the built-in tools' contract, and the support-line example handler."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.audio.g711 import ulaw_to_pcm16
from gateway.errors import ToolError
from gateway.handlers.support import lookup_order
from gateway.telephony.provider import AudioFormat
from gateway.tools import builtin
from gateway.tools.dtmf import FRAME_SAMPLES, GAP_MS, TONE_MS, dtmf_frames, normalise_digits

from .helpers import RecordingControl, context


def _power(samples: np.ndarray, freq: float) -> float:
    """Goertzel power of ``freq`` in 8 kHz ``samples`` (what an IVR's detector computes)."""
    coeff = 2 * math.cos(2 * math.pi * freq / 8000)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


@pytest.mark.parametrize(("digit", "low", "high"), [("1", 697, 1209), ("5", 770, 1336), ("#", 941, 1477)])
def test_each_digit_is_its_row_and_column_tone(digit: str, low: float, high: float) -> None:
    """The tone of a digit carries exactly its two DTMF frequencies, far above every other one."""
    frames = dtmf_frames(digit)
    assert all(len(f) == FRAME_SAMPLES for f in frames)
    assert len(frames) * 20 == TONE_MS + GAP_MS
    pcm = np.frombuffer(ulaw_to_pcm16(b"".join(frames)), dtype="<i2").astype(float)[: 8 * TONE_MS]
    powers = {f: _power(pcm, f) for f in (697, 770, 852, 941, 1209, 1336, 1477, 1633)}
    strongest = sorted(powers, key=powers.__getitem__)[-2:]
    assert sorted(strongest) == [low, high]
    others = [p for f, p in powers.items() if f not in (low, high)]
    assert min(powers[low], powers[high]) > 20 * max(others)


def test_digit_strings_are_normalised_or_refused() -> None:
    """Spaces and dashes are dropped, letters upper-cased, 'w' pauses kept; anything else refused."""
    assert normalise_digits("1 2-3 w #a") == "123w#A"
    assert len(dtmf_frames("1w2")) == 2 * (TONE_MS + GAP_MS) // 20 + 500 // 20
    with pytest.raises(ToolError, match="digits may only contain"):
        normalise_digits("12x")
    with pytest.raises(ToolError, match="at most"):
        normalise_digits("1" * 65)


async def test_builtins_act_through_the_call_control() -> None:
    """end_call asks for a hang-up; transfer_call dials only a named target; send_dtmf plays digits."""
    control = RecordingControl()
    ctx = context(control)
    assert (await builtin.end_call(ctx, "done"))["status"] == "ending"
    assert await builtin.send_dtmf(ctx, "1 2") == {"status": "sent", "digits": "12"}
    with pytest.raises(ToolError, match="already ending"):
        await builtin.transfer_call(ctx, "agent")
    control.ending = False
    with pytest.raises(ToolError, match="unknown transfer target 'boss'; choose one of: agent"):
        await builtin.transfer_call(ctx, "boss")
    assert await builtin.transfer_call(ctx, "agent") == {"status": "transferred", "target": "agent"}
    assert control.actions == [("end_call", "done"), ("dtmf", "12"), ("transfer", ("+15550100199", "agent"))]


def test_lookup_order_understands_spoken_numbers() -> None:
    """'a 1001' finds order A1001; an unknown number is a ToolError pointing at the support address."""
    found = lookup_order(" a-1001 ", context())
    assert found["order_id"] == "A1001"
    assert found["status"] == "shipped"
    with pytest.raises(ToolError, match="no order 'B2' was found") as info:
        lookup_order("b2", context(metadata={"support_email": "help@acme.example"}))
    assert "help@acme.example" in str(info.value)


@pytest.mark.parametrize(
    ("audio", "size"), [(AudioFormat("l16", 16000), 640), (AudioFormat("alaw", 8000), 160)]
)
def test_dtmf_comes_in_the_streams_format(audio: AudioFormat, size: int) -> None:
    """On a wideband or A-law stream the tones are whole 20 ms frames of that stream, at its rate."""
    frames = dtmf_frames("5", audio)
    assert {len(f) for f in frames} == {size}
    assert len(frames) == (TONE_MS + GAP_MS) // 20
    if audio.codec == "l16":
        pcm = np.frombuffer(b"".join(frames[: TONE_MS // 20]), "<i2").astype(np.float64)
        spectrum = np.abs(np.fft.rfft(pcm))
        peaks = sorted(np.argsort(spectrum)[-2:] * audio.rate / len(pcm))
        assert abs(peaks[0] - 770) < 20  # the key 5: 770 Hz …
        assert abs(peaks[1] - 1336) < 20  # … plus 1336 Hz
