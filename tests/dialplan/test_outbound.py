"""``[outbound]``: templates, per-call parameters and calling hours (sans-I/O, no event loop)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.dialplan.loader import load_dialplan
from gateway.dialplan.model import Outbound
from gateway.dialplan.outbound import (
    OutboundRefusal,
    call_values,
    hours_refusal,
    machine_message,
    placeholders,
    plan_for_call,
    render,
)
from gateway.errors import DialplanErrors

from .helpers import write

REMINDERS = """\
name = "reminders"
system_instruction = "Call {name} about {when}. Literal: {{x}}."
greeting = "Say: 'Hi {name}.'"
[outbound]
params = ["name", "when"]
defaults = { when = "soon" }
caller_id = "+15550100100"
max_concurrent = 4
hours = ["09:00-12:00", "13:00-17:30"]
days = ["mon", "tue", "wed", "thu", "fri"]
timezone = "America/New_York"
machine = "message"
machine_message = "Hi {name}, call us back."
ring_timeout_s = 20
provider = "telnyx"
"""


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(DialplanErrors) as errors:
        load_dialplan(write(tmp_path, "p.toml", text))
    return [f"{e.field}: {e.problem}" for e in errors.value.errors]


def test_an_outbound_plan_loads_with_its_templates_and_renders_defaults_for_inbound(tmp_path: Path) -> None:
    """The plan itself holds the prompt rendered with defaults (empty when none); the templates are kept."""
    plan = load_dialplan(write(tmp_path, "r.toml", REMINDERS))
    outbound = plan.outbound
    assert outbound is not None
    assert plan.numbers == ()  # an outbound-only plan needs no number of its own
    assert plan.system_instruction == "Call  about soon. Literal: {x}."
    assert plan.greeting == "Say: 'Hi .'"
    assert outbound.instruction_template == "Call {name} about {when}. Literal: {{x}}."
    assert (outbound.params, dict(outbound.defaults)) == (("name", "when"), {"when": "soon"})
    assert outbound.hours == ((540, 720), (780, 1050))
    assert outbound.days == (0, 1, 2, 3, 4)
    assert (outbound.timezone, outbound.machine, outbound.ring_timeout_s, outbound.provider) == (
        "America/New_York",
        "message",
        20,
        "telnyx",
    )
    # Without the key, Twilio places the calls, as before the key existed.
    assert load_dialplan(
        write(tmp_path, "t.toml", REMINDERS.replace('provider = "telnyx"\n', ""))
    ).outbound == (dataclasses.replace(outbound, provider="twilio"))


def test_a_call_renders_its_parameters_once(tmp_path: Path) -> None:
    """Values are inserted as they are: braces in a value are not expanded again."""
    plan = load_dialplan(write(tmp_path, "r.toml", REMINDERS))
    assert plan.outbound is not None
    values = call_values(plan.outbound, {"name": "{when} Ada"})
    assert values == {"name": "{when} Ada", "when": "soon"}
    rendered = plan_for_call(plan, values)
    assert rendered.system_instruction == "Call {when} Ada about soon. Literal: {x}."
    assert rendered.greeting == "Say: 'Hi {when} Ada.'"
    assert machine_message(plan, values) == "Hi {when} Ada, call us back."
    assert rendered.name == plan.name
    assert rendered.version == plan.version


@pytest.mark.parametrize(
    ("given", "field", "words"),
    [
        (
            {"name": "Ada", "coupon": "x"},
            "params.coupon",
            "unknown parameter 'coupon' (the plan takes: name, when)",
        ),
        ({}, "params.name", "missing"),
        ({"name": 3}, "params.name", "must be a string"),
        ({"name": "a\u2028b"}, "params.name", "one line"),
        ({"name": "a" * 201}, "params.name", "at most 200"),
    ],
)
def test_call_values_refuse_naming_the_parameter(given: dict[str, object], field: str, words: str) -> None:
    """Every refusal names the parameter to fix."""
    outbound = Outbound(params=("name", "when"), defaults={"when": "soon"})
    with pytest.raises(OutboundRefusal) as refused:
        call_values(outbound, given)
    assert refused.value.field == field
    assert words in refused.value.message


def test_templates_refuse_lone_braces_and_bad_names() -> None:
    """``{{``/``}}`` are braces; a lone one or a non-name placeholder is an error saying how to fix it."""
    assert placeholders("{a} {{b}} {a} {c_1}") == ("a", "c_1")
    assert render("{{{a}}}", {"a": "x"}) == "{x}"
    with pytest.raises(ValueError, match="lone '}'"):
        placeholders("oops }")
    with pytest.raises(ValueError, match="not a placeholder"):
        placeholders("{Not A Name}")


def test_load_errors_name_each_field(tmp_path: Path) -> None:
    """Undeclared placeholders, bad hours, zones, days and machine settings: one problem per field."""
    problems = _problems(
        tmp_path,
        """\
        name = "bad"
        system_instruction = "Hi {who}."
        greeting = "{"
        [outbound]
        params = ["name", "name"]
        defaults = { other = "x" }
        caller_id = "555"
        hours = ["18:00-09:00", "9-5"]
        days = ["funday"]
        timezone = "Mars/Base"
        machine = "voicemail"
        machine_message = "Hi"
        provider = "bandwidth"
        colour = "red"
        """,
    )
    assert "outbound.colour: unknown key" in problems
    assert "outbound.params[1]: 'name' is listed twice" in problems
    assert "outbound.defaults.other: 'other' is not in outbound.params" in problems
    assert any(p.startswith("outbound.caller_id: '555' is not an E.164") for p in problems)
    assert any(p.startswith("outbound.hours[0]: '18:00-09:00' must end after it starts") for p in problems)
    assert any(p.startswith("outbound.hours[1]: '9-5' is not a window") for p in problems)
    assert any(p.startswith("outbound.days[0]: 'funday' is not a day") for p in problems)
    assert any(p.startswith("outbound.timezone: 'Mars/Base' is not an IANA time zone") for p in problems)
    assert any(p.startswith("outbound.machine: must be 'message', 'hangup' or 'continue'") for p in problems)
    assert "outbound.machine_message: only used with outbound.machine = 'message'" in problems
    assert "outbound.provider: must be one of twilio, telnyx, vonage, plivo, not 'bandwidth'" in problems
    assert "system_instruction: uses {who}, which outbound.params does not declare" in problems
    assert any(p.startswith("greeting: lone '{'") for p in problems)


def test_braces_of_an_inbound_plan_stay_braces(tmp_path: Path) -> None:
    """Without [outbound] nothing is a template: a prompt may hold braces as it always could."""
    plan = load_dialplan(
        write(tmp_path, "p.toml", 'default = true\nsystem_instruction = "Reply as JSON: {\\"ok\\": true}"\n')
    )
    assert plan.system_instruction == 'Reply as JSON: {"ok": true}'
    assert plan.outbound is None


OFFICE = Outbound(hours=((540, 1020),), days=(0, 1, 2, 3, 4), timezone="America/New_York")


@pytest.mark.parametrize(
    ("utc", "refused", "opens"),
    [
        ("2026-03-04T15:00:00", False, ""),  # Wed 10:00 EST
        ("2026-03-04T13:30:00", True, "Wed 2026-03-04 at 09:00"),  # Wed 08:30: later today
        ("2026-03-04T22:30:00", True, "Thu 2026-03-05 at 09:00"),  # Wed 17:30: tomorrow
        ("2026-03-06T23:00:00", True, "Mon 2026-03-09 at 09:00"),  # Fri 18:00: after the weekend
        ("2026-03-09T13:30:00", False, ""),  # Mon 09:30 EDT (clocks went forward on Sunday)
    ],
)
def test_calling_hours_in_the_callees_zone(utc: str, refused: bool, opens: str) -> None:
    """Windows are local wall-clock times (DST included); a refusal says when the next one opens there."""
    now = datetime.fromisoformat(utc).replace(tzinfo=UTC)
    reason = hours_refusal(OFFICE, now)
    assert (reason is not None) == refused
    if refused:
        assert reason is not None
        assert f"the next window opens {opens} (America/New_York)" in reason
        assert "09:00-17:00 mon,tue,wed,thu,fri America/New_York" in reason


def test_the_callees_zone_overrides_the_plans() -> None:
    """A zone given with the call wins: 10:00 in New York is 07:00 in Los Angeles."""
    now = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)
    assert hours_refusal(OFFICE, now) is None
    reason = hours_refusal(OFFICE, now, "America/Los_Angeles")
    assert reason is not None
    assert "opens Wed 2026-03-04 at 09:00 (America/Los_Angeles)" in reason
    assert hours_refusal(Outbound(), now) is None  # no hours: any time
