"""Logging set-up: key=value or JSON lines, with secrets masked.

Call-scoped context (call id, stream sid, dialplan) is bound with :func:`call_logger`, a
:class:`logging.LoggerAdapter`, so every line of a call carries it. Nothing on the per-frame media
path logs; counters are kept instead and reported at call end.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Iterable, Mapping, MutableMapping
from types import MappingProxyType
from typing import Any

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_MASK = "***"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


class _Redactor:
    def __init__(self) -> None:
        self.secrets: tuple[str, ...] = ()

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, _MASK)
        return text


_redact = _Redactor()


def add_secrets(secrets: Iterable[str]) -> None:
    """Register values to be masked in every log line from now on (keys, tokens)."""
    # Short values would mask innocent text; real secrets are long.
    merged = set(_redact.secrets) | {s for s in secrets if len(s) >= 8}
    _redact.secrets = tuple(sorted(merged, key=len, reverse=True))


def forget_secrets(secrets: Iterable[str]) -> None:
    """Stop masking values nobody can use any more (a replaced access token), so that a process
    refreshing a token every hour does not test every log line against a year of them."""
    gone = set(secrets)
    _redact.secrets = tuple(s for s in _redact.secrets if s not in gone)


class KeyValueFormatter(logging.Formatter):
    """``time level logger message key=value …``, easy to read and to grep."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        parts = [ts, f"{record.levelname:<5}", record.name, record.getMessage()]
        parts += [f"{k}={v}" for k, v in _fields(record).items()]
        line = " ".join(str(p) for p in parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return _redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update(_fields(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return _redact(json.dumps(doc, default=str))


#: Fields of the call the current task serves; tasks a call starts inherit them (contextvars).
_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})
_CALL_CONTEXT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "gateway_call", default=_NO_FIELDS
)


def bind_call_context(**fields: Any) -> contextvars.Token[Mapping[str, Any]]:
    """Add ``fields`` (call_sid, stream_sid…) to every log line of this task and the tasks it starts.

    This reaches loggers that were never handed the call's :class:`CallLogger` (libraries, tool
    handlers), so every line of a call carries its id. Undo with :func:`reset_call_context`.
    """
    return _CALL_CONTEXT.set({**_CALL_CONTEXT.get(), **fields})


def reset_call_context(token: contextvars.Token[Mapping[str, Any]]) -> None:
    _CALL_CONTEXT.reset(token)


class CallContextFilter(logging.Filter):
    """Copies the bound call fields onto each record that does not already carry them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CALL_CONTEXT.get().items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


def configure(level: str = "INFO", fmt: str = "text", secrets: Iterable[str] = ()) -> None:
    """Install the gateway's handler on the root logger."""
    add_secrets(secrets)
    handler = logging.StreamHandler()
    handler.addFilter(CallContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log repeats what our own call logs say.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that adds the call's bound fields to every record."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs

    def bind(self, **fields: Any) -> CallLogger:
        merged = dict(self.extra or {})
        merged.update(fields)
        return CallLogger(self.logger, merged)


def call_logger(name: str, fields: Mapping[str, Any] | None = None) -> CallLogger:
    return CallLogger(logging.getLogger(name), dict(fields or {}))
