"""The container image, built and run for real with podman, answering a call placed from the host.

``make test-container`` runs it (plain ``make test`` deselects the ``container`` marker): root, podman,
runc and debootstrap, which ``.ci/run`` installs. No registry is needed: the base image is made with
``docker/base-image.sh`` (debootstrap from the Debian mirror apt uses) and kept between runs; the project
image is built from docker/Dockerfile with ``--pull=never``. The containerised gateway reaches a Gemini
Live emulator on the host over ``wss://`` and verifies its certificate against a throw-away CA mounted
into the container and trusted through ``SSL_CERT_FILE``: the road production takes to Google.
"""

from __future__ import annotations

import json
import os
import re
import resource
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.emulator.pki import TestPKI, make_pki

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("GATEWAY_TEST_BASE_IMAGE", "localhost/gateway-base:bookworm")
IMAGE = "localhost/gemini-phone-gateway:test"
#: The name the container reaches the host by (podman adds it to the container's /etc/hosts).
HOST_NAME = "host.containers.internal"

# runc rather than crun (this kind of machine mixes cgroup v1 and v2, which crun refuses), cgroupfs and
# a file event log (no systemd here). Given on every call so no system configuration is needed.
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]


def _ulimits() -> list[str]:
    """Limits no higher than the host's: podman's defaults (nofile 1048576…) exceed the hard limits
    of machines like this one, and runc then fails with "error setting rlimits … operation not
    permitted". nproc stays well under the 32768 podman's conmon runs with here."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 1048576 if hard == resource.RLIM_INFINITY else min(hard, 1048576)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=4096:4096"]


def _podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(
            f"podman {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{_quiet(result.stderr)[-4000:]}"
        )
    return result


def _quiet(stderr: str) -> str:
    """podman's stderr without its complaint that there is no systemd to time healthchecks."""
    return "\n".join(line for line in stderr.splitlines() if "unable to get systemd connection" not in line)


def _phase(name: str, started: float) -> None:
    print(f"\n[container test] {name}: {time.monotonic() - started:.1f} s", flush=True)


