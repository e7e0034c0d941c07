"""Phone-provider side of the gateway, sans-I/O: wire messages ⇄ provider-neutral events.

Only Twilio Media Streams for now (:mod:`gateway.telephony.twilio`), plus the TwiML the voice
webhook answers with and ``X-Twilio-Signature`` checks.
"""

from gateway.telephony.events import (
    CallerAudio,
    CallStarted,
    CallStopped,
    ClearPlayback,
    Connected,
    DtmfPressed,
    MarkReached,
    PlayAudio,
    SetMark,
    TelephonyCommand,
    TelephonyEvent,
)
from gateway.telephony.signature import twilio_signature, verify_twilio_signature
from gateway.telephony.twilio import TwilioCodec, TwilioState
from gateway.telephony.twiml import connect_stream_twiml, dial_twiml, say_hangup_twiml

__all__ = [
    "CallStarted",
    "CallStopped",
    "CallerAudio",
    "ClearPlayback",
    "Connected",
    "DtmfPressed",
    "MarkReached",
    "PlayAudio",
    "SetMark",
    "TelephonyCommand",
    "TelephonyEvent",
    "TwilioCodec",
    "TwilioState",
    "connect_stream_twiml",
    "dial_twiml",
    "say_hangup_twiml",
    "twilio_signature",
    "verify_twilio_signature",
]
