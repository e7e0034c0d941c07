"""Shape checks for identities that arrive from outside before they are used anywhere.

The voice webhook's ``CallSid``, ``To`` and ``From`` end up in a signed token, TwiML attributes,
logs and dialplan matching. Signed requests come from Twilio, but an unsigned development webhook
or a compatible provider may send anything: refuse odd shapes with a 400 up front rather than fail
later in a less obvious place.
"""

from __future__ import annotations

import re
from typing import Final

#: Twilio's are ``CA`` + 32 hex digits; Twilio-compatible platforms use UUIDs; Telnyx's call_control_id
#: is a version prefix and base64url (``v3:2EC-70CTEjlUq…``, 57 characters in Telnyx's examples).
#: Asterisk's channel ids (``1733500000.42``) carry a dot.
_SID: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9:_=.-]{0,79}")
#: E.164, ``client:name``, ``sip:user@host``, "Anonymous"…: at most this many characters, all printable.
_ADDRESS_MAX: Final = 256


def _address_ok(value: str) -> bool:
    # str.isprintable() refuses control and format characters, surrogates, unassigned code points and
    # the noncharacters (U+FFFE…) that XML cannot carry: a From of "\ufffe" once made the TwiML raise
    # (HTTP 500) after a call slot had been reserved.
    return len(value) <= _ADDRESS_MAX and value.isprintable()


def webhook_identity_problem(call_sid: str, to: str, from_: str) -> str | None:
    """What is wrong with a webhook's call identity, or None. The answer never echoes the values."""
    if not _SID.fullmatch(call_sid):
        return "CallSid must be 1-80 letters, digits, '-', '_', ':', '.' or '='"
    if not to or not _address_ok(to):
        return "To must be a printable address of at most 256 characters"
    if not _address_ok(from_):
        return "From must be a printable address of at most 256 characters"
    return None
