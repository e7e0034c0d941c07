"""Outbound calls through Telnyx Call Control, end to end: admin API → the simulated Telnyx network's
Dial → the callee's phone → signed webhooks → admission → ``streaming_start`` → media stream → Gemini
emulator, all on loopback.

The network (gateway/caller/telnyx_network.py) was written from Telnyx's documents and SDK types,
apart from the gateway's Telnyx code: it checks the Dial as Telnyx does, signs every webhook with
Ed25519, and answers as a person or as an answering machine depending on the number.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from gateway.caller import wire_telnyx as wire
from gateway.caller.telnyx_network import TelnyxNetwork
from gateway.emulator import Emulator
from gateway.emulator.pki import TestPKI
from gateway.server.dial import DialRefused, dial
from gateway.server.outbound_state import OUTBOUND

from .conftest import Gateway, GatewayFactory, call_statuses
from .outbound_plans import BUSY, MACHINE, NO_ANSWER, OUR_NUMBER, PERSON, REJECTED, reminders, survey
from .served import free_port, serve

pytestmark = pytest.mark.e2e

API_KEY = "KEY0123456789_telnyx_outbound_tests"
CONNECTION_ID = "1494404757140276705"
ADMIN_TOKEN = "admin-token-for-telnyx-outbound-tests"

REMINDERS = reminders("telnyx")
HANG_UP_ON_MACHINES = survey("telnyx")


@pytest.fixture
async def network() -> AsyncIterator[TelnyxNetwork]:
    async with TelnyxNetwork(api_key=API_KEY, connection_id=CONNECTION_ID, ring_s=0.2) as net:
        yield net


@pytest.fixture
async def telnyx_gateway(
    make_gateway: GatewayFactory, network: TelnyxNetwork, dialplan_dir: Path
) -> AsyncIterator[Gateway]:
    (dialplan_dir / "reminders.toml").write_text(REMINDERS)
    (dialplan_dir / "survey.toml").write_text(HANG_UP_ON_MACHINES)
    return await make_gateway(
        telnyx_api_key=API_KEY,
        telnyx_public_key=network.public_key,
        telnyx_api_base=network.base_url,
        telnyx_connection_id=CONNECTION_ID,
        admin_token=ADMIN_TOKEN,
    )


async def _dial(gw: Gateway, to: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("dialplan", "reminders")
    fields.setdefault("params", {"customer_name": "Ada"})
    return await dial(gw.url, to=to, token=ADMIN_TOKEN, **fields)


async def test_dial_a_person_through_telnyx_converses(
    telnyx_gateway: Gateway, network: TelnyxNetwork, emulator: Emulator
) -> None:
    """A person answers: the Dial is Telnyx's, the stream starts on ``call.answered``, they talk, and the
    record holds the statuses Telnyx reported."""
    gw = telnyx_gateway
    started = time.monotonic()
    placed = await _dial(gw, PERSON, params={"customer_name": "Ada Lovelace", "appointment": "3 pm Tuesday"})
    assert (placed["to"], placed["from"], placed["provider"]) == (PERSON, OUR_NUMBER, "telnyx")
    call = await network.wait(placed["call_sid"], 60)
    assert call.error == ""
    assert call.problems == []
    # What the gateway asked Telnyx for, as Telnyx documents it.
    assert call.body["connection_id"] == CONNECTION_ID
    assert (call.body["to"], call.body["from"], call.body["timeout_secs"]) == (PERSON, OUR_NUMBER, 20)
    assert call.amd_mode == "greeting_end"  # the plan leaves messages: the greeting's end is needed
    assert urlsplit(call.webhook_url).path == "/telnyx/outbound"
    assert "stream_url" not in call.body  # admission first: the stream starts once the callee answered
    # Every webhook was taken (signed, with the call's token).
    assert {status for _, status in call.webhooks} == {200}
    kinds = [kind for kind, _ in call.webhooks]
    assert kinds[:2] == ["call.initiated", "call.answered"]
    assert kinds[-1] == "call.hangup"
    assert ("call.machine.detection.ended", "human", 200) in call.amd
    # The stream the gateway started: its token and the plan's, both in the URL; RTP both ways.
    assert call.stream is not None
    query = parse_qs(urlsplit(call.stream.url).query)
    assert set(query) == {"token", "outbound"}
    assert (call.stream.bidirectional_mode, call.stream.bidirectional_codec) == ("rtp", "PCMU")
    report = call.report
    assert report is not None
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    assert call.first_audio_at is not None
    first_word_s = call.first_audio_at - started
    print(
        f"\nTelnyx dial → callee hears the first word: {first_word_s * 1000:.0f} ms (ring {network.ring_s}s)"
    )
    assert first_word_s < network.ring_s + 3.0

    setup = emulator.sessions[-1].setup
    assert setup is not None
    assert setup["systemInstruction"]["parts"][0]["text"] == "You call Ada Lovelace about 3 pm Tuesday."
    record = await gw.ended_record(placed["call_sid"])
    assert (record.call_id, record.from_number, record.to_number) == (
        call.call_control_id,
        OUR_NUMBER,
        PERSON,
    )
    bot = [t.text for t in record.turns if t.role == "bot"]
    assert bot[0] == "Hello Ada Lovelace, this is Acme about 3 pm Tuesday."
    assert any(t.role == "caller" for t in record.turns)
    events = {e.kind: e.detail for e in record.events}
    assert events["outbound"]["provider"] == "telnyx"
    assert events["answered_by"] == {
        "answered_by": "human", "event": "call.machine.detection.ended", "action": "continue",
    }  # fmt: skip
    assert call_statuses(record) == ["initiated", "in-progress", "completed"]
    hangup = next(e for e in record.events if e.kind == "call_status" and e.detail["status"] == "completed")
    assert hangup.detail["hangup_cause"] == "normal_clearing"
    assert gw.app[OUTBOUND].active("reminders") == 0


async def test_a_machine_gets_the_message_once_its_greeting_ended(
    telnyx_gateway: Gateway, network: TelnyxNetwork
) -> None:
    """A machine: detection says ``machine`` (the plan waits), the greeting ends at the beep, the model
    says the message, and the gateway hangs the call up through Telnyx's API."""
    gw = telnyx_gateway
    placed = await _dial(gw, MACHINE, params={"customer_name": "Grace"})
    call = await network.wait(placed["call_sid"], 60)
    assert call.error == ""
    assert ("call.machine.detection.ended", "machine", 200) in call.amd
    assert ("call.machine.greeting.ended", "beep_detected", 200) in call.amd
    assert (call.hangup_cause, call.hangup_source) == ("normal_clearing", "caller")  # the gateway hung up
    assert any(c.action == "hangup" for c in call.commands)
    record = await gw.ended_record(placed["call_sid"])
    assert (record.ended_by, record.end_reason) == (
        "gateway",
        "answering machine (beep_detected): message left",
    )
    bot = [t for t in record.turns if t.role == "bot"]
    assert bot[-1].text == "Hi Grace, Acme here about your next visit. Please call us back."
    verdicts = sorted((e for e in record.events if e.kind == "answered_by"), key=lambda e: e.seq)
    assert [
        (v.detail.get("answered_by") or v.detail.get("greeting"), v.detail["action"]) for v in verdicts
    ] == [
        ("machine", "await greeting end"),
        ("beep_detected", "message"),
    ]
    assert bot[-1].started_at >= verdicts[-1].at  # said after the beep


