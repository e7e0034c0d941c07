"""Security over real loopback sockets: signatures, stream tokens, operator endpoints, limits, leaks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from twilio.request_validator import RequestValidator

from gateway.caller import CallOptions, place_call
from gateway.caller.call import admin_transcript
from gateway.emulator import Emulator
from gateway.emulator.session import RecordedFrame
from gateway.security import probe
from gateway.server.state import LIMITS, STREAM_TOKENS
from tests.needs import unavailable

from .conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.e2e

AUTH_TOKEN = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
TO = "+15551230000"
#: A dialplan whose name and prompt must never reach an unauthenticated client.
MARKED_PLAN = """
name = "zebra-internal"
numbers = ["+15551230000"]
system_instruction = "PROMPT-MARKER-7731: the vault code is 0000."
greeting = "Greet the caller."
"""
MARKERS = ("zebra-internal", "PROMPT-MARKER-7731", "vault code")


@pytest.fixture(autouse=True)
def marked_plan(dialplan_dir: Path) -> None:
    (dialplan_dir / "zebra.toml").write_text(MARKED_PLAN)


def _setup_complete(frame: RecordedFrame) -> bool:
    return frame.direction == "out" and frame.payload is not None and "setupComplete" in frame.payload


async def _eventually(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    """Wait until the server side has caught up (it closes after the client saw the close frame)."""
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def _form(call_sid: str = "CA" + "a" * 32, to: str = TO) -> dict[str, str]:
    return {"CallSid": call_sid, "AccountSid": "AC" + "b" * 32, "From": "+15550001111", "To": to}


async def _post(url: str, form: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, str]:
    # encoded=True: send the URL byte for byte, as Twilio does (yarl would normalise the query).
    target = yarl.URL(url, encoded=True)
    async with aiohttp.ClientSession() as http, http.post(target, data=form, headers=headers or {}) as resp:
        return resp.status, await resp.text()


async def _probe(gw: Gateway, p: probe.Probe) -> probe.ProbeResult:
    """Run a probe, its upgrade signed as Twilio would when the gateway has an auth token."""
    async with aiohttp.ClientSession() as http:
        return await probe.run_probe(http, gw.url, p, auth_token=gw.settings.twilio_auth_token)


def _assert_nothing_revealed(result: probe.ProbeResult) -> None:
    text = " ".join([result.close_reason, *result.replies])
    for marker in MARKERS:
        assert marker not in text


# --- voice webhook signatures ------------------------------------------------------------------


async def test_webhook_signed_by_twilios_validator_is_answered(make_gateway: GatewayFactory) -> None:
    """A webhook signed by Twilio's own RequestValidator gets <Connect><Stream> with a stream token."""
    gw = await make_gateway(twilio_auth_token=AUTH_TOKEN)
    url = gw.url + "/twilio/voice"
    form = _form()
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, form)
    status, body = await _post(url, form, {"X-Twilio-Signature": signature})
    assert status == 200
    assert "<Stream" in body
    assert 'name="token"' in body


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda url, form, sig: (url, form, {}), id="unsigned"),
        pytest.param(lambda url, form, sig: (url, {**form, "To": "+19005550000"}, sig), id="param-changed"),
        pytest.param(lambda url, form, sig: (url, {**form, "Extra": "1"}, sig), id="param-added"),
        pytest.param(lambda url, form, sig: (url + "?x=1", form, sig), id="url-changed"),
        pytest.param(
            lambda url, form, sig: (
                url,
                form,
                {"X-Twilio-Signature": sig["X-Twilio-Signature"][:-4] + "AAA="},
            ),
            id="signature-changed",
        ),
    ],
)
async def test_unsigned_or_tampered_webhook_is_refused_without_a_session(
    make_gateway: GatewayFactory, emulator: Emulator, tamper: object
) -> None:
    """Unsigned or tampered webhooks get 403, no token, no dialplan detail and no Gemini session."""
    gw = await make_gateway(twilio_auth_token=AUTH_TOKEN)
    url = gw.url + "/twilio/voice"
    form = _form()
    sig = {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(url, form)}
    url2, form2, headers = tamper(url, form, sig)  # type: ignore[operator]
    status, body = await _post(url2, form2, headers)
    assert status == 403
    assert "token" not in body.lower() or "Stream" not in body
    assert not any(m in body for m in MARKERS)
    await asyncio.sleep(0.1)
    assert len(emulator.sessions) == 0


