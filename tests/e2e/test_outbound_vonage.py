"""Outbound calls through the Vonage Voice API, end to end: admin API → the simulated Vonage network's
create-call request → the callee's phone → signed answer webhook → NCCO → media WebSocket → Gemini
emulator, and the signed event webhooks, all on loopback.

The network (gateway/caller/vonage_network.py) was written from Vonage's documents and SDK models,
apart from the gateway's Vonage code: it checks the application JWT and the request as Vonage does,
signs every webhook, and answers as a person or as an answering machine depending on the number.
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
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.caller import wire_vonage as wire
from gateway.caller.vonage_network import VonageNetwork
from gateway.emulator import Emulator
from gateway.emulator.pki import TestPKI
from gateway.server.dial import dial
from gateway.server.outbound_state import OUTBOUND

from .conftest import Gateway, GatewayFactory, call_statuses
from .outbound_plans import BUSY, MACHINE, NO_ANSWER, OUR_NUMBER, PERSON, REJECTED, reminders, survey
from .served import free_port, serve

pytestmark = pytest.mark.e2e

SECRET = "vonage-signature-secret-for-outbound-tests-0123"
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-000000000001"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
ADMIN_TOKEN = "admin-token-for-vonage-outbound-tests"

REMINDERS = reminders("vonage")
SURVEY = survey("vonage")


@pytest.fixture
async def network() -> AsyncIterator[VonageNetwork]:
    async with VonageNetwork(
        application_public_key=_KEY.public_key(), signature_secret=SECRET, application_id=APP_ID, ring_s=0.2
    ) as net:
        yield net


@pytest.fixture
async def vonage_gateway(
    make_gateway: GatewayFactory, network: VonageNetwork, dialplan_dir: Path
) -> AsyncIterator[Gateway]:
    (dialplan_dir / "reminders.toml").write_text(REMINDERS)
    (dialplan_dir / "survey.toml").write_text(SURVEY)
    return await make_gateway(
        vonage_application_id=APP_ID,
        vonage_private_key=PRIVATE_PEM,
        vonage_signature_secret=SECRET,
        vonage_api_base=network.base_url,
        admin_token=ADMIN_TOKEN,
    )


async def _dial(gw: Gateway, to: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("dialplan", "reminders")
    fields.setdefault("params", {"customer_name": "Ada"})
    return await dial(gw.url, to=to, token=ADMIN_TOKEN, **fields)


async def test_dial_a_person_through_vonage_converses(
    vonage_gateway: Gateway, network: VonageNetwork, emulator: Emulator
) -> None:
    """A person answers: Vonage fetches the answer URL, the NCCO connects the call to the gateway's
    WebSocket, they talk; the record holds the statuses Vonage reported."""
    gw = vonage_gateway
    started = time.monotonic()
    placed = await _dial(gw, PERSON, params={"customer_name": "Ada Lovelace", "appointment": "3 pm Tuesday"})
    assert (placed["to"], placed["from"], placed["provider"]) == (PERSON, OUR_NUMBER, "vonage")
    call = await network.wait(placed["call_sid"], 60)
    assert call.error == ""
    # What the gateway asked Vonage for, as Vonage documents it.
    assert call.body["to"] == [{"type": "phone", "number": PERSON[1:]}]
    assert call.body["from"] == {"type": "phone", "number": OUR_NUMBER[1:]}
    assert (call.body["answer_method"], call.body["ringing_timer"]) == ("POST", 20)
    assert call.amd == ("default", "continue")  # asynchronous: the NCCO runs at once
    assert call.answer_fetch == ("POST", 200)
    assert all(http == 204 for *_, http in call.events), call.events
    statuses = [event[0] for event in call.events]
    assert statuses[:3] == ["started", "ringing", "answered"]
    assert "human" in statuses
    assert statuses[-1] == "completed"
    # The NCCO: the gateway's WebSocket, with the stream token and the plan's token in its URL.
    assert call.endpoint is not None
    assert set(parse_qs(urlsplit(call.endpoint.uri).query)) == {"outbound"}
    report = call.report
    assert report is not None
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    assert call.first_audio_at is not None
    first_word_s = call.first_audio_at - started
    print(
        f"\nVonage dial → callee hears the first word: {first_word_s * 1000:.0f} ms (ring {network.ring_s}s)"
    )
    assert first_word_s < network.ring_s + 3.0
    setup = emulator.sessions[-1].setup
    assert setup is not None
    assert setup["systemInstruction"]["parts"][0]["text"] == "You call Ada Lovelace about 3 pm Tuesday."
    record = await gw.ended_record(placed["call_sid"])
    assert (record.call_id, record.from_number, record.to_number) == (call.uuid, OUR_NUMBER, PERSON)
    bot = [t.text for t in record.turns if t.role == "bot"]
    assert bot[0] == "Hello Ada Lovelace, this is Acme about 3 pm Tuesday."
    events = {e.kind: e.detail for e in record.events}
    assert events["outbound"]["provider"] == "vonage"
    assert events["answered_by"] == {"answered_by": "human", "sub_state": "", "action": "continue"}
    assert call_statuses(record) == ["initiated", "ringing", "in-progress", "completed"]
    assert gw.app[OUTBOUND].active("reminders") == 0


async def test_a_machine_gets_the_message_after_its_beep(
    vonage_gateway: Gateway, network: VonageNetwork
) -> None:
    """A machine: ``machine`` (the plan waits), then ``machine`` with ``sub_state: beep_start``: the model
    says the message and the gateway hangs up through Vonage's API."""
    gw = vonage_gateway
    placed = await _dial(gw, MACHINE, params={"customer_name": "Grace"})
    call = await network.wait(placed["call_sid"], 60)
    assert call.error == ""
    assert ("machine", 204) in call.events
    assert ("machine", "beep_start", 204) in call.events
    assert [action for action, _, _ in call.commands] == ["hangup"]
    record = await gw.ended_record(placed["call_sid"])
    assert (record.ended_by, record.end_reason) == (
        "gateway",
        "answering machine (machine beep_start): message left",
    )
    bot = [t for t in record.turns if t.role == "bot"]
    assert bot[-1].text == "Hi Grace, Acme here about your next visit. Please call us back."
    verdicts = sorted((e for e in record.events if e.kind == "answered_by"), key=lambda e: e.seq)
    assert [(v.detail["sub_state"], v.detail["action"]) for v in verdicts] == [
        ("", "await beep"),
        ("beep_start", "message"),
    ]
    assert bot[-1].started_at >= verdicts[-1].at


