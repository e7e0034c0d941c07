"""The `gateway` command line: one sub-command per part, each imported only when it runs.

Every sub-command lives beside the part it drives, in a module exposing
``configure(parser)`` (add its arguments) and ``run(args) -> int`` (do it, return the exit code).
Importing lazily keeps `gateway --help` fast and keeps the emulator and the simulated caller out
of the server's import graph.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol

from gateway import __version__


class SubCommand(Protocol):
    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


#: name → (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("gateway.run", "run the gateway (webhooks + media WebSockets)"),
    "doctor": ("gateway.doctor", "check that the configured Gemini Live endpoint, key and model work"),
    "emulator": ("gateway.emulator.cli", "run the local Gemini Live emulator"),
    "call": ("gateway.caller.cli", "place a simulated phone call to a gateway (Twilio, or --provider NAME)"),
    "dial": ("gateway.server.dial", "ask a running gateway to place an outbound call (its admin API)"),
    "network": (
        "gateway.caller.network",
        "run the simulated phone network for `gateway dial` (Twilio; --provider telnyx, vonage or plivo)",
    ),
    "dialplans": ("gateway.dialplan.cli", "check the dialplan files"),
    "tools": ("gateway.tools.cli", "list the tools dialplans may enable, as the model sees them"),
    "calls": ("gateway.records.cli", "list call records, or show one call's transcript and tool calls"),
}


def _load(module: str) -> SubCommand:
    loaded: SubCommand = importlib.import_module(module)
    return loaded


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen sub-command is imported; the others show their help line only.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(module).configure(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 2
    module, _ = SUBCOMMANDS[args.command]
    try:
        return _load(module).run(args)
    except KeyboardInterrupt:
        return 130