async def test_signature_covers_the_raw_query_string(make_gateway: GatewayFactory) -> None:
    """A webhook URL with percent-encoded query values verifies against the URL as Twilio signed it."""
    gw = await make_gateway(twilio_auth_token=AUTH_TOKEN)
    url = gw.url + "/twilio/voice?tenant=a%20b&next=%2Fx%3Fy"
    form = _form()
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, form)
    status, _ = await _post(url, form, {"X-Twilio-Signature": signature})
    assert status == 200


async def test_signature_behind_a_tls_proxy(make_gateway: GatewayFactory) -> None:
    """Behind a proxy the public https URL is what Twilio signed: from X-Forwarded-* or GATEWAY_PUBLIC_URL."""
    validator = RequestValidator(AUTH_TOKEN)
    form = _form()
    public = "https://voice.example.com/twilio/voice"
    gw = await make_gateway(twilio_auth_token=AUTH_TOKEN)
    headers = {
        "X-Twilio-Signature": validator.compute_signature(public, form),
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "voice.example.com",
    }
    assert (await _post(gw.url + "/twilio/voice", form, headers))[0] == 200
    configured = await make_gateway(twilio_auth_token=AUTH_TOKEN, public_url="https://voice.example.com")
    # Twilio sometimes signs the default port explicitly; both forms verify, as in Twilio's SDK.
    for signed_url in (public, "https://voice.example.com:443/twilio/voice"):
        sig = {"X-Twilio-Signature": validator.compute_signature(signed_url, form)}
        assert (await _post(configured.url + "/twilio/voice", form, sig))[0] == 200
    # With a configured public URL, forged forwarding headers do not change what is verified.
    forged = {**headers, "X-Forwarded-Host": "evil.example.net"}
    forged["X-Twilio-Signature"] = validator.compute_signature("https://evil.example.net/twilio/voice", form)
    assert (await _post(configured.url + "/twilio/voice", form, forged))[0] == 403


async def test_unsigned_webhooks_only_from_direct_loopback(make_gateway: GatewayFactory) -> None:
    """Without an auth token, proxied (internet) webhooks are refused unless explicitly allowed."""
    gw = await make_gateway()
    assert (await _post(gw.url + "/twilio/voice", _form()))[0] == 200
    proxied = {"X-Forwarded-For": "203.0.113.7"}
    status, body = await _post(gw.url + "/twilio/voice", _form("CA" + "c" * 32), proxied)
    assert status == 403
    assert "TWILIO_AUTH_TOKEN" in body
    allowed = await make_gateway(allow_unsigned_webhooks=True)
    assert (await _post(allowed.url + "/twilio/voice", _form("CA" + "d" * 32), proxied))[0] == 200


async def test_malformed_webhook_identity_is_a_400(gateway: Gateway, emulator: Emulator) -> None:
    """A CallSid or number with control characters is refused with 400 before anything is spent."""
    forms = [_form(call_sid="CA\x00bad"), _form(to="+1555\x01"), _form(call_sid="x" * 100)]
    # Characters XML cannot carry (a noncharacter, a lone surrogate's escape, a C1 control) once made
    # the TwiML raise: HTTP 500 with a call slot reserved for 30 s.
    forms += [
        {**_form(), "From": "+1555\ufffe"},
        {**_form(), "From": "\x85"},
        {**_form(), "To": "+1\u200e555"},
    ]
    for form in forms:
        status, _ = await _post(gateway.url + "/twilio/voice", form)
        assert status == 400, form
    assert len(emulator.sessions) == 0
    assert gateway.app[LIMITS].admission.in_use() == 0


