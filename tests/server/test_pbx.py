"""The PBX connectors' shared secret and identity rules (gateway/server/pbx.py)."""

from __future__ import annotations

import base64

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.errors import TelephonyProtocolError
from gateway.server.pbx import PBX_REFUSAL, pbx_claims, pbx_refusal
from gateway.server.state import SETTINGS
from gateway.settings import Settings

SECRET = "pbx-secret-for-tests"


def _request(path: str, *, secret: str = "", peer: str = "127.0.0.1", headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    app = web.Application()
    app[SETTINGS] = Settings(host="0.0.0.0", pbx_secret=secret)
    request = make_mocked_request("GET", path, headers={"Host": "127.0.0.1:8080", **(headers or {})}, app=app)
    request._transport_peername = (peer, 40000)  # type: ignore[attr-defined]
    return request


def _basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"asterisk:{password}".encode()).decode()}


def test_with_a_secret_the_url_token_or_basic_password_must_match() -> None:
    assert pbx_refusal(_request(f"/asterisk/media?token={SECRET}", secret=SECRET, peer="10.0.0.5")) is None
    assert (
        pbx_refusal(_request("/asterisk/media", secret=SECRET, peer="10.0.0.5", headers=_basic(SECRET)))
        is None
    )
    assert pbx_refusal(_request("/asterisk/media?token=wrong", secret=SECRET, peer="10.0.0.5")) == PBX_REFUSAL
    assert pbx_refusal(_request("/asterisk/media", secret=SECRET, headers=_basic("wrong"))) == PBX_REFUSAL
    # A secret set means the secret, even from this host.
    assert pbx_refusal(_request("/asterisk/media", secret=SECRET)) == PBX_REFUSAL


def test_without_a_secret_only_a_direct_loopback_peer_is_served() -> None:
    assert pbx_refusal(_request("/freeswitch/media")) is None
    assert pbx_refusal(_request("/freeswitch/media", peer="10.0.0.5")) == PBX_REFUSAL
    # Through a proxy on this host anyone could look local: refused.
    proxied = _request("/freeswitch/media", headers={"X-Forwarded-For": "203.0.113.9"})
    assert pbx_refusal(proxied) == PBX_REFUSAL


def test_the_identity_comes_from_metadata_or_the_url() -> None:
    request = _request("/asterisk/media?to=%2B15551230000&from=%2B15550001111")
    claims = pbx_claims(request, "1733500000.42")
    assert (claims.call_sid, claims.to, claims.from_) == ("1733500000.42", "+15551230000", "+15550001111")
    claims = pbx_claims(request, "abc", to="+15559990000")
    assert claims.to == "+15559990000"
    with pytest.raises(TelephonyProtocolError) as exc:
        pbx_claims(_request("/asterisk/media"), "abc")
    assert "?to=" in str(exc.value)
    assert exc.value.close_code == 1008
