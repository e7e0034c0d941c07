"""``gateway dial +15551234567 --dialplan NAME``: ask a running gateway to place an outbound call.

The command holds no Twilio credentials: it calls the gateway's admin API (``POST /admin/api/calls``,
gateway/server/outbound.py) with ``GATEWAY_ADMIN_TOKEN``, as any other operator tool would, and the
gateway places the call. ``--wait`` then follows the call in the admin API until it has ended.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from gateway.errors import ConfigError, GatewayError

__all__ = ["DialRefused", "configure", "dial", "run", "wait_for_end"]


class DialRefused(GatewayError):
    """The gateway refused the call; ``field`` names what to fix, ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        self.status = status
        self.field = field
        super().__init__(message)


def _gateway(value: str | None) -> str:
    text = (
        (value or f"http://127.0.0.1:{os.environ.get('GATEWAY_PORT', '').strip() or 8080}")
        .strip()
        .rstrip("/")
    )
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(f"--gateway: expected a base URL like http://127.0.0.1:8080, got {value!r}")
    return text


def _params(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param: expected key=value, got {pair!r}")
        params[key.strip()] = value
    return params


async def dial(
    gateway: str,
    *,
    to: str,
    dialplan: str,
    from_: str | None = None,
    params: Mapping[str, str] | None = None,
    timezone: str | None = None,
    token: str = "",
) -> dict[str, Any]:
    """Ask ``gateway`` to place the call; its answer (``call_sid``, ``status``…).

    Raises:
        DialRefused: the gateway refused (the message and field are its own).
        ConfigError: the gateway cannot be reached, or its answer is not the admin API's.
    """
    body: dict[str, Any] = {"to": to, "dialplan": dialplan, "params": dict(params or {})}
    if from_:
        body["from"] = from_
    if timezone:
        body["timezone"] = timezone
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = gateway.rstrip("/") + "/admin/api/calls"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.post(url, json=body, headers=headers) as resp,
        ):
            text = await resp.text()
            status = resp.status
            doc: Any = None
            if resp.content_type == "application/json":
                doc = await resp.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ConfigError(f"cannot reach the gateway's admin API at {url}: {exc}") from exc
    if status == 201 and isinstance(doc, dict):
        return doc
    if isinstance(doc, dict) and "error" in doc:
        raise DialRefused(status, str(doc["error"]), doc.get("field"))
    if status == 403:
        raise DialRefused(status, text.strip() or "forbidden: set GATEWAY_ADMIN_TOKEN")
    raise DialRefused(status, f"HTTP {status}: {text.strip()[:200]}")


async def wait_for_end(
    gateway: str,
    call_sid: str,
    *,
    token: str = "",
    timeout_s: float = 900.0,
    on_line: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Follow the call in the admin API until its record says it ended; the record."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{gateway.rstrip('/')}/admin/calls/{quote(call_sid, safe='')}"
    seen: set[tuple[int, str]] = set()
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as http:
        while time.monotonic() < deadline:
            doc: dict[str, Any] = {}
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        doc = await resp.json()
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass
            for event in doc.get("events", []):
                key = (int(event.get("seq", 0)), str(event.get("kind", "")))
                if key not in seen and key[1] in ("call_status", "answered_by"):
                    seen.add(key)
                    on_line(f"{key[1]}: {event.get('detail', {})}")
            if doc.get("state") == "ended":
                return doc
            await asyncio.sleep(0.5)
    raise ConfigError(f"call {call_sid} had not ended after {timeout_s:g} s")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("to", metavar="TO", help="the number to call, E.164 (e.g. +15551234567)")
    parser.add_argument(
        "--dialplan", required=True, metavar="NAME", help="the dialplan (with [outbound]) to run"
    )
    parser.add_argument(
        "--from", dest="from_", metavar="NUMBER", help="caller id (default: outbound.caller_id)"
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a value for the dialplan's {KEY} placeholder (repeatable)",
    )
    parser.add_argument("--timezone", metavar="ZONE", help="the callee's time zone for calling hours")
    parser.add_argument(
        "--gateway",
        metavar="URL",
        help="the gateway's base URL (default http://127.0.0.1:$GATEWAY_PORT, else :8080)",
    )
    parser.add_argument(
        "--wait", action="store_true", help="follow the call until it ends and show its transcript"
    )


def run(args: argparse.Namespace) -> int:
    """Place the call; exit 0 once the gateway took it (1: refused, 2: bad arguments or unreachable)."""
    token = os.environ.get("GATEWAY_ADMIN_TOKEN", "")
    try:
        gateway = _gateway(args.gateway)
        params = _params(args.param)
        doc = asyncio.run(
            dial(
                gateway,
                to=args.to,
                dialplan=args.dialplan,
                from_=args.from_,
                params=params,
                timezone=args.timezone,
                token=token,
            )
        )
    except DialRefused as exc:
        where = f" ({exc.field})" if exc.field else ""
        print(f"gateway dial: refused{where}: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"gateway dial: {exc}", file=sys.stderr)
        return 2
    to, from_, plan = doc.get("to"), doc.get("from"), doc.get("dialplan")
    print(f"calling {to} from {from_} with {plan}: call {doc.get('call_sid')}")
    if not args.wait:
        return 0
    try:
        record = asyncio.run(wait_for_end(gateway, str(doc["call_sid"]), token=token))
    except ConfigError as exc:
        print(f"gateway dial: {exc}", file=sys.stderr)
        return 1
    reason = record.get("end_reason") or record.get("reason")  # the store's name, or the memory's
    print(f"call ended by {record.get('ended_by')}: {reason}")
    # From the gateway's memory a finished call has its ``transcript``; from the store, its ``turns``.
    for turn in record.get("turns") or record.get("transcript") or []:
        print(f"  {turn.get('role')}: {turn.get('text')}")
    return 0
