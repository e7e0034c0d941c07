"""The simulated phone caller (``gateway call``): an independent stand-in for Twilio's side of a call.

Lets anyone try the gateway without a phone, and lets tests catch the gateway's Twilio mistakes:
it shares no code with :mod:`gateway.telephony`.
"""

from gateway.caller.call import CallOptions, CallReport, place_call

__all__ = ["CallOptions", "CallReport", "place_call"]
