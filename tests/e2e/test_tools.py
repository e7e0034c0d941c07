"""Tool calls end to end: simulated caller → gateway → emulator's scripted tool calls, over loopback.

The emulator's rules make the "model" call a tool at a chosen moment; the gateway's router runs the
handler and answers. Python handlers here are closures so they can report what they saw; the HTTP
tool and Twilio's REST API are local stand-in servers.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.bridge import control as call_control
from gateway.caller import CallOptions, CallReport, place_call
from gateway.dialplan.store import DialplanStore
from gateway.emulator import Emulator
from gateway.emulator.scenario import Rule
from gateway.emulator.session import RecordedFrame
from gateway.errors import ToolError
from gateway.server.app import create_app
from gateway.server.state import CALLS
from gateway.tools import CallContext, ToolRegistry
from gateway.tools.builtin import builtin_tools
from gateway.tools.dtmf import dtmf_frames
from gateway.tools.http import http_tool

from .conftest import Gateway, in_process_settings

pytestmark = pytest.mark.e2e

ACCOUNT = "AC" + "a" * 32
AUTH_TOKEN = "twilio-auth-token-for-tests"
TOOLS = '["lookup_order", "check_stock", "explode", "stall", "slow_lookup", "background_report", '
TOOLS += '"end_call", "transfer_call", "send_dtmf"]'
PLAN = f"""
default = true
voice = "Puck"
language = "en-US"
system_instruction = "You are the Acme support line."
greeting = "Greet the caller."
tools = {TOOLS}
[vad]
silence_duration_ms = 300
[transfer]
agent = "+15550100199"
[metadata]
company = "Acme Widgets"
"""


class StandIns:
    """The business's HTTP tool endpoint and Twilio's REST API, on one loopback server."""

    def __init__(self) -> None:
        self.tool_requests: list[dict[str, Any]] = []
        self.twilio_requests: list[tuple[str, str, dict[str, str]]] = []
        #: Called when a Twilio request arrives (to look at the gateway's state at that moment).
        self.on_twilio: Callable[[], None] | None = None
        app = web.Application()
        app.router.add_post("/stock", self.stock)
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{call}", self.twilio)
        self.server = TestServer(app, host="127.0.0.1")

    async def stock(self, request: web.Request) -> web.Response:
        self.tool_requests.append(await request.json())
        return web.json_response({"sku": "W-1", "in_stock": 7})

    async def twilio(self, request: web.Request) -> web.Response:
        form = await request.post()
        if self.on_twilio is not None:
            self.on_twilio()
        auth = request.headers.get("Authorization", "")
        self.twilio_requests.append((request.path, auth, {k: str(v) for k, v in form.items()}))
        return web.json_response({"sid": request.match_info["call"], "status": "in-progress"})

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


class Seen:
    """What the Python handlers observed."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.started = asyncio.Event()
        self.contexts: list[CallContext] = []
        self.audio_in: list[tuple[int, int]] = []


