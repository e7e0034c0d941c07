"""``gateway emulator``: run the local Gemini Live emulator until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys

from gateway.emulator.scenario import Scenario
from gateway.emulator.server import LIVE_PATH, Emulator
from gateway.errors import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0 = any)")
    parser.add_argument(
        "--tls-cert", metavar="FILE", help="PEM certificate chain: serve wss:// (with --tls-key)"
    )
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key for --tls-cert")
    parser.add_argument(
        "--scenario", metavar="FILE", help="TOML or JSON scenario file (default: echo persona)"
    )
    parser.add_argument("--api-key", metavar="KEY", help="accept only this API key (default: any key)")


def _ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate/key: {exc}") from exc
    return context


async def _serve(emulator: Emulator, host: str, port: int) -> None:
    try:
        await emulator.start(host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not on the main thread / not supported
            pass
    print(f"Gemini Live emulator listening. Live API base URL: {emulator.base_url}", flush=True)
    print(f"  full endpoint: {emulator.base_url}{LIVE_PATH}", flush=True)
    print("  press Ctrl-C to stop", flush=True)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def run(args: argparse.Namespace) -> int:
    """Start the emulator with the parsed options; returns the exit code."""
    try:
        scenario = Scenario.load(args.scenario) if args.scenario else Scenario()
        emulator = Emulator(
            scenario, api_key=args.api_key, ssl_context=_ssl_context(args.tls_cert, args.tls_key)
        )
        asyncio.run(_serve(emulator, args.host, args.port))
    except ConfigError as exc:
        print(f"gateway emulator: {exc}", file=sys.stderr)
        return 2
    return 0
