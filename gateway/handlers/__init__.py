"""Business tool handlers: plain functions marked with :func:`gateway.tools.tool`.

A module here (or anywhere on ``sys.path``) is offered to dialplans by listing it in
``GATEWAY_TOOL_MODULES``; :mod:`gateway.handlers.support` is the example the support-line dialplan
(``dialplans/support.toml``) uses. Copy it as the starting point for your own.
"""