# --- media WebSocket ---------------------------------------------------------------------------


async def test_ws_upgrade_signature_is_required_with_an_auth_token(make_gateway: GatewayFactory) -> None:
    """With an auth token, an upgrade without X-Twilio-Signature or with a bad one is refused with 403
    before any WebSocket; Twilio's own signature passes."""
    gw = await make_gateway(twilio_auth_token=AUTH_TOKEN)
    for signature in ("AAAA", ""):
        bad = await _probe(
            gw, probe.Probe("bad-sig", (probe.connected(),), headers=(("X-Twilio-Signature", signature),))
        )
        assert bad.http_status == 403, signature
    async with aiohttp.ClientSession() as http:
        unsigned = await probe.run_probe(http, gw.url, probe.Probe("unsigned", (probe.connected(),)))
    assert unsigned.http_status == 403
    assert gw.app[LIMITS].pending.inside == 0
    ws_url = gw.url.replace("http://", "ws://") + "/twilio/media"
    good_sig = RequestValidator(AUTH_TOKEN).compute_signature(ws_url, {})
    frames = (probe.connected(), probe.start("CA" + "5" * 32, "MZ" + "5" * 32, {"token": "v1.x.y"}))
    good = await _probe(gw, probe.Probe("good-sig", frames, headers=(("X-Twilio-Signature", good_sig),)))
    assert good.http_status is None  # upgraded; then closed for its bad stream token
    assert good.close_code == 1008


def _start_probe(call_sid: str, token: str) -> probe.Probe:
    return probe.Probe(
        "stream", (probe.connected(), probe.start(call_sid, "MZ" + "e" * 32, {"token": token}))
    )


async def test_bad_stream_tokens_are_refused_before_any_session(gateway: Gateway, emulator: Emulator) -> None:
    """Missing, tampered, expired and wrong-call tokens close the socket with 1008 and open no session."""
    tokens = gateway.app[STREAM_TOKENS]
    sid = "CA" + "1" * 32
    now = time.time()
    fresh = tokens.issue(call_sid=sid, to=TO, from_="+1", now=now)
    cases = {
        "missing": "",
        "tampered": fresh[:-3] + ("AAA" if not fresh.endswith("AAA") else "BBB"),
        "expired": tokens.issue(call_sid=sid, to=TO, from_="+1", now=now - 3600),
        "wrong call": tokens.issue(call_sid="CA" + "2" * 32, to=TO, from_="+1", now=now),
        "junk": "v1.AAAA.BBBB",
    }
    for name, token in cases.items():
        result = await _probe(gateway, _start_probe(sid, token))
        assert result.close_code == 1008, name
        _assert_nothing_revealed(result)
        if name == "missing":  # a start without a token is told so, not that its token is malformed
            assert "stream token is missing" in result.close_reason
    assert len(emulator.sessions) == 0
    await _eventually(lambda: gateway.app[LIMITS].pending.inside == 0)


async def test_replayed_stream_token_is_refused(gateway: Gateway, emulator: Emulator) -> None:
    """A token opens one stream; the same token again is closed with 1008 and opens no second session."""
    call_sid, token = await _token(gateway)
    first = asyncio.create_task(_hold_stream(gateway, call_sid, token))
    await emulator.wait_for(_setup_complete)
    replay = await _probe(gateway, _start_probe(call_sid, token))
    assert replay.close_code == 1008
    assert "already used" in replay.close_reason
    _assert_nothing_revealed(replay)
    assert len(emulator.sessions) == 1
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)


