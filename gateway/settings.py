"""Gateway settings: the only place environment variables are read.

Everything else receives a :class:`Settings` (or the parts it needs) explicitly, so tests build
settings in code and nothing changes behind a module's back.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from gateway.dialplan.model import model_problem
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
    #: Gemini on Vertex AI (``GOOGLE_GENAI_USE_VERTEXAI``, as google-genai reads it): Application Default
    #: Credentials, project-scoped model names, ``gemini_url`` the location's host unless overridden.
    vertex: bool = False
    #: ``GOOGLE_CLOUD_PROJECT`` and ``GOOGLE_CLOUD_LOCATION``: where Vertex AI sessions run.
    vertex_project: str = ""
    vertex_location: str = ""
    twilio_account_sid: str = ""
    twilio_auth_token: str = field(default="", repr=False)
    #: HMAC key for per-call stream tokens; generated per process when empty (single process only).
    gateway_secret: str = field(default="", repr=False)
    log_format: str = "text"
    log_level: str = "INFO"
    #: Start the local Gemini Live emulator in-process. Only ever on request (``gateway serve --emulator``,
    #: which `make run` passes when no credentials are set): a deployment that forgot its key must not
    #: answer real callers with the echo emulator.
    embedded_emulator: bool = False
    #: Open the Gemini session at the (verified) voice webhook, before the media socket arrives.
    preconnect: bool = True
    #: One Live connection attempt must reach setupComplete within this (see bridge/resilience.py).
    live_setup_timeout_s: float = 5.0
    #: A call whose Gemini connection cannot be (re)established within this falls back.
    live_give_up_s: float = 8.0
    #: Rate of the caller audio sent to Gemini: 16000 (resampled here, the model's native rate) or 8000
    #: (the phone's own rate, resampled by the service; ~25 % less gateway CPU per call, README Performance).
    uplink_rate: int = 16000
    #: Bearer token for /admin and /metrics; without one they answer direct loopback clients, and only
    #: while the gateway listens on loopback alone (see gateway/server/access.py).
    admin_token: str = field(default="", repr=False)
    # --- security and limits (see gateway/server/limits.py and the README's Security section) ---
    #: Redis for the cross-process stream-token replay guard; in-memory (one process) when empty. When
    #: set the gateway runs as one replica of several (gateway/server/cluster.py): admission limits,
    #: active calls and the admin API are shared through it, and ``gateway_secret`` is required.
    redis_url: str = field(default="", repr=False)
    #: Prefix of every Redis key and channel, so deployments (and parallel tests) can share one Redis.
    redis_prefix: str = "gateway:"
    #: A replica's places and calls outlive its last heartbeat by this long (a SIGKILLed one's free then).
    cluster_lease_s: float = 15.0
    #: Without TWILIO_AUTH_TOKEN, answer unsigned webhooks from anyone, not only direct loopback clients.
    allow_unsigned_webhooks: bool = False
    #: Concurrent calls, all dialplans together (0: no limit).
    max_calls: int = 200
    #: Concurrent calls per dialplan name; the name ``*`` applies to every plan not listed.
    max_calls_per_dialplan: tuple[tuple[str, int], ...] = ()
    #: Messages per second one media socket may send (Twilio sends 50); above it the call ends.
    max_stream_messages_per_s: int = 100
    #: Hard cap on any call's duration, over every dialplan's own limit (0: no cap).
    max_call_s: float = 7200.0
    #: A call whose caller sent no media frame for this long has lost its caller (0: never checked).
    media_timeout_s: float = 5.0
    #: After SIGTERM, calls in progress may go on this long while new ones are refused; then each
    #: remaining call ends with a spoken goodbye (0: at once). See gateway/server/drain.py.
    drain_s: float = 300.0
    #: New calls are refused while the process, counting one more call, would use more than this
    #: percentage of the CPU it may use (one core, or its container's quota); 0: no check.
    max_cpu_percent: int = 70
    #: New calls are refused while the event loop runs this many milliseconds late (0: no check).
    max_loop_lag_ms: int = 40
    #: Media sockets allowed at once before they present a valid stream token (the oldest gives way).
    max_pending_streams: int = 100
    #: Of those, from one source address (behind a proxy on this host: the client it forwards for).
    max_pending_per_source: int = 20
    #: Open HTTP connections at once; 0: as many as the open-file limit leaves room for.
    max_connections: int = 0
    #: A connection must send a complete request head within this of opening or of its last response
    #: (idle keep-alive and slow headers alike); a request body must arrive within the second.
    http_idle_timeout_s: float = 15.0
    http_body_timeout_s: float = 10.0
    # --- observability (see gateway/records/ and the README's Observability section) ---
    #: Where call records go: empty = SQLite at ``<data_dir>/calls.db``; or sqlite:///path, postgresql://…
    database_url: str = field(default="", repr=False)
    #: Keep a durable record of every call (turns, tools, reconnects); off only for throwaway setups.
    records: bool = True
    #: A gateway whose records heartbeat is this old is taken for dead: its calls' records are closed
    #: (``GATEWAY_RECORDS_LEASE_S``; it renews every fifth of that; see gateway/records/hub.py).
    records_lease_s: float = 30.0
    # --- tools (see gateway/tools/ and the README's Tools section) ---
    #: Python modules whose @tool functions are offered to dialplans (comma-separated in the env).
    tool_modules: tuple[str, ...] = ("gateway.handlers.support",)
    #: TOML file declaring HTTP tools ([http.NAME] tables); none when empty.
    tools_file: Path | None = None
    #: Time limit of a tool call that does not set its own.
    tool_timeout_s: float = 10.0
    #: Twilio REST base URL (call transfer and hang-up); tests point it at a local stand-in.
    twilio_api_base: str = "https://api.twilio.com"
    # --- Telnyx (gateway/server/telnyx.py; the telnyx SDK's variable names) ---
    #: API v2 key (``TELNYX_API_KEY``): answers Call Control calls, hangs up and transfers by REST.
    telnyx_api_key: str = field(default="", repr=False)
    #: Mission Control's webhook public key (``TELNYX_PUBLIC_KEY``, base64 Ed25519): with it, only
    #: requests Telnyx signed are answered.
    telnyx_public_key: str = ""
    #: Telnyx REST base URL (``TELNYX_API_BASE``); tests point it at a local stand-in.
    telnyx_api_base: str = "https://api.telnyx.com/v2"
    #: Codec of Call Control streams (``GATEWAY_TELNYX_CODEC``): PCMU, PCMA, or L16 (16 kHz wideband).
    telnyx_codec: str = "PCMU"
    #: The Voice API application that places outbound calls (``TELNYX_CONNECTION_ID``: the Dial
    #: command's ``connection_id``; its webhooks are overridden per call with the gateway's own URL).
    telnyx_connection_id: str = ""
    # --- Plivo (gateway/server/plivo.py): plivo-python's variable names ---
    #: ``PLIVO_AUTH_ID``: the account, for hang-up and transfer over Plivo's REST API.
    plivo_auth_id: str = ""
    #: ``PLIVO_AUTH_TOKEN``: signs Plivo's requests (``X-Plivo-Signature-V3``) and authenticates REST calls.
    plivo_auth_token: str = field(default="", repr=False)
    #: ``PLIVO_API_BASE``: Plivo's REST base URL; tests point it at a local stand-in.
    plivo_api_base: str = "https://api.plivo.com"
    #: ``GATEWAY_PLIVO_CONTENT_TYPE``: the ``<Stream contentType>`` asked for (μ-law 8 kHz, L16 8/16 kHz).
    plivo_content_type: str = "audio/x-mulaw;rate=8000"
    # --- Exotel (gateway/server/exotel.py): its SDKs name no variables for these ---
    #: ``GATEWAY_PBX_SECRET``: authenticates the PBX connectors' media sockets (Asterisk, FreeSWITCH,
    #: jambonz) as ``?token=`` or the basic-auth password; without it only direct loopback peers are served.
    pbx_secret: str = field(default="", repr=False)
    # --- Asterisk AudioSocket (gateway/server/audiosocket.py): plain TCP, no authentication of its own ---
    #: ``GATEWAY_AUDIOSOCKET_PORT``: the TCP port of the AudioSocket listener; 0 (the default): off.
    audiosocket_port: int = 0
    #: ``GATEWAY_AUDIOSOCKET_HOST``: the address it binds; loopback unless the PBX is on another host.
    audiosocket_host: str = "127.0.0.1"
    #: ``GATEWAY_AUDIOSOCKET_ALLOW``: source networks (CIDR, comma-separated) served; others are closed
    #: before anything is read. Loopback only by default.
    audiosocket_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    #: ``GATEWAY_AUDIOSOCKET_TO``: the number an AudioSocket call counts as dialled (picks its dialplan).
    audiosocket_to: str = "audiosocket"
    #: ``GATEWAY_AUDIOSOCKET_ROUTES``: ``UUID-PREFIX=NUMBER`` pairs (comma-separated): a call whose UUID
    #: starts with the prefix counts as dialled to the number (longest prefix wins; else ``audiosocket_to``).
    audiosocket_routes: tuple[tuple[str, str], ...] = ()
    #: ``EXOTEL_STREAM_SECRET``: authenticates the static stream URL (Basic-auth password or ``?secret=``)
    #: and, when set, is required on the dynamic URL's request too. Without it only loopback is served.
    exotel_stream_secret: str = field(default="", repr=False)
    #: ``GATEWAY_EXOTEL_SAMPLE_RATE``: the rate the dynamic answer asks for (8000, 16000 or 24000 Hz).
    exotel_sample_rate: int = 8000
    #: ``GATEWAY_EXOTEL_COUNTRY_CODE``: for numbers Exotel sends in national form (``0`` + number).
    exotel_country_code: str = "91"
    # --- SignalWire (gateway/server/signalwire.py): the names SignalWire's SDKs and guides use ---
    #: ``SIGNALWIRE_PROJECT_ID`` and ``SIGNALWIRE_API_TOKEN``: hang-up and transfer over the Compatibility
    #: REST API (HTTP Basic ProjectID:APIToken).
    signalwire_project_id: str = ""
    signalwire_api_token: str = field(default="", repr=False)
    #: ``SIGNALWIRE_SIGNING_KEY``: with it, only webhooks SignalWire signed (``X-SignalWire-Signature``)
    #: are answered, and the media upgrade must bring the bearer token the cXML gave SignalWire.
    signalwire_signing_key: str = field(default="", repr=False)
    #: ``SIGNALWIRE_SPACE_URL`` (``example.signalwire.com`` or https://…): the REST base (tests: a stand-in).
    signalwire_space_url: str = ""
    #: ``GATEWAY_SIGNALWIRE_CODEC``: the ``<Stream codec>`` asked for: PCMU@8000h, or wideband L16@16000h
    #: / L16@24000h.
    signalwire_codec: str = "PCMU@8000h"
    # --- Vonage (gateway/server/vonage.py): the Vonage SDKs' variable names ---
    #: ``VONAGE_APPLICATION_ID``: the Voice application whose JWT authorises hang-up and transfer.
    vonage_application_id: str = ""
    #: ``VONAGE_PRIVATE_KEY``: the application's RSA private key (PEM text, or a path to the .key file).
    vonage_private_key: str = field(default="", repr=False)
    #: ``VONAGE_SIGNATURE_SECRET``: signs Vonage's webhooks (JWT, HS256); with it only signed ones are served.
    vonage_signature_secret: str = field(default="", repr=False)
    #: ``VONAGE_API_BASE``: the Voice REST base URL; tests point it at a local stand-in.
    vonage_api_base: str = "https://api.nexmo.com"
    #: ``GATEWAY_VONAGE_SAMPLE_RATE``: the L16 rate the NCCO asks for (16000: wideband; 8000 or 24000).
    vonage_sample_rate: int = 16000
    #: ``TOOL_*`` environment variables, which a tools file may use in its headers (${TOOL_X}).
    tool_env: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]  # dataclasses.replace is loosely typed

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``GATEWAY_*``, ``GEMINI_*`` and ``TWILIO_*`` variables."""
        env = os.environ if env is None else env
        port = _number(env, "GATEWAY_PORT", 8080)
        if not 0 < port < 65536:
            raise ConfigError(f"GATEWAY_PORT must be a port number from 1 to 65535, got {port}")
        api_key = _api_key(env)
        vertex, vertex_project, vertex_location = _vertex(env)
        gemini_url = _live_url(env)
        if vertex and not gemini_url:
            from gateway.gemini.session import vertex_base_url  # only in Vertex mode

            gemini_url = vertex_base_url(vertex_location)
        return cls(
            host=env.get("GATEWAY_HOST", "0.0.0.0"),
            port=port,
            public_url=_http_url(env, "GATEWAY_PUBLIC_URL"),
            dialplan_dir=Path(env.get("GATEWAY_DIALPLANS", "dialplans")),
            data_dir=Path(env.get("GATEWAY_DATA_DIR", "data")),
            gemini_url=gemini_url or DEFAULT_GEMINI_URL,
            gemini_api_key=api_key,
            gemini_model=_model(env),
            vertex=vertex,
            vertex_project=vertex_project,
            vertex_location=vertex_location,
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID", ""),
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN", ""),
            gateway_secret=env.get("GATEWAY_SECRET", ""),
            log_format=_choice(env, "GATEWAY_LOG_FORMAT", ("text", "json"), "text"),
            log_level=_choice(env, "GATEWAY_LOG_LEVEL", _LOG_LEVELS, "INFO", upper=True),
            preconnect=_flag(env, "GATEWAY_PRECONNECT", True),
            live_setup_timeout_s=_seconds(env, "GATEWAY_LIVE_SETUP_TIMEOUT_S", 5.0),
            live_give_up_s=_seconds(env, "GATEWAY_LIVE_GIVE_UP_S", 8.0),
            uplink_rate=_uplink_rate(env.get("GATEWAY_UPLINK_RATE", "")),
            admin_token=env.get("GATEWAY_ADMIN_TOKEN", ""),
            redis_url=env.get("GATEWAY_REDIS_URL", ""),
            redis_prefix=_redis_prefix(env),
            cluster_lease_s=_seconds(env, "GATEWAY_CLUSTER_LEASE_S", 15.0),
            allow_unsigned_webhooks=_flag(env, "GATEWAY_ALLOW_UNSIGNED", False),
            max_calls=_number(env, "GATEWAY_MAX_CALLS", 200),
            max_calls_per_dialplan=_per_plan(env.get("GATEWAY_MAX_CALLS_PER_DIALPLAN", "")),
            max_stream_messages_per_s=_number(env, "GATEWAY_MAX_STREAM_RATE", 100),
            max_call_s=float(_number(env, "GATEWAY_MAX_CALL_S", 7200)),
            media_timeout_s=_seconds(env, "GATEWAY_MEDIA_TIMEOUT_S", 5.0, allow_zero=True),
            drain_s=_seconds(env, "GATEWAY_DRAIN_S", 300.0, allow_zero=True),
            max_cpu_percent=_number(env, "GATEWAY_MAX_CPU_PERCENT", 70),
            max_loop_lag_ms=_number(env, "GATEWAY_MAX_LOOP_LAG_MS", 40),
            max_pending_streams=_number(env, "GATEWAY_MAX_PENDING_STREAMS", 100),
            max_pending_per_source=_number(env, "GATEWAY_MAX_PENDING_PER_SOURCE", 20),
            max_connections=_number(env, "GATEWAY_MAX_CONNECTIONS", 0),
            http_idle_timeout_s=_seconds(env, "GATEWAY_HTTP_IDLE_TIMEOUT_S", 15.0),
            http_body_timeout_s=_seconds(env, "GATEWAY_HTTP_BODY_TIMEOUT_S", 10.0),
            database_url=env.get("GATEWAY_DATABASE_URL", ""),
            records=_flag(env, "GATEWAY_RECORDS", True),
            records_lease_s=_seconds(env, "GATEWAY_RECORDS_LEASE_S", 30.0),
            tool_modules=tuple(
                m.strip()
                for m in env.get("GATEWAY_TOOL_MODULES", "gateway.handlers.support").split(",")
                if m.strip()
            ),
            tools_file=Path(env["GATEWAY_TOOLS_FILE"]) if env.get("GATEWAY_TOOLS_FILE") else None,
            tool_timeout_s=_seconds(env, "GATEWAY_TOOL_TIMEOUT_S", 10.0),
            twilio_api_base=env.get("TWILIO_API_BASE", "https://api.twilio.com").rstrip("/"),
            telnyx_api_key=env.get("TELNYX_API_KEY", "").strip(),
            telnyx_public_key=_telnyx_public_key(env),
            telnyx_api_base=_http_url(env, "TELNYX_API_BASE") or "https://api.telnyx.com/v2",
            telnyx_codec=_choice(env, "GATEWAY_TELNYX_CODEC", ("PCMU", "PCMA", "L16"), "PCMU", upper=True),
            telnyx_connection_id=env.get("TELNYX_CONNECTION_ID", "").strip(),
            tool_env=tuple(sorted((k, v) for k, v in env.items() if k.startswith("TOOL_"))),
            plivo_auth_id=_plivo_auth_id(env),
            plivo_auth_token=env.get("PLIVO_AUTH_TOKEN", "").strip(),
            plivo_api_base=_http_url(env, "PLIVO_API_BASE") or "https://api.plivo.com",
            plivo_content_type=_plivo_content_type(env),
            exotel_stream_secret=_exotel_secret(env),
            pbx_secret=env.get("GATEWAY_PBX_SECRET", "").strip(),
            audiosocket_port=_audiosocket_port(env),
            audiosocket_host=env.get("GATEWAY_AUDIOSOCKET_HOST", "").strip() or "127.0.0.1",
            audiosocket_allow=_networks(env, "GATEWAY_AUDIOSOCKET_ALLOW", ("127.0.0.0/8", "::1/128")),
            audiosocket_to=_audiosocket_to(env),
            audiosocket_routes=_audiosocket_routes(env),
            exotel_sample_rate=_exotel_rate(env),
            exotel_country_code=_exotel_country_code(env),
            signalwire_project_id=_signalwire_project(env),
            signalwire_api_token=env.get("SIGNALWIRE_API_TOKEN", "").strip(),
            signalwire_signing_key=env.get("SIGNALWIRE_SIGNING_KEY", "").strip(),
            signalwire_space_url=_signalwire_space(env),
            signalwire_codec=_signalwire_codec(env),
            vonage_application_id=_vonage_application_id(env),
            vonage_private_key=_vonage_private_key(env),
            vonage_signature_secret=env.get("VONAGE_SIGNATURE_SECRET", "").strip(),
            vonage_api_base=_http_url(env, "VONAGE_API_BASE") or "https://api.nexmo.com",
            vonage_sample_rate=_vonage_rate(env),
        )

    def cluster_problem(self) -> str | None:
        """Why these settings cannot run as one of several replicas, or None (or not clustered)."""
        if self.redis_url and not self.gateway_secret:
            return CLUSTER_NEEDS_SECRET
        return None

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in logs (see :mod:`gateway.log`)."""
        values = (
            self.gemini_api_key,
            self.twilio_auth_token,
            self.plivo_auth_token,
            self.telnyx_api_key,
            self.exotel_stream_secret,
            self.pbx_secret,
            self.signalwire_api_token,
            self.signalwire_signing_key,
            self.vonage_private_key,
            self.vonage_signature_secret,
            self.gateway_secret,
            self.admin_token,
            _url_password(self.redis_url),
            _url_password(self.database_url),
            *(value for _, value in self.tool_env),
        )
        return tuple(s for s in values if s)


#: GATEWAY_REDIS_URL makes this process one replica of several: a call's webhook and its media stream may
#: reach different replicas, so each must verify the tokens the others sign.
CLUSTER_NEEDS_SECRET = (
    "GATEWAY_REDIS_URL is set (several replicas) but GATEWAY_SECRET is not: set the same GATEWAY_SECRET "
    "on every replica (e.g. `openssl rand -hex 32`), so a stream token one replica issues verifies on another"
)


def _redis_prefix(env: Mapping[str, str]) -> str:
    raw = env.get("GATEWAY_REDIS_PREFIX", "gateway:")
    if not raw or len(raw) > 100 or not raw.isprintable() or any(c.isspace() for c in raw):
        raise ConfigError(f"GATEWAY_REDIS_PREFIX={raw!r} must be 1-100 printable characters without spaces")
    return raw


def _vertex(env: Mapping[str, str]) -> tuple[bool, str, str]:
    """(on, project, location) from google-genai's variables; ``GOOGLE_GENAI_USE_ENTERPRISE`` (its new
    name) wins over ``GOOGLE_GENAI_USE_VERTEXAI`` when set, as in the SDK."""
    name = "GOOGLE_GENAI_USE_ENTERPRISE" if env.get("GOOGLE_GENAI_USE_ENTERPRISE", "").strip() else ""
    name = name or "GOOGLE_GENAI_USE_VERTEXAI"
    if not _flag(env, name, False):
        return False, "", ""
    project = env.get("GOOGLE_CLOUD_PROJECT", "").strip()
    if not project:
        raise ConfigError(f"{name} is on but GOOGLE_CLOUD_PROJECT is not set: name the Vertex AI project")
    location = env.get("GOOGLE_CLOUD_LOCATION", "").strip()
    if not location:
        raise ConfigError(
            f"{name} is on but GOOGLE_CLOUD_LOCATION is not set: name a region serving the Live models, "
            "e.g. us-central1"
        )
    return True, project, location


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _audiosocket_port(env: Mapping[str, str]) -> int:
    port = _number(env, "GATEWAY_AUDIOSOCKET_PORT", 0)
    if port > 65535:
        raise ConfigError(
            f"GATEWAY_AUDIOSOCKET_PORT must be a port number from 1 to 65535 (0: off), got {port}"
        )
    return port


def _networks(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated networks (``10.0.0.0/8``) or addresses, each checked; normalised CIDR strings."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    out: list[str] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an address or network like 10.0.0.0/8") from None
    if not out:
        raise ConfigError(f"{name}={raw!r} names no network")
    return tuple(out)


_AUDIOSOCKET_NUMBER = re.compile(r"[+0-9A-Za-z*#._-]{1,64}")
_UUID_PREFIX = re.compile(r"[0-9a-fA-F-]{1,36}")


def _audiosocket_to(env: Mapping[str, str]) -> str:
    raw = env.get("GATEWAY_AUDIOSOCKET_TO", "").strip()
    if raw and not _AUDIOSOCKET_NUMBER.fullmatch(raw):
        raise ConfigError(f"GATEWAY_AUDIOSOCKET_TO={raw!r} is not a number or extension")
    return raw or "audiosocket"


def _audiosocket_routes(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``"10000000=+15550100,2000=+15550200"`` → ((uuid prefix, number), …), longest prefix first."""
    raw = env.get("GATEWAY_AUDIOSOCKET_ROUTES", "").strip()
    pairs: list[tuple[str, str]] = []
    for item in (part.strip() for part in raw.split(",") if part.strip()):
        prefix, sep, number = (x.strip() for x in item.partition("="))
        if not sep or not _UUID_PREFIX.fullmatch(prefix) or not _AUDIOSOCKET_NUMBER.fullmatch(number):
            raise ConfigError(
                f"GATEWAY_AUDIOSOCKET_ROUTES: {item!r} is not UUID-PREFIX=NUMBER (e.g. 10000000=+15550100)"
            )
        pairs.append((prefix.lower(), number))
    return tuple(sorted(pairs, key=lambda pair: -len(pair[0])))


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """An on/off variable: 1/0, true/false, yes/no, on/off, in any case; anything else is an error."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={env[name]!r} is not on or off: use 1/0, true/false, yes/no or on/off")


def _choice(
    env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str, *, upper: bool = False
) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    value = raw.upper() if upper else raw.lower()
    if value not in allowed:
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(allowed)}")
    return value


def _api_key(env: Mapping[str, str]) -> str:
    """The Gemini API key, as google-genai finds it: ``GOOGLE_API_KEY`` wins over ``GEMINI_API_KEY``."""
    google, gemini = env.get("GOOGLE_API_KEY", "").strip(), env.get("GEMINI_API_KEY", "").strip()
    return google or gemini


def _http_url(env: Mapping[str, str], name: str) -> str:
    raw = env.get(name, "").strip().rstrip("/")
    if not raw:
        return ""
    try:
        parts = urlsplit(raw)
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}={raw!r} is not an http(s):// URL like https://voice.example.com")
    return raw


def _telnyx_public_key(env: Mapping[str, str]) -> str:
    """``TELNYX_PUBLIC_KEY``, checked at start: a key that cannot verify would refuse every call."""
    raw = env.get("TELNYX_PUBLIC_KEY", "").strip()
    if not raw:
        return ""
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    # The raw key, or its DER SubjectPublicKeyInfo (as gateway/telephony/telnyx.py loads it).
    if len(key) != 32 and not (len(key) == 44 and key.startswith(bytes.fromhex("302a300506032b6570032100"))):
        raise ConfigError("TELNYX_PUBLIC_KEY is not a base64 Ed25519 public key (Mission Control's)")
    return raw


def _live_url(env: Mapping[str, str]) -> str:
    """``GEMINI_BASE_URL``: the Live API's host (wss:// in production; ws:// only for a local stand-in)."""
    raw = env.get("GEMINI_BASE_URL", "").strip().rstrip("/")
    if not raw:
        return ""
    try:
        parts = urlsplit(raw)
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("wss", "ws", "https", "http") or not parts.netloc or parts.query:
        raise ConfigError(
            f"GEMINI_BASE_URL={raw!r} is not a base URL like wss://generativelanguage.googleapis.com"
        )
    return raw


