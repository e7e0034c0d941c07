"""The simulated Telnyx network: Call Control's "Dial" and the phones it rings, for outbound calls.

:class:`TelnyxNetwork` is the :class:`~gateway.caller.telnyx_api.TelnyxApi` stand-in (every Call Control
command works as there, so inbound simulated calls can share it) that also takes Telnyx's Dial:
give the gateway its :attr:`~TelnyxNetwork.base_url` as ``TELNYX_API_BASE`` and its
:attr:`~TelnyxNetwork.public_key` as the webhook public key. ``POST /v2/calls`` is checked as Telnyx
checks it (Bearer API key; JSON; ``connection_id``, E.164 ``to``/``from``, an absolute ``webhook_url``,
the documented values of ``webhook_url_method``, ``timeout_secs`` (5-600), ``answering_machine_detection``,
a base64 ``client_state``; other fields are Telnyx's many options, taken and ignored) and answered 200
with the call's ids; then the callee's phone rings, and Telnyx's webhooks follow, in its envelope,
signed with Ed25519 as Telnyx signs, ``client_state`` echoed in every one:

* ``call.initiated`` (``direction: outgoing``, ``state: bridging``);
* answered: ``call.answered``; the gateway's ``streaming_start`` command (or the Dial's own
  ``stream_url``) opens Telnyx's media stream to it, with the callee on the line (the simulated caller's
  machinery, :mod:`gateway.caller.call`, in reverse), between ``streaming.started`` and
  ``streaming.stopped``; with answering machine detection, ``call.machine.detection.ended`` (and for a
  machine ``call.machine.greeting.ended`` at its beep; ``premium``: the ``call.machine.premium.*`` pair);
* ``call.hangup`` at the end, with Telnyx's ``hangup_cause`` and ``hangup_source``. The gateway's
  ``hangup`` command ends the call (``stop`` on the stream, then close; ``originator_cancel`` while it
  rings). A stream the gateway closes without ``hangup`` leaves the call up, as at Telnyx: the callee
  hears silence and hangs up a second later.

Who answers depends on the number dialled (or :attr:`TelnyxNetwork.behaviours`), as on the Twilio
network (:func:`gateway.caller.network.behaviour_for`): ending in ``0`` an answering machine (greeting,
beep, silence); ``…99`` busy (``user_busy``); ``…98`` no answer (``timeout``); ``…97`` the call is
rejected (``call_rejected``); any other, a person who speaks once the bot's greeting has played, waits for
the reply and hangs up.

Written from Telnyx's documents and the telnyx-python SDK's types (``types/call_dial_params.py``,
``call_dial_response.py``, ``call_initiated.py``, ``call_answered.py``, ``call_hangup.py``,
``call_machine_detection_ended.py``, ``call_machine_greeting_ended.py``,
``call_machine_premium_detection_ended.py``, ``call_machine_premium_greeting_ended.py``,
``call_streaming_started.py``, ``calls/action_start_streaming_params.py``) and the "API error codes"
page (10004 missing parameter, 10016 not E.164, 10003 invalid URL, 10017 unknown associated resource),
independently of the gateway's Telnyx code.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.caller import wire_telnyx as wire
from gateway.caller.call import CallOptions, CallReport, place_call
from gateway.caller.network import (
    BEEP_VERDICT_S,
    HUMAN_VERDICT_S,
    MACHINE_RECORD_S,
    Behaviour,
    behaviour_for,
)
from gateway.caller.samples import MACHINE_GREETING_S
from gateway.caller.side_telnyx import TelnyxSide
from gateway.caller.sides import Offer
from gateway.caller.telnyx_api import ApiCall, TelnyxApi, _error
from gateway.errors import GatewayError, TelephonyProtocolError

__all__ = ["DialledCall", "TelnyxCalleeSide", "TelnyxNetwork"]

_E164: Final = re.compile(r"\+[1-9][0-9]{1,14}")
#: ``answering_machine_detection``'s values (call_dial_params.py).
AMD_MODES: Final = ("premium", "detect", "detect_beep", "detect_words", "greeting_end", "disabled")
#: Modes that report the end of a machine's greeting (``call.machine.greeting.ended``, premium's own).
_GREETING_MODES: Final = frozenset({"greeting_end", "detect_beep", "detect_words", "premium"})
#: ``timeout_secs``: "Minimum value is 5 seconds. Maximum value is 600 seconds" (call_dial_params.py);
#: the default when absent is not stated there; 30 s is assumed (it only matters when ``ring_s`` ≥ 30).
TIMEOUT_RANGE: Final = (5, 600)
DEFAULT_TIMEOUT_S: Final = 30
#: An answered callee waits this long for a media stream (the gateway's ``streaming_start``), then hangs up.
STREAM_WAIT_S: Final = 10.0
#: When the gateway closes the stream without hanging up, the callee hears silence this long, then hangs up.
SILENCE_HANGUP_S: Final = 1.0
#: Detection listens from the stream's start, or from this long after the answer when no stream starts.
AMD_NO_STREAM_S: Final = 1.0

Notify = Callable[[str, Mapping[str, Any]], Awaitable[int]]


class DialledCall(ApiCall):
    """One call the gateway dialled: what it asked, what happened, and when (monotonic seconds).

    An :class:`ApiCall` too, so the command route treats it as Telnyx does (404 unknown, 422 with 90018
    once it has ended) and records its commands and the ones Telnyx would refuse (``problems``).
    """

    def __init__(
        self,
        *,
        body: dict[str, Any],
        behaviour: Behaviour,
        connection_id: str,
        timeout_s: int,
        stream: wire.StreamRequest | None,
    ) -> None:
        super().__init__()
        #: The Dial request as the gateway sent it.
        self.body = body
        self.behaviour = behaviour
        self.call_control_id = wire.new_call_control_id()
        self.call_leg_id = wire.new_id()
        self.call_session_id = wire.new_id()
        self.connection_id = connection_id
        self.to: str = body["to"]
        self.from_: str = body["from"]
        self.webhook_url: str = body["webhook_url"]
        self.client_state: str | None = body.get("client_state")
        self.amd_mode: str = body.get("answering_machine_detection") or "disabled"
        self.timeout_s = timeout_s
        self.created_at = time.monotonic()
        self.start_time = _iso_now()
        #: ``bridging`` → ``answered`` → ``hangup``.
        self.state = "bridging"
        #: Webhooks posted: (event_type, HTTP status of the gateway's answer, 0 when unreachable).
        self.webhooks: list[tuple[str, int]] = []
        #: Detection webhooks posted: (event_type, result, HTTP status).
        self.amd: list[tuple[str, str, int]] = []
        self.hangup_cause = ""
        self.hangup_source = ""
        #: The stream the gateway asked for (``streaming_start``, or the Dial's ``stream_url``).
        self.stream = stream
        self.answered_at: float | None = None
        self.stream_started_at: float | None = None
        #: When the callee first heard the bot (the first audible audio).
        self.first_audio_at: float | None = None
        self.report: CallReport | None = None
        self.error = ""
        self.log: list[str] = []
        #: The gateway's ``hangup`` command (while ringing: a cancel).
        self.hangup = asyncio.Event()
        self.stream_asked = asyncio.Event()
        self.stream_running = asyncio.Event()
        #: The call is over: detection stops listening.
        self.over = asyncio.Event()
        self.done = asyncio.Event()

    @property
    def first_word_s(self) -> float | None:
        """From the Dial reaching the network to the callee hearing the bot's first word."""
        return None if self.first_audio_at is None else self.first_audio_at - self.created_at

    @property
    def events(self) -> list[str]:
        """The event types posted, in order."""
        return [event for event, _ in self.webhooks]


