"""The deployment files agree with each other and with the gateway (runs in `make test`).

hadolint and kubernetes-validate (`make lint`) check each file against its own rules; these check what
no schema knows: that compose services depend on services that exist, in the same profiles, with
health checks; that the demo needs no keys and its parts point at each other; that every variable set
for the gateway is one it reads; that the Kubernetes objects select, reference and size each other
consistently; that the dialplans shipped in the ConfigMap load.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.caller import cli as caller_cli
from gateway.dialplan.loader import load_dialplans
from gateway.emulator import cli as emulator_cli
from gateway.settings import Settings
from gateway.tools.loader import build_registry

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
#: Prefixes of the variables the gateway reads (gateway/settings.py and the CLIs).
GATEWAY_PREFIXES = (
    "GATEWAY_",
    "GEMINI_",
    "GOOGLE_",
    "TWILIO_",
    "TELNYX_",
    "PLIVO_",
    "EXOTEL_",
    "SIGNALWIRE_",
)


def _gateway_env_names() -> set[str]:
    """Every upper-case string literal in gateway/: a superset of the variables it reads."""
    names: set[str] = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        names.update(re.findall(r"[\"']([A-Z][A-Z0-9_]{2,})[\"']", path.read_text()))
    return names


def _check_env_names(where: str, names: set[str]) -> None:
    known = _gateway_env_names()
    unknown = sorted(n for n in names if n.startswith(GATEWAY_PREFIXES) and n not in known)
    assert not unknown, f"{where} sets variables the gateway does not read: {unknown}"


# --- Dockerfile ---


def _dockerfile_env() -> dict[str, str]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_dockerfile_env_is_read_by_the_gateway() -> None:
    env = _dockerfile_env()
    assert env["GATEWAY_HOST"] == "0.0.0.0"
    _check_env_names("docker/Dockerfile", set(env))
    assert not [k for k in env if re.search(r"KEY|TOKEN|SECRET|PASSWORD", k)], "no secret in the image"


# --- compose ---


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


def _services(compose: dict[str, Any], profile: str | None) -> dict[str, dict[str, Any]]:
    """The services `docker compose [--profile P] up` starts."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if "profiles" not in svc or (profile is not None and profile in svc["profiles"])
    }


def _ours(svc: dict[str, Any]) -> bool:
    """Built from docker/Dockerfile (so it has the image's HEALTHCHECK)."""
    return svc.get("build", {}).get("dockerfile") == "docker/Dockerfile"


@pytest.mark.parametrize("profile", ["prod", "demo"])
def test_compose_dependencies_exist_and_are_healthy(compose: dict[str, Any], profile: str) -> None:
    services = _services(compose, profile)
    for name, svc in services.items():
        for target, rule in (svc.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on {target}, which --profile {profile} does not start"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target] or _ours(services[target]), (
                    f"{name} waits for {target} to be healthy, which has no health check"
                )
            else:
                assert condition == "service_completed_successfully", condition
                assert services[target].get("restart", "no") == "no"
    for name, svc in services.items():
        if "build" in svc:
            assert (DOCKER / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file(), name
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DOCKER / source).is_file(), f"{name} mounts {source}, which is missing"
            else:
                assert source in compose["volumes"], f"{name} mounts undeclared volume {source}"


def _interpolations(text: str) -> list[tuple[str, str]]:
    """(name, operator) of every ${NAME…} in the text."""
    return re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+]?)", text)


def test_compose_variables_match_env_example() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    example = (DOCKER / ".env.example").read_text()
    declared = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    used = _interpolations(text)
    # Every variable has a default, so `--profile demo up` needs no .env at all; the production
    # gateway refuses to start without its key by itself.
    assert all(op == ":-" for _, op in used), used
    names = {name for name, _ in used}
    assert names <= declared, f"not in docker/.env.example: {sorted(names - declared)}"
    assert declared - names == {"COMPOSE_PROFILES"}, sorted(declared - names)
    assert re.search(r"^COMPOSE_PROFILES=prod$", example, re.MULTILINE)
    assert re.search(r"^GEMINI_API_KEY=$", example, re.MULTILINE), "no real value in the example"


