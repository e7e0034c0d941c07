"""Vertex AI credentials: real google-auth against the local OAuth2 token stand-in over verified TLS.

A service-account key file (fresh RSA key) names the stand-in as its ``token_uri``;
``GOOGLE_APPLICATION_CREDENTIALS`` points at it, so google-auth finds it as Application Default
Credentials, signs the JWT assertion itself and POSTs it over HTTPS, verifying the stand-in's
certificate against the test CA (``REQUESTS_CA_BUNDLE``). The stand-in runs on the test's own event
loop: a token fetch that blocked the loop could never be answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway import log as gateway_log
from gateway.emulator import Emulator, Scenario
from gateway.emulator.oauth import OAuthStandIn
from gateway.emulator.pki import TestPKI
from gateway.errors import ConfigError, LiveConnectError
from gateway.gemini.auth import AccessToken, VertexCredentials
from gateway.gemini.messages import SessionConfig
from gateway.gemini.session import LiveEndpoint, LiveSession
from gateway.log import KeyValueFormatter

FAST = Scenario(first_audio_delay_s=0.0, speed=0.0, playback_wait=False)


async def test_first_token_comes_from_the_service_account_file(standin: OAuthStandIn) -> None:
    """google-auth signs the assertion, the stand-in verifies it, and the token becomes a Bearer header."""
    creds = VertexCredentials()
    try:
        await creds.start()
        headers = await creds.headers()
    finally:
        await creds.aclose()
    assert standin.outcomes == ["issued"]
    [token] = standin.issued
    assert headers == {"Authorization": f"Bearer {token.value}"}
    assert token.account.endswith("@vertex-test.iam.gserviceaccount.com")
    assert "https://www.googleapis.com/auth/cloud-platform" in token.scope.split()


async def test_quota_project_goes_in_x_goog_user_project(
    standin: OAuthStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADC's quota project (GOOGLE_CLOUD_QUOTA_PROJECT) is billed, as google-genai sends it."""
    monkeypatch.setenv("GOOGLE_CLOUD_QUOTA_PROJECT", "billing-project")
    creds = VertexCredentials()
    try:
        headers = await creds.headers()  # without start(): the first call starts the refresher
    finally:
        await creds.aclose()
    assert headers["x-goog-user-project"] == "billing-project"
    assert headers["Authorization"] == f"Bearer {standin.issued[0].value}"


async def _lag_probe(stop: asyncio.Event, lags: list[float]) -> None:
    """How late 10 ms sleeps wake up: a blocked event loop shows as a large lag."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.01)
        lags.append(loop.time() - before - 0.01)


async def test_short_lived_token_is_replaced_in_the_background_and_connects_never_wait(
    standin: OAuthStandIn, pki: TestPKI
) -> None:
    """A 4 s token is replaced ~2 s in by the refresher alone; while that (slow) refresh is in flight a
    connect uses the current token at once and the event loop keeps running."""
    standin.token_lifetime_s = 4
    creds = VertexCredentials()
    async with Emulator(FAST, ssl_context=pki.server_context(), access_tokens=standin.token_ok) as emu:
        endpoint = LiveEndpoint.for_vertex(
            "vertex-test", "us-central1", base_url=emu.base_url, credentials=creds, tls=pki.client_context()
        )
        cfg = SessionConfig(model="gemini-live-2.5-flash-native-audio")
        stop, lags = asyncio.Event(), list[float]()
        probe: asyncio.Task[None] | None = None
        try:
            await endpoint.start()
            first = await LiveSession.connect(endpoint, cfg, setup_timeout_s=5.0)  # waits for token 1
            await first.close()
            probe = asyncio.create_task(_lag_probe(stop, lags))
            [token1] = standin.issued
            standin.delay_s = 1.5  # the refresh at ~2 s is answered at ~3.5 s, before token 1 expires
            await asyncio.sleep(max(0.0, token1.issued_at + 2.3 - time.time()))
            assert creds.fetched == 1, "the refresh is still in flight"
            started = time.monotonic()
            second = await LiveSession.connect(endpoint, cfg, setup_timeout_s=1.0)
            connect_s = time.monotonic() - started
            await second.close()
            async with asyncio.timeout(3.0):
                while creds.fetched < 2:  # noqa: ASYNC110 - polling a counter in a test
                    await asyncio.sleep(0.02)
        finally:
            stop.set()
            if probe is not None:
                await probe
            await endpoint.aclose()
    assert connect_s < 0.8, f"a connect waited {connect_s:.2f} s for a token refresh (due at ~3.5 s)"
    assert len(standin.issued) == 2
    token2 = standin.issued[1]
    assert token2.value != token1.value
    assert token1.issued_at + 1.5 < token2.issued_at < token1.expires_at  # replaced before expiry
    # A fetch on the loop would stall it for the whole 1.5 s answer (and could never be answered at all);
    # the bound leaves room for a busy shared test machine.
    assert max(lags) < 0.5, f"the event loop stalled {max(lags):.3f} s during a refresh"
    assert creds.token is not None
    assert creds.token.value == token2.value
    assert [h.authorized for h in emu.handshakes] == [True, True]
    assert emu.sessions[0].setup is not None
    assert emu.sessions[0].setup["model"] == (
        "projects/vertex-test/locations/us-central1/publishers/google/models/gemini-live-2.5-flash-native-audio"
    )


async def test_expired_tokens_leave_the_mask_list(standin: OAuthStandIn) -> None:
    """Hourly tokens must not grow the log mask list forever: one two generations old is dropped."""
    standin.token_lifetime_s = 2
    creds = VertexCredentials()
    try:
        await creds.start()
        async with asyncio.timeout(5.0):
            while creds.fetched < 3:  # noqa: ASYNC110 - polling a counter in a test
                await asyncio.sleep(0.02)
    finally:
        await creds.aclose()
    token1, token2, token3 = (t.value for t in standin.issued[:3])
    masked = gateway_log._redact.secrets
    assert token1 not in masked
    assert token2 in masked
    assert token3 in masked


def test_refresh_schedule_and_handshake_margin() -> None:
    """An hour's token is replaced 5 min early; a short one half-way; neither is used in its last moments."""
    hour = AccessToken("t" * 20, expires_at=4600.0, obtained_at=1000.0)
    assert hour.refresh_at == 4300.0
    assert hour.usable(4589.0)
    assert not hour.usable(4591.0)  # 10 s margin
    short = AccessToken("t" * 20, expires_at=104.0, obtained_at=100.0)
    assert short.refresh_at == 102.0
    assert short.usable(103.5)
    assert not short.usable(103.7)  # a tenth of its life