async def test_a_plan_that_hangs_up_on_machines_does_so_at_the_verdict(
    vonage_gateway: Gateway, network: VonageNetwork
) -> None:
    """``machine = "hangup"``: the ``machine`` verdict ends the call at once, through Vonage's API."""
    gw = vonage_gateway
    placed = await _dial(gw, MACHINE, dialplan="survey", params={})
    call = await network.wait(placed["call_sid"], 60)
    assert [action for action, _, _ in call.commands] == ["hangup"]
    record = await gw.ended_record(placed["call_sid"])
    assert (record.ended_by, record.end_reason) == ("gateway", "answered by machine: hung up")


@pytest.mark.parametrize(
    ("number", "status", "state", "by"),
    [
        (BUSY, "busy", "busy", "callee"),
        (NO_ANSWER, "no-answer", "timeout", "callee"),
        (REJECTED, "failed", "rejected", "network"),
    ],
)
async def test_a_vonage_call_that_never_connects_still_gets_a_record(
    vonage_gateway: Gateway, network: VonageNetwork, number: str, status: str, state: str, by: str
) -> None:
    """Busy, unanswered, rejected: no stream ever ran, yet the record says who was called and why."""
    gw = vonage_gateway
    placed = await _dial(gw, number)
    call = await network.wait(placed["call_sid"], 30)
    assert call.report is None
    record = await gw.ended_record(placed["call_sid"])
    assert (record.to_number, record.dialplan) == (number, "reminders")
    assert (record.ended_by, record.end_reason) == (by, f"not connected: {status} ({state})")
    assert status in call_statuses(record)
    assert gw.app[OUTBOUND].active("reminders") == 0


