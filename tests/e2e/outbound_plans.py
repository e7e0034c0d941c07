"""What the outbound tests of each provider share: the simulated phones' numbers (who answers depends on
the last digits: gateway/caller/network.py ``behaviour_for``) and the plans they dial with."""

from __future__ import annotations

OUR_NUMBER = "+15550100100"
PERSON = "+15551230001"
MACHINE = "+15551230000"
BUSY = "+15551230099"
NO_ANSWER = "+15551230098"
REJECTED = "+15551230097"


def reminders(provider: str) -> str:
    """A plan with parameters that leaves a message on machines, placed through ``provider``."""
    return f"""
name = "reminders"
system_instruction = "You call {{customer_name}} about {{appointment}}."
greeting = "Say: 'Hello {{customer_name}}, this is Acme about {{appointment}}.'"
[vad]
silence_duration_ms = 300
[outbound]
provider = "{provider}"
params = ["customer_name", "appointment"]
defaults = {{ appointment = "your next visit" }}
caller_id = "{OUR_NUMBER}"
max_concurrent = 3
machine = "message"
machine_message = "Hi {{customer_name}}, Acme here about {{appointment}}. Please call us back."
ring_timeout_s = 20
"""


def survey(provider: str) -> str:
    """A plan that hangs up on machines, placed through ``provider``."""
    return f"""
name = "survey"
system_instruction = "A short survey."
greeting = "Say: 'Hi, a short survey.'"
[outbound]
provider = "{provider}"
caller_id = "{OUR_NUMBER}"
machine = "hangup"
"""