async def test_a_replayed_webhooks_fresh_token_opens_no_second_stream(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """Twilio's signature has no timestamp, so a captured signed webhook can be replayed for a fresh,
    valid token; the call SID is claimed by its first stream, so that token opens nothing."""
    gw = await make_gateway(twilio_auth_token=AUTH_TOKEN)
    async with aiohttp.ClientSession() as http:
        call_sid, token = await probe.stream_token(http, gw.url, to=TO, auth_token=AUTH_TOKEN)
        first = asyncio.create_task(_hold_stream(gw, call_sid, token))
        await emulator.wait_for(_setup_complete)
        _, replayed = await probe.stream_token(http, gw.url, to=TO, auth_token=AUTH_TOKEN, call_sid=call_sid)
        assert replayed != token
        during = await _probe(gw, _start_probe(call_sid, replayed))
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        _, later = await probe.stream_token(http, gw.url, to=TO, auth_token=AUTH_TOKEN, call_sid=call_sid)
        after = await _probe(gw, _start_probe(call_sid, later))
    for result in (during, after):
        assert result.close_code == 1008
        assert "already had a media stream" in result.close_reason
        _assert_nothing_revealed(result)
    assert len(emulator.sessions) == 1


async def _token(gw: Gateway, to: str = TO) -> tuple[str, str]:
    async with aiohttp.ClientSession() as http:
        return await probe.stream_token(http, gw.url, to=to)


async def _hold_stream(gw: Gateway, call_sid: str, token: str) -> None:
    """An authenticated stream (its upgrade signed when the gateway has an auth token) that stays open
    (silently) until cancelled."""
    ws_url = gw.url.replace("http", "ws") + "/twilio/media"
    auth = gw.settings.twilio_auth_token
    headers = {"X-Twilio-Signature": RequestValidator(auth).compute_signature(ws_url, {})} if auth else {}
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, headers=headers) as ws:
        await ws.send_str(probe.connected())
        await ws.send_str(probe.start(call_sid, "MZ" + "f" * 32, {"token": token}))
        async for _ in ws:
            pass


# --- operator endpoints ------------------------------------------------------------------------


async def test_admin_is_loopback_only_and_not_through_a_proxy(gateway: Gateway) -> None:
    """Without a token, /admin answers direct loopback clients, but not requests relayed by a local proxy."""
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + "/admin/calls") as resp:
            assert resp.status == 200
        async with http.get(
            gateway.url + "/admin/calls", headers={"X-Forwarded-For": "198.51.100.4"}
        ) as resp:
            assert resp.status == 403


async def test_admin_token_is_required_when_configured(make_gateway: GatewayFactory) -> None:
    """With GATEWAY_ADMIN_TOKEN, only the right bearer token passes; odd headers get 403, never 500."""
    gw = await make_gateway(admin_token="adm-" + "9" * 28)
    async with aiohttp.ClientSession() as http:
        for headers, status in [
            ({}, 403),
            ({"Authorization": "Bearer wrong"}, 403),
            ({"Authorization": "Bearer adm-" + "9" * 28}, 200),
            ({"Authorization": "Bearer é".encode().decode("latin-1")}, 403),
        ]:
            async with http.get(gw.url + "/admin/calls", headers=headers) as resp:
                assert resp.status == status


@pytest.mark.parametrize(
    "header", [("Via", "1.1 nginx"), ("CF-Connecting-IP", "198.51.100.4"), ("X-Forwarded-Proto", "https")]
)
async def test_admin_refuses_anything_a_proxy_relayed(gateway: Gateway, header: tuple[str, str]) -> None:
    """Any forwarding or CDN header means a proxy relayed the request: no admin, no metrics, no unsigned
    webhook, and the refusal says to set GATEWAY_ADMIN_TOKEN."""
    async with aiohttp.ClientSession() as http:
        for path in ("/admin/calls", "/metrics"):
            async with http.get(gateway.url + path, headers=dict([header])) as resp:
                assert resp.status == 403
                assert "GATEWAY_ADMIN_TOKEN" in await resp.text()
    status, _ = await _post(gateway.url + "/twilio/voice", _form(), dict([header]))
    assert status == 403


