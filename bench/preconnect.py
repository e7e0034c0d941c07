"""How much opening the Gemini session at the voice webhook saves the caller.

Twilio asks for TwiML, then opens the media WebSocket; the gateway can start connecting to Gemini
at the first of those (preconnect) or the second. This places calls through the simulated caller
with preconnect on and off, against the emulator with a Live setup time set to what a real
connection costs (TLS + WebSocket upgrade + ``setup`` → ``setupComplete``; ``--setup-ms``), and
prints the greeting time (stream start → first bot audio) for each, medians side by side. The
gateway reaches the emulator over ``wss://`` (a throw-away CA, trusted through ``SSL_CERT_FILE``), so
the loopback TLS handshake is in the figures too; ``--setup-ms`` stands for the network's share. The
caller waits ``--stream-delay-ms`` between the TwiML and opening the stream, as Twilio's media
servers do; the saving is what of the setup fits in that gap.

    python bench/preconnect.py [--calls 8] [--setup-ms 400] [--stream-delay-ms 300] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import tempfile
from pathlib import Path

from aiohttp.test_utils import TestServer

from gateway.caller import CallOptions, place_call
from gateway.dialplan.store import DialplanStore
from gateway.emulator import Emulator, Scenario
from gateway.emulator.pki import make_pki
from gateway.server.app import create_app
from gateway.settings import DEFAULT_MODEL, Settings

PLAN = 'default = true\nvoice = "Puck"\nsystem_instruction = "Be brief."\ngreeting = "Greet the caller."\n'


async def _greetings(
    preconnect: bool, calls: int, setup_s: float, delay_s: float, tmp: Path, tls: ssl.SSLContext
) -> list[float]:
    async with Emulator(Scenario(setup_delay_s=setup_s), ssl_context=tls) as emu:
        settings = Settings(
            host="127.0.0.1",
            gemini_url=emu.base_url,
            gemini_api_key="bench-key-not-secret",
            gemini_model=DEFAULT_MODEL,
            dialplan_dir=tmp,
            data_dir=tmp / "data",
            gateway_secret="b" * 32,
            preconnect=preconnect,
        )
        server = TestServer(create_app(settings, dialplans=DialplanStore(tmp)), host="127.0.0.1")
        await server.start_server()
        url = str(server.make_url("")).rstrip("/")
        out: list[float] = []
        try:
            for _ in range(calls):
                opts = CallOptions(to="+15551230000", gateway=url, hangup_after_s=1.5, stream_delay_s=delay_s)
                report = await place_call(opts)
                if report.greeting_ms is not None:
                    out.append(report.greeting_ms)
        finally:
            await server.close()
        return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--setup-ms", type=float, default=400.0, help="emulated Live connect + setup time")
    parser.add_argument("--stream-delay-ms", type=float, default=300.0, help="TwiML → stream open gap")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "default.toml").write_text(PLAN)
        pki = make_pki(tmp / "pki")
        os.environ["SSL_CERT_FILE"] = str(pki.ca_file)  # read when create_app builds the Live endpoint
        tls = pki.server_context()
        setup, delay = args.setup_ms / 1000, args.stream_delay_ms / 1000
        on = await _greetings(True, args.calls, setup, delay, tmp, tls)
        off = await _greetings(False, args.calls, setup, delay, tmp, tls)
    result = {
        "setup_ms": args.setup_ms,
        "stream_delay_ms": args.stream_delay_ms,
        "calls": args.calls,
        "greeting_ms_median_preconnect": round(statistics.median(on), 1),
        "greeting_ms_median_no_preconnect": round(statistics.median(off), 1),
        "saved_ms_median": round(statistics.median(off) - statistics.median(on), 1),
        "greeting_ms_preconnect": on,
        "greeting_ms_no_preconnect": off,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"emulated Live connect+setup {args.setup_ms:.0f} ms, TwiML→stream {args.stream_delay_ms:.0f} ms, "
        f"{args.calls} calls each (the emulator speaks 250 ms after the greeting request)"
    )
    print(f"  greeting median with preconnect:    {result['greeting_ms_median_preconnect']:7.1f} ms")
    print(f"  greeting median without preconnect: {result['greeting_ms_median_no_preconnect']:7.1f} ms")
    print(f"  saved (median):                     {result['saved_ms_median']:7.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
