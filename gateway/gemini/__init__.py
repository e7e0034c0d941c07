"""Gemini Live client: one BidiGenerateContent session per phone call, over raw ``websockets``.

* :mod:`gateway.gemini.messages` — sans-I/O: typed config, client-message encoders, server-event parser;
* :mod:`gateway.gemini.protocol` — sans-I/O: the session state machine and close-code classification;
* :mod:`gateway.gemini.backoff` — reconnect delays;
* :mod:`gateway.gemini.auth` — handshake credentials: the API key, or Vertex AI bearer tokens from ADC;
* :mod:`gateway.gemini.session` — the asyncio layer (``LiveEndpoint``, ``LiveSession``).

This package module imports nothing, so sans-I/O users do not pull in ``websockets``.
"""