async def test_listening_beyond_loopback_needs_the_admin_token(make_gateway: GatewayFactory) -> None:
    """Listening on 0.0.0.0 (the default), nothing without a token may look local, since a proxy on this
    host would relay anyone as 127.0.0.1: admin, metrics and unsigned webhooks are refused, saying how
    to fix it; with GATEWAY_ADMIN_TOKEN, the bearer scheme in any case opens the admin."""
    exposed = await make_gateway(host="0.0.0.0")
    async with aiohttp.ClientSession() as http:
        for path in ("/admin/calls", "/metrics", "/admin/"):
            async with http.get(exposed.url + path) as resp:
                assert resp.status == 403, path
                text = await resp.text()
                assert "GATEWAY_ADMIN_TOKEN" in text
                assert "127.0.0.1" in text
    status, text = await _post(exposed.url + "/twilio/voice", _form())
    assert status == 403
    assert "127.0.0.1" in text
    token = "adm-" + "7" * 28
    with_token = await make_gateway(host="0.0.0.0", admin_token=token)
    async with aiohttp.ClientSession() as http:
        for scheme in ("Bearer", "bearer", "BEARER"):
            for path in ("/admin/calls", "/metrics"):
                async with http.get(
                    with_token.url + path, headers={"Authorization": f"{scheme} {token}"}
                ) as resp:
                    assert resp.status == 200, (scheme, path)


async def test_readyz_hides_dialplan_errors_from_the_public(gateway: Gateway, dialplan_dir: Path) -> None:
    """A rejected dialplan edit keeps /readyz ready (the last good plans serve); only operators see
    that it was rejected, and which file and field."""
    (dialplan_dir / "zebra.toml").write_text('name = "zebra-internal"\nvoice = 12\n')
    async with aiohttp.ClientSession() as http:
        operator: dict[str, Any] = {}
        for _ in range(100):
            async with http.get(gateway.url + "/readyz") as resp:
                assert resp.status == 200
                operator = await resp.json()
                if "dialplans" in operator:
                    break
            await asyncio.sleep(0.05)
        async with http.get(gateway.url + "/readyz", headers={"X-Forwarded-For": "198.51.100.4"}) as resp:
            public = await resp.text()
            assert resp.status == 200
    assert "zebra" not in public
    assert "dialplans" not in public
    assert operator["ready"] is True
    assert "zebra" in operator["dialplans"]["reason"]


# --- limits --------------------------------------------------------------------------------------


