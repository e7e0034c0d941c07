"""The SQLite replay guard that ``serve --workers`` shares between processes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from gateway.errors import AuthError
from gateway.security.sqlite_guard import SqliteReplayGuard


def _claim(path: str, nonce: str) -> bool:
    return SqliteReplayGuard(Path(path)).claim_now(nonce, expires_at=1e12, now=0.0)


async def test_a_nonce_is_claimed_once(tmp_path: Path) -> None:
    """First claim wins, the replay is refused, other nonces are unaffected."""
    guard = SqliteReplayGuard(tmp_path / "nonces.db")
    assert await guard.claim("n1", expires_at=100.0, now=0.0)
    assert not await guard.claim("n1", expires_at=100.0, now=1.0)
    assert await guard.claim("n2", expires_at=100.0, now=1.0)
    await guard.close()


def test_processes_share_the_guard(tmp_path: Path) -> None:
    """Eight processes race for the same nonce: exactly one wins."""
    path = str(tmp_path / "nonces.db")
    SqliteReplayGuard(Path(path)).claim_now("warm-up", expires_at=1e12, now=0.0)  # create the schema once
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_claim, [(path, "same-nonce")] * 8)
    assert sorted(results) == [False] * 7 + [True]


async def test_an_unusable_file_fails_closed(tmp_path: Path) -> None:
    """If the database cannot be opened, the stream is refused rather than waved through."""
    guard = SqliteReplayGuard(tmp_path / "missing-dir" / "nonces.db")
    with pytest.raises(AuthError, match="replay guard unavailable"):
        await guard.claim("n1", expires_at=100.0, now=0.0)
