"""No silent failures: an unexpected error in any part of a call ends it through the fallback path.

Each test breaks one part of a real call (simulated Twilio caller → gateway → emulator over wss://)
with an exception the code does not expect, and checks the four things an operator relies on: one
ERROR log line with the traceback and the call's ids, the caller hearing the fallback line (never dead
air), the record saying ``ended_by=gateway`` with the reason, and the failure counted in /metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from gateway.audio.transcode import Downlink, Uplink
from gateway.bridge.control import BridgeControl
from gateway.bridge.playout import Playout
from gateway.caller import CallOptions, place_call
from gateway.emulator import Emulator
from gateway.emulator.scenario import Rule
from gateway.gemini.session import LiveSession
from gateway.telephony.events import PlayAudio
from gateway.telephony.twilio import TwilioCodec
from gateway.tools.router import ToolRouter

from .conftest import DEFAULT_PLAN, GatewayFactory, stored_record

pytestmark = pytest.mark.e2e

TO = "+15551230000"


class Injected(RuntimeError):
    """The injected failure: a type no code path expects."""


def _once(original: Callable[..., Any], *, after: int = 0) -> Callable[..., Any]:
    """Wrap ``original`` so that its call number ``after + 1`` raises :class:`Injected`, once."""
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == after + 1:
            raise Injected("injected failure")
        return original(*args, **kwargs)

    return wrapper


def _failing_encoder(original: Callable[..., str]) -> Callable[..., str]:
    """TwilioCodec.encode that fails on the first audio it is asked to encode (the greeting)."""
    failed = [False]

    def encode(self: TwilioCodec, command: Any) -> str:
        if isinstance(command, PlayAudio) and not failed[0]:
            failed[0] = True
            raise Injected("injected failure")
        return original(self, command)

    return encode


async def _broken_hang_up(*args: Any, **kwargs: Any) -> None:
    raise Injected("injected failure")


async def _always_fails(*args: Any, **kwargs: Any) -> LiveSession:
    # What every call did with a real key before the TLS fix: a foreign exception from the connect.
    raise ValueError("ssl=None is incompatible with a wss:// URI")


async def _metric(url: str, task: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(f'gateway_call_failures_total{{task="{task}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize(
    ("where", "task"),
    [
        ("connect", "downlink"),
        ("uplink", "uplink"),
        ("downlink", "downlink"),
        ("encoder", "downlink"),
        ("playout", "playout"),
        ("tools", "downlink"),
        ("control", "call control"),
    ],
)
async def test_an_unexpected_error_anywhere_ends_the_call_through_the_fallback(
    where: str,
    task: str,
    make_gateway: GatewayFactory,
    emulator: Emulator,
    dialplan_dir: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if where == "connect":
        monkeypatch.setattr(LiveSession, "connect", _always_fails)
    elif where == "uplink":
        monkeypatch.setattr(Uplink, "process", _once(Uplink.process, after=25))
    elif where == "downlink":
        monkeypatch.setattr(Downlink, "process", _once(Downlink.process, after=2))
    elif where == "encoder":
        monkeypatch.setattr(TwilioCodec, "encode", _failing_encoder(TwilioCodec.encode))
    elif where == "playout":
        monkeypatch.setattr(Playout, "next_wakeup", _once(Playout.next_wakeup, after=3))
    elif where == "tools":
        (dialplan_dir / "default.toml").write_text(
            DEFAULT_PLAN.replace("[vad]", 'tools = ["end_call"]\n[vad]')
        )
        emulator.scenario.rules.append(Rule(turn=1, tool="end_call", args={}))
        monkeypatch.setattr(ToolRouter, "handle", _once(ToolRouter.handle))
    elif where == "control":  # end_call's hang-up, which runs in a task of its own
        (dialplan_dir / "default.toml").write_text(
            DEFAULT_PLAN.replace("[vad]", 'tools = ["end_call"]\n[vad]')
        )
        emulator.scenario.rules.append(Rule(turn=1, tool="end_call", args={}))
        monkeypatch.setattr(BridgeControl, "_hang_up_after_goodbye", _broken_hang_up)
    gw = await make_gateway(live_give_up_s=2.0)
    caplog.set_level(logging.INFO)

    report = await place_call(
        CallOptions(to=TO, gateway=gw.url, play="builtin:hello", speak_at_s=0.5, hangup_after_s=25.0)
    )

    # The caller heard the fallback line (the shipped one is ~5 s), then the gateway hung up.
    assert report.answered
    assert report.ended_by == "gateway"
    assert report.heard_ms > 4000
    # One ERROR line, with the traceback and the call's ids.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    (error,) = errors
    assert error.getMessage() == "call task failed"
    assert error.exc_info is not None
    assert getattr(error, "task", None) == task
    assert getattr(error, "call_sid", None) == report.call_sid
    # The record says who ended the call and why, and keeps the failure.
    (record,) = await gw.wait_calls_ended(1, within_s=10)
    assert record["ended_by"] == "gateway"
    expected = "ValueError" if where == "connect" else "Injected"
    assert f"internal error in {task}: {expected}" in record["reason"]
    assert record["fallback_ms"] is not None
    # The durable call record keeps the failure, and it is counted where an operator's alert looks.
    stored = await stored_record(gw.url, report.call_sid)
    assert stored["ended_by"] == "gateway"
    assert [e["detail"]["task"] for e in stored["events"] if e["kind"] == "failure"] == [task]
    assert await _metric(gw.url, task) == 1.0