async def test_global_call_limit_refuses_at_the_webhook(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """Over max_calls the webhook says the fallback message and hangs up, opening no Gemini session."""
    gw = await make_gateway(max_calls=1)
    status, first = await _post(gw.url + "/twilio/voice", _form("CA" + "1" * 32))
    assert status == 200
    assert "<Stream" in first
    status, second = await _post(gw.url + "/twilio/voice", _form("CA" + "2" * 32))
    assert status == 200
    assert "<Stream" not in second
    assert "<Hangup" in second
    await emulator.wait_for(_setup_complete)
    assert len(emulator.sessions) == 1
    assert gw.app[LIMITS].admission.refused == 1


async def test_per_dialplan_limit(make_gateway: GatewayFactory, emulator: Emulator) -> None:
    """A plan at its own limit refuses new calls while other plans still take them."""
    gw = await make_gateway(max_calls_per_dialplan=(("zebra-internal", 1),), preconnect=False)
    assert "<Stream" in (await _post(gw.url + "/twilio/voice", _form("CA" + "1" * 32)))[1]
    assert "<Stream" not in (await _post(gw.url + "/twilio/voice", _form("CA" + "2" * 32)))[1]
    other = _form("CA" + "3" * 32, to="+15559990000")  # matches the default plan
    assert "<Stream" in (await _post(gw.url + "/twilio/voice", other))[1]


async def test_stream_without_a_place_is_closed_with_1013(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """A valid stream arriving when the gateway is full (its webhook went elsewhere) gets 1013, no session."""
    gw = await make_gateway(max_calls=1, preconnect=False)
    call_sid, _token_unused = await _token(gw)  # holds the only place
    other = gw.app[STREAM_TOKENS].issue(call_sid="CA" + "9" * 32, to=TO, from_="+1", now=time.time())
    result = await _probe(gw, _start_probe("CA" + "9" * 32, other))
    assert result.close_code == 1013
    assert len(emulator.sessions) == 0
    assert call_sid  # the reserved call could still connect


async def test_oversized_message_and_flood_end_only_that_socket(gateway: Gateway, emulator: Emulator) -> None:
    """A 200 KB message closes with 1009; an authenticated flood closes with 1008, its record says why."""
    huge = await _probe(gateway, probe.Probe("huge", (probe.connected(), "x" * 200_000)))
    assert huge.close_code == 1009
    call_sid, token = await _token(gateway)
    frames = probe.abusive_frames("flood", call_sid, token, random.Random(1))
    flood = await _probe(gateway, probe.Probe("flood", frames))
    assert flood.close_code == 1008
    assert "flood" in flood.close_reason
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/admin/calls/{call_sid}") as resp:
        record = await resp.json()
    assert record["ended_by"] == "gateway"
    assert "flood" in record["reason"]
    async with aiohttp.ClientSession() as http, http.get(gateway.url + "/healthz") as resp:
        assert resp.status == 200


async def test_pending_unauthenticated_sockets_are_capped(make_gateway: GatewayFactory) -> None:
    """Beyond max_pending_streams a new upgrade is admitted and the oldest waiting socket is closed
    with 1013, so waiting sockets never pile up and never lock anyone out."""
    gw = await make_gateway(max_pending_streams=2)
    ws_url = gw.url.replace("http://", "ws://") + "/twilio/media"
    async with aiohttp.ClientSession() as http:
        oldest, middle = [await http.ws_connect(ws_url) for _ in range(2)]
        newest = await http.ws_connect(ws_url)
        msg = await oldest.receive(timeout=2)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert oldest.close_code == 1013
        assert "evicted" in str(msg.extra)
        assert not middle.closed
        assert not newest.closed
        assert gw.app[LIMITS].pending.inside == 2
        for ws in (oldest, middle, newest):
            await ws.close()
        await _eventually(lambda: gw.app[LIMITS].pending.inside == 0)


async def test_an_idle_upgrade_has_seconds_to_show_its_token(gateway: Gateway) -> None:
    """Twilio sends start one round trip after the upgrade: a socket still silent after 3 s is closed."""
    ws_url = gateway.url.replace("http://", "ws://") + "/twilio/media"
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        opened = time.monotonic()
        msg = await ws.receive(timeout=8)
        waited = time.monotonic() - opened
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1008
    assert 2.0 <= waited <= 4.0


async def _churn(ws_url: str, stop: asyncio.Event, opened: list[int], reopen_s: float) -> None:
    """One attacker: hold an upgraded media socket without ever sending start; when it is closed (or
    refused), reopen it after about ``reopen_s``. Bounded by ``stop``; ``opened`` counts the upgrades."""
    rng = random.Random()
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            try:
                async with http.ws_connect(ws_url) as ws:
                    opened[0] += 1
                    async with asyncio.timeout(30):
                        while not stop.is_set() and not ws.closed:
                            with contextlib.suppress(TimeoutError):
                                await ws.receive(timeout=0.5)
            except (aiohttp.ClientError, ConnectionError, TimeoutError):
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), reopen_s * rng.uniform(0.5, 1.5))


