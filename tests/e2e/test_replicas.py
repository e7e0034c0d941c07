"""Three real ``gateway serve`` replicas behind Debian's nginx, sharing the local Redis and PostgreSQL.

The proxy routes by path so every hop is deterministic: voice webhooks go to replica A (or to the one
named by ``?replica=`` in the webhook URL, which Twilio signs like any URL), media streams to replica B
(C when B is down: nginx's ``backup`` server), everything else (the admin API) to replica C. The
replicas reach the Gemini emulator over ``wss://`` with the test CA, verify Twilio signatures against
the proxy's public URL, and the simulated caller signs as Twilio does.

Proven here: a call whose webhook and stream land on different replicas converses (the token one signed
verifies on the other), the session preconnected at the webhook is closed at once (not at its 15 s
timer), ``GATEWAY_MAX_CALLS`` holds across replicas, the admin API on a third replica lists and hangs
up a call carried by another, and a SIGKILLed replica's places free themselves within the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.caller import CallOptions, CallReport, place_call
from gateway.emulator import Emulator
from gateway.settings import CLUSTER_NEEDS_SECRET
from tests.e2e.served import free_port
from tests.needs import unavailable

from .conftest import DEFAULT_PLAN

pytestmark = pytest.mark.e2e

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
PG_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")
TWILIO_TOKEN = "twilio-auth-token-for-the-replicas-test"
ADMIN_TOKEN = "admin-token-for-the-replicas-test"
#: Short leases keep the SIGKILL phase fast; the heartbeat runs every third of it.
LEASE_S = 1.5
MAX_CALLS = 2
TO = "+15551230000"


@dataclass
class Replica:
    name: str
    port: int
    log: Path
    proc: asyncio.subprocess.Process | None = None
    instance: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    proxy: str
    replicas: dict[str, Replica]
    access_log: Path
    extra: dict[str, Any] = field(default_factory=dict)


# --- services -------------------------------------------------------------------------------------


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    try:
        import redis.asyncio as redis_asyncio
    except ImportError:
        unavailable("the 'redis' package is not installed")
    client = redis_asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        unavailable(f"Redis is not reachable at {REDIS_URL} ({type(exc).__name__})")
    prefix = f"test-replicas:{secrets.token_hex(4)}:"
    yield prefix
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """GATEWAY_DATABASE_URL for a fresh schema of the `test` database (as tests/records/conftest.py)."""
    try:
        import psycopg
    except ImportError:
        unavailable("the 'psycopg' package is not installed")
    schema = "replicas_test_" + secrets.token_hex(4)
    try:
        admin = await psycopg.AsyncConnection.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL is not reachable at {PG_URL} ({str(exc).strip().splitlines()[0]})")
    await admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


def _nginx_config(root: Path, port: int, a: int, b: int, c: int) -> str:
    """A reverse proxy as an operator would write it for the gateway: HTTP/1.1 to the upstreams,
    WebSocket upgrade on the media path with long timeouts, X-Forwarded-* headers."""
    user = "user root;" if os.geteuid() == 0 else ""  # workers must reach the test's private folders
    forwarded = """
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $http_host;"""
    temp = "\n".join(
        f"    {kind}_temp_path {root}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 512; }}
http {{
{temp}
    log_format upstreams '$request_method $uri $status $upstream_addr';
    access_log {root}/access.log upstreams;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    map $arg_replica $voice {{ default replica_a; a replica_a; b replica_b; c replica_c; }}
    upstream replica_a {{ server 127.0.0.1:{a}; }}
    upstream replica_b {{ server 127.0.0.1:{b}; }}
    upstream replica_c {{ server 127.0.0.1:{c}; }}
    upstream media {{ server 127.0.0.1:{b} max_fails=1 fail_timeout=60s; server 127.0.0.1:{c} backup; }}
    server {{
        listen 127.0.0.1:{port};
        location = /twilio/voice {{{forwarded}
            proxy_pass http://$voice;
        }}
        location = /twilio/media {{{forwarded}
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_buffering off;
            proxy_pass http://media;
        }}
        location / {{{forwarded}
            proxy_pass http://replica_c;
        }}
    }}
}}
"""