async def test_no_application_default_credentials_is_one_config_line(
    standin: OAuthStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    creds = VertexCredentials()
    with pytest.raises(ConfigError) as info:
        await creds.start()
    await creds.aclose()
    message = str(info.value)
    assert "\n" not in message
    assert "Application Default Credentials" in message
    assert "GOOGLE_APPLICATION_CREDENTIALS" in message


@pytest.mark.parametrize("content", [None, "{not json", '{"type": "service_account"}'])
async def test_broken_key_file_is_one_config_line(
    standin: OAuthStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str | None
) -> None:
    """A missing file, a file that is not JSON, and a key file without its key all stop the start-up."""
    path = tmp_path / "broken.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    creds = VertexCredentials()
    with pytest.raises(ConfigError) as info:
        await creds.start()
    await creds.aclose()
    assert "\n" not in str(info.value)
    assert standin.outcomes == []


async def test_refused_token_is_a_clear_connect_error(standin: OAuthStandIn) -> None:
    """The token endpoint's refusal reaches the connect as one line naming the OAuth2 error."""
    standin.refuse = "invalid_grant"
    endpoint = LiveEndpoint.for_vertex("vertex-test", "us-central1", base_url="wss://127.0.0.1:9")
    try:
        with pytest.raises(LiveConnectError) as info:
            await LiveSession.connect(endpoint, SessionConfig(model="gemini-3.8-live"), setup_timeout_s=5.0)
    finally:
        await endpoint.aclose()
    assert "invalid_grant" in str(info.value)
    assert "\n" not in str(info.value)
    assert not info.value.retryable


async def test_assertion_signed_with_another_key_is_refused(standin: OAuthStandIn, tmp_path: Path) -> None:
    """The stand-in really verifies the RS256 signature: the right account with a wrong key is refused."""
    other = json.loads(standin.service_account(tmp_path / "other.json").read_text())
    key_file = tmp_path / "sa.json"  # the one ADC reads (the fixture's)
    info = json.loads(key_file.read_text())
    info["private_key"] = other["private_key"]  # same account, a key the stand-in does not know for it
    key_file.write_text(json.dumps(info))
    creds = VertexCredentials()
    try:
        with pytest.raises(LiveConnectError, match="Invalid JWT Signature"):
            await creds.headers()
    finally:
        await creds.aclose()
    assert standin.outcomes == ["invalid_grant"]
    assert standin.issued == []


async def test_token_endpoint_certificate_is_verified(
    standin: OAuthStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the test CA trusted, google-auth refuses the stand-in's certificate: TLS is not a formality."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    creds = VertexCredentials()
    try:
        with pytest.raises(LiveConnectError, match="could not be reached") as info:
            await creds.headers()
    finally:
        await creds.aclose()
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value) or "certificate verify failed" in str(info.value)
    assert info.value.retryable
    assert standin.outcomes == []


async def test_tokens_never_reach_a_log_line(standin: OAuthStandIn, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    creds = VertexCredentials()
    try:
        headers = await creds.headers()
    finally:
        await creds.aclose()
    token = standin.issued[0].value
    assert token not in caplog.text
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "handshake %s", (headers,), None)
    line = KeyValueFormatter().format(record)
    assert token not in line
    assert "Bearer ***" in line


def test_a_plain_install_needs_no_google_auth(tmp_path: Path) -> None:
    """Without google-auth the gateway still starts on the Gemini API; Vertex mode says what to install."""
    script = """
import asyncio, sys
sys.modules["google.auth"] = None  # as if google-auth were not installed
from gateway.errors import ConfigError
from gateway.server.app import create_app
from gateway.settings import Settings
from gateway.gemini.session import LiveEndpoint
from pathlib import Path
create_app(Settings(gemini_api_key="k" * 20, dialplan_dir=Path(sys.argv[1])))
async def main():
    endpoint = LiveEndpoint.for_vertex("p", "us-central1")
    try:
        await endpoint.start()
    except ConfigError as exc:
        print(exc)
asyncio.run(main())
assert not any(name.startswith("google.auth") and sys.modules[name] for name in sys.modules)
"""
    plans = tmp_path / "dialplans"
    plans.mkdir()
    (plans / "default.toml").write_text('default = true\nsystem_instruction = "Hi."\n')
    done = subprocess.run(
        [sys.executable, "-c", script, str(plans)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'gemini-phone-gateway[vertex]'" in done.stdout
