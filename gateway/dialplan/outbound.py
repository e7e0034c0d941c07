"""Outbound calls of a dialplan: its ``[outbound]`` table, prompt templates and calling hours. No I/O.

Rules of this module:

* Templates are plain text with ``{name}`` placeholders; ``{{`` and ``}}`` are literal braces, and any
  other brace is an error at load time. Only plans with an ``[outbound]`` table are templates, so a
  brace in an inbound plan's prompt keeps meaning a brace.
* Substitution is one pass: a value is inserted as it is and never expanded again, so a value holding
  ``{other}`` stays that text. Values are single-line, printable and short (:data:`MAX_VALUE_CHARS`),
  because they come from whoever may place calls and land inside the model's instructions.
* Every placeholder a template uses must be declared in ``params``; a call must give every declared
  parameter that has no default, and nothing else. Each refusal names the parameter.
* Calling hours are checked in the callee's time zone (the plan's ``timezone``, or one given with the
  call); a refusal says when the next window opens there.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.dialplan.model import Dialplan, MachineAction, Outbound, OutboundProvider

__all__ = [
    "DAYS",
    "MAX_VALUE_CHARS",
    "OutboundRefusal",
    "hours_refusal",
    "parse_outbound",
    "placeholders",
    "plan_for_call",
    "render",
    "zone",
]

#: Longest parameter value, in characters (a name, a time, a reference number: not a document).
MAX_VALUE_CHARS = 200
#: All parameter values of one call together, in characters (they travel in the call's signed token).
MAX_TOTAL_CHARS = 1500
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MACHINE_ACTIONS: tuple[MachineAction, ...] = ("message", "hangup", "continue")
PROVIDERS: tuple[OutboundProvider, ...] = ("twilio", "telnyx", "vonage", "plivo")
OUTBOUND_KEYS = (
    "params", "defaults", "caller_id", "max_concurrent", "hours", "days", "timezone", "machine",
    "machine_message", "ring_timeout_s", "provider",
)  # fmt: skip

_PARAM = re.compile(r"[a-z_][a-z0-9_]{0,31}")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_WINDOW = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class OutboundRefusal(Exception):
    """A call that may not be placed: ``field`` names what to fix (``params.customer_name``, ``to``,
    ``hours``…), ``status`` the HTTP status the admin API answers with."""

    def __init__(self, field: str, message: str, *, status: int = 400) -> None:
        self.field = field
        self.message = message
        self.status = status
        super().__init__(f"{field}: {message}")


def placeholders(template: str) -> tuple[str, ...]:
    """The placeholder names ``template`` uses, in order of first use.

    Raises:
        ValueError: a lone brace, or a placeholder that is not a parameter name (the message says which).
    """
    found: list[str] = []
    for match in _TOKEN.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        name = match.group(1)
        if name is None:
            raise ValueError(
                f"lone {token!r} at character {match.start() + 1}; write {token * 2!r} for a brace"
            )
        if not _PARAM.fullmatch(name):
            raise ValueError(f"{{{name}}} is not a placeholder: names are lower-case letters, digits and '_'")
        if name not in found:
            found.append(name)
    return tuple(found)


def render(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each ``{name}`` replaced by ``values[name]`` (one pass) and ``{{``/``}}`` undoubled.

    Raises:
        KeyError: a placeholder with no value (a programming error: plans are checked at load).
    """

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return values[match.group(1)]

    return _TOKEN.sub(one, template)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``.

    Raises:
        ValueError: not a time zone this system knows.
    """
    if not name or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"{name!r} is not an IANA time zone like 'America/New_York'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone like 'America/New_York'") from None


def value_problem(value: object) -> str | None:
    """Why ``value`` cannot be a parameter value (None: it can)."""
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > MAX_VALUE_CHARS:
        return f"is {len(value)} characters; at most {MAX_VALUE_CHARS}"
    if _UNPRINTABLE.search(value):
        return "must be one line of printable text (no control characters or line breaks)"
    return None


def call_values(outbound: Outbound, given: Mapping[str, object]) -> dict[str, str]:
    """The parameter values of one call: ``given`` checked against the plan, defaults filled in.

    Raises:
        OutboundRefusal: an unknown, missing or malformed parameter (``field`` = ``params.NAME``).
    """
    declared = outbound.params
    for name in given:
        if name not in declared:
            known = ", ".join(declared) or "none: the plan's [outbound] declares no params"
            raise OutboundRefusal(f"params.{name}", f"unknown parameter {name!r} (the plan takes: {known})")
    values: dict[str, str] = {}
    for name in declared:
        if name in given:
            value = given[name]
            problem = value_problem(value)
            if problem is not None:
                raise OutboundRefusal(f"params.{name}", problem)
            values[name] = str(value).strip()
        elif name in outbound.defaults:
            values[name] = outbound.defaults[name]
        else:
            raise OutboundRefusal(f"params.{name}", f"missing: the plan's prompt needs {{{name}}}")
    if sum(len(v) for v in values.values()) > MAX_TOTAL_CHARS:
        raise OutboundRefusal("params", f"the values add up to more than {MAX_TOTAL_CHARS} characters")
    return values


def plan_for_call(plan: Dialplan, values: Mapping[str, str]) -> Dialplan:
    """``plan`` as one outbound call runs it: instruction and greeting rendered with ``values``.

    ``values`` must come from :func:`call_values` (every declared parameter present).
    """
    outbound = plan.outbound
    if outbound is None:
        return plan
    greeting = outbound.greeting_template
    return dataclasses.replace(
        plan,
        system_instruction=render(outbound.instruction_template, values),
        greeting=render(greeting, values) if greeting is not None else None,
    )


def machine_message(plan: Dialplan, values: Mapping[str, str]) -> str | None:
    """The line left on an answering machine for this call (None: the plan leaves none)."""
    outbound = plan.outbound
    if outbound is None or outbound.machine != "message" or outbound.machine_message is None:
        return None
    return render(outbound.machine_message, values)


# --- calling hours ---------------------------------------------------------------------------------


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def describe_hours(outbound: Outbound, tz_name: str) -> str:
    """``09:00-17:00 mon-fri America/New_York``, for refusals and the admin listing."""
    windows = ", ".join(f"{_hhmm(a)}-{_hhmm(b)}" for a, b in outbound.hours) or "any time"
    days = "every day" if len(outbound.days) == 7 else ",".join(DAYS[d] for d in outbound.days)
    return f"{windows} {days} {tz_name}"


def hours_refusal(outbound: Outbound, now: datetime, tz_name: str | None = None) -> str | None:
    """Why a call may not be placed at ``now`` (an aware datetime), or None when it may.

    ``tz_name`` is the callee's time zone when the call gives one; else the plan's. Without hours, or
    without any time zone, there is no window to check.

    Raises:
        ValueError: ``tz_name`` is not a time zone.
    """
    name = tz_name or outbound.timezone
    if not outbound.hours or name is None:
        return None
    tz = zone(name)
    local = now.astimezone(tz)
    minute = local.hour * 60 + local.minute
    if local.weekday() in outbound.days and any(a <= minute < b for a, b in outbound.hours):
        return None
    opens = _next_opening(outbound, local)
    return (
        f"outside the calling hours ({describe_hours(outbound, name)}): it is "
        f"{local:%a %H:%M} there; the next window opens {opens:%a %Y-%m-%d at %H:%M} ({name})"
    )


def _next_opening(outbound: Outbound, local: datetime) -> datetime:
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    minute = local.hour * 60 + local.minute
    for ahead in range(8):
        day = midnight + timedelta(days=ahead)
        if day.weekday() not in outbound.days:
            continue
        for start, _ in sorted(outbound.hours):
            if ahead == 0 and start <= minute:
                continue
            # Wall-clock arithmetic in the zone (a DST change shifts the absolute time, not the hour).
            return day.replace(hour=start // 60, minute=start % 60)
    return midnight  # unreachable: at least one day and one window exist


# --- loading -----------------------------------------------------------------------------------------


class Check(Protocol):
    """The loader's problem collector (gateway/dialplan/loader.py ``_Check``)."""

    def error(self, field: str, problem: str) -> None: ...

    def keys(self, table: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None: ...

    def string(
        self, data: Mapping[str, Any], key: str, prefix: str = "", *, blank_ok: bool = False
    ) -> str | None: ...

    def integer(self, data: Mapping[str, Any], key: str, prefix: str, low: int, high: int) -> int | None: ...


def _window(check: Check, field: str, text: object) -> tuple[int, int] | None:
    if not isinstance(text, str) or not _WINDOW.fullmatch(text.strip()):
        check.error(field, f"{text!r} is not a window like '09:00-17:30' (24-hour, local time)")
        return None
    h1, m1, h2, m2 = (int(g) for g in _WINDOW.fullmatch(text.strip()).groups())  # type: ignore[union-attr]
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end > 24 * 60 or end <= start:
        check.error(
            field, f"{text!r} must end after it starts, on the same day (split a night window in two)"
        )
        return None
    return start, end


def parse_outbound(
    check: Check, table: Mapping[str, Any], instruction: str, greeting: str | None
) -> tuple[Outbound, str, str | None] | None:
    """``[outbound]`` checked; with the instruction and greeting rendered with the defaults (what an
    inbound call on this plan uses). None when ``table`` is empty (no table: not a template plan)."""
    if not table:
        return None
    p = "outbound."
    check.keys(table, OUTBOUND_KEYS, p)
    params: list[str] = []
    raw_params = table.get("params", [])
    if not isinstance(raw_params, list):
        check.error(p + "params", 'must be an array of parameter names, e.g. ["customer_name"]')
        raw_params = []
    for i, name in enumerate(raw_params):
        if not isinstance(name, str) or not _PARAM.fullmatch(name):
            check.error(
                f"{p}params[{i}]", f"{name!r} is not a parameter name (lower-case letters, digits, '_')"
            )
        elif name in params:
            check.error(f"{p}params[{i}]", f"{name!r} is listed twice")
        else:
            params.append(name)
    defaults: dict[str, str] = {}
    raw_defaults = table.get("defaults", {})
    if not isinstance(raw_defaults, dict):
        check.error(p + "defaults", 'must be a table of parameter = "value"')
        raw_defaults = {}
    for name, value in raw_defaults.items():
        if name not in params:
            check.error(f"{p}defaults.{name}", f"{name!r} is not in outbound.params")
        elif (problem := value_problem(value)) is not None:
            check.error(f"{p}defaults.{name}", problem)
        else:
            defaults[name] = str(value)

    caller_id = check.string(table, "caller_id", p)
    if caller_id is not None and not _E164.fullmatch(caller_id):
        check.error(p + "caller_id", f"{caller_id!r} is not an E.164 number like '+15550100123'")
    max_concurrent = check.integer(table, "max_concurrent", p, 1, 10_000)
    ring_timeout = check.integer(table, "ring_timeout_s", p, 5, 600)

    raw_hours = table.get("hours", [])
    if isinstance(raw_hours, str):
        raw_hours = [raw_hours]
    hours: list[tuple[int, int]] = []
    if not isinstance(raw_hours, list):
        check.error(p + "hours", "must be a window like '09:00-17:00' or an array of them")
        raw_hours = []
    listed = isinstance(table.get("hours"), list)
    for i, text in enumerate(raw_hours):
        window = _window(check, f"{p}hours[{i}]" if listed else p + "hours", text)
        if window is not None:
            hours.append(window)
    days: list[int] = []
    raw_days = table.get("days", list(DAYS))
    if not isinstance(raw_days, list) or not raw_days:
        check.error(p + "days", 'must be a non-empty array like ["mon", "tue", "wed", "thu", "fri"]')
        raw_days = list(DAYS)
    for i, day in enumerate(raw_days):
        if not isinstance(day, str) or day.lower()[:3] not in DAYS:
            check.error(f"{p}days[{i}]", f"{day!r} is not a day: one of {', '.join(DAYS)}")
        elif DAYS.index(day.lower()[:3]) not in days:
            days.append(DAYS.index(day.lower()[:3]))
    tz_name = check.string(table, "timezone", p)
    if tz_name is not None:
        try:
            zone(tz_name)
        except ValueError as exc:
            check.error(p + "timezone", str(exc))
    if "days" in table and not hours:
        check.error(p + "days", "has no effect without outbound.hours")

    machine: MachineAction = "continue"
    raw_machine = check.string(table, "machine", p)
    if raw_machine is not None:
        if raw_machine not in MACHINE_ACTIONS:
            check.error(p + "machine", f"must be 'message', 'hangup' or 'continue', not {raw_machine!r}")
        else:
            machine = MACHINE_ACTIONS[MACHINE_ACTIONS.index(raw_machine)]
    provider: OutboundProvider = "twilio"
    raw_provider = check.string(table, "provider", p)
    if raw_provider is not None:
        if raw_provider not in PROVIDERS:
            check.error(p + "provider", f"must be one of {', '.join(PROVIDERS)}, not {raw_provider!r}")
        else:
            provider = PROVIDERS[PROVIDERS.index(raw_provider)]
    message = check.string(table, "machine_message", p)
    if machine == "message" and message is None:
        check.error(p + "machine_message", "outbound.machine = 'message' needs the message to leave")
    elif machine != "message" and message is not None:
        check.error(p + "machine_message", "only used with outbound.machine = 'message'")

    texts = {"system_instruction": instruction, "greeting": greeting, p + "machine_message": message}
    for field, text in texts.items():
        if text is None:
            continue
        try:
            used = placeholders(text)
        except ValueError as exc:
            check.error(field, str(exc))
            continue
        for name in used:
            if name not in params:
                check.error(field, f"uses {{{name}}}, which outbound.params does not declare")
    outbound = Outbound(
        params=tuple(params),
        defaults=MappingProxyType(defaults),
        caller_id=caller_id,
        max_concurrent=max_concurrent,
        hours=tuple(hours),
        days=tuple(sorted(days)),
        timezone=tz_name,
        machine=machine,
        machine_message=message,
        ring_timeout_s=ring_timeout or 30,
        provider=provider,
        instruction_template=instruction,
        greeting_template=greeting,
    )
    inbound_values = {name: defaults.get(name, "") for name in params}
    try:
        rendered = (
            render(instruction, inbound_values),
            (render(greeting, inbound_values) if greeting is not None else None),
        )
    except (KeyError, ValueError):
        return outbound, instruction, greeting  # reported above; the plan is not built
    return outbound, rendered[0], rendered[1]