def _model(env: Mapping[str, str]) -> str:
    """``GEMINI_MODEL``, checked at start by the same rule as a dialplan's ``model``."""
    raw = env.get("GEMINI_MODEL", "").strip()
    if raw and (problem := model_problem(raw)) is not None:
        raise ConfigError(f"GEMINI_MODEL: {problem}")
    return raw


def _number(env: Mapping[str, str], name: str, default: int) -> int:
    """A non-negative integer variable."""
    raw = env.get(name, "")
    if not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value


def _uplink_rate(raw: str) -> int:
    if not raw.strip():
        return 16000
    if raw.strip() not in ("8000", "16000"):
        raise ConfigError(f"GATEWAY_UPLINK_RATE={raw!r} is not one of 8000, 16000")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float, *, allow_zero: bool = False) -> float:
    """A positive number of seconds (or 0, where that means "off")."""
    raw = env.get(name, "")
    if not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if allow_zero and value == 0:
        return 0.0
    if not 0 < value <= 600:
        raise ConfigError(f"{name}={raw!r} must be more than 0 and at most 600 seconds")
    return value


def _per_plan(raw: str) -> tuple[tuple[str, int], ...]:
    """``"support=5,sales=10,*=20"`` → ((plan, limit), …); a bare number means ``*=N``."""
    pairs: list[tuple[str, int]] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        name, sep, number = item.rpartition("=")
        name = name.strip() if sep else "*"
        try:
            limit = int(number)
        except ValueError:
            limit = -1
        if not name or limit < 0:
            raise ConfigError(
                f"GATEWAY_MAX_CALLS_PER_DIALPLAN: {item!r} is not NAME=N (or *=N, or N for every plan)"
            )
        pairs.append((name, limit))
    return tuple(pairs)