async def test_a_real_stream_is_admitted_while_200_idle_upgrades_churn(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """200 attackers on one address hold media sockets without ever sending start and reopen them
    whenever they are closed: a real call placed meanwhile still gets its stream, its greeting and its
    hang-up, and the waiting sockets never exceed the per-source cap."""
    gw = await make_gateway()
    ws_url = gw.url.replace("http://", "ws://") + "/twilio/media"
    stop, opened = asyncio.Event(), [0]
    attackers = [asyncio.create_task(_churn(ws_url, stop, opened, reopen_s=1.5)) for _ in range(200)]
    try:
        gate = gw.app[LIMITS].pending
        # Under way: as many upgrades as attackers, and the waiting sockets at the cap. Both stay true once
        # reached (a count; a cap the churn keeps full), unlike how many sockets are open at one instant,
        # which a busy machine's timing decides. The attackers ramp up in this same process: allow time.
        await _eventually(lambda: opened[0] >= 200 and gate.inside >= gate.per_source, within_s=45)
        report = await place_call(CallOptions(to=TO, gateway=gw.url, hangup_after_s=2.0))
        waiting = gate.holding("127.0.0.1")
    finally:
        stop.set()
        await asyncio.gather(*attackers, return_exceptions=True)
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert report.ended_by == "caller"
    assert waiting <= gate.per_source == 20
    assert gate.evicted > 0


# --- connections: timeouts and the cap -----------------------------------------------------------


async def _eof_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the gateway closed the connection (reading everything it sent until then)."""
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        while await reader.read(4096):
            pass
    return time.monotonic() - started


async def test_an_idle_connection_is_closed_after_the_idle_timeout(make_gateway: GatewayFactory) -> None:
    """A connection that never sends a request is closed after GATEWAY_HTTP_IDLE_TIMEOUT_S, and so is
    a keep-alive connection idle after its response."""
    gw = await make_gateway(http_idle_timeout_s=0.5)
    port = gw.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await _eof_within(reader, 5) < 3
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert await _eof_within(reader, 5) < 3
    writer.close()


async def test_slow_headers_and_slow_bodies_are_cut_off(make_gateway: GatewayFactory) -> None:
    """Slowloris: a request head trickling in is cut at the idle timeout; a body trickling in gets 408
    at the body timeout. Neither holds its socket."""
    gw = await make_gateway(http_idle_timeout_s=0.6, http_body_timeout_s=0.6)
    port = gw.server.port

    async def trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
        for byte in data:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    drip = asyncio.create_task(
        trickle(writer, b"POST /twilio/voice HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 100)
    )
    assert await _eof_within(reader, 5) < 3
    drip.cancel()
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /twilio/voice HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\nCallSid="
    )
    drip = asyncio.create_task(trickle(writer, b"C" * 100))
    answer = await reader.read(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:40]
    assert await _eof_within(reader, 3) < 2
    drip.cancel()
    writer.close()


async def test_idle_connections_give_way_to_calls_and_health_checks(
    make_gateway: GatewayFactory, emulator: Emulator
) -> None:
    """With room for 40 connections, 120 idle ones (opened before and during a call) hold at most their
    share: the oldest are closed to make room, /healthz answers, and a real call goes through."""
    gw = await make_gateway(max_connections=40, http_idle_timeout_s=60)
    port = gw.server.port
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(60)]
    call = asyncio.create_task(place_call(CallOptions(to=TO, gateway=gw.url, hangup_after_s=2.0)))
    idle += [await asyncio.open_connection("127.0.0.1", port) for _ in range(60)]
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/healthz") as resp:
        assert resp.status == 200
    report = await call
    assert report.greeting_ms is not None
    assert report.ended_by == "caller"
    closed = 0
    for reader, writer in idle:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                closed += await reader.read(1) == b""
        writer.close()
    assert closed >= 110  # idle share: a quarter of 40 (the calls and pending streams would need more)
    cap = gw.app[LIMITS].connections
    assert cap.idle_limit == 10
    assert cap.total <= cap.limit == 40


async def test_the_soft_open_file_limit_is_raised_and_the_capacity_said(
    tmp_path: Path, dialplan_dir: Path
) -> None:
    """`gateway serve` started with a soft limit of 300 (hard 1024) raises it to 1024 and says how many
    calls that allows, in its log and banner."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        unavailable("the hard open-file limit is below 1024 here (raise it: ulimit -Hn)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GATEWAY_", "TWILIO_"))}
    env.update(GATEWAY_DATA_DIR=str(tmp_path / "data"), GATEWAY_LOG_LEVEL="INFO")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, 1024))

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--emulator", "--host", "127.0.0.1", "--port", str(port),
        "--dialplans", str(dialplan_dir), env=env, cwd=tmp_path, preexec_fn=limit,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not any("Try a call" in line for line in seen):
                line = (await proc.stdout.readline()).decode()
                assert line, "".join(seen)
                seen.append(line)
    finally:
        proc.terminate()
        await proc.wait()
    text = "".join(seen)
    assert "open-file limit raised" in text
    assert "open-file limit 1024: room for 200 concurrent calls" in text


