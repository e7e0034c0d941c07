"""``X-Twilio-Signature``: HMAC-SHA1 of the URL plus sorted form parameters, keyed by the auth token.

Twilio signs ``url + name1 + value1 + name2 + value2 …`` (names sorted by code point, each name's
distinct values sorted), base64-encodes the digest and sends it in ``X-Twilio-Signature``; the
media WebSocket upgrade is signed the same way over its ``wss://`` URL with no parameters.
Because Twilio is inconsistent about default ports in what it signs, verification also accepts
the URL without its port and with the scheme's default port added, as Twilio's own SDK does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from gateway.errors import ConfigError

_DEFAULT_PORTS: Final = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def _signed_text(url: str, params: Mapping[str, str] | None) -> str:
    if not params:
        return url
    # ``items()`` of a multidict (aiohttp's request.post()) yields every value of repeated names,
    # and sorting (name, value) pairs is exactly Twilio's "sorted names, then sorted values".
    return url + "".join(name + value for name, value in sorted(set(params.items())))


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """The ``X-Twilio-Signature`` Twilio would send for a request to ``url`` with form ``params``.

    Raises:
        ConfigError: the auth token is empty (a signature under an empty key proves nothing).
    """
    if not auth_token:
        raise ConfigError("Twilio auth token is empty")
    digest = hmac.new(auth_token.encode(), _signed_text(url, params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _url_variants(url: str) -> list[str]:
    """``url`` as given, without an explicit port, and with the scheme's default port."""
    variants = [url]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return variants
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    if port is not None:
        variants.append(urlunsplit(parts._replace(netloc=prefix + host)))
    elif parts.scheme in _DEFAULT_PORTS:
        netloc = f"{prefix}{host}:{_DEFAULT_PORTS[parts.scheme]}"
        variants.append(urlunsplit(parts._replace(netloc=netloc)))
    return variants


def verify_twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str] | None, signature: str
) -> bool:
    """Whether ``signature`` is Twilio's for ``url`` and ``params``; compared in constant time.

    Raises:
        ConfigError: the auth token is empty.
    """
    if not auth_token:
        raise ConfigError("Twilio auth token is empty")
    given = signature.strip().encode("utf-8", "replace")
    ok = False
    for variant in _url_variants(url):
        expected = twilio_signature(auth_token, variant, params).encode("ascii")
        # Evaluate every variant (no short-circuit) so timing does not reveal which one matched.
        ok |= hmac.compare_digest(expected, given)
    return ok
