"""Every WebSocket provider through a real `gateway serve` process, signed, as a deployment runs it.

The per-provider e2e tests run the gateway in the test's own process on asyncio's loop; a deployment runs
`gateway serve`, on uvloop when installed, with its credentials in the environment. A difference between
the two once dropped every AudioSocket call (test_provider_audiosocket.py has that one's real-process
test). Here each provider's simulated side signs (or brings the PBX secret) exactly as the provider does,
the gateway checks it, and reaches the emulator over verified wss://.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.caller import CallOptions, place_call
from gateway.emulator import Emulator
from gateway.emulator.pki import TestPKI
from tests.e2e.served import serve

SECRET = "real-process-provider-secret"
#: provider → the variable holding the credential its side signs (or authenticates) with.
CREDENTIAL = {
    "twilio": "TWILIO_AUTH_TOKEN",
    "vonage": "VONAGE_SIGNATURE_SECRET",
    "asterisk": "GATEWAY_PBX_SECRET",
    "freeswitch": "GATEWAY_PBX_SECRET",
    "jambonz": "GATEWAY_PBX_SECRET",
}


@pytest.fixture
async def emulator(trust_test_ca: TestPKI) -> AsyncIterator[Emulator]:
    async with Emulator(ssl_context=trust_test_ca.server_context()) as emu:
        yield emu


@pytest.mark.parametrize("provider", sorted(CREDENTIAL))
async def test_a_signed_call_converses_through_a_real_gateway_process(
    emulator: Emulator, tmp_path: Path, provider: str
) -> None:
    served = await serve(emulator, tmp_path, **{CREDENTIAL[provider]: SECRET})
    try:
        options = CallOptions(
            to="+15551230000",
            provider=provider,
            gateway=served.url,
            auth_token=SECRET,
            play="builtin:hello",
            hangup_when_done_s=0.5,
        )
        report = await place_call(options)
        assert report.protocol_errors == []
        assert report.answered
        assert report.greeting_ms is not None
        assert len(report.reply_ms) == 1
    finally:
        served.proc.terminate()
        assert await served.exit_code(within_s=30) == 0
    assert "Traceback" not in "".join(served.output)
    (record,) = served.records()
    assert record["ended_by"] == "caller"
    roles = [role for role, _ in served.turns(str(record["call_id"]))]
    assert roles[:3] == ["bot", "caller", "bot"]
