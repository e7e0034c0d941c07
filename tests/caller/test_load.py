"""The lean load caller's probes and the load analysis, without sockets."""

from __future__ import annotations

import array
import itertools
import math

from gateway.audio.transcode import Uplink
from gateway.caller.load import PROBE_LEVELS, CallPattern, LoadCall, SessionProbe, analyse, percentile


def _call(number: int) -> LoadCall:
    lead, cycle = CallPattern(lead_silence_s=1.0, speak_s=0.4, silence_s=1.0, probe_every_s=0.2).kinds()
    return LoadCall(number=number, start_at=0.0, lead=lead, cycle=cycle)


def test_probe_levels_are_distinct_and_quiet() -> None:
    """The 16 probe levels stay apart after μ-law and far below any speech threshold."""
    assert len(set(PROBE_LEVELS)) == 16
    assert all(b - a >= 12 for a, b in itertools.pairwise(PROBE_LEVELS))
    assert max(PROBE_LEVELS) < 420


def test_probes_survive_the_gateways_uplink() -> None:
    """Probe frames pushed through the gateway's real μ-law → 16 kHz uplink decode to number and sequence."""
    import base64

    call = _call(0xABC)
    uplink, probe = Uplink(), SessionProbe()
    for k in range(400):
        payload = call._payload(now=float(k))
        call.frame += 1
        probe.audio_in(uplink.process(base64.b64decode(payload)), t=float(k) + 0.5)
    assert probe.number == 0xABC
    assert len(call.probes) >= 10
    assert [s for s, _, _ in probe.probes] == [seq % 16 for seq, _, _ in call.probes]
    # Every probe is timed at its first frame and knows how many frames came before it.
    for (seq, t_sent, index), (_, t_recv, before) in zip(call.probes, probe.probes, strict=True):
        assert t_recv == t_sent + 0.5
        assert before == index, seq


def test_analyse_finds_latency_loss_and_lateness() -> None:
    """The join reports probe latency, frames the gateway dropped, a short turn and a mid-turn stall."""
    turn_at = 10.0
    # 20 frames paced every 20 ms, except a 150 ms stall before frame 10: frames 10.. are late.
    arrivals = [turn_at + 0.001 + 0.02 * i + (0.15 if i >= 10 else 0.0) for i in range(20)]
    call = {
        "number": 7,
        "error": "",
        "t_webhook": 9.0,
        "frames_sent": 500,
        "probes": [(0, 1.0, 50), (1, 2.0, 100)],
        "arrivals": array.array("d", arrivals),
        "clears": array.array("d"),
    }
    session = {
        "number": 7,
        "probes": [(0, 1.002, 50), (1, 2.003, 97)],  # three frames lost between the probes
        "turns": [[turn_at, 960 * 25, False], [20.0, 960, False]],  # 25 frames sent, 20 delivered
    }
    a = analyse([call], [session])
    assert [round(v, 4) for v in a.uplink_s] == [0.002, 0.003]
    assert a.frames_lost_up == 3
    assert a.frames_lost_down == 4  # 25 expected, 20 received, one allowed for the filter tail
    assert a.frames_late >= 1
    assert [round(v, 4) for v in a.downlink_s] == [0.001]
    assert round(a.greeting_s[0], 3) == 1.001


def test_percentile_nearest_rank() -> None:
    """Nearest-rank percentiles, NaN for nothing measured."""
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(range(1, 101)), 99) == 99
    assert math.isnan(percentile([], 50))
