"""What every simulated provider network shares: its REST API served on loopback, the HTTP client it
calls the gateway back with, one task per call, a scratch folder, and the calls it was asked to make.

The networks themselves (gateway/caller/vonage_network.py, plivo_network.py) say what is the
provider's: its routes (:meth:`SimulatedApi.routes`), how it checks requests and what its callbacks
carry.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Generic, Protocol, Self, TypeVar

import aiohttp
import numpy as np
from aiohttp import web

from gateway.caller.audio import to_pcm16_8k, write_wav
from gateway.caller.samples import MACHINE_GREETING_S, machine_greeting

__all__ = ["SimulatedApi"]


class _Call(Protocol):
    created_at: float
    log: list[str]
    done: asyncio.Event


CallT = TypeVar("CallT", bound=_Call)


class SimulatedApi(ABC, Generic[CallT]):
    """A provider's API stand-in: ``async with`` it (or :meth:`start` / :meth:`close`), give the gateway its
    :attr:`base_url`, and :meth:`wait` for the calls in :attr:`dialled`."""

    #: The scratch folder's prefix (``{provider}-network-``).
    provider = "provider"

    def __init__(self, *, on_event: Callable[[str], None] | None, host: str, port: int) -> None:
        self.on_event = on_event
        self.host, self.port = host, port
        #: The calls made, by the id the create request answered.
        self.dialled: dict[str, CallT] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tmp: Path | None = None

    @property
    def base_url(self) -> str:
        """What to give the gateway as the provider's ``*_API_BASE``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @abstractmethod
    def routes(self, app: web.Application) -> None:
        """Add the provider's API to ``app``."""

    @abstractmethod
    def label(self, call: CallT) -> str:
        """How the call's log lines name it."""

    def rest_of_greeting(self, elapsed_s: float, name: str) -> Path | None:
        """A machine's greeting from ``elapsed_s`` on (it began at the answer; the stream opened later), as
        a WAV in the scratch folder for the callee to play; None once it is over (the machine records)."""
        if elapsed_s >= MACHINE_GREETING_S or self._tmp is None:
            return None
        rest = machine_greeting(8000)[int(elapsed_s * 8000) :].astype(np.float32)
        path = self._tmp / f"{name}.wav"
        write_wav(path, to_pcm16_8k(rest, 8000))
        return path

    def call(self, call_id: str) -> CallT:
        """The call the create request answered with ``call_id``."""
        return self.dialled[call_id]

    def ring(self, call: CallT, rings: Coroutine[Any, Any, None]) -> None:
        """Run a new call (``rings``: the phone ringing, answered or not, until the call is over) as a task
        of the network's, cancelled when it closes."""
        task = asyncio.create_task(rings, name=f"{self.provider}-network:{self.label(call)}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        app = web.Application()
        self.routes(app)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            await self._http.close()
            raise
        if self.port == 0:
            self.port = runner.addresses[0][1]
        self._runner = runner
        self._tmp = Path(tempfile.mkdtemp(prefix=f"{self.provider}-network-"))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait(self, call_id: str, timeout_s: float = 30.0) -> CallT:
        """The call (:meth:`call`) once it is over."""
        call = self.call(call_id)
        async with asyncio.timeout(timeout_s):
            await call.done.wait()
        return call

    def _say(self, call: CallT, line: str) -> None:
        text = f"[{time.monotonic() - call.created_at:7.3f}s] {self.label(call)}… {line}"
        call.log.append(text)
        if self.on_event is not None:
            self.on_event(text)
