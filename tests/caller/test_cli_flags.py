"""`gateway call`'s flags: refused before the call is placed, defaults from the environment, and
the live log and the summary measuring a clear the same way."""

from __future__ import annotations

import argparse
import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.caller import CallOptions, place_call
from gateway.caller.cli import _options, _summary, configure
from gateway.cli import main
from gateway.errors import ConfigError

from .fake_twilio_gateway import FakeGateway, tone


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(["+15551230000", *argv])


class _Webhooks:
    """A gateway that counts webhook requests: a refused option must not place the call."""

    def __init__(self) -> None:
        self.hits = 0

    async def voice(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(status=500)


async def _refused(capsys: pytest.CaptureFixture[str], serve_hooks: str, *flags: str) -> str:
    code = await asyncio.to_thread(main, ["call", "+15551230000", "--gateway", serve_hooks, *flags])
    assert code == 1
    return capsys.readouterr().err


@pytest.fixture
async def hooks(aiohttp_server: Any) -> tuple[_Webhooks, str]:
    counter = _Webhooks()
    app = web.Application()
    app.router.add_post("/twilio/voice", counter.voice)
    server = await aiohttp_server(app)
    return counter, f"http://127.0.0.1:{server.port}"


async def test_a_bad_play_file_is_refused_before_the_call_with_a_reason(
    hooks: tuple[_Webhooks, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    counter, url = hooks
    err = await _refused(capsys, url, "--play", str(tmp_path / "nope.wav"))
    assert "nope.wav" in err
    assert "cannot open" in err
    text = tmp_path / "notes.wav"
    text.write_text("hi")
    err = await _refused(capsys, url, "--play", str(text))
    assert "not a WAV file" in err
    assert counter.hits == 0


async def test_a_negative_hangup_after_is_refused(
    hooks: tuple[_Webhooks, str], capsys: pytest.CaptureFixture[str]
) -> None:
    counter, url = hooks
    for value in ("-1", "0", "nan"):
        err = await _refused(capsys, url, f"--hangup-after={value}")
        assert "--hangup-after" in err
    assert counter.hits == 0


def test_the_default_gateway_follows_gateway_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "18080")
    assert _options(_parse()).gateway == "http://127.0.0.1:18080"
    monkeypatch.delenv("GATEWAY_PORT")
    assert _options(_parse()).gateway == "http://127.0.0.1:8080"


def test_a_gateway_without_a_scheme_is_http_and_nonsense_is_explained() -> None:
    assert _options(_parse("--gateway", "127.0.0.1:18080")).gateway == "http://127.0.0.1:18080"
    assert _options(_parse("--gateway", "https://gw.example.com/")).gateway == "https://gw.example.com"
    with pytest.raises(ConfigError, match=r"--gateway: expected a base URL like http://127\.0\.0\.1:8080"):
        _options(_parse("--gateway", "ftp://gw.example.com"))
    with pytest.raises(ConfigError, match="--public-url"):
        _options(_parse("--public-url", "gw.example.com:99999"))


def test_audiosocket_takes_a_tcp_gateway_and_only_it_does() -> None:
    """AudioSocket is plain TCP (README, Asterisk): `gateway call --provider audiosocket` dials tcp://."""
    options = _options(_parse("--provider", "audiosocket", "--gateway", "tcp://127.0.0.1:9092"))
    assert options.gateway == "tcp://127.0.0.1:9092"
    with pytest.raises(ConfigError, match="--gateway: expected a base URL"):
        _options(_parse("--gateway", "tcp://127.0.0.1:9092"))


def test_a_scripted_call_hangs_up_when_done_unless_told_when() -> None:
    assert _options(_parse("--play", "builtin:hello")).hangup_when_done_s == 1.5
    assert _options(_parse("--play", "builtin:hello", "--hangup-after", "9")).hangup_when_done_s is None
    assert _options(_parse()).hangup_when_done_s is None  # nothing scripted: the gateway ends it


async def test_the_live_clear_line_and_the_summary_agree(serve: Any) -> None:
    """The live log's "dropped N ms" and the summary's "dropped by clear" are the same number."""

    async def script(fake: FakeGateway, ws: web.WebSocketResponse) -> None:
        await asyncio.sleep(0.2)
        await fake.send_media(ws, tone(2000))
        await fake.send_mark(ws, "reply")
        await asyncio.sleep(0.3)
        await fake.send_clear(ws)

    lines: list[str] = []
    base = await serve(FakeGateway(script=script))
    report = await place_call(
        CallOptions(to="+15551230000", gateway=base, hangup_after_s=1.2, on_event=lines.append)
    )
    live = [m for line in lines if (m := re.search(r"clear: dropped (\d+) ms", line))]
    assert len(live) == 1
    summary = re.search(r"dropped by clear (\d+) ms", _summary(report))
    assert summary is not None, _summary(report)
    assert int(live[0][1]) == int(summary[1]) == round(report.dropped_ms)
    assert 1600 < report.dropped_ms < 1800
