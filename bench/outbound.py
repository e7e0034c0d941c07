#!/usr/bin/env python3
"""Outbound call set-up: from ``gateway dial`` to the callee hearing the bot's first word, on loopback.

The bench process runs the Gemini emulator (``wss://``, a throw-away CA trusted through ``SSL_CERT_FILE``)
and the simulated phone network: Twilio's ``Calls`` API (gateway/caller/network.py), with ``--provider
telnyx`` Telnyx Call Control's Dial (gateway/caller/telnyx_network.py: signed webhooks,
``streaming_start`` on ``call.answered``), with ``--provider vonage`` Vonage's create-call request
(gateway/caller/vonage_network.py: application JWT, signed answer and event webhooks, the NCCO's
WebSocket), with ``--provider plivo`` Plivo's Make Call (gateway/caller/plivo_network.py: signed answer,
ring and hangup callbacks, the ``<Stream>``); ``gateway serve`` runs as a subprocess pointed at both
(``*_API_BASE``). Each call dials a person's number one of two ways, in turn:

* ``cli``: the ``gateway dial`` command as a user runs it (a new Python process: start-up included);
* ``api``: ``POST /admin/api/calls`` from this process (what the command does once started).

and measures until the callee's first audible bot audio (the network's phone sees it), then hangs up.
The phone rings ``--ring`` seconds (default 0: the gateway's and the emulator's share only; a real
phone rings for seconds, which adds as it is). The emulator's greeting starts after its usual
first-audio delay, as for an inbound call.

    python bench/outbound.py [--calls 10] [--ring 0] [--provider twilio|telnyx|vonage|plivo] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402 - after the path fix-up so a fresh clone runs as is
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from gateway.caller.network import PhoneNetwork  # noqa: E402
from gateway.caller.plivo_network import DialledCall as PlivoDialled, PlivoNetwork  # noqa: E402
from gateway.caller.telnyx_network import TelnyxNetwork  # noqa: E402
from gateway.caller.vonage_network import VonageNetwork  # noqa: E402
from gateway.emulator import Emulator, Scenario  # noqa: E402
from gateway.emulator.pki import make_pki  # noqa: E402
from gateway.server.dial import dial  # noqa: E402

ACCOUNT = "AC" + "0" * 32
AUTH_TOKEN = "bench-auth-token-not-a-secret"
ADMIN_TOKEN = "bench-admin-token-not-a-secret"
TELNYX_KEY = "bench-telnyx-key-not-a-secret"
TELNYX_CONNECTION = "1234567890123456789"
VONAGE_SECRET = "bench-vonage-signature-secret-not-a-secret"
PLIVO_AUTH_ID = "MABENCHOUTBOUND00001"
PLIVO_AUTH_TOKEN = "bench-plivo-auth-token-not-a-secret"
VONAGE_APPLICATION = "00000000-0000-4000-8000-00000000be9c"
PLAN = """
default = true
system_instruction = "You answer calls."
"""
OUTBOUND = """
name = "reminders"
system_instruction = "You call {customer_name} about their appointment."
greeting = "Say: 'Hello {customer_name}, this is Acme.'"
[outbound]
provider = "{provider}"
params = ["customer_name"]
caller_id = "+15550100100"
machine = "message"
machine_message = "Hi {customer_name}, please call Acme back."
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start_gateway(
    tmp: Path, port: int, emulator: str, ca_file: Path, provider_env: dict[str, str]
) -> asyncio.subprocess.Process:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GEMINI_", "GATEWAY_", "TWILIO_", "TELNYX_", "VONAGE_", "SSL_CERT_"))
    }
    env |= {
        "GEMINI_API_KEY": "bench-key-not-a-secret",
        "GEMINI_BASE_URL": emulator,
        "SSL_CERT_FILE": str(ca_file),
        **provider_env,
        "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GATEWAY_DATA_DIR": str(tmp / "data"),
        "GATEWAY_LOG_LEVEL": "WARNING",
        # This measures latency, not admission: on a shared machine the overload check would refuse calls.
        "GATEWAY_MAX_CPU_PERCENT": "0",
        "GATEWAY_MAX_LOOP_LAG_MS": "0",
    }
    log = (tmp / "gateway.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--dialplans", str(tmp / "dialplans"),
        env=env, cwd=tmp, stdout=log, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return proc
            if proc.returncode is not None or time.monotonic() > deadline:
                raise SystemExit(f"the gateway did not start; see {tmp / 'gateway.log'}")
            await asyncio.sleep(0.1)


async def _cli_dial(gateway: str, to: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | {
        "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "dial", to, "--dialplan", "reminders",
        "--param", "customer_name=Ada", "--gateway", gateway,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"gateway dial failed: {err.decode()}")
    return out.decode().rsplit("call ", 1)[-1].strip()


Network = PhoneNetwork | TelnyxNetwork | VonageNetwork | PlivoNetwork


async def _one(network: Network, gateway: str, how: str) -> float | None:
    started = time.monotonic()
    if how == "cli":
        sid = await _cli_dial(gateway, "+15551230001")
    else:
        placed = await dial(gateway, to="+15551230001", dialplan="reminders", params={"customer_name": "Ada"},
                            token=ADMIN_TOKEN)  # fmt: skip
        sid = str(placed["call_sid"])
    call = network.calls[sid] if isinstance(network, PhoneNetwork) else network.dialled[sid]
    deadline = time.monotonic() + 15
    while call.first_audio_at is None and not call.done.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    if isinstance(call, PlivoDialled):
        call.end("callee")
    else:
        call.hangup.set()
    await network.wait(sid, 30)
    if call.first_audio_at is None:
        print(f"{how} call {sid}: no bot audio heard; {call.error or 'no error'}", file=sys.stderr)
        print("\n".join(call.log[-8:]), file=sys.stderr)
    await asyncio.sleep(0.3)  # the gateway closes the call
    return None if call.first_audio_at is None else (call.first_audio_at - started) * 1000


def _stats(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    p90 = ordered[max(0, int(0.9 * len(ordered) + 0.999) - 1)] if ordered else None
    return {
        "median": round(statistics.median(ordered), 1) if ordered else None,
        "p90": None if p90 is None else round(p90, 1),
        "raw": [round(v, 1) for v in values],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gateway-outbound-") as name:
        tmp = Path(name)
        (tmp / "dialplans").mkdir()
        (tmp / "dialplans" / "default.toml").write_text(PLAN)
        (tmp / "dialplans" / "reminders.toml").write_text(OUTBOUND.replace("{provider}", args.provider))
        pki = make_pki(tmp / "pki")
        port = _free_port()
        gateway = f"http://127.0.0.1:{port}"
        results: dict[str, list[float]] = {"cli": [], "api": []}
        failures = 0
        network: Network
        if args.provider == "plivo":
            network = PlivoNetwork(auth_id=PLIVO_AUTH_ID, auth_token=PLIVO_AUTH_TOKEN, ring_s=args.ring)
            provider_env = {"PLIVO_AUTH_ID": PLIVO_AUTH_ID, "PLIVO_AUTH_TOKEN": PLIVO_AUTH_TOKEN}
        elif args.provider == "vonage":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            (tmp / "vonage.key").write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            network = VonageNetwork(
                application_public_key=key.public_key(), signature_secret=VONAGE_SECRET,
                application_id=VONAGE_APPLICATION, ring_s=args.ring,
            )  # fmt: skip
            provider_env = {"VONAGE_APPLICATION_ID": VONAGE_APPLICATION, "VONAGE_SIGNATURE_SECRET": VONAGE_SECRET,
                            "VONAGE_PRIVATE_KEY": str(tmp / "vonage.key")}  # fmt: skip
        elif args.provider == "telnyx":
            network = TelnyxNetwork(api_key=TELNYX_KEY, connection_id=TELNYX_CONNECTION, ring_s=args.ring)
            provider_env = {"TELNYX_API_KEY": TELNYX_KEY, "TELNYX_PUBLIC_KEY": network.public_key,
                            "TELNYX_CONNECTION_ID": TELNYX_CONNECTION}  # fmt: skip
        else:
            network = PhoneNetwork(account_sid=ACCOUNT, auth_token=AUTH_TOKEN, ring_s=args.ring)
            provider_env = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": AUTH_TOKEN}
        async with Emulator(Scenario(), record=False, ssl_context=pki.server_context()) as emulator, network:
            api_base = f"{args.provider.upper()}_API_BASE"
            provider_env[api_base] = network.base_url
            proc = await _start_gateway(tmp, port, emulator.base_url, pki.ca_file, provider_env)
            try:
                await _one(network, gateway, "api")  # warm-up, not counted
                for i in range(args.calls):
                    for how in ("cli", "api") if i % 2 == 0 else ("api", "cli"):
                        ms = await _one(network, gateway, how)
                        if ms is None:
                            failures += 1
                        else:
                            results[how].append(ms)
                    print(f"round {i + 1}/{args.calls}", file=sys.stderr, flush=True)
            finally:
                refused = [line for line in (tmp / "gateway.log").read_text(errors="replace").splitlines()
                           if "refused" in line]  # fmt: skip
                if refused:
                    print("gateway refusals:\n" + "\n".join(refused[:5]), file=sys.stderr)
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    return {
        "provider": args.provider,
        "calls_per_kind": args.calls,
        "ring_s": args.ring,
        "first_word_ms": {
            "gateway dial (new process)": _stats(results["cli"]),
            "admin API": _stats(results["api"]),
        },
        "failures": failures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--ring", type=float, default=0.0, help="seconds the phone rings (default 0)")
    parser.add_argument("--provider", choices=("twilio", "telnyx", "vonage", "plivo"), default="twilio")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"dial → callee hears the first word ({args.provider}, {args.calls} calls each, "
            f"phone rings {args.ring:g} s):"
        )
        for how, stats in result["first_word_ms"].items():
            print(f"  {how:28s} median {stats['median']} ms, p90 {stats['p90']} ms")
        if result["failures"]:
            print(f"  failures: {result['failures']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
