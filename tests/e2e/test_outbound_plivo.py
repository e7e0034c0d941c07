"""Outbound calls through Plivo's Voice API, end to end: admin API → the simulated Plivo network's Make
Call → the callee's phone → signed answer URL → ``<Stream>`` → media WebSocket → Gemini emulator, and the
signed ring, hangup and machine detection callbacks, all on loopback.

The network (gateway/caller/plivo_network.py) was written from Plivo's documents and SDK, apart from the
gateway's Plivo code: it checks the request as Plivo does, answers with a ``request_uuid`` only (the
call's ``CallUUID`` comes with its callbacks), signs every callback, and answers as a person or as an
answering machine depending on the number.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from gateway.caller.network import HUMAN_VERDICT_S
from gateway.caller.plivo_network import PlivoNetwork
from gateway.caller.samples import MACHINE_GREETING_S
from gateway.caller.wire_plivo import sign_v3
from gateway.dialplan.outbound import PROVIDERS
from gateway.emulator import Emulator
from gateway.emulator.pki import TestPKI
from gateway.server import outbound_state
from gateway.server.dial import DialRefused, dial, wait_for_end
from gateway.server.outbound import DIALERS
from gateway.server.outbound_state import GREETING_QUIET_S, OUTBOUND

from .conftest import Gateway, GatewayFactory, call_statuses
from .outbound_plans import BUSY, MACHINE, NO_ANSWER, OUR_NUMBER, PERSON, REJECTED, reminders, survey
from .served import free_port, serve

pytestmark = pytest.mark.e2e

AUTH_ID = "MAPLIVOOUTBOUNDTEST1"
AUTH_TOKEN = "plivo-auth-token-for-outbound-tests-0123456789"
ADMIN_TOKEN = "admin-token-for-plivo-outbound-tests"

REMINDERS = reminders("plivo")
SURVEY = survey("plivo")
POLL = """
name = "poll"
system_instruction = "A one-question poll."
greeting = "Say: 'Hi, one question.'"
[outbound]
provider = "plivo"
caller_id = "+15550100100"
"""


@pytest.fixture
async def network() -> AsyncIterator[PlivoNetwork]:
    async with PlivoNetwork(auth_id=AUTH_ID, auth_token=AUTH_TOKEN, ring_s=0.2) as net:
        yield net


@pytest.fixture
async def plivo_gateway(
    make_gateway: GatewayFactory, network: PlivoNetwork, dialplan_dir: Path
) -> AsyncIterator[Gateway]:
    (dialplan_dir / "reminders.toml").write_text(REMINDERS)
    (dialplan_dir / "survey.toml").write_text(SURVEY)
    (dialplan_dir / "poll.toml").write_text(POLL)
    return await make_gateway(
        plivo_auth_id=AUTH_ID,
        plivo_auth_token=AUTH_TOKEN,
        plivo_api_base=network.base_url,
        admin_token=ADMIN_TOKEN,
    )


async def _dial(gw: Gateway, to: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("dialplan", "reminders")
    fields.setdefault("params", {"customer_name": "Ada"})
    return await dial(gw.url, to=to, token=ADMIN_TOKEN, **fields)


async def test_dial_a_person_through_plivo_converses_and_the_request_id_finds_the_call(
    plivo_gateway: Gateway, network: PlivoNetwork, emulator: Emulator
) -> None:
    """A person answers: Plivo requests the answer URL, the ``<Stream>`` connects the call to the gateway,
    they talk. The admin API returned Plivo's ``request_uuid``; the record is the ``CallUUID``'s, and the
    request id finds it (``gateway dial --wait`` follows it)."""
    gw = plivo_gateway
    started = time.monotonic()
    placed = await _dial(gw, PERSON, params={"customer_name": "Ada Lovelace", "appointment": "3 pm Tuesday"})
    assert (placed["to"], placed["from"], placed["provider"], placed["status"]) == (
        PERSON, OUR_NUMBER, "plivo", "queued",
    )  # fmt: skip
    followed = await wait_for_end(
        gw.url, placed["call_sid"], token=ADMIN_TOKEN, timeout_s=60, on_line=lambda _: None
    )
    call = await network.wait(placed["call_sid"], 30)
    assert call.error == "", call.log[-10:]
    assert call.request_uuid == placed["call_sid"] != call.call_uuid
    # What the gateway asked Plivo for, as Plivo documents it.
    assert (call.body["to"], call.body["from"]) == (PERSON[1:], OUR_NUMBER[1:])
    assert (call.body["answer_method"], call.body["ring_timeout"], call.body["machine_detection"]) == (
        "POST", 20, "true",
    )  # fmt: skip
    assert {urlsplit(call.body[k]).path for k in ("answer_url", "hangup_url", "ring_url")} == {
        "/plivo/outbound/answer", "/plivo/outbound/status",
    }  # fmt: skip
    assert all(c.status in (200, 204) for c in call.callbacks), [(c.kind, c.status) for c in call.callbacks]
    assert call.kinds[0] == "ring"
    assert call.kinds[-1] == "hangup"
    assert "answer" in call.kinds
    assert "machine" in call.kinds
    # The <Stream>: the gateway's media route, the stream token and the plan's token in its URL.
    [stream] = call.streams
    assert set(parse_qs(urlsplit(stream.url).query)) == {"outbound", "token"}
    assert stream.bidirectional
    assert stream.keep_call_alive
    report = call.report
    assert report is not None
    assert report.protocol_errors == []
    assert report.greeting_ms is not None
    assert len(report.reply_ms) == 1
    assert call.first_audio_at is not None
    first_word_s = call.first_audio_at - started
    print(
        f"\nPlivo dial → callee hears the first word: {first_word_s * 1000:.0f} ms (ring {network.ring_s}s)"
    )
    assert first_word_s < network.ring_s + 3.0
    setup = emulator.sessions[-1].setup
    assert setup is not None
    assert setup["systemInstruction"]["parts"][0]["text"] == "You call Ada Lovelace about 3 pm Tuesday."
    # The record is the CallUUID's; the request id the admin API returned names it too.
    record = await gw.ended_record(placed["call_sid"])
    assert (record.call_id, record.from_number, record.to_number) == (call.call_uuid, OUR_NUMBER, PERSON)
    assert call.call_uuid in (followed.get("call_id"), followed.get("call_sid"))
    bot = [t.text for t in record.turns if t.role == "bot"]
    assert bot[0] == "Hello Ada Lovelace, this is Acme about 3 pm Tuesday."
    events = {e.kind: e.detail for e in record.events}
    assert events["outbound"]["provider"] == "plivo"
    assert events["outbound"]["params"] == {"customer_name": "Ada Lovelace", "appointment": "3 pm Tuesday"}
    assert events["answered_by"] == {"answered_by": "human", "action": "continue"}
    assert call_statuses(record) == ["ringing", "in-progress", "completed"]
    assert gw.app[OUTBOUND].active("reminders") == 0


async def test_the_request_id_names_the_call_even_when_callbacks_do_not_carry_it(
    make_gateway: GatewayFactory, dialplan_dir: Path
) -> None:
    """Callbacks without ``RequestUUID``/``ALegRequestUUID``: the gateway that dialled still knows which
    dial each callback is about (its token), so the id the admin API returned finds the call's record."""
    (dialplan_dir / "reminders.toml").write_text(REMINDERS)
    async with PlivoNetwork(auth_id=AUTH_ID, auth_token=AUTH_TOKEN, ring_s=0.2, request_ids=False) as net:
        gw = await make_gateway(
            plivo_auth_id=AUTH_ID, plivo_auth_token=AUTH_TOKEN, plivo_api_base=net.base_url,
            admin_token=ADMIN_TOKEN,
        )  # fmt: skip
        placed = await _dial(gw, BUSY)
        call = await net.wait(placed["call_sid"], 30)
        assert "RequestUUID" not in call.sent("hangup")
        record = await gw.ended_record(placed["call_sid"])
    assert (record.call_id, record.end_reason) == (call.call_uuid, "not connected: busy (Busy Line)")
    assert gw.app[OUTBOUND].active("reminders") == 0


