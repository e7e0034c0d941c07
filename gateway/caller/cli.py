"""``gateway call TO``: place one simulated Twilio call to a running gateway and report on it."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

from gateway.caller.call import CallOptions, CallReport, admin_transcript, place_call
from gateway.caller.registry import SIDES
from gateway.errors import ConfigError, GatewayError

#: Seconds of quiet after the last awaited reply has played before a scripted caller hangs up.
DONE_QUIET_S = 1.5


def _default_gateway() -> str:
    """The gateway ``gateway serve`` would run here: 127.0.0.1 on ``GATEWAY_PORT`` (default 8080)."""
    port = os.environ.get("GATEWAY_PORT", "").strip()
    return f"http://127.0.0.1:{port or 8080}"


def _base_url(flag: str, value: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """A base URL; a bare ``host:port`` means ``http://host:port``."""
    text = value.strip().rstrip("/")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if parts.scheme not in schemes or not parts.hostname or not port_ok or parts.query:
        raise ConfigError(
            f"{flag}: expected a base URL like http://127.0.0.1:8080 or https://gw.example.com "
            f"(or host:port), got {value!r}"
        )
    return text


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the caller's arguments."""
    parser.add_argument("to", metavar="TO", help="the dialled number, E.164 (picks the dialplan)")
    parser.add_argument("--from", dest="from_", default="+15550001111", metavar="NUMBER", help="caller ID")
    parser.add_argument(
        "--gateway",
        default=None,
        metavar="URL",
        help="gateway base URL, or host:port (the provider's webhook path is added, e.g. /twilio/voice; "
        "default http://127.0.0.1:$GATEWAY_PORT, else :8080)",
    )
    parser.add_argument(
        "--public-url",
        default="",
        metavar="URL",
        help="the gateway's public URL, as the provider would call it (its GATEWAY_PUBLIC_URL): requests "
        "are signed over it but sent to --gateway",
    )
    parser.add_argument(
        "--provider",
        default="twilio",
        choices=sorted(SIDES),
        help="whose side of the call to play, exactly as that provider does (default twilio)",
    )
    parser.add_argument(
        "--play",
        metavar="WAV",
        help="say this WAV (any rate/width/channels) or builtin:hello after the greeting",
    )
    parser.add_argument(
        "--record", type=Path, metavar="WAV", help="write what the caller heard (8 kHz 16-bit mono)"
    )
    parser.add_argument(
        "--dtmf", default="", metavar="DIGITS", help="keys to press after the greeting, e.g. 12#"
    )
    parser.add_argument(
        "--hangup-after",
        type=float,
        metavar="S",
        help="hang up after S seconds of stream (default with --play or --dtmf: once the last reply "
        f"has played and the line has been quiet {DONE_QUIET_S:g} s)",
    )
    parser.add_argument(
        "--auth-token",
        default=None,
        metavar="T",
        help="sign as the provider signs (default: its variable, e.g. $TWILIO_AUTH_TOKEN)",
    )
    parser.add_argument(
        "--provider-api",
        default="",
        metavar="URL",
        help="serve the provider's REST API here for the gateway's commands, as the provider would "
        "(telnyx-callcontrol needs it: the gateway's TELNYX_API_BASE, e.g. http://127.0.0.1:8765/v2)",
    )
    parser.add_argument(
        "--turns", type=int, default=1, help="say --play this many times, each after the previous answer"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON report at the end instead of a live log"
    )


def _options(args: argparse.Namespace) -> CallOptions:
    digits = str(args.dtmf)
    bad = sorted(set(digits) - set("0123456789*#ABCD"))
    if bad:
        raise ConfigError(f"--dtmf: not DTMF keys: {''.join(bad)}")
    if args.hangup_after is not None and not (args.hangup_after > 0 and args.hangup_after < float("inf")):
        raise ConfigError(f"--hangup-after: expected a number of seconds above 0, got {args.hangup_after:g}")
    if args.turns < 1:
        raise ConfigError(f"--turns: expected 1 or more, got {args.turns}")
    # AudioSocket is plain TCP: its gateway address is tcp://HOST:PORT (GATEWAY_AUDIOSOCKET_PORT).
    schemes = ("http", "https", "tcp") if args.provider == "audiosocket" else ("http", "https")
    given = args.gateway if args.gateway is not None else _default_gateway()
    gateway = _base_url("--gateway", given, schemes)
    public_url = _base_url("--public-url", args.public_url) if args.public_url else ""
    scripted = args.play is not None or bool(digits)
    side = SIDES[args.provider]
    token = args.auth_token if args.auth_token is not None else os.environ.get(side.credential_env, "")
    return CallOptions(
        provider=args.provider,
        provider_api=args.provider_api,
        to=args.to,
        from_=args.from_,
        gateway=gateway,
        public_url=public_url,
        play=args.play,
        record=args.record,
        dtmf=digits,
        hangup_after_s=args.hangup_after,
        hangup_when_done_s=DONE_QUIET_S if scripted and args.hangup_after is None else None,
        turns=args.turns,
        auth_token=token,
        on_event=None if args.json else print,
        transcript_source=admin_transcript(gateway, token=os.environ.get("GATEWAY_ADMIN_TOKEN", "")),
    )


def _summary(report: CallReport) -> str:
    greeting = "none" if report.greeting_ms is None else f"{report.greeting_ms:.0f} ms"
    replies = ", ".join(f"{r:.0f} ms" for r in report.reply_ms) or "none"
    if report.dtmf_reply_ms:
        replies += "; to keys after " + ", ".join(f"{r:.0f} ms" for r in report.dtmf_reply_ms)
    lines = [
        f"call {report.call_sid} ended by {report.ended_by} after {report.duration_s:.1f} s",
        f"  greeting after {greeting}; replies after {replies}",
        f"  frames sent {report.frames_sent}, received {report.frames_received} "
        f"(heard {report.heard_ms / 1000:.1f} s, dropped by clear {report.dropped_ms:.0f} ms)",
        f"  marks {report.marks_acked}/{report.marks_sent} echoed, clears {report.clears}, "
        f"keys {report.dtmf_sent!r}",
    ]
    lines += [f"  {t.get('role', '?')}: {t.get('text', '')}" for t in report.transcript]
    lines += [f"  protocol error: {e}" for e in report.protocol_errors]
    lines += [f"  warning: {w}" for w in report.warnings]
    if report.record:
        lines.append(f"  recording: {report.record}")
    return "\n".join(lines)


async def _call(opts: CallOptions) -> CallReport:
    hangup = asyncio.Event()
    opts.hangup_event = hangup
    loop = asyncio.get_running_loop()
    try:
        # Ctrl-C hangs up like a caller would (stop, then close) so the report is still printed.
        loop.add_signal_handler(signal.SIGINT, hangup.set)
    except (NotImplementedError, RuntimeError):
        pass
    return await place_call(opts)


def run(args: argparse.Namespace) -> int:
    """Place the call; exit 0 when it ran (whoever hung up), 1 when it could not be placed."""
    try:
        opts = _options(args)
        report = asyncio.run(_call(opts))
    except GatewayError as exc:
        print(f"gateway call: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(_summary(report))
    return 0
