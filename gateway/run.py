"""`gateway serve`: run the gateway against Gemini Live, or on the local emulator when asked to.

The emulator is never a silent default: without credentials ``serve`` refuses to start unless given
``--emulator`` (what `make run` passes when no key is set), so a deployment that forgot its key does
not answer real callers with the echo persona. With credentials, the start-up check of
:mod:`gateway.doctor` runs first (``--no-check`` skips it).

This module sits above the product and the stand-ins: it is the one place allowed to start both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from gateway import log as gateway_log
from gateway.audio import resample
from gateway.dialplan.store import DialplanStore
from gateway.errors import ConfigError
from gateway.process import claim_port, tune_malloc
from gateway.security.sqlite_guard import SqliteReplayGuard
from gateway.security.tokens import StreamTokens
from gateway.server.access import listens_on_loopback
from gateway.server.app import create_app
from gateway.server.connections import GatewayRunner, raise_file_limit
from gateway.server.drain import drain
from gateway.server.limits import FileBudget
from gateway.server.outbound import DIALERS
from gateway.server.state import LIMITS, STREAM_TOKENS
from gateway.settings import DEFAULT_MODEL, Settings
from gateway.tools.loader import build_registry
from gateway.workers import LOOPS, run_loop, serve_workers

if TYPE_CHECKING:
    from gateway.emulator import Emulator

logger = logging.getLogger("gateway")

#: The key the gateway presents to its embedded emulator (which accepts any key); not a secret.
EMULATOR_KEY = "local-emulator"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", help="listen address (GATEWAY_HOST, default 0.0.0.0; 127.0.0.1 with --emulator)"
    )
    parser.add_argument("--port", type=int, help="listen port (GATEWAY_PORT, default 8080)")
    parser.add_argument(
        "--dialplans", type=Path, help="dialplan folder (GATEWAY_DIALPLANS, default dialplans)"
    )
    parser.add_argument(
        "--emulator",
        action="store_true",
        help="answer calls with the embedded Gemini Live emulator (no key needed; never for real callers)",
    )
    parser.add_argument(
        "--emulator-port", type=int, default=0, help="port of the embedded emulator (default: any)"
    )
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip the start-up check that Gemini accepts the key and model (see `gateway doctor`)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port via SO_REUSEPORT (default 1)"
    )
    parser.add_argument(
        "--loop", choices=LOOPS, default="auto", help="event loop: uvloop when installed (auto), or force one"
    )


NO_CREDENTIALS = (
    "no Gemini credentials: set GEMINI_API_KEY (or GOOGLE_GENAI_USE_VERTEXAI=true with GOOGLE_CLOUD_PROJECT "
    "and GOOGLE_CLOUD_LOCATION), or start with --emulator to try the gateway on the local emulator"
)


def run(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    gateway_log.configure(settings.log_level, settings.log_format, settings.secrets())
    tune_malloc()
    try:
        claim_port(settings.host, settings.port)
        if not settings.embedded_emulator and not args.no_check:
            run_loop(_startup_check(settings), "asyncio")
        if args.workers != 1:
            return serve_workers(settings, args.workers, loop=args.loop, emulator_port=args.emulator_port)
        run_loop(serve(settings, emulator_port=args.emulator_port), args.loop)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    overrides: dict[str, object] = {"embedded_emulator": bool(args.emulator)}
    if args.host:
        overrides["host"] = args.host
    elif args.emulator and "GATEWAY_HOST" not in os.environ:
        # Trying the gateway on the emulator is a local affair: listen on this machine only, so
        # `gateway call` and /admin/ work from it unsigned, as with `make run` (README, Security).
        overrides["host"] = "127.0.0.1"
    if args.port:
        overrides["port"] = args.port
    if args.dialplans:
        overrides["dialplan_dir"] = args.dialplans
    if not settings.gemini_model:
        overrides["gemini_model"] = DEFAULT_MODEL
    settings = settings.with_(**overrides)
    if not settings.embedded_emulator and not settings.gemini_api_key and not settings.vertex:
        raise ConfigError(NO_CREDENTIALS)
    if (problem := settings.cluster_problem()) is not None:  # several replicas share one secret
        raise ConfigError(problem)
    return settings


async def _startup_check(settings: Settings) -> None:
    """Refuse to start on a configuration Gemini rejects; only warn when the network is the problem."""
    from gateway.doctor import diagnose, dialplan_models
    from gateway.server.app import live_endpoint

    endpoint = live_endpoint(settings)
    try:
        report = await diagnose(settings, endpoint, dialplan_models(settings))
    finally:
        await endpoint.aclose()
    if report.ok:
        logger.info("start-up check passed", extra={"endpoint": report.where})
        return
    failure = report.config_failure
    if failure is not None:
        raise ConfigError(
            f"start-up check failed ({failure.check}): {failure.detail}\n{report.text()}\n"
            "(gateway doctor repeats these checks; --no-check starts anyway)"
        )
    logger.warning("start-up check could not reach Gemini; starting anyway", extra={"report": report.text()})


async def serve(
    settings: Settings,
    *,
    emulator_port: int = 0,
    reuse_port: bool = False,
    replay_db: Path | None = None,
    banner: bool = True,
) -> None:
    """Run until SIGINT/SIGTERM, then drain the calls (gateway/server/drain.py).
    ``reuse_port``/``replay_db``: as one of several workers (gateway.workers)."""
    before, files, hard = raise_file_limit()  # sockets are files: 1024 would stop us at ~1000 sockets
    if files > before:
        logger.info("open-file limit raised to the hard limit", extra={"from": before, "to": files})
    tools = build_registry(settings)  # dialplans name tools: check them against what is registered
    dialplans = DialplanStore(settings.dialplan_dir, known_tools=tools.names())
    async with contextlib.AsyncExitStack() as stack:
        if settings.embedded_emulator:
            from gateway.emulator import Emulator  # a stand-in: imported only when it is used

            emulator = await stack.enter_async_context(_started(Emulator(), emulator_port))
            settings = settings.with_(gemini_url=emulator.base_url, gemini_api_key=EMULATOR_KEY)
        app = create_app(settings, dialplans=dialplans, tools=tools)
        if replay_db is not None and not settings.redis_url:
            guard = SqliteReplayGuard(replay_db)  # single use across workers, see gateway.workers
            app[STREAM_TOKENS] = StreamTokens(settings.gateway_secret.encode(), guard=guard)
            stack.push_async_callback(guard.close)
        runner = GatewayRunner(app, handle_signals=False, shutdown_timeout=10.0)  # counts connections
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None)
        try:
            await site.start()
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's own text repeats the address
            raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {why}") from None
        # Everything loaded so far (modules, classes, the app) lives as long as the process: move it out
        # of the cyclic GC's sight, so a full collection scans only the calls' objects. At 250 calls a
        # full collection paused the event loop for ~58 ms with it, ~25 ms without (README, Performance).
        gc.collect()
        gc.freeze()
        budget = app[LIMITS].budget
        _log_capacity(settings, budget, hard)
        _log_operator_access(settings)
        _log_outbound_credentials(settings, dialplans)
        if banner:
            _banner(settings, dialplans, budget)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        logger.info("shutting down", extra={"drain_s": settings.drain_s})
        stop.clear()  # a second SIGTERM or Ctrl-C cuts the drain short
        await drain(app, settings.drain_s, interrupted=stop)


@contextlib.asynccontextmanager
async def _started(emulator: Emulator, port: int) -> AsyncIterator[Emulator]:
    await emulator.start(host="127.0.0.1", port=port)
    try:
        yield emulator
    finally:
        await emulator.stop()


def _log_capacity(settings: Settings, budget: FileBudget, hard: int) -> None:
    """Say what the open-file limit allows, and warn when it allows fewer calls than configured or when
    the resampler runs without its C loop."""
    logger.info(
        budget.describe(),
        extra={"calls": budget.calls, "connections": budget.connections, "open_files": budget.files},
    )
    if not resample.COMPILED:
        logger.warning(
            "the resampler's C extension is not built, so every call resamples in NumPy (same audio, "
            "about 10 % more CPU per call): install a C compiler and Python's headers, then reinstall "
            "(GATEWAY_BUILD_EXTENSION=yes makes a failed build an error)"
        )
    if settings.max_calls and budget.calls < settings.max_calls:
        logger.warning(
            f"GATEWAY_MAX_CALLS={settings.max_calls}, but the open-file limit ({budget.files}, hard "
            f"{hard or 'unlimited'}) leaves room for {budget.calls} calls: calls over that get the "
            "fallback message. Raise the hard limit (ulimit -Hn, LimitNOFILE= in systemd) to allow more."
        )


def _admin_access(settings: Settings) -> str:
    """Who may use /admin and /metrics, in words (gateway/server/access.py decides)."""
    if settings.admin_token:
        return "need Authorization: Bearer $GATEWAY_ADMIN_TOKEN"
    if listens_on_loopback(settings):
        return "this machine only, not through a proxy"
    return "OFF: set GATEWAY_ADMIN_TOKEN (listening beyond loopback), or --host 127.0.0.1"


def _log_operator_access(settings: Settings) -> None:
    """Listening beyond loopback without tokens: say at start what is refused to whom, and the fix."""
    if listens_on_loopback(settings):
        return
    if not settings.admin_token:
        logger.warning(
            f"listening on {settings.host} with no GATEWAY_ADMIN_TOKEN: /admin and /metrics are refused to "
            "every client, local ones too (a proxy on this host would make anyone look local). Set "
            "GATEWAY_ADMIN_TOKEN and send Authorization: Bearer <token>, or listen on 127.0.0.1."
        )
    if not settings.twilio_auth_token and not settings.allow_unsigned_webhooks:
        logger.warning(
            f"listening on {settings.host} with no TWILIO_AUTH_TOKEN: every voice webhook is refused, "
            "local ones too. Set TWILIO_AUTH_TOKEN, or listen on 127.0.0.1 for local experiments."
        )


def _log_outbound_credentials(settings: Settings, dialplans: DialplanStore) -> None:
    """A plan that places calls through a provider whose credentials are missing: said at start, with
    the variables to set, rather than at the first `gateway dial` (a 503 saying the same). A warning
    for a deployment; on the embedded emulator (the try-out) it is only information."""
    level = logging.INFO if settings.embedded_emulator else logging.WARNING
    for plan in dialplans.current.plans:
        if plan.outbound is not None and (why := DIALERS[plan.outbound.provider].unavailable(settings)):
            logger.log(
                level, f"dialplan {plan.name!r} places calls through {plan.outbound.provider}, but {why}"
            )


def _banner(settings: Settings, dialplans: DialplanStore, budget: FileBudget) -> None:
    local = f"http://127.0.0.1:{settings.port}"
    lines = [
        "",
        f"  Gemini phone gateway listening on {settings.host}:{settings.port}",
        f"  dialplans: {', '.join(p.name for p in dialplans.current.plans)} (from {settings.dialplan_dir}/)",
    ]
    if settings.embedded_emulator:
        lines += [
            f"  --emulator: calls are answered by the embedded Gemini Live emulator at {settings.gemini_url}",
            "  (it greets, then plays each thing you say back to you). Not Gemini: set GEMINI_API_KEY and",
            "  start without --emulator to talk to the real model.",
        ]
    else:
        lines += [f"  Gemini Live: {settings.gemini_url} (default model {settings.gemini_model})"]
    lines += [
        "",
        "  Try a call from another terminal:",
        f"    .venv/bin/gateway call +15551230000 --gateway {local} \\",
        "        --play builtin:hello --record heard.wav --json",
        f"  or talk to it from this browser: {local}/phone",
        "",
        f"  Live calls and records: {local}/admin/   metrics: {local}/metrics",
        f"  (admin, metrics and the phone page: {_admin_access(settings)})",
        f"  {budget.describe()}",
        "",
    ]
    print("\n".join(lines), flush=True)
    if not settings.twilio_auth_token:
        logger.warning(
            "TWILIO_AUTH_TOKEN is not set: voice webhook signatures are NOT verified, so unsigned "
            "webhooks are answered for direct loopback clients of a loopback-only gateway "
            "(GATEWAY_ALLOW_UNSIGNED=1 lifts that). Set it before exposing this gateway to the internet."
        )
