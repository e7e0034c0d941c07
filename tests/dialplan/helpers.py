"""Small helpers for the dialplan tests: write plan files into a temporary folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

MINIMAL_DEFAULT = 'default = true\nsystem_instruction = "You are a test agent."\n'


def write(directory: Path, name: str, text: str) -> Path:
    """Write ``text`` (dedented) to ``directory/name`` and return the path."""
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def plan(numbers: str, *, extra: str = "") -> str:
    """A valid non-default plan answering ``numbers`` (a TOML array body)."""
    return f'numbers = [{numbers}]\nsystem_instruction = "Test."\n{extra}'