async def test_a_plan_that_hangs_up_on_machines_does_so_at_the_verdict(
    telnyx_gateway: Gateway, network: TelnyxNetwork
) -> None:
    """``machine = "hangup"``: AMD ``detect`` only, and the ``machine`` verdict ends the call at once."""
    gw = telnyx_gateway
    placed = await _dial(gw, MACHINE, dialplan="survey", params={})
    call = await network.wait(placed["call_sid"], 60)
    assert call.amd_mode == "detect"
    assert [(event, result) for event, result, _ in call.amd] == [("call.machine.detection.ended", "machine")]
    record = await gw.ended_record(placed["call_sid"])
    assert (record.ended_by, record.end_reason) == ("gateway", "answered by machine: hung up")


@pytest.mark.parametrize(
    ("number", "status", "cause", "by"),
    [
        (BUSY, "busy", "user_busy", "callee"),
        (NO_ANSWER, "no-answer", "timeout", "callee"),
        (REJECTED, "failed", "call_rejected", "network"),
    ],
)
async def test_a_telnyx_call_that_never_connects_still_gets_a_record(
    telnyx_gateway: Gateway, network: TelnyxNetwork, number: str, status: str, cause: str, by: str
) -> None:
    """Busy, unanswered: no stream ever ran, yet the record says who was called and Telnyx's cause."""
    gw = telnyx_gateway
    placed = await _dial(gw, number)
    call = await network.wait(placed["call_sid"], 30)
    assert call.report is None
    assert [kind for kind, _ in call.webhooks] == ["call.initiated", "call.hangup"]
    record = await gw.ended_record(placed["call_sid"])
    assert (record.to_number, record.dialplan) == (number, "reminders")
    assert (record.ended_by, record.end_reason) == (by, f"not connected: {status} ({cause})")
    assert call_statuses(record) == ["initiated", status]
    assert gw.app[OUTBOUND].active("reminders") == 0