def _plivo_auth_id(env: Mapping[str, str]) -> str:
    """``PLIVO_AUTH_ID``, checked at start: it is spliced into REST paths."""
    raw = env.get("PLIVO_AUTH_ID", "").strip()
    if raw and not (raw.isascii() and raw.isalnum() and len(raw) <= 64):
        raise ConfigError(f"PLIVO_AUTH_ID={raw!r} is not a Plivo auth ID (letters and digits: MA…, SA…)")
    return raw


#: ``<Stream contentType>`` values Plivo offers (docs.plivo.com, XML ``<Stream>``).
PLIVO_CONTENT_TYPES = ("audio/x-mulaw;rate=8000", "audio/x-l16;rate=8000", "audio/x-l16;rate=16000")


def _plivo_content_type(env: Mapping[str, str]) -> str:
    """``GATEWAY_PLIVO_CONTENT_TYPE``: ``audio/x-l16;rate=16000`` streams wideband where the call leg is."""
    raw = env.get("GATEWAY_PLIVO_CONTENT_TYPE", "")
    value = raw.replace(" ", "").lower()
    if not value:
        return PLIVO_CONTENT_TYPES[0]
    if value not in PLIVO_CONTENT_TYPES:
        raise ConfigError(
            f"GATEWAY_PLIVO_CONTENT_TYPE={raw!r} is not one of {', '.join(PLIVO_CONTENT_TYPES)}"
        )
    return value


