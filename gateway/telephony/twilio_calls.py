"""Twilio's ``Calls`` resource for outbound calls, sans-I/O: the create request and what callbacks say.

Relied on (Twilio's documentation):

* "Call resource", *Create a Call resource*: ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json``,
  HTTP Basic ``AccountSid:AuthToken``, form-encoded; ``To``, ``From`` and one of ``Url``/``Twiml``/
  ``ApplicationSid`` are required; ``Method`` (default POST), ``StatusCallback``,
  ``StatusCallbackMethod``, ``StatusCallbackEvent`` (repeated, any of ``initiated ringing answered
  completed``), ``Timeout`` (ring time, seconds, default 60). The reply is 201 with the call's JSON
  (``sid``, ``status`` ``queued``, ``direction`` ``outbound-api``…).
* "Answering Machine Detection": ``MachineDetection`` = ``Enable`` or ``DetectMessageEnd`` (for leaving a
  message: the verdict for a machine comes once its greeting ended, usually at the beep),
  ``AsyncAmd=true`` (the call is connected at once and AMD runs in the background),
  ``AsyncAmdStatusCallback`` (+ ``…Method``, POST) receives ``CallSid``, ``AccountSid``, ``AnsweredBy``
  (``human``, ``machine_start``, ``machine_end_beep``, ``machine_end_silence``, ``machine_end_other``,
  ``fax``, ``unknown``) and ``MachineDetectionDuration`` (ms).
* "Call status callbacks": the standard request parameters (``CallSid``, ``AccountSid``, ``From``,
  ``To``, ``CallStatus``, ``Direction``, ``ApiVersion``) plus ``CallbackSource`` (``call-progress-events``),
  ``SequenceNumber``, ``Timestamp`` and, once ended, ``CallDuration``. ``CallStatus`` is ``queued``,
  ``initiated``, ``ringing``, ``in-progress``, ``completed``, ``busy``, ``no-answer``, ``failed`` or
  ``canceled``; the end of a call is always reported, whichever events were asked for.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AMD_CONTINUE",
    "AMD_FAX",
    "AMD_MACHINE",
    "NEVER_CONNECTED",
    "STATUS_EVENTS",
    "STATUS_ORDER",
    "TERMINAL",
    "create_call_form",
]

#: The progress events the gateway subscribes to, in Twilio's order.
STATUS_EVENTS: Final = ("initiated", "ringing", "answered", "completed")
#: Every ``CallStatus``, in the order a call goes through them: a record event's place (seq offset).
STATUS_ORDER: Final = (
    "queued", "initiated", "ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled",
)  # fmt: skip
#: Statuses after which the call is over.
TERMINAL: Final = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
#: Over without ever being answered: no media stream ran, so no record would exist but for the callback.
NEVER_CONNECTED: Final = frozenset({"busy", "no-answer", "failed", "canceled"})
#: ``AnsweredBy`` verdicts meaning an answering machine whose greeting has ended (DetectMessageEnd).
AMD_MACHINE: Final = frozenset(
    {"machine_end_beep", "machine_end_silence", "machine_end_other", "machine_start"}
)
AMD_FAX: Final = "fax"
#: A person, or no verdict: the conversation goes on.
AMD_CONTINUE: Final = frozenset({"human", "unknown"})


def create_call_form(
    *,
    to: str,
    from_: str,
    url: str,
    status_callback: str,
    amd_callback: str | None,
    timeout_s: int,
    detect_message_end: bool = True,
) -> list[tuple[str, str]]:
    """The form of ``POST …/Calls.json`` for one outbound call, as Twilio documents it (pairs, because
    ``StatusCallbackEvent`` repeats). With ``amd_callback``, asynchronous answering-machine detection:
    ``detect_message_end`` waits for the end of a machine's greeting, so a message can be left after
    the beep; else ``Enable`` (the verdict as soon as Twilio has one)."""
    form = [
        ("To", to),
        ("From", from_),
        ("Url", url),
        ("Method", "POST"),
        ("StatusCallback", status_callback),
        ("StatusCallbackMethod", "POST"),
        *(("StatusCallbackEvent", event) for event in STATUS_EVENTS),
        ("Timeout", str(timeout_s)),
    ]
    if amd_callback is not None:
        form += [
            ("MachineDetection", "DetectMessageEnd" if detect_message_end else "Enable"),
            ("AsyncAmd", "true"),
            ("AsyncAmdStatusCallback", amd_callback),
            ("AsyncAmdStatusCallbackMethod", "POST"),
        ]
    return form