async def test_telnyx_webhooks_must_be_signed_and_carry_the_calls_token(
    telnyx_gateway: Gateway, network: TelnyxNetwork
) -> None:
    """A forged signature, a token we did not issue, or another callee: 403. A ``call.answered``
    delivered again is acknowledged and changes nothing."""
    gw = telnyx_gateway
    placed = await _dial(gw, PERSON)
    call = await network.wait(placed["call_sid"], 60)
    assert call.report is not None
    url = call.webhook_url
    token = parse_qs(urlsplit(url).query)["t"][0]
    forged_url = url.replace(token, token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))

    def answered(to: str = PERSON) -> bytes:
        payload = {"call_control_id": call.call_control_id, "from": OUR_NUMBER, "to": to, "state": "answered"}
        return json.dumps({"data": {"event_type": "call.answered", "payload": payload}}).encode()

    async with aiohttp.ClientSession() as http:

        async def post(target: str, body: bytes, key: Any = network.signing_key) -> int:
            headers = {"Content-Type": "application/json"}
            headers |= wire.signed_headers(key, body, timestamp=int(time.time()))
            async with http.post(target, data=body, headers=headers) as resp:
                return resp.status

        commands = len(call.commands)
        assert await post(url, answered(), key=wire.new_signing_key()) == 403  # not Telnyx's signature
        async with http.post(url, data=answered(), headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 403  # unsigned
        assert await post(forged_url, answered()) == 403  # signed, but not a token we issued
        assert await post(url, answered(to=NO_ANSWER)) == 403  # issued for another callee
        assert await post(url, answered()) == 200  # Telnyx delivering it again: acknowledged…
        assert len(call.commands) == commands  # …and no second stream


async def test_without_a_connection_id_telnyx_calls_are_refused_naming_the_setting(
    make_gateway: GatewayFactory, network: TelnyxNetwork, dialplan_dir: Path
) -> None:
    """No ``TELNYX_CONNECTION_ID``: 503 saying what to set; nothing reaches Telnyx."""
    (dialplan_dir / "reminders.toml").write_text(REMINDERS)
    gw = await make_gateway(telnyx_api_key=API_KEY, telnyx_api_base=network.base_url, admin_token=ADMIN_TOKEN)
    with pytest.raises(DialRefused) as refused:
        await _dial(gw, PERSON)
    assert refused.value.status == 503
    assert "TELNYX_CONNECTION_ID" in str(refused.value)
    assert network.requests == []


async def test_the_readmes_telnyx_try_out_with_real_processes(trust_test_ca: TestPKI, tmp_path: Path) -> None:
    """The README's way to try Telnyx outbound with no account, as separate processes: ``gateway network
    --provider telnyx`` (its printed settings given to the gateway as they are), ``gateway serve``, and
    ``gateway dial --wait`` printing the conversation."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "TELNYX_"))}
    network = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "network", "--provider", "telnyx", "--port", str(port),
        "--ring", "0.2", env=env | {"TELNYX_API_KEY": API_KEY},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert network.stdout is not None
    try:
        async with asyncio.timeout(30):
            lines = [(await network.stdout.readline()).decode() for _ in range(2)]
        # "  TELNYX_API_BASE=… TELNYX_PUBLIC_KEY=… TELNYX_CONNECTION_ID=any": what the user copies.
        printed = dict(pair.split("=", 1) for pair in lines[1].split())
        assert set(printed) == {"TELNYX_API_BASE", "TELNYX_PUBLIC_KEY", "TELNYX_CONNECTION_ID"}, lines
        async with Emulator(ssl_context=trust_test_ca.server_context()) as emulator:
            served = await serve(
                emulator, tmp_path, dialplans={"reminders": REMINDERS},
                TELNYX_API_KEY=API_KEY, GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN, **printed,
            )  # fmt: skip
            try:
                dialled = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "gateway", "dial", PERSON, "--dialplan", "reminders",
                    "--param", "customer_name=Ada", "--gateway", served.url, "--wait",
                    env=env | {"GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN},
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
                async with asyncio.timeout(60):
                    out = (await dialled.communicate())[0].decode()
                assert dialled.returncode == 0, out
            finally:
                served.proc.terminate()
                assert await served.exit_code(within_s=30) == 0
    finally:
        network.terminate()
        await network.wait()
    assert "call ended by caller" in out, out  # the person hung up after the reply
    assert "bot: Hello Ada, this is Acme about your next visit." in out, out
    assert "Traceback" not in "".join(served.output)
    (record,) = served.records()
    assert (record["to_number"], record["ended_by"]) == (PERSON, "caller")


async def test_a_plan_whose_provider_lacks_credentials_is_named_at_start_up(
    trust_test_ca: TestPKI, tmp_path: Path
) -> None:
    """``gateway serve`` with a plan that dials through Telnyx and no Telnyx credentials: one warning at
    start naming the plan and the variables, not a surprise at the first dial."""
    async with Emulator(ssl_context=trust_test_ca.server_context()) as emulator:
        served = await serve(emulator, tmp_path, dialplans={"reminders": REMINDERS}, TELNYX_API_KEY=API_KEY)
        try:
            async with asyncio.timeout(10):
                while not any("places calls through" in line for line in served.output):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # logged just after /readyz first answers
        finally:
            served.proc.terminate()
            assert await served.exit_code(within_s=30) == 0
    (line,) = [json.loads(line) for line in served.output if "places calls through" in line]
    assert line["level"] == "warning"
    assert line["event"] == (
        "dialplan 'reminders' places calls through telnyx, but placing calls through Telnyx needs "
        "TELNYX_API_KEY and TELNYX_CONNECTION_ID"
    )
