"""setup.py's promise about the resampler's C loop, by building real wheels with pip (as an install does).

Without a compiler the install must still work (the NumPy loop runs; the gateway says so at start),
unless ``GATEWAY_BUILD_EXTENSION=yes`` asks for the C loop (CI, the container image): then it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.needs import unavailable

ROOT = Path(__file__).resolve().parent.parent
LOOP = "gateway/audio/_polyphase"


def _wheel(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Build a wheel of a copy of the project (pip builds in the source tree) with ``env``; its files."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "gateway", src / "gateway", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    out = tmp_path / "wheels"
    environ = {k: v for k, v in os.environ.items() if k not in ("CC", "GATEWAY_BUILD_EXTENSION")} | env
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(src)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
    )
    wheels = list(out.glob("*.whl")) if out.is_dir() else []
    names = zipfile.ZipFile(wheels[0]).namelist() if wheels else []
    return done, names


def _has_loop(names: list[str]) -> bool:
    return any(n.startswith(LOOP) and n.endswith((".so", ".pyd")) for n in names)


@pytest.mark.slow
def test_with_a_compiler_the_wheel_holds_the_c_loop(tmp_path: Path) -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        unavailable("a C compiler (gcc: .ci/run installs it)")
    done, names = _wheel(tmp_path, GATEWAY_BUILD_EXTENSION="yes")
    assert done.returncode == 0, done.stderr[-2000:]
    assert _has_loop(names)


@pytest.mark.slow
def test_without_a_compiler_the_install_goes_on_without_the_c_loop(tmp_path: Path) -> None:
    done, names = _wheel(tmp_path, CC="false")  # a compiler that always fails
    assert done.returncode == 0, done.stderr[-2000:]
    assert names
    assert not _has_loop(names)
    assert f"{LOOP}.pyi" in names  # the NumPy loop is all there is; the stub ships either way


@pytest.mark.slow
def test_yes_makes_a_failed_compile_fail_the_install(tmp_path: Path) -> None:
    done, names = _wheel(tmp_path, CC="false", GATEWAY_BUILD_EXTENSION="yes")
    assert done.returncode != 0
    assert names == []


@pytest.mark.slow
def test_no_skips_the_c_loop(tmp_path: Path) -> None:
    done, names = _wheel(tmp_path, GATEWAY_BUILD_EXTENSION="no")
    assert done.returncode == 0, done.stderr[-2000:]
    assert names
    assert not _has_loop(names)


@pytest.mark.slow
def test_a_misspelt_choice_is_named(tmp_path: Path) -> None:
    done, _ = _wheel(tmp_path, GATEWAY_BUILD_EXTENSION="true")
    assert done.returncode != 0
    assert "GATEWAY_BUILD_EXTENSION must be yes, no or unset, not 'true'" in done.stderr + done.stdout