def make_registry(stand_ins: StandIns, emulator: Emulator, seen: Seen) -> ToolRegistry:
    registry = ToolRegistry(default_timeout_s=5.0)
    for builtin in builtin_tools():
        registry.add(builtin)
    registry.add_module("gateway.handlers.support")
    registry.add(
        http_tool(
            "check_stock",
            url=stand_ins.base_url + "/stock",
            description="Check whether a product is in stock.",
            parameters={"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]},
        )
    )

    def explode(context: CallContext) -> None:
        """Crash with a secret in the message."""
        seen.contexts.append(context)
        raise RuntimeError("database password=hunter2 rejected")

    async def stall() -> None:
        """Never answer in time."""
        await asyncio.sleep(30)

    async def slow_lookup(order_id: str) -> str:
        """Look something up slowly.

        Args:
            order_id: The order.
        """
        seen.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.cancelled.set()
            raise
        return "too late"

    async def background_report() -> dict[str, int]:
        """Prepare a report in the background."""
        before = emulator.sessions[-1].audio_in_bytes
        await asyncio.sleep(1.0)
        seen.audio_in.append((before, emulator.sessions[-1].audio_in_bytes))
        return {"pages": 3}

    registry.register(explode)
    registry.register(stall, timeout_s=0.3)
    registry.register(slow_lookup)
    registry.register(background_report, non_blocking=True, scheduling="WHEN_IDLE")
    return registry


ToolGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def stand_ins() -> AsyncIterator[StandIns]:
    s = StandIns()
    await s.server.start_server()
    yield s
    await s.server.close()


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture(autouse=True)
def info_logging(caplog: pytest.LogCaptureFixture) -> None:
    """Log at INFO as production does, so every log call on the tool path really builds its record."""
    caplog.set_level(logging.INFO)


@pytest.fixture
async def tool_gateway(
    emulator: Emulator, stand_ins: StandIns, seen: Seen, tmp_path: Path
) -> AsyncIterator[ToolGateway]:
    servers: list[TestServer] = []

    async def make(*, twilio: bool = False) -> Gateway:
        plans = tmp_path / "plans"
        plans.mkdir(exist_ok=True)
        (plans / "default.toml").write_text(PLAN)
        settings = in_process_settings(
            plans,
            tmp_path / "data",
            twilio_account_sid=ACCOUNT if twilio else "",
            twilio_auth_token=AUTH_TOKEN if twilio else "",
            twilio_api_base=stand_ins.base_url,
            gemini_url=emulator.base_url,
        )
        registry = make_registry(stand_ins, emulator, seen)
        store = DialplanStore(plans, known_tools=registry.names())
        app = create_app(settings, dialplans=store, tools=registry)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return Gateway(app, server, settings)

    yield make
    for server in reversed(servers):
        await server.close()


def script(emulator: Emulator, **rule: Any) -> None:
    """The model's first turn (answering the greeting prompt) calls a tool as ``rule`` says.

    Matched by the greeting's text: the greeting is the gateway's instruction, not caller turn 1."""
    emulator.scenario.rules = [Rule(text_contains="Greet the caller", **rule)]


def tool_responses(emulator: Emulator) -> list[dict[str, Any]]:
    """Every functionResponse the gateway sent, in order."""
    return [
        item
        for session in emulator.sessions
        for f in session.frames
        if f.direction == "in" and f.payload and "toolResponse" in f.payload
        for item in f.payload["toolResponse"]["functionResponses"]
    ]


def is_turn_complete_after_tool(frame: RecordedFrame) -> bool:
    return frame.direction == "out" and bool(frame.payload) and "turnComplete" in str(frame.payload)


async def call(
    gw: Gateway,
    emulator: Emulator,
    *,
    until: Callable[[RecordedFrame], bool] | None = None,
    limit_s: float = 15.0,
    **options: Any,
) -> CallReport:
    """Place a call; hang up once the emulator records a frame matching ``until`` (if given)."""
    hangup = asyncio.Event()
    opts = CallOptions(
        to="+15550100100",
        gateway=gw.url,
        hangup_event=hangup,
        max_duration_s=limit_s,
        account_sid=ACCOUNT,
        auth_token=gw.settings.twilio_auth_token,
        **options,
    )
    caller = asyncio.create_task(place_call(opts))
    if until is not None:
        try:
            await emulator.wait_for(until, timeout=limit_s)
        finally:
            hangup.set()
    return await caller


def until_tool_answered(emulator: Emulator, count: int = 1) -> Callable[[RecordedFrame], bool]:
    """Matches once ``count`` answers were sent and a model turn completed after them."""

    def predicate(frame: RecordedFrame) -> bool:
        return len(tool_responses(emulator)) >= count and is_turn_complete_after_tool(frame)

    return predicate


# --------------------------------------------------------------------------------------------------


async def test_python_handler_answers_and_the_model_speaks_the_result(
    tool_gateway: ToolGateway, emulator: Emulator
) -> None:
    """The shipped lookup_order handler answers the model's call; the model's reply uses the result."""
    script(emulator, say="Let me look that up.", tool="lookup_order", args={"order_id": "a 1001"},
           reply="Your order is {result}")  # fmt: skip
    gw = await tool_gateway()
    report = await call(gw, emulator, until=until_tool_answered(emulator))
    [response] = tool_responses(emulator)
    assert response["id"] == "function-call-1"
    assert response["name"] == "lookup_order"
    assert response["response"]["output"]["status"] == "shipped"
    assert "scheduling" not in response
    history = emulator.sessions[0].conversation.history  # type: ignore[union-attr]
    assert any(h["role"] == "model" and "shipped" in h["text"] for h in history)
    assert report.protocol_errors == []
    assert report.ended_by == "caller"


async def test_http_tool_posts_the_call_context_and_returns_the_reply(
    tool_gateway: ToolGateway, emulator: Emulator, stand_ins: StandIns
) -> None:
    """An HTTP tool POSTs the arguments and the call's context; the endpoint's JSON is the answer."""
    script(emulator, tool="check_stock", args={"sku": "W-1"})
    gw = await tool_gateway()
    report = await call(gw, emulator, until=until_tool_answered(emulator))
    [request] = stand_ins.tool_requests
    assert request["args"] == {"sku": "W-1"}
    assert request["id"] == "function-call-1"
    assert request["call"]["call_id"] == report.call_sid
    assert request["call"]["dialplan"] == "default"
    assert request["call"]["metadata"] == {"company": "Acme Widgets"}
    assert tool_responses(emulator)[0]["response"] == {"output": {"sku": "W-1", "in_stock": 7}}


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("lookup_order", {"order_id": 1001}, "invalid arguments: order_id: expected a string, got a number"),
        ("lookup_order", {"order_id": "Z9"}, "no order 'Z9' was found"),
        ("explode", {}, "tool 'explode' failed because of an internal error"),
        ("stall", {}, "tool 'stall' did not answer within 0.3 s; try again later"),
        ("make_coffee", {}, "unknown tool 'make_coffee'; available tools: "),
    ],
    ids=["bad-arguments", "tool-error", "exception", "timeout", "unknown-tool"],
)
async def test_failures_are_answered_and_the_call_goes_on(
    tool_gateway: ToolGateway, emulator: Emulator, seen: Seen, tool: str, args: dict[str, Any], expected: str
) -> None:
    """Bad arguments, a ToolError, a crash, a timeout or an unknown tool: one error answer, call continues."""
    script(emulator, tool=tool, args=args, reply="Sorry: {result}")
    gw = await tool_gateway()
    report = await call(gw, emulator, until=until_tool_answered(emulator))
    [response] = tool_responses(emulator)
    assert response["response"]["error"].startswith(expected)
    assert "hunter2" not in str(response)
    # The model heard the error and spoke about it; the caller, not the gateway, ended the call.
    history = emulator.sessions[0].conversation.history  # type: ignore[union-attr]
    assert any(h["role"] == "model" and "Sorry" in h["text"] for h in history)
    assert report.ended_by == "caller"
    if tool == "explode":
        assert seen.contexts[0].call_id == report.call_sid


