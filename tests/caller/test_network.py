"""The simulated phone network's Calls API checks requests as Twilio documents them, and the gateway's
own request passes those checks (loopback HTTP, no gateway running)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.caller.network import PhoneNetwork, behaviour_for
from gateway.telephony.twilio_calls import create_call_form
from gateway.tools.rest_call import RestRefused
from gateway.tools.twilio_rest import TwilioRest

ACCOUNT = "AC" + "c" * 32
TOKEN = "network-test-token"
GOOD = {"To": "+15551230099", "From": "+15550100100", "Url": "http://127.0.0.1:9/twilio/outbound?t=x"}


@pytest.fixture
async def network() -> AsyncIterator[PhoneNetwork]:
    # Busy numbers only: nothing is answered, and the callbacks go nowhere (port 9) harmlessly.
    async with PhoneNetwork(account_sid=ACCOUNT, auth_token=TOKEN, ring_s=0.05) as net:
        yield net


def _auth(account: str = ACCOUNT, token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{account}:{token}".encode()).decode()}


async def _post(
    network: PhoneNetwork, form: dict[str, str], headers: dict[str, str]
) -> tuple[int, dict[str, object]]:
    url = f"{network.base_url}/2010-04-01/Accounts/{ACCOUNT}/Calls.json"
    async with aiohttp.ClientSession() as http, http.post(url, data=form, headers=headers) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("form", "code", "words"),
    [
        ({k: v for k, v in GOOD.items() if k != "To"}, 21201, "No 'To' number"),
        ({k: v for k, v in GOOD.items() if k != "From"}, 21213, "No 'From' number"),
        (GOOD | {"To": "555-1234"}, 21211, "Invalid 'To'"),
        (GOOD | {"From": "+0123"}, 21212, "Invalid 'From'"),
        (GOOD | {"Url": "/relative"}, 21205, "Url"),
        (GOOD | {"StatusCallback": "http://x/s", "StatusCallbackEvent": "rung"}, None, "StatusCallbackEvent"),
        (GOOD | {"MachineDetection": "Yes"}, None, "MachineDetection"),
        (GOOD | {"MachineDetection": "Enable", "AsyncAmd": "true"}, 21262, "AsyncAmdStatusCallback"),
        (GOOD | {"Timeout": "0"}, None, "Timeout"),
    ],
)
async def test_bad_calls_requests_get_twilios_errors(
    network: PhoneNetwork, form: dict[str, str], code: int | None, words: str
) -> None:
    """Missing or malformed parameters: HTTP 400 with Twilio's error shape and code; nothing rings."""
    status, body = await _post(network, form, _auth())
    assert status == 400
    assert body["code"] == code
    assert words in str(body["message"])
    assert network.calls == {}


async def test_calls_need_the_accounts_basic_auth(network: PhoneNetwork) -> None:
    """No credentials, or the wrong token: 401, Twilio error 20003."""
    for headers in ({}, _auth(token="wrong"), {"Authorization": "Bearer " + TOKEN}):
        status, body = await _post(network, GOOD, headers)
        assert (status, body["code"]) == (401, 20003)
    assert network.calls == {}


async def test_the_gateways_request_is_accepted_as_twilio_would(network: PhoneNetwork) -> None:
    """create_call_form + TwilioRest.create_call: 201 with the Call resource, every documented field kept."""
    form = create_call_form(
        to="+15551230099",
        from_="+15550100100",
        url="http://127.0.0.1:9/twilio/outbound?t=abc",
        status_callback="http://127.0.0.1:9/twilio/outbound/status?t=abc",
        amd_callback="http://127.0.0.1:9/twilio/outbound/amd?t=abc",
        timeout_s=25,
    )
    async with aiohttp.ClientSession() as http:
        rest = TwilioRest(http, account_sid=ACCOUNT, auth_token=TOKEN, base_url=network.base_url)
        reply = await rest.create_call(form)
        assert reply["status"] == "queued"
        assert reply["direction"] == "outbound-api"
        call = await network.wait(str(reply["sid"]), 10)
        assert call.form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
        assert (call.one("MachineDetection"), call.one("AsyncAmd"), call.one("Timeout")) == (
            "DetectMessageEnd",
            "true",
            "25",
        )
        assert [status for status, _ in call.callbacks] == ["initiated", "ringing", "busy"]
        bad = TwilioRest(http, account_sid=ACCOUNT, auth_token="nope", base_url=network.base_url)
        with pytest.raises(RestRefused) as refused:
            await bad.create_call(form)
        assert (refused.value.status, refused.value.codes) == (401, ("20003",))


def test_numbers_pick_who_answers() -> None:
    """The documented defaults: …0 a machine, …99 busy, …98 no answer, …97 fails, others a person."""
    assert [
        behaviour_for(n) for n in ("+15551230", "+155512399", "+155512398", "+155512397", "+15551231")
    ] == [
        "machine",
        "busy",
        "no-answer",
        "failed",
        "human",
    ]