def _exotel_secret(env: Mapping[str, str]) -> str:
    """``EXOTEL_STREAM_SECRET``: it travels inside a URL, so URL-safe characters only, and not guessable."""
    raw = env.get("EXOTEL_STREAM_SECRET", "").strip()
    if raw and not (16 <= len(raw) <= 256 and all(c.isascii() and (c.isalnum() or c in "._~-") for c in raw)):
        raise ConfigError("EXOTEL_STREAM_SECRET must be 16-256 characters of A-Z a-z 0-9 . _ ~ -")
    return raw


def _exotel_rate(env: Mapping[str, str]) -> int:
    raw = env.get("GATEWAY_EXOTEL_SAMPLE_RATE", "").strip()
    if not raw:
        return 8000
    if raw not in ("8000", "16000", "24000"):
        raise ConfigError(f"GATEWAY_EXOTEL_SAMPLE_RATE={raw!r} is not one of 8000, 16000, 24000")
    return int(raw)


def _exotel_country_code(env: Mapping[str, str]) -> str:
    raw = env.get("GATEWAY_EXOTEL_COUNTRY_CODE", "").strip().lstrip("+")
    if not raw:
        return "91"
    if not (raw.isascii() and raw.isdigit() and 1 <= len(raw) <= 3 and raw[0] != "0"):
        raise ConfigError(f"GATEWAY_EXOTEL_COUNTRY_CODE={raw!r} is not a country calling code like 91")
    return raw


