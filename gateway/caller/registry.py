"""Every provider's side of a simulated call, by name (``gateway call --provider NAME``).

Kept apart from :mod:`gateway.caller.sides` (the base every side builds on), so a side module can be
imported on its own.
"""

from __future__ import annotations

from gateway.caller.side_asterisk import AsteriskJsonSide, AsteriskSide
from gateway.caller.side_audiosocket import AudioSocketSide
from gateway.caller.side_exotel import ExotelSide
from gateway.caller.side_freeswitch import FreeSwitchSide
from gateway.caller.side_jambonz import JambonzSide
from gateway.caller.side_plivo import PlivoSide
from gateway.caller.side_signalwire import SignalWireSide
from gateway.caller.side_telnyx import TelnyxCallControlSide, TelnyxSide
from gateway.caller.side_vonage import VonageSide
from gateway.caller.sides import CallerSide, TwilioSide
from gateway.errors import ConfigError

__all__ = ["SIDES", "side_for"]

#: provider name → its side.
SIDES: dict[str, type[CallerSide]] = {
    "twilio": TwilioSide,
    "signalwire": SignalWireSide,
    "telnyx": TelnyxSide,
    "telnyx-callcontrol": TelnyxCallControlSide,
    "plivo": PlivoSide,
    "exotel": ExotelSide,
    "vonage": VonageSide,
    "freeswitch": FreeSwitchSide,
    "jambonz": JambonzSide,
    "asterisk": AsteriskSide,
    "asterisk-json": AsteriskJsonSide,
    "audiosocket": AudioSocketSide,
}


def side_for(provider: str) -> CallerSide:
    """A fresh side for ``provider``. Raises ConfigError for an unknown one."""
    try:
        return SIDES[provider]()
    except KeyError:
        raise ConfigError(f"unknown provider {provider!r}; one of {', '.join(sorted(SIDES))}") from None
