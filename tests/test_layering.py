"""Imports flow one way: sans-I/O cores import no I/O library; the product never imports the stand-ins."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"

#: Modules (package prefixes) that must stay sans-I/O: no event loop, no sockets, no clocks' side effects.
SANS_IO = (
    "gateway.audio",
    "gateway.telephony",
    "gateway.gemini.messages",
    "gateway.gemini.protocol",
    "gateway.dialplan.model",
)
IO_LIBRARIES = ("asyncio", "aiohttp", "websockets", "socket", "selectors", "uvloop")

#: The local stand-ins (emulator, simulated caller) are for users and tests; the product never imports them.
STAND_INS = ("gateway.emulator", "gateway.caller")
PRODUCT = (
    "gateway.audio",
    "gateway.telephony",
    "gateway.gemini",
    "gateway.bridge",
    "gateway.server",
    "gateway.dialplan",
    "gateway.tools",
    "gateway.handlers",
    "gateway.records",
    "gateway.security",
    "gateway.metrics",
)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _modules() -> list[tuple[str, Path]]:
    return sorted((_module_name(p), p) for p in PACKAGE.rglob("*.py"))


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize(("name", "path"), [m for m in _modules() if _within(m[0], SANS_IO)])
def test_sans_io_modules_import_no_io_library(name: str, path: Path) -> None:
    """Sans-I/O cores never import asyncio, aiohttp, websockets or sockets."""
    bad = {i for i in _imports(path) if _within(i, IO_LIBRARIES)}
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize(("name", "path"), [m for m in _modules() if _within(m[0], PRODUCT)])
def test_product_never_imports_stand_ins(name: str, path: Path) -> None:
    """The product does not import the emulator or the simulated caller."""
    bad = {i for i in _imports(path) if _within(i, STAND_INS)}
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize(("name", "path"), [m for m in _modules() if _within(m[0], ("gateway.emulator",))])
def test_emulator_does_not_share_the_clients_parser(name: str, path: Path) -> None:
    """The emulator has its own Live API handling, so it can catch the client's mistakes."""
    bad = {i for i in _imports(path) if _within(i, ("gateway.gemini",))}
    assert not bad, f"{name} imports {sorted(bad)}"


def test_layering_rules_see_the_package() -> None:
    """The rules above actually scan modules (a typo in a prefix would make them vacuous)."""
    names = [n for n, _ in _modules()]
    assert "gateway.errors" in names
    assert any(_within(n, SANS_IO) for n in names)


#: Which product packages each package may import (besides itself). Top-level leaves (errors, log,
#: jsonfast, wsframes, metrics, settings, process) are listed where used; entry points — ``gateway.cli``,
#: ``gateway.run``, ``gateway.workers``, ``gateway.doctor``, ``gateway.__main__`` and every ``*.cli``
#: sub-command module — compose the rest and may import anything. A change here is a design decision.
ALLOWED: dict[str, set[str]] = {
    "gateway.errors": set(),
    "gateway.jsonfast": set(),
    "gateway.wsframes": set(),
    "gateway.log": set(),
    "gateway.process": {"gateway.errors"},
    "gateway.metrics": {"gateway.errors"},
    "gateway.audio": {"gateway.errors"},
    "gateway.telephony": {"gateway.errors", "gateway.audio", "gateway.jsonfast"},
    "gateway.gemini": {"gateway.errors", "gateway.log", "gateway.jsonfast", "gateway.wsframes"},
    "gateway.dialplan": {"gateway.errors", "gateway.gemini"},
    "gateway.settings": {"gateway.errors", "gateway.dialplan", "gateway.gemini"},
    "gateway.tools": {
        "gateway.errors", "gateway.log", "gateway.audio", "gateway.telephony", "gateway.gemini",
        "gateway.dialplan", "gateway.settings",
    },
    "gateway.handlers": {"gateway.errors", "gateway.tools"},
    "gateway.records": {
        "gateway.errors", "gateway.audio", "gateway.dialplan", "gateway.metrics", "gateway.settings",
    },
    "gateway.security": {"gateway.errors", "gateway.settings", "gateway.telephony"},
    "gateway.bridge": {
        "gateway.errors", "gateway.log", "gateway.audio", "gateway.telephony", "gateway.gemini",
        "gateway.dialplan", "gateway.tools", "gateway.records", "gateway.metrics",
    },
    "gateway.server": {
        "gateway.errors", "gateway.log", "gateway.wsframes", "gateway.audio", "gateway.telephony",
        "gateway.gemini", "gateway.dialplan", "gateway.tools", "gateway.records", "gateway.metrics",
        "gateway.security", "gateway.bridge", "gateway.settings", "gateway.process",
    },
    # The stand-ins: the simulated caller may share only the leaves; the emulator, the caller.
    "gateway.caller": {"gateway.errors", "gateway.wsframes", "gateway.audio"},
    "gateway.emulator": {"gateway.errors", "gateway.caller"},
}  # fmt: skip
ENTRY_POINTS = ("gateway.cli", "gateway.run", "gateway.workers", "gateway.doctor", "gateway.__main__")


def _package(name: str) -> str:
    """``gateway.server.media`` → ``gateway.server``; a top-level module is its own package."""
    return ".".join(name.split(".")[:2])


def _is_entry_point(name: str) -> bool:
    return name in ENTRY_POINTS or name.endswith(".cli") or name == "gateway"


@pytest.mark.parametrize(("name", "path"), [m for m in _modules() if not _is_entry_point(m[0])])
def test_imports_follow_the_table(name: str, path: Path) -> None:
    """Every module imports only what its package's row allows (no cycles between packages)."""
    package = _package(name)
    assert package in ALLOWED, f"{package} has no row in ALLOWED: decide what it may import"
    allowed = ALLOWED[package] | {package}
    bad = sorted(
        i for i in _imports(path) if i.startswith("gateway.") and _package(i) not in allowed | {"gateway"}
    )
    assert not bad, f"{name} imports {bad}; {package} may import {sorted(ALLOWED[package])}"


def test_the_table_has_no_cycles() -> None:
    """Allowed imports form a DAG: a package never reaches itself through others."""

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in ALLOWED.get(start, set()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    cyclic = sorted(p for p in ALLOWED if reaches(p, p, set()))
    assert not cyclic, f"cycles through {cyclic}"