def _url_password(url: str) -> str:
    """The password inside ``scheme://user:password@host``, if any (an invalid URL has none)."""
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


_SIGNALWIRE_CODECS = ("PCMU@8000h", "L16@16000h", "L16@24000h")


def _signalwire_project(env: Mapping[str, str]) -> str:
    """``SIGNALWIRE_PROJECT_ID``: a UUID from SignalWire's Dashboard; it goes into REST URLs."""
    raw = env.get("SIGNALWIRE_PROJECT_ID", "").strip()
    if raw and not re.fullmatch(r"[A-Za-z0-9-]{1,64}", raw):
        raise ConfigError(f"SIGNALWIRE_PROJECT_ID={raw[:80]!r} is not a project ID like 1a2b3c4d-…")
    return raw


def _signalwire_space(env: Mapping[str, str]) -> str:
    """``SIGNALWIRE_SPACE_URL`` as SignalWire's SDKs take it (``example.signalwire.com``), or a full
    http(s) URL (a local stand-in in tests): always returned as scheme://host."""
    raw = env.get("SIGNALWIRE_SPACE_URL", "").strip().rstrip("/")
    if raw and "://" not in raw:
        raw = "https://" + raw
    try:
        parts = urlsplit(raw)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.path
    except ValueError:
        valid = False
    if raw and not valid:
        given = env["SIGNALWIRE_SPACE_URL"]
        raise ConfigError(f"SIGNALWIRE_SPACE_URL={given!r} is not a Space like example.signalwire.com")
    return raw


