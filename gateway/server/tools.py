"""Wiring the tool registry into a call: the session's declarations and the bridge's router."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from gateway.bridge.call import CallBridge
from gateway.bridge.control import call_tools
from gateway.dialplan.model import Dialplan
from gateway.gemini.messages import FunctionDeclaration
from gateway.server.state import HTTP_CLIENT, SETTINGS, TOOLS
from gateway.tools.call_rest import CallControlRest
from gateway.tools.router import ToolRouter

__all__ = ["declarations", "router_factory"]


def _model(app: web.Application, plan: Dialplan) -> str:
    return plan.model or app[SETTINGS].gemini_model


def declarations(app: web.Application, plan: Dialplan) -> tuple[FunctionDeclaration, ...]:
    """The ``functionDeclarations`` for a session on ``plan`` (what the model may call)."""
    return app[TOOLS].declarations_for(plan, _model(app, plan))


def router_factory(
    app: web.Application, plan: Dialplan, rest: CallControlRest | None
) -> Callable[[CallBridge], ToolRouter]:
    """The bridge's ``tools`` argument: runs exactly what :func:`declarations` announced.

    ``rest`` is the call's provider's REST client (its StreamRoute's), or None when the provider's
    credentials are not set: then ``transfer_call`` answers the model that transfers are not set up,
    and hang-up closes the media stream only.
    """
    return call_tools(app[TOOLS], plan=plan, model=_model(app, plan), rest=rest, http=app.get(HTTP_CLIENT))