async def test_vonage_webhooks_must_be_signed_and_the_answer_url_used_once(
    vonage_gateway: Gateway, network: VonageNetwork
) -> None:
    """A forged signature, a token we did not issue, or another callee: 403; the answer URL works once."""
    gw = vonage_gateway
    placed = await _dial(gw, BUSY)  # never answered: its answer URL stays unused
    call = await network.wait(placed["call_sid"], 30)
    assert call.answer_url is not None
    url = call.answer_url
    token = parse_qs(urlsplit(url).query)["t"][0]
    forged = url.replace(token, token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))

    def body(to: str = BUSY) -> bytes:
        doc = {
            "to": to[1:],
            "from": OUR_NUMBER[1:],
            "uuid": call.uuid,
            "conversation_uuid": call.conversation_uuid,
        }
        return json.dumps(doc).encode()

    async with aiohttp.ClientSession() as http:

        async def post(target: str, data: bytes, secret: str = SECRET) -> int:
            headers = {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {wire.signed_jwt(secret, data)}",
            }
            async with http.post(target, data=data, headers=headers) as resp:
                return resp.status

        assert await post(url, body(), secret="another-secret-entirely-0123456789") == 403
        assert await post(forged, body()) == 403
        assert await post(url, body(to=PERSON)) == 403
        assert await post(url, body()) == 200  # genuine: the NCCO
        assert await post(url, body()) == 403  # the answer URL works once


async def test_the_readmes_vonage_try_out_with_real_processes(trust_test_ca: TestPKI, tmp_path: Path) -> None:
    """The README's way to try Vonage outbound with no account, as separate processes: ``gateway network
    --provider vonage`` (it makes the application's key, and prints the settings the gateway takes as
    they are), ``gateway serve``, and ``gateway dial --wait`` printing the conversation."""
    port, home = free_port(), tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "VONAGE_"))}
    env["VONAGE_SIGNATURE_SECRET"] = SECRET
    network = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "network", "--provider", "vonage", "--port", str(port),
        "--ring", "0.2", env=env, cwd=home,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert network.stdout is not None
    try:
        async with asyncio.timeout(30):
            lines = [(await network.stdout.readline()).decode() for _ in range(2)]
        printed = dict(pair.split("=", 1) for pair in lines[1].split())
        assert set(printed) == {"VONAGE_API_BASE", "VONAGE_APPLICATION_ID", "VONAGE_PRIVATE_KEY"}, lines
        assert os.stat(printed["VONAGE_PRIVATE_KEY"]).st_mode & 0o077 == 0  # the key is the user's alone
        async with Emulator(ssl_context=trust_test_ca.server_context()) as emulator:
            served = await serve(
                emulator, tmp_path, dialplans={"reminders": REMINDERS},
                VONAGE_SIGNATURE_SECRET=SECRET, GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN, **printed,
            )  # fmt: skip
            try:
                dialled = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "gateway", "dial", PERSON, "--dialplan", "reminders",
                    "--param", "customer_name=Ada", "--gateway", served.url, "--wait",
                    env={k: v for k, v in env.items() if k != "VONAGE_SIGNATURE_SECRET"}
                    | {"GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN},
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
    assert "call ended by caller" in out, out
    assert "bot: Hello Ada, this is Acme about your next visit." in out, out
    assert "Traceback" not in "".join(served.output)
    (record,) = served.records()
    assert (record["to_number"], record["ended_by"]) == (PERSON, "caller")
