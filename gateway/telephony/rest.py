"""One provider REST request, described sans-I/O: the provider modules build it, gateway/tools sends it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["RestRequest"]


@dataclass(frozen=True, slots=True)
class RestRequest:
    """One HTTP request for the caller's client to send.

    ``headers`` carry the credentials, so ``repr`` omits them (a request can end up in a log line).
    ``ok`` lists the statuses that mean success; None: any status below 400.
    """

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes | None = None
    ok: frozenset[int] | None = None
