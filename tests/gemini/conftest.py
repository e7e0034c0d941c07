"""Fixtures for the Vertex AI tests: a throw-away CA and the OAuth2 token stand-in behind ADC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.emulator.oauth import OAuthStandIn
from gateway.emulator.pki import TestPKI, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def standin(
    pki: TestPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[OAuthStandIn]:
    """The token stand-in over TLS, and ADC pointing at a service account it knows."""
    async with OAuthStandIn(ssl_context=pki.server_context()) as server:
        key_file = server.service_account(tmp_path / "sa.json", project_id="vertex-test")
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_file))  # what requests (google-auth) trusts
        monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))  # what the Live socket trusts
        monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))  # no developer credentials
        monkeypatch.setenv("NO_GCE_CHECK", "True")  # no metadata-server probe
        monkeypatch.delenv("GOOGLE_CLOUD_QUOTA_PROJECT", raising=False)
        yield server
