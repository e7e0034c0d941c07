"""Process-wide tuning done once at start, before any call: what the C library should do for a server
that holds hundreds of long-lived TLS connections.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import socket
import sys
from pathlib import Path

from gateway.errors import ConfigError

__all__ = ["claim_port", "tune_malloc"]

_LOG = logging.getLogger("gateway")

#: glibc's ``M_MMAP_THRESHOLD`` parameter of ``mallopt(3)``.
_M_MMAP_THRESHOLD = -3
#: Blocks from this size up are mapped (and so only resident where touched) rather than taken from the heap.
MMAP_THRESHOLD_BYTES = 128 * 1024

#: Kept open for the life of the process: the claim on the port (see :func:`claim_port`).
_claims: list[socket.socket] = []


def tune_malloc() -> bool:
    """Keep large, mostly idle buffers out of resident memory (glibc only; elsewhere a no-op).

    Every TLS connection of the event loop (uvloop) gets a 256 KiB read buffer. glibc maps blocks that
    large with ``mmap`` at first, so their untouched pages cost nothing, but its *dynamic* threshold
    rises as soon as such a block is freed, and from then on each new connection's buffer comes from the
    heap, fully resident: ~350 KiB per call over ``wss://`` instead of ~170 KiB (README, Performance).
    Fixing the threshold at 128 KiB keeps them mapped. Large blocks are rare here (one per connection),
    so the extra ``mmap`` calls cost nothing measurable.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def claim_port(host: str, port: int) -> None:
    """Refuse to share ``host:port`` with another gateway: workers bind with ``SO_REUSEPORT``, so a
    second ``gateway serve --workers N`` on the same port would bind too, silently, and half the calls
    would reach the other instance and fail with "token signature invalid".

    The claim is an abstract Unix socket named after the address (Linux): the kernel refuses a second
    one while the first process lives and frees it when the process ends, however it ends.
    """
    if not sys.platform.startswith("linux"):
        return
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(f"\0gemini-phone-gateway:{host}:{port}")
    except OSError:
        claim.close()
        raise ConfigError(
            f"another gateway already serves {host}:{port}: stop it, or choose another --port"
        ) from None
    _claims.append(claim)


def cpu_allowance(cgroup_root: str = "/sys/fs/cgroup") -> float:
    """How many cores the event loop may use: one, or less under a container's CPU quota.

    Read from the cgroup the process runs in (v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us`` and
    ``cpu.cfs_period_us``; Kubernetes CPU limits and ``docker run --cpus`` set these). A single
    event loop never uses more than one core, so a larger quota still means one.
    """
    root = Path(cgroup_root)
    quota = period = 0.0
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            quota, period = float(text[0]), float(text[1])
    except (OSError, ValueError, IndexError):
        try:
            quota = float((root / "cpu" / "cpu.cfs_quota_us").read_text())
            period = float((root / "cpu" / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            pass
    if quota > 0 and period > 0:
        return min(1.0, quota / period)
    return 1.0
