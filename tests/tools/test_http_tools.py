"""HTTP tools: declared in TOML, POSTed to a local stand-in, replies and failures as the model sees them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.errors import ConfigError
from gateway.tools.http import MAX_REPLY_BYTES, http_tool, load_tools_file

from .helpers import Harness, context


class StandIn:
    """A business endpoint on loopback; ``reply`` decides what each request gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.reply: web.StreamResponse | None = None
        app = web.Application()
        app.router.add_post("/{path:.*}", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers), await request.json()))
        return self.reply if self.reply is not None else web.json_response({"in_stock": 4})

    def url(self, path: str = "/stock") -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    s = StandIn()
    await s.server.start_server()
    yield s
    await s.server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


SCHEMA = {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]}


async def run_call(harness: Harness, call_id: str = "fc-1", **args: Any) -> dict[str, Any]:
    harness.call(harness.registry.names().__iter__().__next__(), call_id, **args)
    for _ in range(300):
        if harness.router.pending == 0:
            break
        await asyncio.sleep(0.01)
    return dict(harness.answer(call_id).response)


async def test_arguments_and_call_context_are_posted_and_the_reply_returned(
    stand_in: StandIn, http: aiohttp.ClientSession
) -> None:
    """The endpoint gets tool, id, args and the call's context; its JSON reply is the output."""
    made = http_tool(
        "check_stock", url=stand_in.url(), description="Check stock.", parameters=SCHEMA,
        headers={"Authorization": "Bearer t0k3n-value"},
    )  # fmt: skip
    h = Harness(made, ctx=context(http=http))
    assert await run_call(h, "fc-9", sku="W-1") == {"output": {"in_stock": 4}}
    path, headers, body = stand_in.requests[0]
    assert path == "/stock"
    assert headers["Authorization"] == "Bearer t0k3n-value"
    assert headers["Idempotency-Key"] == f"{h.context.call_id}:check_stock:fc-9"
    assert body == {
        "tool": "check_stock",
        "id": "fc-9",
        "args": {"sku": "W-1"},
        "call": {
            "call_id": h.context.call_id,
            "from": "+15550001111",
            "to": "+15550100100",
            "dialplan": "support",
            "metadata": {"company": "Acme"},
        },
    }


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (web.json_response({"error": "SKU W-1 is discontinued"}, status=404), "SKU W-1 is discontinued"),
        (web.Response(status=503, text="upstream down"), "the check_stock service failed (HTTP 503)"),
        (web.Response(text="<html>ok</html>"), "the check_stock service sent a reply that is not JSON"),
        (
            web.Response(status=302, headers={"Location": "/elsewhere"}),
            "the check_stock service failed (HTTP 302)",
        ),
        (
            web.Response(body=b'"' + b"x" * MAX_REPLY_BYTES + b'"', content_type="application/json"),
            f"the check_stock service sent a reply larger than {MAX_REPLY_BYTES} bytes",
        ),
    ],
)
async def test_failures_become_safe_errors(
    stand_in: StandIn, http: aiohttp.ClientSession, reply: web.StreamResponse, expected: str
) -> None:
    """Business errors pass through; other failures become short errors; redirects are not followed."""
    stand_in.reply = reply
    h = Harness(http_tool("check_stock", url=stand_in.url(), description="Check."), ctx=context(http=http))
    assert await run_call(h) == {"error": expected}
    assert len(stand_in.requests) == 1


async def test_unreachable_endpoint_is_an_error(http: aiohttp.ClientSession) -> None:
    """A refused connection is answered, not raised."""
    h = Harness(http_tool("ping", url="http://127.0.0.1:9/x", description="Ping."), ctx=context(http=http))
    assert await run_call(h) == {"error": "the ping service could not be reached"}


def test_tools_file_declares_http_tools(tmp_path: Path) -> None:
    """A [http.NAME] table becomes a tool; ${TOOL_*} header references come from the given env."""
    path = tmp_path / "tools.toml"
    path.write_text(
        """
[http.check_stock]
description = "Check whether a product is in stock."
url = "https://shop.example.com/hooks/stock"
timeout_s = 4
non_blocking = true
scheduling = "SILENT"
headers = { Authorization = "Bearer ${TOOL_SHOP_TOKEN}" }
[http.check_stock.parameters]
type = "object"
required = ["sku"]
properties.sku = { type = "string", description = "The product code." }
"""
    )
    [made] = load_tools_file(path, env={"TOOL_SHOP_TOKEN": "s3cret-token"})
    assert (made.name, made.kind, made.timeout_s, made.non_blocking, made.scheduling) == (
        "check_stock", "http", 4.0, True, "SILENT",
    )  # fmt: skip
    assert made.parameters["properties"]["sku"] == {"type": "STRING", "description": "The product code."}
    assert made.declaration().non_blocking is True


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[http.x]\nurl = 'https://a.example/x'\n", "url and description are required"),
        ("[http.x]\nurl = 'ftp://a/x'\ndescription = 'd'\n", "url must be http"),
        ("[http.x]\nurl = 'https://a/x'\ndescription = 'd'\nmethod = 'GET'\n", "unknown key"),
        ("[other]\n", "unknown table"),
        (
            "[http.x]\nurl = 'https://a/x'\ndescription = 'd'\nheaders = {A = '${GEMINI_API_KEY}'}\n",
            r"only \$\{TOOL_\*\}",
        ),
        ("[http.x]\nurl = 'https://a/x'\ndescription = 'd'\nheaders = {A = '${TOOL_MISSING}'}\n", "not set"),
        (
            "[http.x]\nurl = 'https://a/x'\ndescription = 'd'\nparameters = {type = 'object', x = 1}\n",
            "not supported",
        ),
        ("[http.x]\nurl = 'https://a/x'\ndescription = 'd'\nscheduling = 'LATER'\n", "scheduling"),
        ("[http.x\n", "not valid TOML"),
    ],
)
def test_tools_file_mistakes_name_the_file_and_tool(tmp_path: Path, text: str, problem: str) -> None:
    """Every mistake in a tools file is a ConfigError that says where and what."""
    path = tmp_path / "tools.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem) as info:
        load_tools_file(path, env={})
    assert str(path) in str(info.value)


def test_reply_size_limit_is_documented() -> None:
    """The limit quoted in errors is the module constant."""
    assert json.dumps(MAX_REPLY_BYTES) == "65536"
