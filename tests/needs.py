"""What a test needs from the machine (a browser, a server, an interpreter), and what happens without it.

Outside CI a missing tool skips the test, saying how to get it. In CI (``CI`` set, as ``.ci/run`` does)
the test must run: ``.ci/run`` installs every such package and the CI machine runs the services, so a
missing one is a failure, never a silent skip.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(what: str) -> NoReturn:
    """Skip (outside CI) or fail (in CI) because ``what`` is missing."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (in CI it must be there: see .ci/run)")
    pytest.skip(what)
