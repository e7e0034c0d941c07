"""examples/asterisk/ works as shipped: its websocket_client.conf and Dial() line drive the gateway with the
same URI, subprotocol, credentials and parameters Asterisk would use; gateway.env parses, and its
AudioSocket route matches the UUID the dialplan builds."""

from __future__ import annotations

import base64
import configparser
import re
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import aiohttp
import pytest

from gateway.caller import wire_asterisk as wire
from gateway.server.audiosocket import dialled_number
from gateway.settings import Settings

from .conftest import GatewayFactory

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "asterisk"


def _dialplan() -> str:
    return (EXAMPLES / "extensions.conf").read_text()


def _expand(value: str, exten: str, caller: str) -> str:
    """The few dialplan expressions the example uses, as Asterisk expands them."""
    value = value.replace("${URIENCODE(${EXTEN})}", exten).replace("${URIENCODE(${CALLERID(num)})}", caller)
    assert "$" not in value, value
    return value


async def test_websocket_example_opens_a_call(make_gateway: GatewayFactory) -> None:
    conf = configparser.ConfigParser(inline_comment_prefixes=(";",), comment_prefixes=(";",))
    conf.read_string((EXAMPLES / "websocket_client.conf").read_text())
    conn = conf["gemini"]
    assert (conn["type"], conn["protocols"]) == ("websocket_client", "media")
    dial = re.search(r"Dial\(WebSocket/(\w+)/c\((\w+)\)v\((.*)\)\)\s*$", _dialplan(), re.MULTILINE)
    assert dial is not None
    assert dial.group(1) == "gemini"
    codec = dial.group(2)
    params = dict(pair.split("=", 1) for pair in dial.group(3).split(","))
    params = {k: _expand(v, "150", "+15550001111") for k, v in params.items()}
    gw = await make_gateway(pbx_secret=conn["password"])
    uri = urlsplit(conn["uri"])
    assert uri.path == "/asterisk/media"
    url = gw.url.replace("http", "ws") + uri.path + "?" + urlencode(params)  # v() appended with '?'
    auth = base64.b64encode(f"{conn['username']}:{conn['password']}".encode()).decode()
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            url, protocols=(conn["protocols"],), headers={"Authorization": f"Basic {auth}"}
        ) as ws,
    ):
        assert ws.protocol == "media"
        start = wire.media_start(
            "plain-text", connection_id="gemini", channel="WebSocket/gemini/0x1", channel_id="1718000000.9",
            codec=codec, optimal=wire.optimal_frame_size(codec),
        )  # fmt: skip
        await ws.send_str(start)
        assert (await ws.receive()).data == "ANSWER"


def test_gateway_env_and_audiosocket_route() -> None:
    env = dict(
        line.split("=", 1)
        for line in (EXAMPLES / "gateway.env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    settings = Settings.from_env(env)
    assert settings.audiosocket_port == 9092
    match = re.search(r"AudioSocket\((\w+)-\$\{UUID\(\):9\},([\d.]+):(\d+)\)", _dialplan())
    assert match is not None
    assert (match.group(2), int(match.group(3))) == (settings.audiosocket_host, settings.audiosocket_port)
    call_uuid = match.group(1) + "-1234-4abc-8def-0123456789ab"
    assert dialled_number(settings, call_uuid) == "+15550100"
    assert dialled_number(settings, "20000000-1234-4abc-8def-0123456789ab") == "audiosocket"
