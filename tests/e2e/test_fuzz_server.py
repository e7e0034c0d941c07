"""A fuzz run against the running gateway: hostile traffic beside a healthy call disturbs nothing."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import aiohttp
import pytest

from gateway.caller import CallOptions, place_call
from gateway.emulator import Emulator
from gateway.security import probe
from gateway.server.state import CALLS, LIMITS

from .conftest import GatewayFactory

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AUTH_TOKEN = "9a8b7c6d5e4f30211203f4e5d6c7b8a9"
TO = "+15551230000"
PROMPT = "helpful phone assistant"  # from the default dialplan: must never reach an attacker
PROBES = 160
#: How the gateway may answer a hostile connection: refused upgrades/webhooks, or a close code.
REFUSED_HTTP = {400, 403, 413, 503}
CLOSE_CODES = {1003, 1007, 1008, 1009}


async def _eventually(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_hostile_burst_beside_a_healthy_call(make_gateway: GatewayFactory, emulator: Emulator) -> None:
    """Hostile traffic (malformed JSON, wrong types, huge payloads, bad base64, events out of order,
    floods; unauthenticated and after authenticating) ends only its own connections: no Gemini session
    for the unauthenticated, a concurrent call gets greeting and reply cleanly, the gateway stays healthy."""
    gw = await make_gateway(twilio_auth_token=AUTH_TOKEN)
    rng = random.Random(20260521)
    healthy = asyncio.create_task(
        place_call(
            CallOptions(
                to=TO, gateway=gw.url, play="builtin:hello", hangup_after_s=14.0, auth_token=AUTH_TOKEN
            )
        )
    )
    await asyncio.sleep(0.5)  # the healthy call is up before the burst starts

    async with aiohttp.ClientSession() as http:
        semaphore = asyncio.Semaphore(16)

        async def run(p: probe.Probe) -> probe.ProbeResult:
            async with semaphore:
                # Upgrades signed as Twilio signs them (one captured signature does for every upgrade):
                # the probes reach the stream-token checks behind the signature check.
                return await probe.run_probe(http, gw.url, p, auth_token=AUTH_TOKEN)

        hostile = probe.hostile_probes(rng, PROBES)
        tokens = [
            await probe.stream_token(http, gw.url, to=TO, auth_token=AUTH_TOKEN) for _ in probe.ABUSIVE_KINDS
        ]
        abusive = [
            probe.Probe(kind, probe.abusive_frames(kind, sid, token, rng))
            for kind, (sid, token) in zip(probe.ABUSIVE_KINDS, tokens, strict=True)
        ]
        results = await asyncio.gather(*(run(p) for p in [*hostile, *abusive]))
        async with http.get(gw.url + "/healthz") as resp:
            assert resp.status == 200

    report = await healthy
    # The healthy call was not disturbed.
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    assert report.ended_by == "caller"

    hostile_results, abusive_results = results[:PROBES], results[PROBES:]
    for result in hostile_results:
        assert result.error == "", (result.kind, result.error)
        assert result.http_status in REFUSED_HTTP or result.close_code in CLOSE_CODES, result
        assert not any(PROMPT in text or "<Stream" in text for text in result.replies), result.kind
    for result in abusive_results:
        assert result.close_code in CLOSE_CODES, result
    # Sessions: one for the healthy call, one per authenticated abusive call, none for the rest.
    assert len(emulator.sessions) == 1 + len(probe.ABUSIVE_KINDS)
    records = [gw.app[CALLS].get(sid) for sid, _ in tokens]
    assert all(r is not None and r["ended_by"] == "gateway" for r in records)
    # Everything was given back: no call, place or pending socket leaked.
    await _eventually(lambda: not gw.app[CALLS].active)
    await _eventually(lambda: gw.app[LIMITS].admission.in_use() == 0)
    await _eventually(lambda: gw.app[LIMITS].pending.inside == 0)
