"""`gateway doctor`: can this configuration reach Gemini Live? One line per check, and what is wrong.

The same checks run when ``gateway serve`` starts (``--no-check`` skips them): a bad key, an unknown
model or a certificate that does not verify stops the start with the line that says so, instead of
every call failing later. A network that is down at that moment only warns: it may come back.

Checks, each built on the one before (a later one is skipped when an earlier one failed):

* **reachable** — the host resolves and accepts a TCP connection;
* **TLS** — the handshake verifies the certificate against the trust store (``SSL_CERT_FILE``…);
* **authenticated** — the credential is accepted (API key, or Vertex AI's access token);
* **model accepted** — a Live ``setup`` for the default model (and each model a dialplan names)
  reaches ``setupComplete``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from websockets.exceptions import InvalidStatus

from gateway.dialplan.store import DialplanStore
from gateway.errors import ConfigError, GatewayError, LiveConnectError
from gateway.gemini.messages import SessionConfig
from gateway.gemini.session import LiveEndpoint, LiveSession
from gateway.settings import DEFAULT_MODEL, Settings

__all__ = ["Finding", "Report", "diagnose"]

Status = Literal["ok", "FAIL", "skip"]
#: A failed check of this kind is the configuration's fault: retrying will not help.
Kind = Literal["network", "config"]

_CHECKS = ("reachable", "TLS", "authenticated", "model accepted")
#: Close reasons (and HTTP statuses) that mean the credential, not the request, was refused.
_AUTH_WORDS = ("api key", "credential", "unauthenticated", "permission", "token", "authoriz")


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    status: Status
    detail: str
    kind: Kind = "config"

    def line(self) -> str:
        return f"  {self.status:<5} {self.check:<15} {self.detail}"


@dataclass(slots=True)
class Report:
    where: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.status != "FAIL" for f in self.findings)

    @property
    def config_failure(self) -> Finding | None:
        """The first failure that is the configuration's (not the network's) fault."""
        return next((f for f in self.findings if f.status == "FAIL" and f.kind == "config"), None)

    def text(self) -> str:
        return "\n".join([self.where, *(f.line() for f in self.findings)])


def _credential_name(settings: Settings) -> str:
    if settings.vertex:
        return "Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS)"
    return "GEMINI_API_KEY"


async def diagnose(
    settings: Settings,
    endpoint: LiveEndpoint,
    models: tuple[str, ...] = (),
    *,
    timeout_s: float = 10.0,
) -> Report:
    """Run the checks against ``endpoint`` with the default model and ``models``; never raises."""
    default = settings.gemini_model or DEFAULT_MODEL
    models = tuple(dict.fromkeys((default, *models)))
    backend = "Vertex AI" if settings.vertex else "Gemini API"
    report = Report(f"Gemini Live ({backend}) at {endpoint.redacted_url()}, model {', '.join(models)}")
    findings = report.findings

    def skip_rest(after: str) -> None:
        for check in _CHECKS[_CHECKS.index(after) + 1 :]:
            findings.append(Finding(check, "skip", f"not checked: {after} failed first"))

    parts = urlsplit(endpoint.redacted_url())
    host = parts.hostname or ""
    port = parts.port or (443 if endpoint.secure else 80)
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
        writer.close()
        findings.append(
            Finding(
                "reachable", "ok", f"{host}:{port} answered in {(time.monotonic() - started) * 1e3:.0f} ms"
            )
        )
    except socket.gaierror as exc:
        findings.append(Finding("reachable", "FAIL", f"cannot resolve {host}: {exc.strerror}", "network"))
        skip_rest("reachable")
        return report
    except (OSError, TimeoutError) as exc:
        if isinstance(exc, TimeoutError):
            why = f"no answer within {timeout_s:.0f} s"
        else:  # asyncio's own message repeats the address; the errno's text says what happened
            why = os.strerror(exc.errno) if exc.errno else str(exc)
        findings.append(Finding("reachable", "FAIL", f"cannot connect to {host}:{port}: {why}", "network"))
        skip_rest("reachable")
        return report

    if endpoint.secure and endpoint.tls is not None:
        try:
            async with asyncio.timeout(timeout_s):
                _, writer = await asyncio.open_connection(host, port, ssl=endpoint.tls, server_hostname=host)
            version = writer.get_extra_info("ssl_object").version()
            writer.close()
            findings.append(Finding("TLS", "ok", f"certificate of {host} verified ({version})"))
        except ssl.SSLCertVerificationError as exc:
            detail = f"certificate of {host} did not verify: {exc.verify_message or exc.reason}"
            detail += " (a private CA? point SSL_CERT_FILE at its certificate)"
            findings.append(Finding("TLS", "FAIL", detail))
            skip_rest("TLS")
            return report
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            findings.append(Finding("TLS", "FAIL", f"TLS handshake with {host} failed: {exc}", "network"))
            skip_rest("TLS")
            return report
    else:
        findings.append(Finding("TLS", "skip", "plain ws:// (no TLS): only for a local stand-in"))

    try:
        await endpoint.start()  # Vertex AI: the first access token; nothing to do for an API key
    except GatewayError as exc:
        findings.append(Finding("authenticated", "FAIL", f"{_credential_name(settings)}: {exc}"))
        skip_rest("authenticated")
        return report

    accepted: list[str] = []
    refused: list[Finding] = []
    for model in models:
        try:
            session = await LiveSession.connect(
                endpoint, SessionConfig(model=model), setup_timeout_s=timeout_s
            )
        except LiveConnectError as exc:
            failure = _classify(exc, settings)
            if failure.check == "authenticated":
                findings.append(failure)
                skip_rest("authenticated")
                return report
            refused.append(Finding("model accepted", "FAIL", f"{model}: {failure.detail}", failure.kind))
            continue
        except GatewayError as exc:
            refused.append(Finding("model accepted", "FAIL", f"{model}: {exc}"))
            continue
        await session.close()
        accepted.append(model)
    if accepted:
        findings.append(Finding("authenticated", "ok", f"{_credential_name(settings)} accepted"))
        findings.append(Finding("model accepted", "ok", f"setupComplete for {', '.join(accepted)}"))
    else:
        findings.append(Finding("authenticated", "skip", "not shown: every setup failed before it could be"))
    findings.extend(refused)
    return report


def _classify(exc: LiveConnectError, settings: Settings) -> Finding:
    """What a failed setup says about the configuration."""
    cause = exc.__cause__
    if isinstance(cause, InvalidStatus):
        status = cause.response.status_code
        if status in (401, 403):
            return Finding("authenticated", "FAIL", f"{_credential_name(settings)} refused: HTTP {status}")
        kind: Kind = "network" if exc.retryable else "config"
        return Finding("model accepted", "FAIL", f"upgrade refused: HTTP {status}", kind)
    text = str(exc)
    if exc.code == 1007 and any(word in text.lower() for word in _AUTH_WORDS):
        return Finding("authenticated", "FAIL", f"{_credential_name(settings)} refused: {text}")
    if exc.code in (1007, 1008):
        return Finding("model accepted", "FAIL", text)
    return Finding("model accepted", "FAIL", text, "network" if exc.retryable else "config")


def dialplan_models(settings: Settings) -> tuple[str, ...]:
    """The models the dialplans name (so each is checked too); none when the plans do not load."""
    try:
        store = DialplanStore(settings.dialplan_dir)
    except ConfigError:
        return ()
    return tuple(sorted({p.model for p in store.current.plans if p.model}))


# --------------------------------------------------------------------------- the command


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dialplans", type=Path, help="dialplan folder whose models are checked too (GATEWAY_DIALPLANS)"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds allowed to each check (default 10)"
    )


def run(args: argparse.Namespace) -> int:
    from gateway.server.app import live_endpoint

    try:
        settings = Settings.from_env()
        if args.dialplans:
            settings = settings.with_(dialplan_dir=args.dialplans)
        endpoint = live_endpoint(settings)
    except ConfigError as exc:
        print(f"gateway doctor: {exc}", file=sys.stderr)
        return 2
    if not settings.gemini_api_key and not settings.vertex:
        print(
            "gateway doctor: no Gemini credentials: set GEMINI_API_KEY (or GOOGLE_GENAI_USE_VERTEXAI=true "
            "with GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION)",
            file=sys.stderr,
        )
        return 2

    async def main() -> Report:
        try:
            return await diagnose(settings, endpoint, dialplan_models(settings), timeout_s=args.timeout)
        finally:
            await endpoint.aclose()

    report = asyncio.run(main())
    print(report.text())
    return 0 if report.ok else 1