async def test_a_machine_gets_the_message_once_its_greeting_is_over(
    plivo_gateway: Gateway, network: PlivoNetwork
) -> None:
    """A machine: ``Machine=true`` at the machine detection URL comes mid-greeting, and Plivo reports no
    beep, so the gateway waits for the machine's line to go quiet (greeting and beep over) before the model
    says the message; then it hangs up through Plivo's API."""
    gw = plivo_gateway
    placed = await _dial(gw, MACHINE, params={"customer_name": "Grace"})
    call = await network.wait(placed["call_sid"], 60)
    assert call.error == ""
    assert call.sent("machine")["Machine"] == "true"
    assert ("DELETE", "Call", 204) in call.commands, call.commands
    record = await gw.ended_record(placed["call_sid"])
    assert (record.ended_by, record.end_reason) == ("gateway", "answering machine (machine): message left")
    bot = [t for t in record.turns if t.role == "bot"]
    assert bot[-1].text == "Hi Grace, Acme here about your next visit. Please call us back."
    [verdict] = [e for e in record.events if e.kind == "answered_by"]
    assert verdict.detail == {"answered_by": "machine", "action": "message once the line is quiet"}
    # The verdict came HUMAN_VERDICT_S into the machine's audio; its greeting and beep last
    # MACHINE_GREETING_S, then GREETING_QUIET_S of quiet: only then does the message begin.
    [quiet] = [e for e in record.events if e.kind == "line_quiet"]
    assert quiet.detail["quiet"] is True
    assert quiet.at - verdict.at >= MACHINE_GREETING_S - HUMAN_VERDICT_S + GREETING_QUIET_S - 0.3
    assert bot[-1].started_at >= quiet.at


