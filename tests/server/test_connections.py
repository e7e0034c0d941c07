"""The aiohttp side of the connection defences: the runner's server keeps aiohttp's handler arguments
(it is rebuilt from aiohttp's own, see gateway/server/connections.py), and the open-file limit rises."""

from __future__ import annotations

import resource
import subprocess
import sys

from aiohttp import web

from gateway.server.connections import GatewayRunner, GuardedServer, handler_args
from gateway.server.limits import LimitState
from gateway.server.state import LIMITS
from gateway.settings import Settings
from tests.needs import unavailable


async def test_the_guarded_server_keeps_aiohttps_handler_arguments() -> None:
    """The idle timeout reaches every connection's RequestHandler through the rebuilt server, and each
    connection is counted against the app's cap."""
    settings = Settings(http_idle_timeout_s=7.0)
    app = web.Application(handler_args=handler_args(settings))
    app[LIMITS] = LimitState.from_settings(settings, files=1024)
    runner = GatewayRunner(app)
    await runner.setup()
    try:
        server = runner.server
        assert isinstance(server, GuardedServer)
        assert server.cap is app[LIMITS].connections
        handler = server()
        assert handler.keepalive_timeout == 7.0
        assert handler._lingering_time == 1.0
    finally:
        await runner.cleanup()


def test_the_soft_open_file_limit_rises_to_the_hard_limit() -> None:
    """A process started with 256 of 1024 files raises itself to 1024 and reports both."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        unavailable("the hard open-file limit is below 1024 here (raise it: ulimit -Hn)")
    code = (
        "import resource\n"
        "from gateway.server.connections import open_file_limit, raise_file_limit\n"
        "print(raise_file_limit(), open_file_limit())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024)),
    ).stdout
    assert out.split() == ["(256,", "1024,", "1024)", "1024"]
