"""Shared fixtures. Everything runs over loopback; nothing reaches the internet."""

from __future__ import annotations

import pytest

from gateway.emulator.pki import TestPKI, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """One throw-away CA per test session (worker) for every TLS stand-in."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def trust_test_ca(pki: TestPKI, monkeypatch: pytest.MonkeyPatch) -> TestPKI:
    """The gateway trusts the test CA the way a deployment trusts a private CA: ``SSL_CERT_FILE``."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return pki
