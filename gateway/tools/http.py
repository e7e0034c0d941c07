"""HTTP tools: businesses plug in a web endpoint instead of Python code.

Declared in a TOML file (``GATEWAY_TOOLS_FILE``), one table per tool::

    [http.check_stock]
    description = "Check whether a product is in stock."
    url = "https://shop.example.com/hooks/stock"     # fixed here: the model never chooses the URL
    timeout_s = 5                                     # optional; else GATEWAY_TOOL_TIMEOUT_S
    non_blocking = false                              # optional
    scheduling = "WHEN_IDLE"                          # optional, for non_blocking tools
    headers = { Authorization = "Bearer ${TOOL_SHOP_TOKEN}" }   # ${TOOL_*} from the environment
    [http.check_stock.parameters]                     # the arguments' schema (Gemini's subset)
    type = "object"
    required = ["sku"]
    properties.sku = { type = "string", description = "The product code." }

On a call the gateway POSTs JSON ``{"tool", "id", "args", "call": {call_id, from, to, dialplan,
metadata}}`` (with an ``Idempotency-Key`` of call id + function-call id) and gives the model the
JSON reply. A non-2xx reply whose body is ``{"error": "…"}`` passes that message to the model;
any other failure (unreachable, non-JSON, too large, wrong status) becomes a short, safe error.
Redirects are not followed.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gateway.errors import ConfigError, ToolError
from gateway.tools.context import FUNCTION_CALL_ID, CallContext
from gateway.tools.registry import Scheduling, Tool

__all__ = ["MAX_REPLY_BYTES", "http_tool", "load_tools_file"]

#: Replies larger than this are refused without being read further.
MAX_REPLY_BYTES = 64 * 1024
_KEYS = frozenset({"description", "url", "timeout_s", "non_blocking", "scheduling", "headers", "parameters"})
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_EMPTY_PARAMS: Mapping[str, Any] = {"type": "OBJECT", "properties": {}}
_USER_AGENT = "gemini-phone-gateway (http tool)"


def http_tool(
    name: str,
    *,
    url: str,
    description: str,
    parameters: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    non_blocking: bool = False,
    scheduling: Scheduling = "WHEN_IDLE",
) -> Tool:
    """A tool that POSTs its arguments and the call context to ``url``.

    Raises:
        ConfigError: the URL is not http(s)://host/…, or the schema is invalid.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"tool {name!r}: url must be http(s)://host/path, not {url!r}")
    fixed_headers = {"User-Agent": _USER_AGENT, **dict(headers or {})}

    async def call_endpoint(context: CallContext, **args: Any) -> Any:
        return await _post(name, url, fixed_headers, context, args)

    return Tool(
        name=name,
        description=description,
        parameters=parameters if parameters is not None else _EMPTY_PARAMS,
        handler=call_endpoint,
        timeout_s=timeout_s,
        non_blocking=non_blocking,
        scheduling=scheduling,
        context_param="context",
        kind="http",
    )


async def _post(
    name: str, url: str, headers: Mapping[str, str], context: CallContext, args: dict[str, Any]
) -> Any:
    http = context.http
    if http is None:
        raise ToolError(f"tool {name!r} is unavailable: the gateway has no HTTP client")
    call_id = FUNCTION_CALL_ID.get()
    body = {"tool": name, "id": call_id, "args": args, "call": context.public()}
    request_headers = {**headers, "Idempotency-Key": f"{context.call_id}:{name}:{call_id}"}
    try:
        async with http.post(url, json=body, headers=request_headers, allow_redirects=False) as resp:
            raw = await resp.content.read(MAX_REPLY_BYTES + 1)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        context.log.warning("http tool unreachable", extra={"tool": name, "error": str(exc)[:200]})
        raise ToolError(f"the {name} service could not be reached") from exc
    if len(raw) > MAX_REPLY_BYTES:
        raise ToolError(f"the {name} service sent a reply larger than {MAX_REPLY_BYTES} bytes")
    try:
        reply = json.loads(raw) if raw.strip() else None
    except ValueError:
        reply = _NOT_JSON
    if not 200 <= status < 300:
        message = reply.get("error") if isinstance(reply, dict) else None
        if isinstance(message, str) and message.strip():
            raise ToolError(message.strip()[:500])
        raise ToolError(f"the {name} service failed (HTTP {status})")
    if reply is _NOT_JSON:
        raise ToolError(f"the {name} service sent a reply that is not JSON")
    return reply


_NOT_JSON = object()


def load_tools_file(path: Path, *, env: Mapping[str, str] | None = None) -> list[Tool]:
    """Read HTTP tool declarations from ``path`` (see the module docstring for the format).

    ``env`` supplies ``${NAME}`` references in header values; only ``TOOL_*`` names may be used,
    so a tools file cannot pull arbitrary secrets (say, the Gemini key) out of the environment.

    Raises:
        ConfigError: naming the file and the tool for every kind of mistake.
    """
    env = env or {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the tools file: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"http"})
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)} (expected [http.NAME])")
    tables = data.get("http", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: [http] must hold one table per tool, e.g. [http.check_stock]")
    tools: list[Tool] = []
    for name, table in tables.items():
        where = f"{path}: http.{name}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        bad = sorted(set(table) - _KEYS)
        if bad:
            allowed = ", ".join(sorted(_KEYS))
            raise ConfigError(f"{where}: unknown key(s) {', '.join(bad)} (allowed: {allowed})")
        url, description = table.get("url"), table.get("description")
        if not isinstance(url, str) or not isinstance(description, str):
            raise ConfigError(f"{where}: url and description are required strings")
        headers = table.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ConfigError(f"{where}.headers: must be a table of strings")
        timeout = table.get("timeout_s")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
            raise ConfigError(f"{where}.timeout_s: must be a number of seconds")
        non_blocking = table.get("non_blocking", False)
        if not isinstance(non_blocking, bool):
            raise ConfigError(f"{where}.non_blocking: must be true or false")
        scheduling = table.get("scheduling", "WHEN_IDLE")
        if scheduling not in ("INTERRUPT", "WHEN_IDLE", "SILENT"):
            raise ConfigError(f"{where}.scheduling: must be INTERRUPT, WHEN_IDLE or SILENT")
        try:
            tools.append(
                http_tool(
                    name,
                    url=url,
                    description=description,
                    parameters=table.get("parameters"),
                    headers={k: _expand(v, env, f"{where}.headers.{k}") for k, v in headers.items()},
                    timeout_s=float(timeout) if timeout is not None else None,
                    non_blocking=non_blocking,
                    scheduling=scheduling,
                )
            )
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    return tools


def _expand(value: str, env: Mapping[str, str], where: str) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if not name.startswith("TOOL_"):
            raise ConfigError(f"{where}: only ${{TOOL_*}} variables may be used, not ${{{name}}}")
        if name not in env:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return env[name]

    return _ENV_REF.sub(sub, value)
