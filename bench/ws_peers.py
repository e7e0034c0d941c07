#!/usr/bin/env python3
"""What one WebSocket message costs the load-test peers, per library: the measurement behind
:mod:`gateway.caller.leanws` (``bench/load.py``'s callers and Live server use bare asyncio protocols).

A client process opens ``--conns`` sockets and sends each a ~0.9 kB ``realtimeInput.audio`` text
message every 20 ms (what the gateway sends the Live server per call); a server process finds and
decodes the base64 in each. Both are separate processes whose CPU (utime+stime from /proc) is read
over the steady state and divided by the messages carried. Server kinds: ``aiohttp`` (the full
emulator's ``web.WebSocketResponse``), ``websockets`` (its asyncio server), ``raw`` (an
``asyncio.Protocol`` with :class:`~gateway.caller.leanws.FrameReader`) and ``rawbuf`` (the same as an
``asyncio.BufferedProtocol`` reading into one reused buffer, as the load peers do). Client kinds:
``aiohttp`` (``ws.send_str`` from one ticker, as the callers did) and ``raw`` (one
``transport.write``).

Measured on the 2-vCPU VM of the README (500 sockets, 25 000 messages/s, µs of CPU per message;
server / client): aiohttp server 16.1 / 10.3 on asyncio, 13.5 / 9.1 on uvloop; websockets server
34.2 / 9.5 and 19.1 / 9.5; raw 24.0 / 9.2 on asyncio (its selector ``recv`` allocates 256 KiB a
read) and 9.2 / 9.3 on uvloop; rawbuf 10.7 / 9.4 and 8.9 / 8.9; an aiohttp client costs 13.1 against
the raw one's 8.9 on uvloop. What is left is mostly the kernel: one send and one receive per message.

``--server live --client live`` runs the lean Live server (:mod:`gateway.emulator.load`) against
what a healthy gateway would send it: per call a ``setup``, then one ``realtimeInput.audio`` frame
every 20 ms in the load callers' pattern (silence, speech bursts it answers, probes). That is the
Live server's share of ``bench/load.py`` at N calls without needing a gateway that keeps up with N:
measured 22.4 % of a core at 500 calls and 29.9 % at 700 (``--cpus 1,0``, ~9 µs per message).

    python bench/ws_peers.py --server rawbuf --client raw --conns 500 --loop uvloop
    python bench/ws_peers.py --all --conns 300            # the whole matrix, one line each
    python bench/ws_peers.py --server rawbuf --cpus 1,0   # server on CPU 1, client on CPU 0
    python bench/ws_peers.py --server live --client live --conns 700 --seconds 10 --cpus 1,0
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.caller import leanws  # noqa: E402

if TYPE_CHECKING:
    from gateway.emulator.load import LoadLiveServer

HEAD = b'{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=16000","data":"'
TAIL = b'"}}}'
MESSAGE = HEAD + base64.b64encode(bytes(range(256)) * 2 + bytes(128)) + TAIL  # 640 PCM bytes
PATH = "/ws"
LIVE_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
#: What the gateway's setup asks for that changes the Live server's work (transcripts, resumption).
LIVE_SETUP = {
    "realtimeInputConfig": {"automaticActivityDetection": {"silenceDurationMs": 300}},
    "inputAudioTranscription": {},
    "outputAudioTranscription": {},
    "sessionResumption": {},
}


def _cpu(pid: int) -> float:
    user, system = _cpu_split(pid)
    return user + system


def _cpu_split(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _use_loop(kind: str) -> None:
    if kind == "uvloop":
        import uvloop

        uvloop.install()


class _Counter:
    n = 0
    live: LoadLiveServer | None = None


def _consume(data: bytes) -> None:
    if data.startswith(HEAD) and data.endswith(TAIL):
        binascii.a2b_base64(memoryview(data)[len(HEAD) : -len(TAIL)])
        _Counter.n += 1


# --------------------------------------------------------------------------- servers


async def _serve_aiohttp() -> int:
    from aiohttp import WSMsgType, web

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=16 << 20)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                _consume(msg.data.encode())
            elif msg.type is WSMsgType.BINARY:
                _consume(msg.data)
        return ws

    app = web.Application()
    app.router.add_get(PATH, handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return int(runner.addresses[0][1])


async def _serve_websockets() -> int:
    from websockets.asyncio.server import ServerConnection, serve

    async def handle(ws: ServerConnection) -> None:
        async for msg in ws:
            _consume(msg.encode() if isinstance(msg, str) else msg)

    server = await serve(handle, "127.0.0.1", 0, compression=None, max_size=16 << 20)
    return int(next(iter(server.sockets)).getsockname()[1])


class _RawServer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport subclass
        self.head = b""
        self.reader: leanws.FrameReader | None = None

    def data_received(self, data: bytes) -> None:
        if self.reader is not None:
            self.reader.feed(data)
            return
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        head, rest = self.head.split(b"\r\n\r\n", 1)
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {leanws.accept_key(key)}\r\n\r\n".encode()
        )
        self.reader = leanws.FrameReader(self.message, masked=True)
        if rest:
            self.reader.feed(rest)

    def message(self, opcode: int, payload: bytes) -> None:
        if opcode == leanws.TEXT or opcode == leanws.BINARY:
            _consume(payload)
        elif opcode == leanws.CLOSE:
            self.transport.write(leanws.frame(leanws.CLOSE, payload[:2]))
            self.transport.close()


_SHARED = bytearray(1 << 18)


class _RawBufServer(asyncio.BufferedProtocol, _RawServer):
    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(_SHARED)

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(_SHARED[:nbytes]))


async def _serve_raw() -> int:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_RawServer, "127.0.0.1", 0)
    return int(server.sockets[0].getsockname()[1])


async def _serve_rawbuf() -> int:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_RawBufServer, "127.0.0.1", 0)
    return int(server.sockets[0].getsockname()[1])


async def _serve_live() -> int:
    from gateway.emulator.load import LoadLiveServer

    server = LoadLiveServer()
    await server.start()
    _Counter.live = server
    return server.port


def server_role(kind: str, loop_kind: str) -> None:
    _use_loop(loop_kind)

    async def main() -> None:
        serve = {
            "aiohttp": _serve_aiohttp,
            "websockets": _serve_websockets,
            "raw": _serve_raw,
            "rawbuf": _serve_rawbuf,
            "live": _serve_live,
        }[kind]
        port = await serve()
        print(json.dumps({"port": port}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        live = _Counter.live
        print(json.dumps({"messages": live.messages_in if live is not None else _Counter.n}), flush=True)

    asyncio.run(main())


# --------------------------------------------------------------------------- clients


class _RawClient(asyncio.Protocol):
    def __init__(self, ready: asyncio.Future[None]) -> None:
        self.ready = ready
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        if not self.ready.done():
            self.buf += data
            if b"\r\n\r\n" in self.buf:
                self.ready.set_result(None)


async def _ticker(sends: list[Any], seconds: float) -> None:
    """All connections on ten 2 ms slots of one 20 ms schedule, as the lean callers send."""
    slots = [sends[i::10] for i in range(10)]
    base = time.monotonic()
    k = 0
    while time.monotonic() - base < seconds:
        delay = base + k * 0.002 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        for send in slots[k % 10]:
            result = send()
            if result is not None:
                await result
        k += 1


class _LiveCall:
    """What the gateway sends the Live server for one call: ``setup``, then a 20 ms frame of the
    load callers' pattern (silence, speech bursts, probes), as ``encode_realtime_audio`` writes it."""

    def __init__(self, number: int, transport: asyncio.Transport, messages: dict[str, Any]) -> None:
        self.number, self.transport, self.messages = number, transport, messages
        self.frame = self.probe_left = self.seq = 0

    def __call__(self) -> None:
        lead: bytes = self.messages["lead"]
        cycle: bytes = self.messages["cycle"]
        k = self.frame
        self.frame += 1
        if self.probe_left:
            self.probe_left -= 1
            digit = (self.number >> 4 & 15, self.number & 15, self.seq & 15)[2 - self.probe_left]
            if not self.probe_left:
                self.seq += 1
            message = self.messages["probe"][digit]
        else:
            kind = lead[k] if k < len(lead) else cycle[(k - len(lead)) % len(cycle)]
            message = self.messages["kind"][min(kind, 1)]
            if kind == 2:  # a probe's first frame
                self.probe_left = 3
                message = self.messages["probe"][self.number >> 8 & 15]
        self.transport.write(leanws.masked_frame(leanws.TEXT, message))


