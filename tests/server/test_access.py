"""Operator access: direct loopback clients addressing this host, or a bearer token; and where a
connection comes from, for per-source limits."""

from __future__ import annotations

import pytest
from aiohttp import HttpVersion10
from aiohttp.test_utils import make_mocked_request

from gateway.server.access import bearer_matches, is_direct_loopback, listens_on_loopback, source_address
from gateway.settings import Settings


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


@pytest.mark.parametrize(
    "header",
    [
        "Via",
        "X-Forwarded-Host",
        "X-Forwarded-Proto",
        "CF-Connecting-IP",
        "CF-Ray",
        "True-Client-IP",
        "Fastly-Client-IP",
        "X-Client-IP",
        "X-Cluster-Client-IP",
        "X-Amzn-Trace-Id",
        "X-Envoy-External-Address",
        "Forwarded",
        "X-Real-IP",
    ],
)
def test_any_forwarding_or_cdn_header_means_proxied(header: str) -> None:
    """Whatever relayed the request and however it says so, a relayed request is not the local operator."""
    assert not is_direct_loopback(_request("127.0.0.1:8080", "127.0.0.1", **{header: "1"}))


def test_http_1_0_means_proxied() -> None:
    """nginx's default proxy_pass adds no forwarding header but speaks HTTP/1.0 to the upstream."""
    request = make_mocked_request(
        "GET", "/admin/calls", headers={"Host": "127.0.0.1:8080"}, version=HttpVersion10
    ).clone(remote="127.0.0.1")
    assert not is_direct_loopback(request)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost"])
def test_loopback_listen_addresses(host: str) -> None:
    assert listens_on_loopback(Settings(host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.0.0.5", "gateway.example"])
def test_other_listen_addresses_are_exposed(host: str) -> None:
    assert not listens_on_loopback(Settings(host=host))


@pytest.mark.parametrize("value", ["Bearer t0k3n", "bearer t0k3n", "BEARER   t0k3n", " Bearer t0k3n "])
def test_bearer_scheme_in_any_case(value: str) -> None:
    """RFC 7235: the auth scheme is case-insensitive, and one or more spaces precede the credentials."""
    assert bearer_matches(_request("127.0.0.1", "127.0.0.1", Authorization=value), "t0k3n")


@pytest.mark.parametrize("value", ["", "Bearer", "Bearer t0k3", "Basic t0k3n", "Bearert0k3n", "t0k3n"])
def test_wrong_authorization_is_refused(value: str) -> None:
    assert not bearer_matches(_request("127.0.0.1", "127.0.0.1", Authorization=value), "t0k3n")


def test_source_is_the_peer_or_for_a_local_proxy_the_client_it_forwards_for() -> None:
    """A remote peer is its own source whatever it claims; a local proxy's last X-Forwarded-For hop
    (the one it appended) names the client; IPv6 clients count by /64."""
    assert (
        source_address(_request("h", "203.0.113.9", **{"X-Forwarded-For": "198.51.100.1"})) == "203.0.113.9"
    )
    assert source_address(_request("h", "127.0.0.1")) == "127.0.0.1"
    forwarded = _request("h", "127.0.0.1", **{"X-Forwarded-For": "10.9.9.9, 198.51.100.7"})
    assert source_address(forwarded) == "198.51.100.7"
    assert source_address(_request("h", "::1", **{"X-Real-IP": "198.51.100.8"})) == "198.51.100.8"
    rfc7239 = _request("h", "127.0.0.1", Forwarded='for=192.0.2.1, for="[2001:db8::1]:4711"')
    assert source_address(rfc7239) == "2001:db8::/64"
    assert source_address(_request("h", "2001:db8:1:2:3:4:5:6")) == "2001:db8:1:2::/64"
    assert source_address(_request("h", "::ffff:203.0.113.9")) == "203.0.113.9"
    assert source_address(_request("h", "127.0.0.1", **{"X-Forwarded-For": "junk"})) == "127.0.0.1"