@pytest.fixture(scope="module")
def image() -> str:
    """The project image, built from docker/Dockerfile on the local debootstrap base."""
    if os.geteuid() != 0:
        pytest.fail("the container test needs root (rootful podman); run `make test-container` as root")
    for tool in ("podman", "runc", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: .ci/run installs podman, runc and debootstrap (apt)")
    started = time.monotonic()
    base = subprocess.run(
        [str(ROOT / "docker" / "base-image.sh"), BASE_IMAGE], capture_output=True, text=True, timeout=900
    )
    if base.returncode != 0:
        pytest.fail(f"docker/base-image.sh failed ({base.returncode}):\n{base.stdout}\n{base.stderr}")
    print(f"\n{base.stdout.strip()}")
    _phase("base image ready", started)
    started = time.monotonic()
    build = [
        "build",
        "--pull=never",
        # Keeps HEALTHCHECK (the OCI image format has no field for it).
        "--format=docker",
        f"--build-arg=BASE_IMAGE={BASE_IMAGE}",
        "--file",
        str(ROOT / "docker" / "Dockerfile"),
        "--tag",
        IMAGE,
        *_ulimits(),
    ]
    # Where HTTPS is intercepted by a proxy with its own CA (as here), pip in the build must trust what
    # the host trusts: Debian's pip reads /etc/ssl/certs/ca-certificates.crt.
    if Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        build += ["--volume", "/etc/ssl/certs:/etc/ssl/certs:ro"]
    _podman(*build, str(ROOT), timeout=900)
    # Earlier builds' images and layers, untagged now: without this every run leaves ~1 GB behind.
    _podman("image", "prune", "--force")
    _phase("project image built", started)
    return IMAGE


@dataclass
class Emulator:
    url: str
    api_key: str
    pki: TestPKI


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """`gateway emulator` on the host, serving wss:// with a certificate for the container's name of it.

    It listens on every address (the podman bridge appears only once a container runs) and accepts
    only its own random API key."""
    pki = make_pki(tmp_path_factory.mktemp("pki"), hosts=(HOST_NAME, "127.0.0.1", "localhost"))
    pki.ca_file.chmod(0o644)  # read by the container's unprivileged user
    key = secrets.token_hex(16)
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                *_gateway_cli(),
                "emulator",
                "--host=0.0.0.0",
                "--port=0",
                f"--tls-cert={pki.cert_file}",
                f"--tls-key={pki.key_file}",
                f"--api-key={key}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while (found := re.search(r"wss://[^:/\s]+:(\d+)", log.read_text())) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the emulator did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield Emulator(f"wss://{HOST_NAME}:{found.group(1)}", key, pki)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _gateway_cli() -> list[str]:
    """The host's `gateway` command, from the environment running the tests."""
    script = Path(sys.executable).with_name("gateway")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


@dataclass
class Running:
    name: str
    url: str
    twilio_token: str
    admin_token: str


@pytest.fixture(scope="module")
def container(image: str, emulator: Emulator) -> Iterator[Running]:
    """The image run as a deployment would run it: read-only root, no capabilities, secrets by env."""
    name = f"gateway-test-{secrets.token_hex(4)}"
    twilio, admin = secrets.token_hex(16), secrets.token_hex(16)
    started = time.monotonic()
    _podman(
        "run",
        "--detach",
        f"--name={name}",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        *_ulimits(),
        "--publish=127.0.0.1::8080",
        f"--volume={emulator.pki.ca_file}:/run/test-ca.pem:ro",
        "--env=SSL_CERT_FILE=/run/test-ca.pem",
        f"--env=GEMINI_BASE_URL={emulator.url}",
        f"--env=GEMINI_API_KEY={emulator.api_key}",
        f"--env=TWILIO_AUTH_TOKEN={twilio}",
        f"--env=GATEWAY_ADMIN_TOKEN={admin}",
        f"--env=GATEWAY_SECRET={secrets.token_hex(32)}",
        image,
    )
    try:
        port = _podman("port", name, "8080/tcp").stdout.strip().rsplit(":", 1)[-1]
        url = f"http://127.0.0.1:{port}"
        _wait_healthz(name, url)
        _phase("container up (/healthz answers)", started)
        yield Running(name, url, twilio, admin)
    finally:
        logs = _podman("logs", name, check=False)
        print(f"\n--- container log ({name}) ---\n{logs.stdout[-6000:]}{_quiet(logs.stderr)[-6000:]}")
        _podman("rm", "--force", "--volumes", name, check=False)


def _get(url: str, token: str = "") -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:  # the error holds the response's socket
            return exc.code, exc.read().decode()


def _wait_healthz(name: str, url: str, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        state = _podman("inspect", "--format={{.State.Status}}", name).stdout.strip()
        if state != "running":
            logs = _podman("logs", name, check=False)
            pytest.fail(f"the container is {state}, not running:\n{logs.stdout}{_quiet(logs.stderr)}")
        try:
            if _get(f"{url}/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"/healthz did not answer within {within_s:g} s")


def _inspect(name: str, what: str = "") -> Any:
    return json.loads(_podman("inspect", *([what] if what else []), name).stdout)[0]


def test_image_config(image: str) -> None:
    """What the Dockerfile promises: tini as PID 1, non-root, /data volume, healthcheck, no secrets."""
    data = _inspect(image, "--type=image")
    config = data["Config"]
    assert config["Entrypoint"] == ["tini", "--", "gateway"]
    assert config["Cmd"] == ["serve"]
    assert config["User"] == "10001:10001"
    assert config["WorkingDir"] == "/app"
    assert "/data" in config["Volumes"]
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["StopSignal"] in ("SIGTERM", "15")
    healthcheck = data.get("Healthcheck") or config.get("Healthcheck")  # podman: beside Config
    assert healthcheck, "no HEALTHCHECK (built without --format=docker?)"
    assert "/healthz" in " ".join(healthcheck["Test"])
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["GATEWAY_HOST"] == "0.0.0.0"
    assert env["GATEWAY_DATA_DIR"] == "/data"
    assert env["GATEWAY_DIALPLANS"] == "/app/dialplans"
    baked = {k for k in env if re.search(r"KEY|TOKEN|SECRET|PASSWORD", k)}
    assert not baked, f"secrets baked into the image: {baked}"


def test_verifies_the_emulator_certificate(image: str, emulator: Emulator) -> None:
    """The check is real: without the test CA, `gateway doctor` in the image refuses the emulator."""
    common = [
        "run",
        "--rm",
        *_ulimits(),
        f"--env=GEMINI_BASE_URL={emulator.url}",
        f"--env=GEMINI_API_KEY={emulator.api_key}",
    ]
    refused = _podman(*common, image, "doctor", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "certificate" in refused.stdout.lower(), refused.stdout
    trusted = _podman(
        *common,
        f"--volume={emulator.pki.ca_file}:/run/test-ca.pem:ro",
        "--env=SSL_CERT_FILE=/run/test-ca.pem",
        image,
        "doctor",
        check=False,
    )
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr


def test_probes_and_signatures(container: Running) -> None:
    assert _get(f"{container.url}/healthz")[0] == 200
    assert _get(f"{container.url}/readyz")[0] == 200
    # It listens beyond loopback: an unsigned webhook is refused, operator endpoints want the token.
    unsigned = urllib.request.Request(
        f"{container.url}/twilio/voice", data=b"CallSid=CAx&To=%2B15551230000", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unsigned, timeout=5)
    refused.value.close()  # it holds the response's socket
    assert refused.value.code == 403
    assert _get(f"{container.url}/metrics")[0] in (401, 403)
    status, metrics = _get(f"{container.url}/metrics", container.admin_token)
    assert status == 200
    assert "gateway_active_calls" in metrics


def test_call_converses(container: Running) -> None:
    """A signed Twilio call from the host's `gateway call`, through the container, to the emulator."""
    started = time.monotonic()
    env = {**os.environ, "TWILIO_AUTH_TOKEN": container.twilio_token}
    env["GATEWAY_ADMIN_TOKEN"] = container.admin_token
    call = subprocess.run(
        [
            *_gateway_cli(),
            "call",
            "+15551230000",
            f"--gateway={container.url}",
            "--play=builtin:hello",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
    )
    assert call.returncode == 0, call.stdout + call.stderr
    report = json.loads(call.stdout.strip().splitlines()[-1])
    _phase("call placed and ended", started)
    assert report["answered"], report
    assert report["greeting_ms"] is not None, "no greeting heard"
    assert report["reply_ms"], "no reply to the caller's turn"
    assert report["protocol_errors"] == []
    assert report["frames_received"] > 50
    assert [t["role"] for t in report["transcript"]][:3] == ["bot", "caller", "bot"], report["transcript"]

    # The record the container wrote to its /data volume (SQLite), read inside the container.
    shown = _podman("exec", container.name, "gateway", "calls", "show", report["call_sid"], "--json")
    record = json.loads(shown.stdout)
    assert record["ended_by"] == "caller"
    roles = [turn["role"] for turn in record["turns"]]
    assert "caller" in roles, record["turns"]
    assert roles.count("bot") >= 2, record["turns"]
    assert _podman("exec", container.name, "ls", "/data/calls.db").returncode == 0


def test_healthcheck_reports_healthy(container: Running) -> None:
    """The image's own HEALTHCHECK (python + urllib), run by podman in the container."""
    _podman("healthcheck", "run", container.name)
    assert _inspect(container.name)["State"]["Health"]["Status"] == "healthy"


def test_runs_as_non_root_under_tini(container: Running) -> None:
    top = _podman("top", container.name, "pid", "ppid", "user", "args").stdout.splitlines()
    rows = [line.split(None, 3) for line in top[1:]]
    by_pid = {row[0]: row for row in rows}
    assert by_pid["1"][3].startswith("tini -- gateway serve"), top
    children = [row for row in rows if row[1] == "1"]
    assert any("gateway serve" in row[3] for row in children), top
    assert all(row[2] == "gateway" for row in rows), top
    assert _podman("exec", container.name, "id", "-u").stdout.strip() == "10001"


def test_sigterm_stops_cleanly(container: Running) -> None:
    """`podman stop` sends SIGTERM (STOPSIGNAL) to tini, which passes it on; the idle gateway drains at
    once and exits 0, long before podman's timeout would SIGKILL it (exit 137)."""
    started = time.monotonic()
    _podman("stop", "--time=60", container.name, timeout=90)
    took = time.monotonic() - started
    _phase("stopped", started)
    state = _inspect(container.name)["State"]
    assert state["ExitCode"] == 0, state
    assert took < 30, f"stopping an idle gateway took {took:.1f} s"
    logs = _podman("logs", container.name)
    assert "shutting down" in logs.stdout + logs.stderr