def _live_messages() -> dict[str, Any]:
    import array
    import math

    from gateway.caller.load import PROBE_LEVELS, CallPattern
    from gateway.gemini.messages import encode_realtime_audio

    def audio(samples: list[int]) -> bytes:
        return encode_realtime_audio(array.array("h", samples).tobytes()).encode()

    tone = [round(4000 * math.sin(2 * math.pi * 400 * i / 16000)) for i in range(320)]
    lead, cycle = CallPattern().kinds()
    return {
        "lead": lead,
        "cycle": cycle,
        "kind": (audio([0] * 320), audio(tone)),
        "probe": [audio([level] * 320) for level in PROBE_LEVELS],
    }


def client_role(kind: str, loop_kind: str, port: int, conns: int, seconds: float) -> None:
    _use_loop(loop_kind)
    text = MESSAGE.decode()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if kind == "aiohttp":
            import aiohttp

            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                sockets = [await http.ws_connect(f"http://127.0.0.1:{port}{PATH}") for _ in range(conns)]
                print("ready", flush=True)
                await _ticker([lambda ws=ws: ws.send_str(text) for ws in sockets], seconds)
                for ws in sockets:
                    await ws.close()
            return
        transports = []
        path = LIVE_PATH if kind == "live" else PATH
        for _ in range(conns):
            ready: asyncio.Future[None] = loop.create_future()
            transport, _ = await loop.create_connection(
                functools.partial(_RawClient, ready), "127.0.0.1", port
            )
            transport.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            await ready
            transports.append(transport)
        if kind == "live":
            setup = json.dumps({"setup": {"model": "models/gemini-3.8-live", **LIVE_SETUP}}).encode()
            for t in transports:
                t.write(leanws.masked_frame(leanws.TEXT, setup))
            messages = _live_messages()
            print("ready", flush=True)
            await _ticker([_LiveCall(i, t, messages) for i, t in enumerate(transports)], seconds)
            return
        print("ready", flush=True)
        masked = leanws.masked_frame
        await _ticker([lambda t=t: t.write(masked(leanws.TEXT, MESSAGE)) for t in transports], seconds)
        for t in transports:
            t.write(masked(leanws.CLOSE, leanws.close_payload(1000)))
            t.close()

    asyncio.run(main())