async def test_barge_in_cancels_the_running_handler(
    tool_gateway: ToolGateway, emulator: Emulator, seen: Seen
) -> None:
    """The caller speaks while a blocking tool runs: the model cancels the call, the handler stops,
    and no answer is sent for it."""
    script(emulator, say="One moment please.", tool="slow_lookup", args={"order_id": "A1001"})
    gw = await tool_gateway()

    def cancellation(frame: RecordedFrame) -> bool:
        return frame.direction == "out" and bool(frame.payload) and "toolCallCancellation" in frame.payload

    report = await call(gw, emulator, play="builtin:hello", until=cancellation)
    await asyncio.wait_for(seen.cancelled.wait(), 5)
    assert seen.started.is_set()
    await asyncio.sleep(0.2)
    assert tool_responses(emulator) == []
    assert report.ended_by == "caller"


async def test_non_blocking_tool_keeps_the_call_flowing(
    tool_gateway: ToolGateway, emulator: Emulator, seen: Seen
) -> None:
    """A NON_BLOCKING tool is declared so; while it runs the caller's audio keeps reaching the model;
    its answer carries the chosen scheduling and the model speaks it when idle."""
    script(emulator, say="I'll prepare that while we talk.", tool="background_report", non_blocking=True,
           reply="Your report has {result}")  # fmt: skip
    gw = await tool_gateway()

    def spoke_report(frame: RecordedFrame) -> bool:
        history = emulator.sessions[0].conversation.history if emulator.sessions[0].conversation else []
        return is_turn_complete_after_tool(frame) and any("report has" in h["text"] for h in history)

    await call(gw, emulator, until=spoke_report)
    declarations = emulator.sessions[0].setup["tools"][0]["functionDeclarations"]  # type: ignore[index]
    [declared] = [d for d in declarations if d["name"] == "background_report"]
    assert declared["behavior"] == "NON_BLOCKING"
    [response] = tool_responses(emulator)
    assert response["scheduling"] == "WHEN_IDLE"
    assert response["response"] == {"output": {"pages": 3}}
    [(before, after)] = seen.audio_in
    assert after - before >= 16000  # ≥ 0.5 s of 16 kHz caller audio arrived while the tool ran