def _signalwire_codec(env: Mapping[str, str]) -> str:
    raw = env.get("GATEWAY_SIGNALWIRE_CODEC", "").strip()
    if not raw:
        return "PCMU@8000h"
    for codec in _SIGNALWIRE_CODECS:
        if raw.lower() == codec.lower():
            return codec
    raise ConfigError(f"GATEWAY_SIGNALWIRE_CODEC={raw!r} is not one of {', '.join(_SIGNALWIRE_CODECS)}")


def _vonage_application_id(env: Mapping[str, str]) -> str:
    """``VONAGE_APPLICATION_ID``: a UUID from Vonage's dashboard (it goes into every application JWT)."""
    raw = env.get("VONAGE_APPLICATION_ID", "").strip()
    if raw and not re.fullmatch(r"[A-Za-z0-9-]{1,64}", raw):
        raise ConfigError(f"VONAGE_APPLICATION_ID={raw[:80]!r} is not an application ID like 1a2b3c4d-…")
    return raw


def _vonage_private_key(env: Mapping[str, str]) -> str:
    """``VONAGE_PRIVATE_KEY``: the PEM itself (``\\n`` escapes allowed) or the path of the key file."""
    raw = env.get("VONAGE_PRIVATE_KEY", "").strip()
    if not raw:
        return ""
    if "-----BEGIN" in raw:
        return raw.replace("\\n", "\n")
    try:
        text = Path(raw).expanduser().read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"VONAGE_PRIVATE_KEY: cannot read the key file {raw!r}: {exc}") from None
    if "-----BEGIN" not in text:
        raise ConfigError(f"VONAGE_PRIVATE_KEY: {raw!r} holds no PEM private key")
    return text


def _vonage_rate(env: Mapping[str, str]) -> int:
    raw = env.get("GATEWAY_VONAGE_SAMPLE_RATE", "").strip()
    if not raw:
        return 16000
    if raw not in ("8000", "16000", "24000"):
        raise ConfigError(f"GATEWAY_VONAGE_SAMPLE_RATE={raw!r} is not one of 8000, 16000, 24000")
    return int(raw)