async def test_hard_duration_cap_ends_the_call_cleanly(make_gateway: GatewayFactory) -> None:
    """A call past GATEWAY_MAX_CALL_S is ended by the gateway with a normal close and a clear reason."""
    gw = await make_gateway(max_call_s=1.0)
    report = await place_call(
        CallOptions(to=TO, gateway=gw.url, hangup_after_s=20.0, transcript_source=admin_transcript(gw.url))
    )
    assert report.ended_by == "gateway"
    assert report.protocol_errors == []
    async with aiohttp.ClientSession() as http, http.get(f"{gw.url}/admin/calls/{report.call_sid}") as resp:
        record = await resp.json()
    assert (record["ended_by"], record["reason"]) == ("gateway", "maximum call duration")


# --- secrets never leak --------------------------------------------------------------------------


async def test_no_secret_or_stream_token_in_logs_records_or_reports(
    make_gateway: GatewayFactory,
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A full call over wss:// with real-looking secrets: the key reaches the service the way Google
    expects it; logs (all loggers, DEBUG), record and report are clean."""
    secrets_ = {
        "gemini key": "AIzaSyD-" + "k3y" * 10,
        "twilio token": "f3" * 16,
        "gateway secret": "gw-secret-" + "s" * 30,
        "admin token": "adm-tok-" + "t" * 30,
    }
    gw = await make_gateway(
        gemini_api_key=secrets_["gemini key"],
        twilio_auth_token=secrets_["twilio token"],
        gateway_secret=secrets_["gateway secret"],
        admin_token=secrets_["admin token"],
    )
    issued: list[str] = []
    original_issue = gw.app[STREAM_TOKENS].issue

    def spy(**kw: object) -> str:
        token = original_issue(**kw)  # type: ignore[arg-type]
        issued.append(token)
        return token

    gw.app[STREAM_TOKENS].issue = spy  # type: ignore[method-assign]
    caplog.set_level(logging.DEBUG)
    for name in ("websockets", "aiohttp", "gateway", "asyncio"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    report = await place_call(
        CallOptions(
            to=TO,
            gateway=gw.url,
            play="builtin:hello",
            hangup_after_s=6.0,
            auth_token=secrets_["twilio token"],
            transcript_source=admin_transcript(gw.url, token=secrets_["admin token"]),
        )
    )
    assert report.answered, "the call must really have happened"
    assert report.transcript
    assert len(issued) == 1
    # The key travelled as Google expects it, over TLS: in x-goog-api-key, never in the URL.
    assert gw.settings.gemini_url.startswith("wss://")
    (live,) = emulator.sessions
    assert live.handshake_headers.get("x-goog-api-key") == secrets_["gemini key"]
    assert "key=" not in live.handshake_path
    assert secrets_["gemini key"] not in live.handshake_path
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {secrets_['admin token']}"}) as http,
        http.get(f"{gw.url}/admin/calls/{report.call_sid}") as r1,
        http.get(f"{gw.url}/admin/calls") as r2,
    ):
        records = await r1.text() + await r2.text()
    logs = "\n".join(
        f"{r.name} {r.getMessage()} {json.dumps({k: str(v) for k, v in vars(r).items()})}"
        for r in caplog.records
    )
    assert len(caplog.records) > 5
    captured = capsys.readouterr()
    haystacks = {
        "logs": logs,
        "record": records,
        "report": json.dumps(report.to_json()),
        "output": captured.out + captured.err,
    }
    for secret_name, value in [*secrets_.items(), ("stream token", issued[0])]:
        for where, text in haystacks.items():
            assert value not in text, f"{secret_name} leaked into {where}"
    # The token's signature alone is a credential too.
    mac = issued[0].rsplit(".", 1)[1]
    assert all(mac not in text for text in haystacks.values())