def _env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    return {k: str(v) for k, v in env.items()}


def test_compose_gateway_env_is_read_by_the_gateway(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if _ours(svc):
            _check_env_names(f"compose service {name}", set(_env(svc)))
    prod = compose["services"]["gateway"]
    env = _env(prod)
    assert urlsplit(env["GATEWAY_DATABASE_URL"]).hostname == "postgres"
    assert urlsplit(env["GATEWAY_REDIS_URL"]).hostname == "redis"
    assert "GEMINI_BASE_URL" not in env, "the production gateway talks to Google, never to a stand-in"
    for secret in ("GEMINI_API_KEY", "TWILIO_AUTH_TOKEN", "GATEWAY_SECRET", "GATEWAY_ADMIN_TOKEN"):
        assert env[secret] == f"${{{secret}:-}}", f"{secret} comes from .env"
    # Longer than the drain, or calls would be killed mid-sentence on `docker compose down`.
    drain = int(re.search(r":-(\d+)", env["GATEWAY_DRAIN_S"]).group(1))  # type: ignore[union-attr]
    assert int(prod["stop_grace_period"].rstrip("s")) > drain


def test_caddy_proxies_to_the_gateway(compose: dict[str, Any]) -> None:
    caddyfile = (DOCKER / "Caddyfile").read_text()
    upstream = re.search(r"reverse_proxy\s+(\S+):(\d+)", caddyfile)
    assert upstream is not None
    assert upstream.group(1) in _services(compose, "prod")
    assert upstream.group(2) == _dockerfile_env()["GATEWAY_PORT"]
    proxy = compose["services"]["proxy"]
    assert "{$GATEWAY_DOMAIN}" in caddyfile
    assert "GATEWAY_DOMAIN" in _env(proxy)
    assert "https://${GATEWAY_DOMAIN" in _env(compose["services"]["gateway"])["GATEWAY_PUBLIC_URL"]


def _parse(configure: Any, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    configure(parser)
    return parser.parse_args(argv)


def test_demo_converses_without_keys(compose: dict[str, Any]) -> None:
    """The demo's parts point at each other: caller → demo gateway → emulator over verified wss://."""
    demo = _services(compose, "demo")
    assert not [n for n, s in demo.items() if s.get("profiles") == ["prod"]]
    gateway = _env(demo["demo-gateway"])
    emulator = _parse(emulator_cli.configure, demo["emulator"]["command"][1:])
    assert demo["emulator"]["command"][0] == "emulator"
    live = urlsplit(gateway["GEMINI_BASE_URL"])
    assert live.scheme == "wss"
    assert live.hostname == "emulator"
    assert live.port == emulator.port
    assert emulator.api_key == gateway["GEMINI_API_KEY"]
    assert emulator.tls_cert
    assert emulator.tls_key
    # The CA the gateway trusts is the one demo-pki writes, for the name the gateway dials.
    pki_volume = demo["demo-pki"]["volumes"][0].split(":")[0]
    assert any(v.startswith(f"{pki_volume}:/pki") for v in demo["demo-gateway"]["volumes"])
    assert gateway["SSL_CERT_FILE"] == "/pki/ca.pem"
    assert "hosts=('emulator',)" in demo["demo-pki"]["entrypoint"][-1]

    caller_svc = demo["caller"]
    assert caller_svc["command"][0] == "call"
    caller = _parse(caller_cli.configure, caller_svc["command"][1:])
    target = urlsplit(caller.gateway)
    assert target.hostname == "demo-gateway"
    assert target.port == int(_dockerfile_env()["GATEWAY_PORT"])
    assert caller.play == "builtin:hello"
    assert _env(caller_svc)["TWILIO_AUTH_TOKEN"] == gateway["TWILIO_AUTH_TOKEN"]
    assert _env(caller_svc)["GATEWAY_ADMIN_TOKEN"] == gateway["GATEWAY_ADMIN_TOKEN"]


# --- Kubernetes ---


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    """kind → object, from every manifest but the kustomization."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in yaml.safe_load_all(path.read_text()):
                objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"].split(":")[0]
    assert [i["name"] for i in kustomization["images"]] == [image]


def _container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    pod = k8s["Deployment/gemini-phone-gateway"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return dict(container)


def test_deployment_drains_and_probes(k8s: dict[str, dict[str, Any]]) -> None:
    deployment = k8s["Deployment/gemini-phone-gateway"]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(k8s)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    config = k8s["ConfigMap/gateway-config"]["data"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(config["GATEWAY_DRAIN_S"]) + int(pre_stop[1])
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    user = pod["securityContext"]
    assert user["runAsNonRoot"]
    assert f"{user['runAsUser']}:{user['runAsGroup']}" == "10001:10001"
    assert "USER 10001:10001" in (DOCKER / "Dockerfile").read_text()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_deployment_references_resolve(k8s: dict[str, dict[str, Any]]) -> None:
    container = _container(k8s)
    pod = k8s["Deployment/gemini-phone-gateway"]["spec"]["template"]["spec"]
    secret = k8s["Secret/gateway-secrets"]["stringData"]
    assert all(value == "" for value in secret.values()), "the example Secret holds no real values"
    names = set()
    for var in container["env"]:
        ref = var["valueFrom"]["secretKeyRef"]
        assert f"Secret/{ref['name']}" in k8s, var
        assert ref["key"] in secret, var
        names.add(var["name"])
    assert {"GEMINI_API_KEY", "GATEWAY_SECRET", "GATEWAY_ADMIN_TOKEN", "TWILIO_AUTH_TOKEN"} <= names
    for source in container["envFrom"]:
        configmap = k8s[f"ConfigMap/{source['configMapRef']['name']}"]
        names |= set(configmap["data"])
    _check_env_names("docker/k8s", names)
    env = _dockerfile_env()
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["dialplans"] == env["GATEWAY_DIALPLANS"]
    assert f"ConfigMap/{volumes['dialplans']['configMap']['name']}" in k8s
    assert mounts["data"] == env["GATEWAY_DATA_DIR"]
    assert {p["containerPort"] for p in container["ports"]} == {int(env["GATEWAY_PORT"])}


def test_service_pdb_hpa_ingress_select_the_pods(k8s: dict[str, dict[str, Any]]) -> None:
    deployment = k8s["Deployment/gemini-phone-gateway"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = k8s["Service/gemini-phone-gateway"]
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in _container(k8s)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    assert k8s["PodDisruptionBudget/gemini-phone-gateway"]["spec"]["selector"]["matchLabels"].items() <= (
        labels.items()
    )
    hpa = k8s["HorizontalPodAutoscaler/gemini-phone-gateway"]["spec"]
    target = hpa["scaleTargetRef"]
    assert f"{target['kind']}/{target['name']}" in k8s
    [metric] = hpa["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert f'"{name}"' in (ROOT / "gateway" / "metrics.py").read_text(), f"the gateway exports no {name}"
    assert hpa["minReplicas"] >= 2
    for rule in k8s["Ingress/gemini-phone-gateway"]["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    annotations = k8s["Ingress/gemini-phone-gateway"]["metadata"]["annotations"]
    # Longer than the longest call (GATEWAY_MAX_CALL_S), or nginx cuts the media stream.
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > Settings().max_call_s


def test_configmap_dialplans_load(k8s: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    for name, text in k8s["ConfigMap/gateway-dialplans"]["data"].items():
        (tmp_path / name).write_text(text)
    book = load_dialplans(tmp_path, known_tools=build_registry(Settings()).names())
    assert [plan.name for plan in book.plans if plan.default] == ["default"]