async def test_a_machine_that_never_goes_quiet_gets_the_message_at_the_cap(
    plivo_gateway: Gateway, network: PlivoNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait for a machine's line to go quiet is bounded: past ``GREETING_MAX_S`` (here 0.4 s, while the
    greeting still plays) the message is left anyway, and the record says the line never went quiet."""
    monkeypatch.setattr(outbound_state, "GREETING_MAX_S", 0.4)
    gw = plivo_gateway
    placed = await _dial(gw, MACHINE, params={"customer_name": "Grace"})
    await network.wait(placed["call_sid"], 60)
    record = await gw.ended_record(placed["call_sid"])
    assert (record.ended_by, record.end_reason) == ("gateway", "answering machine (machine): message left")
    [quiet] = [e for e in record.events if e.kind == "line_quiet"]
    assert quiet.detail["quiet"] is False
    assert 0.4 <= quiet.detail["waited_s"] < 1.0


async def test_a_plan_that_hangs_up_on_machines_does_so_at_the_verdict(
    plivo_gateway: Gateway, network: PlivoNetwork
) -> None:
    """``machine = "hangup"``: the verdict ends the call at once, through Plivo's API; ``continue`` asks
    Plivo for no detection at all."""
    gw = plivo_gateway
    placed = await _dial(gw, MACHINE, dialplan="survey", params={})
    call = await network.wait(placed["call_sid"], 60)
    assert ("DELETE", "Call", 204) in call.commands, call.commands
    record = await gw.ended_record(placed["call_sid"])
    assert (record.ended_by, record.end_reason) == ("gateway", "answered by machine: hung up")

    placed = await _dial(gw, PERSON, dialplan="poll", params={})
    call = await network.wait(placed["call_sid"], 60)
    assert "machine_detection" not in call.body
    assert "machine_detection_url" not in call.body
    assert "machine" not in call.kinds


@pytest.mark.parametrize(
    ("number", "status", "why", "by"),
    [
        (BUSY, "busy", "Busy Line", "callee"),
        (NO_ANSWER, "no-answer", "No Answer", "callee"),
        (REJECTED, "failed", "Rejected", "network"),
    ],
)
async def test_a_plivo_call_that_never_connects_still_gets_a_record(
    plivo_gateway: Gateway, network: PlivoNetwork, number: str, status: str, why: str, by: str
) -> None:
    """Busy, unanswered, rejected: no stream ever ran, yet the record (found by the request id) says who was
    called and why, and the call's place among the plan's concurrent calls is free again."""
    gw = plivo_gateway
    placed = await _dial(gw, number)
    call = await network.wait(placed["call_sid"], 30)
    assert call.report is None
    record = await gw.ended_record(placed["call_sid"])
    assert (record.call_id, record.to_number, record.dialplan) == (call.call_uuid, number, "reminders")
    assert (record.ended_by, record.end_reason) == (by, f"not connected: {status} ({why})")
    assert status in call_statuses(record)
    assert gw.app[OUTBOUND].active("reminders") == 0


async def test_plivo_callbacks_must_be_signed_and_the_answer_url_used_once(
    plivo_gateway: Gateway, network: PlivoNetwork
) -> None:
    """A forged signature, a token we did not issue, or another callee: 403; the answer URL works once."""
    gw = plivo_gateway
    placed = await _dial(gw, BUSY)  # never answered: its answer URL stays unused
    call = await network.wait(placed["call_sid"], 30)
    url = call.answer_url
    token = parse_qs(urlsplit(url).query)["t"][0]
    forged = url.replace(token, token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))

    def form(to: str = BUSY) -> dict[str, str]:
        return {
            "CallUUID": call.call_uuid, "From": OUR_NUMBER[1:], "To": to[1:], "CallStatus": "in-progress",
            "Direction": "outbound", "RequestUUID": call.request_uuid, "ALegUUID": call.call_uuid,
            "ALegRequestUUID": call.request_uuid, "Event": "StartApp",
        }  # fmt: skip

    async with aiohttp.ClientSession() as http:

        async def post(target: str, params: dict[str, str], auth_token: str = AUTH_TOKEN) -> int:
            nonce = secrets.token_hex(10)
            headers = {
                "X-Plivo-Signature-V3-Nonce": nonce,
                "X-Plivo-Signature-V3": sign_v3(auth_token, target, nonce, params),
            }
            async with http.post(target, data=params, headers=headers) as resp:
                return resp.status

        assert await post(url, form(), auth_token="another-auth-token-entirely") == 403
        assert await post(forged, form()) == 403
        assert await post(url, form(to=PERSON)) == 403
        assert await post(url, form()) == 200  # genuine: the <Stream>
        assert await post(url, form()) == 403  # the answer URL works once


async def test_without_credentials_or_with_wrong_ones_plivo_calls_are_refused(
    make_gateway: GatewayFactory, network: PlivoNetwork, dialplan_dir: Path
) -> None:
    """No ``PLIVO_AUTH_TOKEN``: 503 naming both settings, nothing reaches Plivo. A token Plivo does not
    take: 502 with Plivo's status, the concurrent-call place given back."""
    (dialplan_dir / "reminders.toml").write_text(REMINDERS)
    gw = await make_gateway(plivo_auth_id=AUTH_ID, plivo_api_base=network.base_url, admin_token=ADMIN_TOKEN)
    with pytest.raises(DialRefused) as refused:
        await _dial(gw, PERSON)
    assert refused.value.status == 503
    assert "PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN" in str(refused.value)
    assert network.requests == []

    gw = await make_gateway(
        plivo_auth_id=AUTH_ID, plivo_auth_token="not-the-accounts-token", plivo_api_base=network.base_url,
        admin_token=ADMIN_TOKEN,
    )  # fmt: skip
    with pytest.raises(DialRefused) as refused:
        await _dial(gw, PERSON)
    assert (refused.value.status, str(refused.value)) == (502, "Plivo refused the call: HTTP 401")
    assert [status for status, _ in network.requests] == [401]
    assert gw.app[OUTBOUND].active("reminders") == 0


