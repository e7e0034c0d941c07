"""Operator access: direct loopback clients addressing this host, or a bearer token."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.security.access import is_direct_loopback


def _request(host: str, remote: str, **headers: str):  # type: ignore[no-untyped-def]
    request = make_mocked_request("GET", "/admin/calls", headers={"Host": host, **headers})
    return request.clone(remote=remote)


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "127.0.0.1", "[::1]"])
def test_loopback_client_addressing_this_host_is_direct(host: str) -> None:
    """A local client that names this host is the operator."""
    assert is_direct_loopback(_request(host, "127.0.0.1"))


@pytest.mark.parametrize(
    "host", ["evil.example:8080", "evil.example", "10.0.0.5:8080", "localhost.evil.example"]
)
def test_dns_rebinding_host_is_refused(host: str) -> None:
    """A browser page on another name resolving to 127.0.0.1 cannot use the loopback admin API."""
    assert not is_direct_loopback(_request(host, "127.0.0.1"))


def test_remote_or_proxied_client_is_refused() -> None:
    """Remote peers, and local proxies forwarding someone else, are not direct."""
    assert not is_direct_loopback(_request("127.0.0.1:8080", "203.0.113.9"))
    assert not is_direct_loopback(
        _request("127.0.0.1:8080", "127.0.0.1", **{"X-Forwarded-For": "203.0.113.9"})
    )
