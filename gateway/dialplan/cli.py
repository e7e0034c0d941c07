"""`gateway dialplans check [DIR]`: validate a dialplan folder before deploying it.

Prints every problem as ``FILE: FIELD: why`` and exits 1, or one summary line per plan and exits 0,
so it fits a CI step or a pre-reload check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.dialplan.loader import load_dialplans
from gateway.dialplan.model import Dialplan
from gateway.errors import ConfigError, DialplanErrors
from gateway.settings import Settings
from gateway.tools.loader import build_registry


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate every dialplan file and print a summary")
    check.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=Path("dialplans"),
        help="dialplan folder (default: dialplans)",
    )


def summary(plan: Dialplan) -> str:
    """One line describing a plan: what an operator checks before a deploy."""
    numbers = ",".join(plan.numbers) or "-"
    if plan.default:
        numbers = f"{numbers} (default)"
    callers = f" callers={','.join(plan.callers)}" if plan.callers else ""
    return (
        f"{plan.name} version={plan.version} numbers={numbers}{callers} voice={plan.voice or '-'}"
        f" language={plan.language or '-'} tools={','.join(plan.tools) or '-'}"
    )


def run(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    # Tool names are checked against the registry the server would build (GATEWAY_TOOL_MODULES, …).
    try:
        known_tools = build_registry(Settings.from_env()).names()
    except ConfigError as exc:
        print(f"tools: {exc}", file=sys.stderr)
        return 1
    try:
        book = load_dialplans(directory, known_tools=known_tools)
    except DialplanErrors as exc:
        for error in exc.errors:
            print(error)
        noun = "problem" if len(exc.errors) == 1 else "problems"
        print(f"{len(exc.errors)} {noun} in {directory}", file=sys.stderr)
        return 1
    for plan in book.plans:
        print(summary(plan))
    return 0