# --------------------------------------------------------------------------- driver


def measure(
    server: str,
    client: str,
    loop_kind: str,
    conns: int,
    seconds: float,
    cpus: tuple[int, int] | None = None,
) -> dict[str, Any]:
    me, py = str(Path(__file__).resolve()), sys.executable
    srv = subprocess.Popen(
        [py, me, "--role", "server", "--server", server, "--loop", loop_kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpus[0]})) if cpus else None,
    )
    assert srv.stdin is not None
    assert srv.stdout is not None
    port = json.loads(srv.stdout.readline())["port"]
    argv = [py, me, "--role", "client", "--client", client, "--loop", loop_kind, "--port", str(port)]
    argv += ["--conns", str(conns), "--seconds", str(seconds + 2.0)]
    cli = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpus[1]})) if cpus else None,
    )
    assert cli.stdout is not None
    cli.stdout.readline()  # every socket open
    time.sleep(1.0)
    (su0, ss0), (cu0, cs0), t0 = _cpu_split(srv.pid), _cpu_split(cli.pid), time.monotonic()
    time.sleep(seconds)
    (su1, ss1), (cu1, cs1), t1 = _cpu_split(srv.pid), _cpu_split(cli.pid), time.monotonic()
    s0, s1, c0, c1 = su0 + ss0, su1 + ss1, cu0 + cs0, cu1 + cs1
    cli.wait(timeout=60)
    srv.stdin.write(b"done\n")
    srv.stdin.flush()
    received = json.loads(srv.stdout.readline())["messages"]
    srv.wait(timeout=30)
    rate = conns * 50  # messages per second offered
    window = t1 - t0
    return {
        "server": server,
        "client": client,
        "loop": loop_kind,
        "conns": conns,
        "messages": received,
        "server_cpu_pct": round(100 * (s1 - s0) / window, 1),
        "client_cpu_pct": round(100 * (c1 - c0) / window, 1),
        "server_sys_share": round((ss1 - ss0) / max(s1 - s0, 1e-9), 2),
        "client_sys_share": round((cs1 - cs0) / max(c1 - c0, 1e-9), 2),
        "server_us_per_msg": round(1e6 * (s1 - s0) / (window * rate), 2),
        "client_us_per_msg": round(1e6 * (c1 - c0) / (window * rate), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", choices=("aiohttp", "websockets", "raw", "rawbuf", "live"), default="raw")
    parser.add_argument("--client", choices=("aiohttp", "raw", "live"), default="raw")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--conns", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--cpus", metavar="S,C", help="pin the server to CPU S and the client to CPU C")
    parser.add_argument(
        "--all", action="store_true", help="every server with the raw client, both clients on raw"
    )
    parser.add_argument(
        "--role", choices=("driver", "server", "client"), default="driver", help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "server":
        server_role(args.server, args.loop)
        return 0
    if args.role == "client":
        client_role(args.client, args.loop, args.port, args.conns, args.seconds)
        return 0
    if not args.all:
        cpus = tuple(int(c) for c in args.cpus.split(",")) if args.cpus else None
        print(json.dumps(measure(args.server, args.client, args.loop, args.conns, args.seconds, cpus)))  # type: ignore[arg-type]
        return 0
    for loop_kind in ("asyncio", "uvloop"):
        for server, client in (
            ("aiohttp", "raw"),
            ("websockets", "raw"),
            ("raw", "raw"),
            ("rawbuf", "raw"),
            ("rawbuf", "aiohttp"),
        ):
            print(json.dumps(measure(server, client, loop_kind, args.conns, args.seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
