"""``gateway serve --workers N``: N gateway processes sharing one port, and the event loop choice.

The kernel balances connections between the workers (SO_REUSEPORT, aiohttp's
``TCPSite(reuse_port=True)``): a proven mechanism, no hand-made balancer in between. Each worker
carries its calls alone. What they must share, the parent sets up before starting them:

* ``GATEWAY_SECRET``: a call's webhook and its media socket may reach different workers, so every
  worker must verify every other's stream tokens. Without a configured secret the parent makes one.
* the replay guard: Redis when ``GATEWAY_REDIS_URL`` is set, else a SQLite file in a private
  temporary directory (:mod:`gateway.security.sqlite_guard`), so a token stays single-use across them.
* the embedded emulator (no ``GEMINI_API_KEY``): one, run by the parent, for all workers.

Preconnect still helps when the webhook and the media socket land on the same worker; otherwise
the media handler connects afresh (the preconnected session in the other worker is closed unused
when its claim times out).

If a worker dies, the parent stops the others and exits non-zero: restarting is the job of the
process manager (systemd, Kubernetes), which also sees the failure that way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import secrets
import signal
import tempfile
import time
from collections.abc import Coroutine
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import ConfigError
from gateway.process import tune_malloc
from gateway.settings import Settings

logger = logging.getLogger("gateway")

T = TypeVar("T")
LOOPS = ("auto", "asyncio", "uvloop")


def run_loop(main: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """Run ``main`` on uvloop when asked (or, with ``auto``, when installed: ``pip install '.[fast]'``)."""
    if loop not in LOOPS:
        raise ConfigError(f"--loop must be one of {', '.join(LOOPS)}, not {loop!r}")
    factory = None
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                main.close()
                raise ConfigError(
                    "--loop uvloop needs uvloop: pip install 'gemini-phone-gateway[fast]'"
                ) from None
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def serve_workers(settings: Settings, count: int, *, loop: str = "auto", emulator_port: int = 0) -> int:
    """Start ``count`` workers on ``settings.port`` and supervise them until SIGINT/SIGTERM."""
    if count < 1:
        raise ConfigError(f"--workers must be at least 1, not {count}")
    if settings.port == 0:
        raise ConfigError("--workers needs a fixed --port: each worker binds it with SO_REUSEPORT")
    settings = settings.with_(gateway_secret=settings.gateway_secret or secrets.token_urlsafe(32))
    from gateway.server.connections import raise_file_limit  # the server stack, only when serving

    raise_file_limit()  # before the workers start: they inherit it (each also raises its own, and says so)
    if settings.preconnect:
        # The kernel spreads connections over the workers: a call's media stream rarely lands on the
        # worker that answered its webhook, so a session opened there would be a second, wasted one
        # (10 calls opened 20). Preconnect only where the stream is sure to find it: one process.
        logger.info("--workers: Gemini sessions open when the media stream starts (no preconnect)")
        settings = settings.with_(preconnect=False)
    with tempfile.TemporaryDirectory(prefix="gateway-workers-") as tmp:
        replay_db = None if settings.redis_url else Path(tmp) / "stream-nonces.sqlite3"
        return run_loop(_supervise(settings, count, loop, replay_db, emulator_port), loop)


async def _supervise(
    settings: Settings, count: int, loop: str, replay_db: Path | None, emulator_port: int
) -> int:
    async with contextlib.AsyncExitStack() as stack:
        if settings.embedded_emulator:
            from gateway.emulator import Emulator  # a stand-in: imported only when it is used
            from gateway.run import EMULATOR_KEY

            emulator = Emulator()
            await emulator.start(host="127.0.0.1", port=emulator_port)
            stack.push_async_callback(emulator.stop)
            settings = settings.with_(
                gemini_url=emulator.base_url, gemini_api_key=EMULATOR_KEY, embedded_emulator=False
            )
        context = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited loop or sockets
        workers: list[BaseProcess] = []
        for index in range(count):
            process = context.Process(
                target=_worker,
                args=(settings, index, loop, replay_db),
                name=f"gateway-worker-{index}",
                daemon=False,
            )
            process.start()
            workers.append(process)
        stop = asyncio.Event()

        def on_signal() -> None:
            if stop.is_set():  # a second signal: the workers cut their drain short too
                for worker in workers:
                    if worker.is_alive():
                        worker.terminate()
            stop.set()

        running = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                running.add_signal_handler(sig, on_signal)
        failed = False
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            dead = [w for w in workers if not w.is_alive()]
            if dead and not stop.is_set():
                logger.error("worker %s exited with %s; stopping the others", dead[0].name, dead[0].exitcode)
                failed = True
                break
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: each worker drains its calls (gateway/server/drain.py)
        # The drain, the goodbyes (bounded at ~15 s) and the server's own shutdown, then SIGKILL.
        await asyncio.to_thread(_join, workers, settings.drain_s + 30.0)
        return 1 if failed else 0
    raise AssertionError("unreachable")  # pragma: no cover - the exit stack never swallows


def _join(workers: list[BaseProcess], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            worker.kill()
            worker.join()


def _worker(settings: Settings, index: int, loop: str, replay_db: Path | None) -> None:
    """One worker process: the ordinary server, bound with SO_REUSEPORT."""
    from gateway import log as gateway_log
    from gateway.run import serve

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    gateway_log.configure(settings.log_level, settings.log_format, settings.secrets())
    tune_malloc()
    run_loop(serve(settings, reuse_port=True, replay_db=replay_db, banner=index == 0), loop)