async def test_the_readmes_plivo_try_out_with_real_processes(trust_test_ca: TestPKI, tmp_path: Path) -> None:
    """The README's way to try Plivo outbound with no account, as separate processes: ``gateway network
    --provider plivo`` (it prints the setting the gateway takes as it is), ``gateway serve``, and ``gateway
    dial --wait`` following the request id Plivo answered to the call and printing the conversation."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PLIVO_"))}
    env |= {"PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN": AUTH_TOKEN}
    network = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "network", "--provider", "plivo", "--port", str(port),
        "--ring", "0.2", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert network.stdout is not None
    try:
        async with asyncio.timeout(30):
            lines = [(await network.stdout.readline()).decode() for _ in range(2)]
        printed = dict(pair.split("=", 1) for pair in lines[1].split() if "=" in pair)
        assert printed == {"PLIVO_API_BASE": f"http://127.0.0.1:{port}", "PLIVO_AUTH_ID": AUTH_ID}, lines
        async with Emulator(ssl_context=trust_test_ca.server_context()) as emulator:
            served = await serve(
                emulator, tmp_path, dialplans={"reminders": REMINDERS},
                PLIVO_AUTH_TOKEN=AUTH_TOKEN, GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN, **printed,
            )  # fmt: skip
            try:
                dialled = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "gateway", "dial", PERSON, "--dialplan", "reminders",
                    "--param", "customer_name=Ada", "--gateway", served.url, "--wait",
                    env={k: v for k, v in env.items() if not k.startswith("PLIVO_")}
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


def test_every_provider_a_plan_may_name_has_a_dialer() -> None:
    """``[outbound] provider`` accepts exactly the providers the admin API can dial through."""
    assert set(DIALERS) == set(PROVIDERS)
