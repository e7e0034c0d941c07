"""Gateway settings: the only place environment variables are read.

Everything else receives a :class:`Settings` (or the parts it needs) explicitly, so tests build
settings in code and nothing changes behind a module's back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from gateway.errors import ConfigError

DEFAULT_GEMINI_URL = "wss://generativelanguage.googleapis.com"
DEFAULT_MODEL = "gemini-3.8-live"


@dataclass(frozen=True, slots=True)
class Settings:
    """What the gateway needs to run. Secrets are kept out of ``repr``."""

    host: str = "0.0.0.0"
    port: int = 8080
    #: Public base URL Twilio reaches us on (https://…); derived from the request when empty.
    public_url: str = ""
    dialplan_dir: Path = Path("dialplans")
    data_dir: Path = Path("data")
    gemini_url: str = DEFAULT_GEMINI_URL
    gemini_api_key: str = field(default="", repr=False)
    gemini_model: str = ""
    twilio_account_sid: str = ""
    twilio_auth_token: str = field(default="", repr=False)
    #: HMAC key for per-call stream tokens; generated per process when empty (single process only).
    gateway_secret: str = field(default="", repr=False)
    log_format: str = "text"
    log_level: str = "INFO"
    #: Start the local Gemini Live emulator in-process (what `make run` does without a key).
    embedded_emulator: bool = False
    #: Open the Gemini session at the (verified) voice webhook, before the media socket arrives.
    preconnect: bool = True
    #: Bearer token for /admin; without one, /admin answers loopback clients only.
    admin_token: str = field(default="", repr=False)

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]  # dataclasses.replace is loosely typed

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``GATEWAY_*``, ``GEMINI_*`` and ``TWILIO_*`` variables."""
        env = os.environ if env is None else env
        try:
            port = int(env.get("GATEWAY_PORT", "8080"))
        except ValueError as exc:
            raise ConfigError(f"GATEWAY_PORT must be an integer, got {env['GATEWAY_PORT']!r}") from exc
        api_key = env.get("GEMINI_API_KEY", "")
        return cls(
            host=env.get("GATEWAY_HOST", "0.0.0.0"),
            port=port,
            public_url=env.get("GATEWAY_PUBLIC_URL", "").rstrip("/"),
            dialplan_dir=Path(env.get("GATEWAY_DIALPLANS", "dialplans")),
            data_dir=Path(env.get("GATEWAY_DATA_DIR", "data")),
            gemini_url=env.get("GEMINI_BASE_URL", DEFAULT_GEMINI_URL).rstrip("/"),
            gemini_api_key=api_key,
            gemini_model=env.get("GEMINI_MODEL", ""),
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID", ""),
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN", ""),
            gateway_secret=env.get("GATEWAY_SECRET", ""),
            log_format=env.get("GATEWAY_LOG_FORMAT", "text"),
            log_level=env.get("GATEWAY_LOG_LEVEL", "INFO").upper(),
            embedded_emulator=not api_key,
            preconnect=env.get("GATEWAY_PRECONNECT", "1") not in ("0", "false", "no"),
            admin_token=env.get("GATEWAY_ADMIN_TOKEN", ""),
        )

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in logs (see :mod:`gateway.log`)."""
        values = (self.gemini_api_key, self.twilio_auth_token, self.gateway_secret, self.admin_token)
        return tuple(s for s in values if s)
