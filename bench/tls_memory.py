#!/usr/bin/env python3
"""Where the extra memory of a Live connection over TLS goes: resident KiB per connection, ws:// vs wss://.

Opens ``--conns`` Live sockets (the gateway's client library, ``websockets``) to the lean Live server
(:mod:`gateway.emulator.load`, in its own process, over ``wss://`` with a throw-away CA) and measures this
process's resident memory after ``setup`` and after each session's greeting has streamed in. With
``--block-ms`` the event loop is held that long ten times during the greeting, as a busy gateway's loop
is: the Live server keeps sending, so each socket's backlog grows, and a TLS connection keeps the
high-water of its buffers (the loop's 256 KiB read buffer as far as one read reached, OpenSSL's BIO)
while a plain one reads into the loop's shared buffer. ``--rcvbuf`` sets ``SO_RCVBUF`` on each socket
after it connects, which bounds what one read can take.

    python bench/tls_memory.py                       # ws and wss, the loop kept free
    python bench/tls_memory.py --block-ms 300        # ws and wss, the loop held as under load
    python bench/tls_memory.py --block-ms 300 --rcvbuf 16384
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from gateway.emulator.pki import make_pki  # noqa: E402
from gateway.process import tune_malloc  # noqa: E402

PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
SETUP = json.dumps(
    {"setup": {"model": "models/gemini-3.8-live", "generationConfig": {"responseModalities": ["AUDIO"]}}}
)
GREET = json.dumps(
    {"clientContent": {"turns": [{"role": "user", "parts": [{"text": "hello"}]}], "turnComplete": True}}
)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4


async def _measure(tls: bool, conns: int, block_ms: int, rcvbuf: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        pki = make_pki(Path(tmp))
        command = [sys.executable, str(ROOT / "bench" / "load.py"), "--role", "emulator"]
        server = subprocess.Popen(  # noqa: ASYNC220 - once, before anything is measured
            command + (["--pki-dir", tmp] if tls else []), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert server.stdout is not None
        assert server.stdin is not None
        try:
            url = json.loads(server.stdout.readline())["base_url"] + PATH
            context = ssl.create_default_context(cafile=str(pki.ca_file)) if tls else None
            before = _rss_kib()
            sockets: list[ClientConnection] = []
            for _ in range(conns):
                ws = await connect(
                    url, additional_headers={"x-goog-api-key": "k"}, ssl=context, compression=None
                )
                if rcvbuf:
                    ws.transport.get_extra_info("socket").setsockopt(
                        socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf
                    )
                await ws.send(SETUP)
                await ws.recv()
                await ws.send(GREET)
                sockets.append(ws)
            after_setup = _rss_kib()

            async def drain(ws: ClientConnection) -> None:
                try:
                    async with asyncio.timeout(6):
                        while True:
                            await ws.recv()
                except TimeoutError:
                    pass

            async def hold() -> None:
                for _ in range(10 if block_ms else 0):
                    time.sleep(block_ms / 1000)  # noqa: ASYNC251 - the loop held, as a busy gateway's is
                    await asyncio.sleep(0.05)

            await asyncio.gather(hold(), *(drain(ws) for ws in sockets))
            after_greeting = _rss_kib()
            for ws in sockets:
                await ws.close()
        finally:
            server.stdin.write(b"quit\n")
            server.stdin.flush()
            server.wait(timeout=10)
    return (after_setup - before) / conns, (after_greeting - before) / conns


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conns", type=int, default=150)
    parser.add_argument(
        "--block-ms", type=int, default=0, help="hold the loop this long, ten times (0: never)"
    )
    parser.add_argument("--rcvbuf", type=int, default=0, help="SO_RCVBUF on each socket (0: the kernel's)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    tune_malloc()  # as `gateway serve` does
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    for tls in (False, True):
        setup, greeted = asyncio.run(_measure(tls, args.conns, args.block_ms, args.rcvbuf))
        print(
            f"{'wss' if tls else 'ws '} {args.loop}: {setup:6.1f} KiB per connection after setup, "
            f"{greeted:6.1f} after the greeting (loop held {args.block_ms} ms ×10, rcvbuf {args.rcvbuf or 'default'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