async def test_end_call_hangs_up_only_after_the_goodbye_was_heard(
    tool_gateway: ToolGateway, emulator: Emulator, stand_ins: StandIns
) -> None:
    """end_call: the goodbye plays out (every mark echoed, all audio heard), then the call is
    completed over REST and the stream closed by the gateway."""
    script(emulator, say="Thanks for calling Acme. Goodbye!", tool="end_call", args={"reason": "caller done"},
           reply="")  # fmt: skip
    gw = await tool_gateway(twilio=True)
    report = await call(gw, emulator, limit_s=20.0)
    assert report.ended_by == "gateway"
    assert tool_responses(emulator)[0]["response"]["output"]["status"] == "ending"
    # Everything the gateway sent was played to the caller before the line closed.
    received_ms = report.bytes_received / 8
    assert received_ms >= 1000
    assert report.heard_ms >= received_ms - 20
    assert report.clears == 0
    assert report.marks_acked == report.marks_sent
    [record] = gw.app[CALLS].list()["recent"]
    assert (record["ended_by"], record["reason"]) == ("bot", "caller done")
    assert record["marks_acked"] == record["marks_sent"] > 0
    [(path, _, form)] = stand_ins.twilio_requests
    assert path.endswith(f"/Calls/{report.call_sid}.json")
    assert form == {"Status": "completed"}


async def test_transfer_call_issues_the_twilio_request_after_the_bot_is_heard(
    tool_gateway: ToolGateway, emulator: Emulator, stand_ins: StandIns, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transfer_call: once the bot's words have played, POST Calls/{CallSid}.json with <Dial> to the
    plan's number, HTTP Basic AccountSid:AuthToken; the call record says where it went."""
    monkeypatch.setattr(call_control, "TRANSFER_GRACE_S", 0.3)
    script(
        emulator, say="I'm transferring you to an agent now.", tool="transfer_call", args={"target": "agent"}
    )
    gw = await tool_gateway(twilio=True)
    heard_at_request: list[bool] = []

    def snapshot() -> None:
        [bridge] = gw.app[CALLS].active.values()
        assert bridge.control is not None
        heard_at_request.append(bridge.control.heard_out() and bridge.playout.marks_sent > 0)  # type: ignore[attr-defined]

    stand_ins.on_twilio = snapshot
    report = await call(gw, emulator, limit_s=20.0)
    [(path, auth, form)] = stand_ins.twilio_requests
    assert path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{report.call_sid}.json"
    assert auth == "Basic " + base64.b64encode(f"{ACCOUNT}:{AUTH_TOKEN}".encode()).decode()
    assert form["Twiml"].endswith("<Response><Dial>+15550100199</Dial></Response>")
    assert heard_at_request == [True]
    assert tool_responses(emulator)[0]["response"] == {"output": {"status": "transferred", "target": "agent"}}
    [record] = gw.app[CALLS].list()["recent"]
    assert (record["ended_by"], record["reason"]) == ("bot", "transferred to agent")
    assert record["transfer_to"] == "+15550100199"
    assert report.ended_by == "gateway"


async def test_transfer_without_credentials_is_an_error_the_model_hears(
    tool_gateway: ToolGateway, emulator: Emulator, stand_ins: StandIns
) -> None:
    """With no Twilio credentials, transfer_call answers that transfers are not set up; no request."""
    script(emulator, tool="transfer_call", args={"target": "agent"}, reply="Sorry: {result}")
    gw = await tool_gateway(twilio=False)
    report = await call(gw, emulator, until=until_tool_answered(emulator))
    assert tool_responses(emulator)[0]["response"]["error"].startswith("transfers are not set up")
    assert stand_ins.twilio_requests == []
    assert report.ended_by == "caller"


async def test_send_dtmf_plays_the_tones_to_the_caller(tool_gateway: ToolGateway, emulator: Emulator) -> None:
    """send_dtmf plays the digits as audio frames and answers once they have been heard."""
    script(emulator, tool="send_dtmf", args={"digits": "12#"}, reply="Pressed.")
    gw = await tool_gateway()
    report = await call(gw, emulator, until=until_tool_answered(emulator))
    assert tool_responses(emulator)[0]["response"] == {"output": {"status": "sent", "digits": "12#"}}
    assert report.bytes_received >= len(dtmf_frames("12#")) * 160


def test_tool_error_is_the_exported_error_type() -> None:
    """Handlers import ToolError from gateway.tools or gateway.errors: the same class."""
    from gateway import tools

    assert tools.ToolError is ToolError
