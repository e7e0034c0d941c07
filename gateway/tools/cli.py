"""`gateway tools [--json] [--dialplan NAME]`: what tools the gateway offers, as the model sees them.

Builds the registry exactly as the server does (built-ins, ``GATEWAY_TOOL_MODULES``,
``GATEWAY_TOOLS_FILE``), so a bad module or tools file fails here, before a deploy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway.dialplan.loader import load_dialplans
from gateway.errors import ConfigError
from gateway.gemini.models import capabilities
from gateway.settings import DEFAULT_MODEL, Settings
from gateway.tools.loader import build_registry


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the function declarations as JSON")
    parser.add_argument(
        "--dialplan", help="only the tools this dialplan enables, as its sessions declare them"
    )
    parser.add_argument(
        "--dialplans", type=Path, help="dialplan folder (GATEWAY_DIALPLANS, default dialplans)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
        registry = build_registry(settings)
        tools = list(registry)
        model = settings.gemini_model or DEFAULT_MODEL
        if args.dialplan:
            book = load_dialplans(args.dialplans or settings.dialplan_dir, known_tools=registry.names())
            plan = book.get(args.dialplan)
            if plan is None:
                print(f"no dialplan named {args.dialplan!r}", file=sys.stderr)
                return 1
            model = plan.model or settings.gemini_model or DEFAULT_MODEL
            tools = list(registry.session_tools(plan, model).values())
    except ConfigError as exc:
        print(f"tools: {exc}", file=sys.stderr)
        return 1
    if args.json:
        caps = capabilities(model)
        decls = []
        for t in tools:
            decl = {"name": t.name, "description": t.description, "parameters": dict(t.parameters)}
            behavior = caps.behavior(t.non_blocking)  # as gateway/gemini/messages.py declares it
            if behavior is not None:
                decl["behavior"] = behavior
            decls.append(decl)
        print(json.dumps(decls, indent=2))
        return 0
    for t in tools:
        timeout = t.timeout_s or registry.default_timeout_s
        mode = f"non-blocking/{t.scheduling}" if t.non_blocking else "blocking"
        params = ", ".join(t.parameters.get("properties", {})) or "-"
        print(f"{t.name} [{t.kind}, {mode}, {timeout:g} s] ({params}): {t.description}")
    return 0