class _Refused(Exception):
    """A Dial Telnyx would refuse: its error code, title, detail and the offending field."""

    def __init__(self, status: int, code: str, title: str, detail: str, pointer: str = "") -> None:
        self.response = _error(status, title, code=code, detail=detail, pointer=pointer)
        super().__init__(detail)


def _iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _is_base64(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


async def _waits(event: asyncio.Event, delay_s: float) -> bool:
    """Whether ``event`` is set within ``delay_s``."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, delay_s)):
            await event.wait()
    return event.is_set()


class TelnyxCalleeSide(TelnyxSide):
    """Telnyx's side of a dialled call once answered: the stream ``streaming_start`` asked for, with the
    dialled call's ids, ``from`` (the gateway's number) and ``to`` (the callee), and the
    ``streaming.started``/``streaming.stopped`` webhooks around it."""

    call_control = True

    def __init__(self, call: DialledCall, notify: Notify) -> None:
        super().__init__()
        self.call = call
        self._notify = notify
        self._from, self._to = call.from_, call.to
        self._session_id, self._leg_id = call.call_session_id, call.call_leg_id
        self._connection_id = call.connection_id

    async def request_call(
        self, http: aiohttp.ClientSession, opts: CallOptions, report: CallReport
    ) -> Offer | None:
        stream = self.call.stream
        assert stream is not None  # the network answers only once a stream was asked for
        report.call_sid = self.call.call_control_id
        return self._offer(stream, report)

    async def stream_status(
        self, http: aiohttp.ClientSession, offer: Offer, opts: CallOptions, report: CallReport, event: str
    ) -> None:
        kind = "streaming.started" if event == "stream-started" else "streaming.stopped"
        await self._notify(kind, {"stream_url": report.stream_url})


class TelnyxNetwork(TelnyxApi):
    """Telnyx's Call Control API v2 on loopback (Dial and commands), and the simulated phones behind it."""

    def __init__(
        self,
        *,
        api_key: str = "",
        signing_key: Ed25519PrivateKey | None = None,
        connection_id: str = "",
        ring_s: float = 1.0,
        behaviours: dict[str, Behaviour] | None = None,
        human_play: str = "builtin:hello",
        machine_record_s: float = MACHINE_RECORD_S,
        on_event: Callable[[str], None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        prefix: str = "/v2",
    ) -> None:
        super().__init__(host, port, prefix=prefix, api_key=api_key)
        #: Signs every webhook; the gateway checks with :attr:`public_key`.
        self.signing_key = signing_key or wire.new_signing_key()
        #: When set, the Call Control App id a Dial must name (else any non-empty one is taken).
        self.connection_id = connection_id
        #: How long a phone rings before it is answered (or declared busy / rejected).
        self.ring_s = ring_s
        #: Per-number behaviour, over :func:`~gateway.caller.network.behaviour_for`.
        self.behaviours: dict[str, Behaviour] = dict(behaviours or {})
        self.human_play = human_play
        #: A machine records this long at most, then hangs up.
        self.machine_record_s = machine_record_s
        self.on_event = on_event
        #: The calls dialled, by call_control_id (also in :attr:`calls`, with the inbound ones).
        self.dialled: dict[str, DialledCall] = {}
        #: Every Dial request, with the status the network answered (accepted or not).
        self.requests: list[tuple[int, Any]] = []
        self._by_command_id: dict[str, DialledCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None

    @property
    def public_key(self) -> str:
        """The webhook public key as Mission Control shows it (the gateway's ``TELNYX_PUBLIC_KEY``)."""
        return wire.public_key_b64(self.signing_key)

    # --- lifecycle ---------------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        super()._routes(app)
        app.router.add_post(self.prefix + "/calls", self._dial)

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        try:
            await super().start()
        except BaseException:
            await self._http.close()
            raise

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await super().close()
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def wait(self, call_control_id: str, timeout_s: float = 30.0) -> DialledCall:
        """The call once it is over (``call.hangup`` posted)."""
        call = self.dialled[call_control_id]
        async with asyncio.timeout(timeout_s):
            await call.done.wait()
        return call

    def _say(self, call: DialledCall, line: str) -> None:
        text = f"[{time.monotonic() - call.created_at:7.3f}s] {call.call_control_id[:12]}… {line}"
        call.log.append(text)
        if self.on_event is not None:
            self.on_event(text)

    # --- Dial --------------------------------------------------------------------------------------

    async def _dial(self, request: web.Request) -> web.Response:
        body: Any = None
        try:
            if (refused := self._unauthorized(request)) is not None:
                self.requests.append((refused.status, None))
                return refused
            raw = await request.read()
            with contextlib.suppress(ValueError):
                body = json.loads(raw)
            if request.content_type != "application/json" or not isinstance(body, dict):
                raise _Refused(422, "10015", "Bad Request", "the body must be a JSON object")
            command_id = body.get("command_id")
            if command_id is not None and not isinstance(command_id, str):
                raise _Refused(422, "10015", "Bad Request", "command_id must be a string", "/command_id")
            if command_id and command_id in self._by_command_id:
                # "Telnyx will ignore others Dial commands with the same command_id."
                self.requests.append((200, body))
                return web.json_response(self._resource(self._by_command_id[command_id]))
            call = self._check(body, raw)
        except _Refused as exc:
            self.requests.append((exc.response.status, body))
            return exc.response
        self.requests.append((200, body))
        self.calls[call.call_control_id] = self.dialled[call.call_control_id] = call
        if command_id:
            self._by_command_id[command_id] = call
        self._say(call, f"dial {call.from_} → {call.to} ({call.behaviour}, AMD {call.amd_mode})")
        task = asyncio.create_task(self._ring(call), name=f"telnyx-network:{call.call_control_id[:12]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response(self._resource(call))

    def _check(self, body: dict[str, Any], raw: bytes) -> DialledCall:
        """A Dial checked as Telnyx documents it (call_dial_params.py); Telnyx answers 422 to any fault."""

        def refuse(code: str, title: str, detail: str, field: str) -> _Refused:
            return _Refused(422, code, title, detail, f"/{field}")

        def missing(field: str) -> _Refused:
            return refuse("10004", "Missing required parameter", f"{field} is required", field)

        connection_id = body.get("connection_id")
        if connection_id is None or connection_id == "":
            raise missing("connection_id")
        if not isinstance(connection_id, str):
            raise refuse("10015", "Bad Request", "connection_id must be a string", "connection_id")
        if self.connection_id and connection_id != self.connection_id:
            raise refuse(
                "10017",
                "Associated resource does not exist",
                f"no Call Control App {connection_id!r} on this account",
                "connection_id",
            )
        for field in ("to", "from"):
            value = body.get(field)
            if value is None or value == "":
                raise missing(field)
            if not isinstance(value, str) or not _E164.fullmatch(value):
                # Telnyx also dials SIP URIs and lists of them; the simulated network has E.164 phones only.
                raise refuse(
                    "10016",
                    "Phone number must be in +E.164 format",
                    f"{field} must be a +E.164 number, not {value!r}",
                    field,
                )
        url = body.get("webhook_url")
        if url is None or url == "":
            raise refuse(
                "10004",
                "Missing required parameter",
                "webhook_url is required here: the simulated network has no connection-level webhook URL",
                "webhook_url",
            )
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 2000:
            raise refuse(
                "10003", "Invalid URL", f"webhook_url is not an absolute http(s) URL: {url!r}", "webhook_url"
            )
        method = body.get("webhook_url_method")
        if method is not None and method not in ("POST", "GET"):
            raise refuse(
                "10015", "Bad Request", "webhook_url_method must be POST or GET", "webhook_url_method"
            )
        if method == "GET":
            raise refuse(
                "10015",
                "Bad Request",
                "the simulated network delivers webhooks with POST only",
                "webhook_url_method",
            )
        timeout = body.get("timeout_secs", DEFAULT_TIMEOUT_S)
        low, high = TIMEOUT_RANGE
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not low <= timeout <= high:
            raise refuse(
                "10015",
                "Bad Request",
                f"timeout_secs must be an integer {low}-{high}, not {timeout!r}",
                "timeout_secs",
            )
        amd = body.get("answering_machine_detection")
        if amd is not None and amd not in AMD_MODES:
            raise refuse(
                "10015",
                "Bad Request",
                f"answering_machine_detection must be one of {', '.join(AMD_MODES)}, not {amd!r}",
                "answering_machine_detection",
            )
        client_state = body.get("client_state")
        if client_state is not None and not _is_base64(client_state):
            raise refuse(
                "10015", "Bad Request", "client_state must be a Base-64 encoded string", "client_state"
            )
        stream = None
        if body.get("stream_url") is not None:
            # A Dial may carry the stream itself (stream_* as in streaming_start): it starts on the answer.
            try:
                stream = wire.parse_answer(raw)
            except TelephonyProtocolError as exc:
                raise refuse("10015", "Bad Request", str(exc), "stream_url") from None
        return DialledCall(
            body=body,
            behaviour=self.behaviours.get(body["to"]) or behaviour_for(body["to"]),
            connection_id=connection_id,
            timeout_s=timeout,
            stream=stream,
        )

    @staticmethod
    def _resource(call: DialledCall) -> dict[str, Any]:
        """Dial's reply (call_dial_response.py): the call's ids; ``is_alive`` is false, dialling being
        asynchronous."""
        data: dict[str, Any] = {
            "call_control_id": call.call_control_id,
            "call_leg_id": call.call_leg_id,
            "call_session_id": call.call_session_id,
            "is_alive": False,
            "record_type": "call",
        }
        if call.client_state is not None:
            data["client_state"] = call.client_state
        return {"data": data}

    # --- commands on a dialled call ------------------------------------------------------------------

    def _act(self, call: ApiCall, action: str, body: dict[str, Any], raw: bytes) -> str | None:
        if not isinstance(call, DialledCall):
            return super()._act(call, action, body, raw)
        if "client_state" in body and not _is_base64(body["client_state"]):
            return "client_state must be a Base-64 encoded string"
        match action:
            case "answer" | "reject":
                return f"{action} is for incoming calls; this call was dialled"
            case "hangup":
                self._say(call, f"gateway hangs up ({call.state})")
                call._end("hangup")
                call.hangup.set()
            case "streaming_start":
                if call.state != "answered":
                    return "the call has not been answered: streaming starts once call.answered has been sent"
                if call.stream is not None:
                    # A repeated command id is ignored by Telnyx; a second stream is not simulated.
                    return None if body.get("command_id") else "a stream is already running on this call"
                if not isinstance(body.get("stream_url"), str):
                    return "streaming_start needs a stream_url"
                try:
                    call.stream = wire.parse_answer(raw)
                except TelephonyProtocolError as exc:
                    return str(exc)
                call.stream_asked.set()
            case _:
                pass  # recorded, nothing simulated (streaming_stop, speak, transfer…)
        if isinstance(body.get("client_state"), str):
            call.client_state = body["client_state"]  # "add state to every subsequent webhook"
        return None

    # --- the phone -----------------------------------------------------------------------------------

    async def _ring(self, call: DialledCall) -> None:
        amd: asyncio.Task[None] | None = None
        try:
            await self._event(
                call,
                "call.initiated",
                {"direction": "outgoing", "state": "bridging", "start_time": call.start_time},
            )
            answers = call.behaviour in ("human", "machine")
            if call.behaviour == "failed":
                ring = min(self.ring_s, 0.2)
            elif call.behaviour == "no-answer":
                ring = min(call.timeout_s, max(self.ring_s * 2, 0.5))
            else:
                ring = self.ring_s
            if answers and ring >= call.timeout_s:
                answers, ring = False, call.timeout_s  # Telnyx gives up before the callee picks up
            if await _waits(call.hangup, ring):
                await self._hung_up(call, "originator_cancel", "caller", "487")
                return
            if call.behaviour == "busy":
                await self._hung_up(call, "user_busy", "callee", "486")
            elif call.behaviour == "failed":
                await self._hung_up(call, "call_rejected", "callee", "603")
            elif not answers:
                # The SDK documents the cause (``timeout``), not who Telnyx names as ending it.
                await self._hung_up(call, "timeout", "unknown", "487")
            else:
                call.state, call.answered_at = "answered", time.monotonic()
                await self._event(call, "call.answered", {"state": "answered", "start_time": call.start_time})
                if call.stream is not None:
                    call.stream_asked.set()
                if call.amd_mode != "disabled":
                    amd = asyncio.create_task(self._detect(call))
                source = await self._talk(call)
                call.over.set()
                if amd is not None:
                    await amd
                await self._hung_up(call, "normal_clearing", source, "unspecified")
        except Exception as exc:  # a simulated phone never takes the network down; the call says why
            call.error = f"{type(exc).__name__}: {exc}"
            self._say(call, f"error: {call.error}")
            call.over.set()
            if call.state != "hangup":
                with contextlib.suppress(Exception):
                    await self._hung_up(call, "unspecified", "unknown", "unspecified")
        finally:
            call.over.set()
            if amd is not None and not amd.done():
                amd.cancel()
                await asyncio.gather(amd, return_exceptions=True)
            call.done.set()

    async def _talk(self, call: DialledCall) -> str:
        """The answered call: wait for the stream, run it as a person or a machine; who hung up."""
        waiting = asyncio.create_task(call.stream_asked.wait())
        cancelled = asyncio.create_task(call.hangup.wait())
        try:
            await asyncio.wait(
                {waiting, cancelled}, timeout=STREAM_WAIT_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiting.cancel()
            cancelled.cancel()
        if call.hangup.is_set():
            return "caller"
        if call.stream is None:
            self._say(call, f"no streaming_start within {STREAM_WAIT_S:g} s: the callee hangs up")
            return "callee"
        machine = call.behaviour == "machine"

        def heard(line: str) -> None:
            if " stream " in line and line.endswith(" started"):
                call.stream_started_at = time.monotonic()
                call.stream_running.set()
            elif "bot audio starts" in line and call.first_audio_at is None:
                call.first_audio_at = time.monotonic()
            self._say(call, line.split("] ", 1)[-1])

        opts = CallOptions(
            to=call.to,
            from_=call.from_,
            call_sid=call.call_control_id,
            side=TelnyxCalleeSide(call, lambda event, payload: self._event(call, event, payload)),
            play="builtin:machine" if machine else self.human_play,
            speak_at_s=0.0 if machine else None,
            hangup_when_done_s=None if machine else 1.5,
            max_duration_s=self.machine_record_s if machine else 300.0,
            hangup_event=call.hangup,
            on_event=heard,
        )
        try:
            call.report = await place_call(opts)
        except GatewayError as exc:
            call.error = f"{type(exc).__name__}: {exc}"
            self._say(call, f"the stream failed: {call.error}; the callee hangs up")
            return "caller" if call.hangup.is_set() else "callee"
        if call.hangup.is_set():
            return "caller"
        if call.report.ended_by == "gateway":
            # Closing the stream does not end a Call Control call: the callee is left in silence.
            self._say(call, "the gateway closed the stream without a hangup command: the call stays up")
            if await _waits(call.hangup, SILENCE_HANGUP_S):
                return "caller"
            self._say(call, "the callee hears only silence and hangs up")
        return "callee"

    async def _detect(self, call: DialledCall) -> None:
        """Answering machine detection: the verdict about a second into the callee's audio (``human`` or
        ``machine``); for a machine, with a mode that waits for the greeting's end, the beep right after
        it plays. Nothing is posted once the call is over."""
        await _waits(call.stream_running, AMD_NO_STREAM_S)
        base = call.stream_started_at or time.monotonic()
        machine = call.behaviour == "machine"
        if call.amd_mode == "premium":
            steps = [
                (
                    HUMAN_VERDICT_S,
                    "call.machine.premium.detection.ended",
                    "machine" if machine else "human_residence",
                )
            ]
            greeting = "call.machine.premium.greeting.ended"
        else:
            steps = [(HUMAN_VERDICT_S, "call.machine.detection.ended", "machine" if machine else "human")]
            greeting = "call.machine.greeting.ended"
        if machine and call.amd_mode in _GREETING_MODES:
            steps.append((MACHINE_GREETING_S + BEEP_VERDICT_S, greeting, "beep_detected"))
        for after_s, event, result in steps:
            if await _waits(call.over, base + after_s - time.monotonic()):
                return
            status = await self._event(call, event, {"result": result})
            call.amd.append((event, result, status))

    async def _hung_up(self, call: DialledCall, cause: str, source: str, sip: str) -> None:
        call._end(cause)
        call.state, call.hangup_cause, call.hangup_source = "hangup", cause, source
        call.over.set()
        await self._event(
            call,
            "call.hangup",
            {
                "state": "hangup",
                "hangup_cause": cause,
                "hangup_source": source,
                "sip_hangup_cause": sip,
                "start_time": call.start_time,
            },
        )

    async def _event(self, call: DialledCall, event_type: str, payload: Mapping[str, Any]) -> int:
        """POST one signed webhook in Telnyx's envelope; the gateway's HTTP status (0: unreachable)."""
        assert self._http is not None
        fields: dict[str, Any] = {"from": call.from_, "to": call.to, **payload}
        if call.client_state is not None:
            fields["client_state"] = call.client_state
        body = wire.call_event(
            event_type,
            call_control_id=call.call_control_id,
            call_leg_id=call.call_leg_id,
            call_session_id=call.call_session_id,
            connection_id=call.connection_id,
            delivered_to=call.webhook_url,
            payload=fields,
        )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "telnyx-webhooks",
            **wire.signed_headers(self.signing_key, body, timestamp=int(time.time())),
        }
        try:
            async with self._http.post(call.webhook_url, data=body, headers=headers) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        call.webhooks.append((event_type, status))
        extra = f" ({payload['result']})" if "result" in payload else ""
        self._say(call, f"{event_type}{extra} posted: HTTP {status}")
        return status
