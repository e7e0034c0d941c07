"""Telephony voice-bot gateway for the Gemini Live API."""

__version__ = "0.1.0"
