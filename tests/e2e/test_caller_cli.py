"""`gateway call` as a newcomer runs it, against the gateway and the emulator over loopback."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from gateway.caller import CallOptions, place_call
from gateway.caller.call import admin_transcript
from gateway.cli import main
from gateway.emulator import Emulator
from gateway.errors import AuthError

from .conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.e2e

#: builtin:hello is 1.5 s long.
_UTTERANCE_S = 1.5


async def test_the_readme_command_ends_with_the_conversation(
    gateway: Gateway, emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README's first command: two turns, then the caller hangs up a moment after the last reply played."""
    heard = tmp_path / "heard.wav"
    argv = ["call", "+15551230000", "--gateway", gateway.url, "--play", "builtin:hello", "--turns", "2"]
    argv += ["--record", str(heard), "--json"]
    code = await asyncio.wait_for(asyncio.to_thread(main, argv), 40)
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ended_by"] == "caller"
    assert len(report["reply_ms"]) == 2
    # The conversation: the greeting's wait, the bot audio heard, two utterances and the two replies'
    # waits. The call lasts that, plus the caller's 1.5 s of quiet and a little slack, not silence timeouts.
    conversation_s = (
        report["greeting_ms"] + sum(report["reply_ms"]) + report["heard_ms"]
    ) / 1000 + 2 * _UTTERANCE_S
    assert report["duration_s"] < conversation_s + 5.0, report
    assert heard.exists()


async def test_the_live_log_says_what_it_waits_for_and_summarises_marks(gateway: Gateway) -> None:
    lines: list[str] = []
    report = await place_call(
        CallOptions(
            to="+15551230000",
            gateway=gateway.url,
            play="builtin:hello",
            turns=2,
            hangup_when_done_s=1.5,
            on_event=lines.append,
        )
    )
    text = "\n".join(lines)
    assert report.ended_by == "caller"
    assert report.marks_sent > 10  # marks flow several a second ...
    mark_lines = [line for line in lines if re.search(r"\] mark '", line)]
    assert len(mark_lines) <= 3, text  # ... but the log shows one per bot turn, then a count
    assert sum(int(n) for n in re.findall(r"(\d+) mark\(s\) echoed", text)) == report.marks_acked
    assert "waiting for the bot's reply to turn 2" in text
    assert "bot replies to turn 1 after" in text
    assert "bot replies to turn 2 after" in text
    assert text.index("all done") < text.index("caller hangs up")


async def test_a_key_press_is_one_transcript_entry_and_its_reply_is_its_own(gateway: Gateway) -> None:
    """A key is recorded once (not also as a caller turn) and the reply to it is not the utterance's."""
    lines: list[str] = []
    report = await place_call(
        CallOptions(
            to="+15551230000",
            gateway=gateway.url,
            play="builtin:hello",
            dtmf="1",
            hangup_when_done_s=1.5,
            on_event=lines.append,
            transcript_source=admin_transcript(gateway.url),
        )
    )
    assert report.dtmf_sent == "1"
    assert len(report.reply_ms) == 1, lines
    assert len(report.dtmf_reply_ms) == 1, lines
    assert any("bot replies to key 1 after" in line for line in lines), lines
    keys = [t for t in report.transcript if t["role"] == "dtmf"]
    assert [t["text"] for t in keys] == ["1"]
    callers = [t for t in report.transcript if t["role"] == "caller"]
    assert not [t for t in callers if "pressed the phone key" in t["text"]], report.transcript
    assert [t["role"] for t in report.transcript] == ["bot", "caller", "bot", "dtmf", "bot"], (
        report.transcript
    )


async def test_public_url_signs_for_the_public_front(make_gateway: GatewayFactory) -> None:
    """Behind a public URL the caller signs over that URL while it connects to --gateway."""
    public = "https://voice.example.com"
    gateway = await make_gateway(public_url=public, twilio_auth_token="tok-not-secret")
    with pytest.raises(AuthError):
        await place_call(
            CallOptions(
                to="+15551230000", gateway=gateway.url, auth_token="tok-not-secret", hangup_after_s=1.0
            )
        )
    report = await place_call(
        CallOptions(
            to="+15551230000",
            gateway=gateway.url,
            public_url=public,
            auth_token="tok-not-secret",
            hangup_after_s=3.0,
        )
    )
    assert report.answered
    assert report.stream_url.startswith("wss://voice.example.com/")
    assert report.greeting_ms is not None
    assert report.protocol_errors == []