async def _wait_ready(replica: Replica, within_s: float = 40.0) -> None:
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as http:
        while True:
            assert replica.proc is not None
            if replica.proc.returncode is not None:
                pytest.fail(f"replica {replica.name} exited {replica.proc.returncode}:\n{_tail(replica.log)}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(replica.url + "/readyz") as resp:
                    if resp.status == 200:
                        break
            if time.monotonic() > deadline:
                pytest.fail(f"replica {replica.name} not ready in {within_s}s:\n{_tail(replica.log)}")
            await asyncio.sleep(0.2)
        # Its identity in the cluster, as its own admin API says.
        async with http.get(replica.url + "/admin/calls", headers=_admin()) as resp:
            assert resp.status == 200, await resp.text()
            replica.instance = (await resp.json())["cluster"]["instance"]


@contextlib.asynccontextmanager
async def _within(seconds: float, what: str) -> AsyncIterator[None]:
    """``asyncio.timeout`` that says what did not happen."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        pytest.fail(f"{what}: not within {seconds}s")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def cluster(
    emulator: Emulator, redis_prefix: str, pg_url: str, tmp_path: Path
) -> AsyncIterator[Cluster]:
    nginx = shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if nginx is None:
        unavailable("nginx is not installed (apt-get install nginx)")
    plans = tmp_path / "dialplans"
    plans.mkdir()
    (plans / "default.toml").write_text(DEFAULT_PLAN)
    ports = {name: free_port() for name in ("a", "b", "c")}
    proxy_port = free_port()
    proxy = f"http://127.0.0.1:{proxy_port}"
    base_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "GEMINI_", "GOOGLE_", "TWILIO_"))
    }
    base_env |= {
        "GEMINI_BASE_URL": emulator.base_url,  # wss://, trusted through SSL_CERT_FILE (the test CA)
        "GEMINI_API_KEY": "test-key-not-secret",
        "GATEWAY_SECRET": secrets.token_hex(32),  # the same on every replica
        "GATEWAY_REDIS_URL": REDIS_URL,
        "GATEWAY_REDIS_PREFIX": redis_prefix,
        "GATEWAY_CLUSTER_LEASE_S": str(LEASE_S),
        "GATEWAY_DATABASE_URL": pg_url,
        "GATEWAY_PUBLIC_URL": proxy,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GATEWAY_MAX_CALLS": str(MAX_CALLS),
        "GATEWAY_LOG_FORMAT": "json",
        # Shared CI machine: load-based refusals would make the limit phase flaky; drain at once on stop.
        "GATEWAY_MAX_CPU_PERCENT": "0",
        "GATEWAY_MAX_LOOP_LAG_MS": "0",
        "GATEWAY_DRAIN_S": "0",
    }
    replicas = {name: Replica(name, port, tmp_path / f"replica-{name}.log") for name, port in ports.items()}
    root = tmp_path / "nginx"
    root.mkdir()
    (root / "nginx.conf").write_text(_nginx_config(root, proxy_port, ports["a"], ports["b"], ports["c"]))
    nginx_log = (root / "stdout.log").open("wb")
    proxy_proc = await asyncio.create_subprocess_exec(
        nginx, "-p", str(root), "-c", str(root / "nginx.conf"), "-g", "daemon off;",
        stdout=nginx_log, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    logs = []
    try:
        for replica in replicas.values():
            env = base_env | {"GATEWAY_DATA_DIR": str(tmp_path / f"data-{replica.name}")}
            log = replica.log.open("wb")
            logs.append(log)
            replica.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(replica.port),
                "--dialplans", str(plans), "--no-check", "--loop", "asyncio",
                env=env, cwd=tmp_path, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        await asyncio.gather(*(_wait_ready(r) for r in replicas.values()))
        async with aiohttp.ClientSession() as http:  # the proxy answers (and routes /readyz to C)
            for _ in range(50):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(proxy + "/readyz") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"nginx did not come up:\n{_tail(root / 'error.log')}")
        yield Cluster(proxy, replicas, root / "access.log")
    finally:
        for replica in replicas.values():
            if replica.proc is not None and replica.proc.returncode is None:
                replica.proc.send_signal(signal.SIGTERM)
        for replica in replicas.values():
            if replica.proc is not None:
                try:
                    async with asyncio.timeout(20):
                        await replica.proc.wait()
                except TimeoutError:
                    replica.proc.kill()
                    await replica.proc.wait()
        proxy_proc.send_signal(signal.SIGQUIT)
        try:
            async with asyncio.timeout(10):
                await proxy_proc.wait()
        except TimeoutError:
            proxy_proc.kill()
            await proxy_proc.wait()
        nginx_log.close()
        for log in logs:
            log.close()


# --- helpers ----------------------------------------------------------------------------------------


def _call(cluster: Cluster, *, replica: str = "", **kw: Any) -> CallOptions:
    """A call as Twilio places it through the proxy; ``replica`` picks the webhook's upstream."""
    return CallOptions(
        to=TO,
        gateway=cluster.proxy,
        auth_token=TWILIO_TOKEN,
        voice_path=f"/twilio/voice?replica={replica}" if replica else "",
        max_duration_s=60.0,
        **kw,
    )


async def _admin_get(cluster: Cluster, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession(headers=_admin()) as http, http.get(cluster.proxy + path) as resp:
        return (
            resp.status,
            await resp.json() if resp.content_type == "application/json" else await resp.text(),
        )


async def _active_on_c(cluster: Cluster) -> list[dict[str, Any]]:
    status, doc = await _admin_get(cluster, "/admin/calls")
    assert status == 200, doc
    return list(doc["active"])


async def _wait_active(cluster: Cluster, call_sids: set[str], within_s: float = 10.0) -> list[dict[str, Any]]:
    """The admin API (on replica C, through the proxy) lists every one of ``call_sids`` as active."""
    async with _within(within_s, "the admin API listing the calls"):
        while True:
            active = await _active_on_c(cluster)
            if call_sids <= {c["call_sid"] for c in active}:
                return active
            await asyncio.sleep(0.1)


async def _routed(cluster: Cluster, method: str, path: str, replica: Replica) -> None:
    """nginx's access log shows ``method path`` answered by ``replica`` (the last upstream tried; a
    WebSocket's line is written when it closes, a moment after the caller hung up)."""
    async with _within(3, "nginx's access log line"):
        while True:
            for line in cluster.access_log.read_text().splitlines():
                parts = line.split(" ", 3)
                if parts[:2] == [method, path] and parts[3].endswith(f":{replica.port}"):
                    return
            await asyncio.sleep(0.1)


async def _sid_of(task: asyncio.Task[CallReport], cluster: Cluster, before: set[str]) -> str:
    """The call SID of a call in progress: the one new active call the admin API shows."""
    async with _within(10, "the call showing in the admin API"):
        while True:
            assert not task.done(), task.result() if not task.exception() else task.exception()
            new = {c["call_sid"] for c in await _active_on_c(cluster)} - before
            if len(new) == 1:
                return new.pop()
            await asyncio.sleep(0.1)


# --- the test -----------------------------------------------------------------------------------------


async def test_three_replicas_behind_nginx(cluster: Cluster, emulator: Emulator) -> None:
    started = time.monotonic()
    a, b, c = (cluster.replicas[n] for n in ("a", "b", "c"))
    assert len({a.instance, b.instance, c.instance}) == 3

    # 1. Webhook on A, stream on B: the call converses, with the token A signed verified by B; the
    #    Gemini session A preconnected is closed as soon as B admits the stream, not at its 15 s timer.
    #    When B's stream comes first, A abandons its preconnect before it reaches Gemini: no session then.
    sessions_before = len(emulator.sessions)
    talk = asyncio.create_task(
        place_call(
            _call(
                cluster,
                play="builtin:hello",
                hangup_when_done_s=0.5,
            )
        )
    )
    async with _within(10, "the call's Gemini session carrying the caller's audio"):
        while not any(s.audio_in_bytes for s in emulator.sessions[sessions_before:]):
            # A call that ended already says why here, rather than as a timeout.
            assert not talk.done(), talk.result() if not talk.exception() else talk.exception()
            await asyncio.sleep(0.02)
    opened = time.monotonic()
    (carrying,) = [s for s in emulator.sessions[sessions_before:] if s.audio_in_bytes]
    others = [s for s in emulator.sessions[sessions_before:] if s is not carrying]
    assert len(others) <= 1, "one preconnect at most besides the session carrying the call"
    closed_after_s: float | None = None  # stays None when B's stream came first: no preconnect then
    for preconnected in others:
        async with _within(5, "the unused preconnected session closing"):
            await preconnected.closed.wait()
        closed_after_s = time.monotonic() - opened
        assert not talk.done(), "the preconnected session closed while the call was still running"
        assert closed_after_s < 2.0, f"the unused preconnect lived {closed_after_s:.1f}s"
    report = await talk
    # A preconnect that reached Gemini late is closed too, and never heard the caller.
    assert all(
        s.closed.is_set() and not s.audio_in_bytes
        for s in emulator.sessions[sessions_before:]
        if s is not carrying
    )
    assert report.protocol_errors == []
    assert report.answered
    assert report.greeting_ms is not None
    assert report.reply_ms, "the caller's hello got an answer"
    assert report.ended_by == "caller"
    # The record, in the shared PostgreSQL, read through replica C: written by B, with the transcript.
    async with _within(
        10, "the call's record ending in PostgreSQL"
    ):  # the writer batches: the record lands a moment after the call
        while True:
            _, record = await _admin_get(cluster, f"/admin/calls/{report.call_sid}")
            if isinstance(record, dict) and record["state"] == "ended":
                break
            await asyncio.sleep(0.1)
    assert (record["state"], record["instance"]) == ("ended", b.instance)
    assert [turn["role"] for turn in record["turns"]] == ["bot", "caller", "bot"]
    await _routed(cluster, "POST", "/twilio/voice", a)
    await _routed(cluster, "GET", "/twilio/media", b)

    # 2. The admin API on C lists a call B carries, finds it, and hangs it up: the caller hears it end.
    quiet = asyncio.create_task(place_call(_call(cluster, hangup_after_s=30.0)))
    sid = await _sid_of(quiet, cluster, set())
    active = await _wait_active(cluster, {sid})
    (listed,) = [call for call in active if call["call_sid"] == sid]
    assert listed["instance"] == b.instance
    status, doc = await _admin_get(cluster, f"/admin/calls/{sid}")
    assert (status, doc["state"], doc["instance"]) == (200, "active", b.instance)
    _, listing = await _admin_get(cluster, "/admin/calls")
    assert listing["cluster"]["instance"] == c.instance
    assert set(listing["cluster"]["instances"]) == {a.instance, b.instance, c.instance}
    async with (
        aiohttp.ClientSession(headers=_admin()) as http,
        http.post(f"{cluster.proxy}/admin/calls/{sid}/hangup", json={}) as resp,
    ):
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["instance"] == b.instance
    async with _within(5, "the caller hearing the admin hang-up"):
        hung_up = await quiet
    assert hung_up.ended_by == "gateway"
    assert hung_up.duration_s < 20
    async with (
        aiohttp.ClientSession(headers=_admin()) as http,
        http.post(f"{cluster.proxy}/admin/calls/CA{'0' * 32}/hangup", json={}) as resp,
    ):
        assert resp.status == 404

    # 3. GATEWAY_MAX_CALLS=2 holds across replicas: two calls (webhooks on A and C, streams on B), and a
    #    third is refused politely at its webhook whichever replica answers it.
    first = asyncio.create_task(place_call(_call(cluster, hangup_after_s=30.0)))
    one = await _sid_of(first, cluster, set())
    second = asyncio.create_task(place_call(_call(cluster, replica="c", hangup_after_s=30.0)))
    two = await _sid_of(second, cluster, {one})
    await _wait_active(cluster, {one, two})
    for name in ("a", "b", "c"):
        refused = await place_call(_call(cluster, replica=name, hangup_after_s=5.0))
        assert not refused.answered, f"a third call was admitted through replica {name}"
        assert refused.after_stream == ["Say", "Hangup"], refused.after_stream

    # 4. SIGKILL B mid-call: its places free themselves within the lease, new calls are admitted (their
    #    streams now reach C, nginx's backup for the media path), and B's calls leave the listing.
    assert b.proc is not None
    b.proc.send_signal(signal.SIGKILL)
    await b.proc.wait()
    killed = time.monotonic()
    admitted: CallReport | None = None
    attempts = 0
    while admitted is None:
        assert time.monotonic() - killed < LEASE_S + 5.0, "the killed replica's places were never freed"
        attempts += 1
        freed_after_s = time.monotonic() - killed
        attempt = await place_call(_call(cluster, hangup_after_s=2.0))
        if attempt.answered:
            admitted = attempt
        else:
            await asyncio.sleep(0.2)
    assert admitted.greeting_ms is not None, "the call admitted after the kill converses (C has it)"
    assert admitted.protocol_errors == []
    assert admitted.ended_by == "caller"
    await _routed(cluster, "GET", "/twilio/media", c)
    assert freed_after_s < LEASE_S + 5.0
    async with _within(LEASE_S + 3, "the killed replica leaving the listing"):
        while True:
            _, listing = await _admin_get(cluster, "/admin/calls")
            if b.instance not in listing["cluster"]["instances"]:
                break
            await asyncio.sleep(0.1)
    assert not [call for call in listing["active"] if call["instance"] == b.instance]
    for task in (first, second):
        async with _within(10, "the calls on the killed replica ending"):
            cut = await task
        assert cut.answered
    preconnect = (
        "B's stream came before A's preconnect reached Gemini (none opened)"
        if closed_after_s is None
        else f"the unused preconnect was closed {closed_after_s * 1000:.0f} ms after the stream's own "
        "session showed (20 ms polls)"
    )
    print(
        f"\nreplicas test: places freed {freed_after_s:.2f}s after SIGKILL (lease {LEASE_S}s, "
        f"{attempts} attempts); {preconnect}; whole test {time.monotonic() - started:.1f}s"
    )


async def test_a_replica_without_the_shared_secret_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "GEMINI_", "GOOGLE_"))}
    env |= {"GATEWAY_REDIS_URL": REDIS_URL, "GATEWAY_DATA_DIR": str(tmp_path / "data")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--emulator", "--port", str(free_port()),
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 2
    assert err.decode().strip() == f"gateway: {CLUSTER_NEEDS_SECRET}"
    assert "Traceback" not in out.decode() + err.decode()
