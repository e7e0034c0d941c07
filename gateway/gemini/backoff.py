"""Reconnect delays for Live sessions: a pure generator that tests can step through.

Shape (as in websockets' ``backoff()``): the first delay is random in ``[0, initial_max_s]`` so that
hundreds of calls cut by the same Gemini incident do not reconnect in lockstep; then delays grow
geometrically from ``min_s`` by ``factor`` up to ``max_s``, each with ±``jitter`` spread. Phone calls
cannot wait long, so the defaults are far shorter than websockets' (which target long-lived clients).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from gateway.errors import ConfigError

__all__ = ["backoff"]


def backoff(
    initial_max_s: float = 0.5,
    min_s: float = 0.25,
    max_s: float = 8.0,
    factor: float = 2.0,
    jitter: float = 0.1,
    *,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Yield reconnect delays in seconds, forever; the caller decides when to give up.

    Every value lies in ``[0, max_s]``. Raises :class:`~gateway.errors.ConfigError` for inconsistent bounds.
    """
    if not (initial_max_s >= 0 and 0 < min_s <= max_s and factor >= 1 and 0 <= jitter < 1):
        raise ConfigError(
            "backoff: need 0 <= initial_max_s, 0 < min_s <= max_s, factor >= 1, 0 <= jitter < 1"
        )
    rand = rng or random.Random()
    yield rand.uniform(0.0, min(initial_max_s, max_s))
    delay = min_s
    while True:
        yield min(max_s, delay * rand.uniform(1.0 - jitter, 1.0 + jitter))
        delay = min(max_s, delay * factor)
