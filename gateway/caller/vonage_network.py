"""The simulated Vonage network: the Voice API's "Create an outbound call" and the phones it rings.

:class:`VonageNetwork` serves what the gateway's ``VONAGE_API_BASE`` points at
(:attr:`VonageNetwork.base_url`, ``http://127.0.0.1:PORT``). ``POST /v1/calls`` is checked as Vonage checks
it: the application's JWT in ``Authorization: Bearer`` (RS256 under the application's private key, checked
here with its public key; ``application_id``, ``iat`` and ``jti`` claims; ``exp`` when present, else 15
minutes after ``iat``) or 401; a JSON body with one phone ``to`` (digits, no ``+``), a phone ``from`` (or
``random_from_number``), either ``ncco`` or a one-URL ``answer_url`` (``answer_method`` ``GET``/``POST``,
default ``GET``), a one-URL ``event_url`` (``event_method``, default ``POST``), ``ringing_timer`` 1-120
(default 60), ``length_timer`` 1-7200, ``machine_detection`` ``continue``/``hangup``,
``advanced_machine_detection`` (``behavior``, ``mode`` ``default``/``detect``/``detect_beep``,
``beep_timeout`` 45-120; it overrides ``machine_detection``); any fault is a 400 in Vonage's error shape
naming the field. A good one is answered 201 ``{"uuid", "status": "started", "direction": "outbound",
"conversation_uuid": "CON-…"}``, and the callee's phone rings. Every event is POSTed (or GET) to
``event_url``, signed as Vonage signs webhooks (a JWT in ``Authorization: Bearer``, HS256 under the
signature secret, ``payload_hash`` the SHA-256 of the body; :func:`gateway.caller.wire_vonage.signed_jwt`),
with ``status``, ``uuid``, ``conversation_uuid``, ``to``, ``from`` (digits), ``direction: outbound`` and an
ISO 8601 ``timestamp``:

* answered: ``started``, ``ringing``, ``answered``; then the answer webhook (``answer_url`` with ``to``,
  ``from``, ``uuid``, ``conversation_uuid``; JSON for POST, the query for GET; signed) and its NCCO is
  run: a ``talk`` is spoken (the call waits as long as speaking it takes), a ``connect`` to a
  ``websocket`` endpoint opens the socket it names (query string kept; the ``custom`` authorization as the
  upgrade's ``Authorization``; ``websocket:connected`` with ``content-type`` and the endpoint's headers,
  then binary L16 20 ms frames) with the callee on the line (:class:`VonageCalleeSide`: the simulated
  caller's Vonage side in reverse); other actions are skipped (logged). When the NCCO runs out the call
  completes: ``completed`` with ``duration`` (seconds, a string as in Vonage's examples), ``start_time``,
  ``end_time``. A websocket the gateway closes ends that leg; the rest of the NCCO runs, then
  ``completed``.
* answering machine detection, when asked: ``human`` or ``machine`` (``HUMAN_VERDICT_S`` into the callee's
  audio). Asynchronous (``advanced_machine_detection.mode: default``, and plain ``machine_detection``):
  the NCCO runs at once and detection listens from the stream's start; ``default`` also listens for the
  beep: a second ``machine`` event with ``sub_state: beep_start`` just after it (``BEEP_VERDICT_S``).
  Synchronous (``detect``, ``detect_beep``): the answer URL is fetched only once detection is done (for
  ``detect_beep`` and a machine, once the beep has been heard: an assumption), the callee's greeting
  meanwhile going into silence, so the stream carries only what is left of it. ``behavior`` (or
  ``machine_detection``) ``hangup``: Vonage itself hangs up a machine after ``machine``: then ``completed``.
* not answered: ``busy`` (…99), ``timeout`` (…98: no answer within ``ringing_timer``, or within the short
  ring the simulated phone allows), ``rejected`` (…97, :attr:`VonageNetwork.failed_status`), each followed
  by ``completed`` except ``rejected``: "completed is always returned unless the call was rejected;
  unanswered, timeout, failed, busy and cancelled all proceed to completed" (Vonage, nexmo-developer
  pull request 1653, and the support article "Which order should Voice API callbacks be received").

``PUT /v1/calls/{uuid}`` (JWT) takes ``{"action": "hangup"}`` (and ``mute``, ``unmute``, ``earmuff``,
``unearmuff``, ``transfer``: recorded, not simulated) and answers 204; an unknown uuid is a 404; a call
already completed is a 400 (Vonage answers 400 or 404 there; 400 was picked). ``hangup`` while it rings:
``cancelled`` then ``completed``; once answered: the callee's socket is closed, then ``completed``.

Who answers depends on the number dialled (or :attr:`VonageNetwork.behaviours`), as on the Twilio network
(:func:`gateway.caller.network.behaviour_for`): ending in ``0`` an answering machine (greeting, beep,
silence); ``…99`` busy; ``…98`` no answer; ``…97`` rejected; any other, a person who speaks once the
bot's greeting has played, waits for the reply and hangs up.

Written from Vonage's documents — the Voice API reference ("Create an outbound call", "Modify an existing
call"), the "Voice API Webhooks Reference" (answer and event webhooks, statuses), "Signed webhooks", the
"WebSockets" guide and NCCO reference — and the Vonage Python SDK's models (``vonage_voice/models/
requests.py``, ``common.py``, ``enums.py``, ``ncco.py``, ``connect_endpoints.py``, ``responses.py``,
``webhooks.py``), independently of the gateway's Vonage code. Unsure, and chosen here: the error
``type`` URLs and ``invalid_parameters`` of a 400 (Vonage's general error shape); ``detect`` as the
default ``mode``; the GET webhooks' ``payload_hash`` over the parameters as compact JSON (the convention
of :func:`gateway.caller.wire_vonage.query_payload`); the ``application_id`` claim of the webhook JWTs
(``signed_jwt`` puts a random one, not the application's); ``beep_timeout`` is never reached (the
simulated machine always beeps within 3 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from gateway.audio.resample import StreamResampler
from gateway.caller import wire_vonage as wire
from gateway.caller.call import CallOptions, CallReport, place_call
from gateway.caller.network import (
    BEEP_VERDICT_S,
    HUMAN_VERDICT_S,
    MACHINE_RECORD_S,
    Behaviour,
    behaviour_for,
)
from gateway.caller.samples import MACHINE_GREETING_S
from gateway.caller.side_vonage import VonageSide
from gateway.caller.sides import Offer
from gateway.caller.simulated_api import SimulatedApi
from gateway.errors import GatewayError, TelephonyProtocolError

__all__ = ["DialledCall", "VonageCalleeSide", "VonageNetwork"]

_DIGITS: Final = re.compile(r"[1-9][0-9]{6,14}")
#: ``ringing_timer``: 1-120 s, default 60 (requests.py, the API reference).
RINGING_TIMER_RANGE: Final = (1, 120)
DEFAULT_RINGING_TIMER_S: Final = 60
LENGTH_TIMER_RANGE: Final = (1, 7200)
BEEP_TIMEOUT_RANGE: Final = (45, 120)
AMD_MODES: Final = ("default", "detect", "detect_beep")
AMD_BEHAVIORS: Final = ("continue", "hangup")
#: ``mode`` when ``advanced_machine_detection`` gives none (the API reference's default, as read).
DEFAULT_AMD_MODE: Final = "detect"
#: Update actions the API reference lists; only ``hangup`` is simulated.
UPDATE_ACTIONS: Final = ("hangup", "mute", "unmute", "earmuff", "unearmuff", "transfer")
#: The application JWT's lifetime when it has no ``exp`` (Vonage's default).
JWT_DEFAULT_TTL_S: Final = 900
#: Detection listens from the stream's start, or from this long after the answer when no stream starts.
AMD_NO_STREAM_S: Final = 1.0
#: How long speaking a ``talk`` takes, per character (capped by ``TALK_MAX_S``).
TALK_S_PER_CHAR: Final = 0.06
TALK_MAX_S: Final = 10.0
#: The answer webhook: Vonage waits this long for the NCCO.
ANSWER_TIMEOUT_S: Final = 5.0
_API_ERRORS: Final = "https://developer.nexmo.com/api-errors"

Verdict = Literal["human", "machine"]


def _iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _digits(number: str) -> str:
    return number.lstrip("+")


async def _waits(event: asyncio.Event, delay_s: float) -> bool:
    """Whether ``event`` is set within ``delay_s``."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, delay_s)):
            await event.wait()
    return event.is_set()


def _error(status: int, kind: str, title: str, detail: str, **extra: Any) -> web.Response:
    """Vonage's error shape: ``type``, ``title``, ``detail``, ``instance``."""
    body = {
        "type": f"{_API_ERRORS}#{kind}",
        "title": title,
        "detail": detail,
        "instance": str(uuidlib.uuid4()),
    }
    return web.json_response(body | extra, status=status)


class _Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response
        super().__init__(response.status)


def _bad(field: str, reason: str) -> _Refused:
    """A 400 naming the field (in ``detail`` and ``invalid_parameters``)."""
    return _Refused(
        _error(
            400,
            "bad-request",
            "Bad Request",
            f"{field}: {reason}",
            invalid_parameters=[{"name": field, "reason": reason}],
        )
    )


class DialledCall:
    """One call the gateway created: what it asked, what happened, and when (monotonic seconds)."""

    def __init__(self, *, body: dict[str, Any], behaviour: Behaviour, to: str, from_: str) -> None:
        #: The create request as the gateway sent it.
        self.body = body
        self.behaviour = behaviour
        self.uuid = wire.new_uuid()
        self.conversation_uuid = "CON-" + wire.new_uuid()
        #: Digits, no ``+``.
        self.to = to
        self.from_ = from_
        self.answer_url: str | None = body["answer_url"][0] if body.get("answer_url") else None
        self.answer_method: str = body.get("answer_method") or "GET"
        self.event_url: str = body["event_url"][0]
        self.event_method: str = body.get("event_method") or "POST"
        self.ringing_timer_s: int = body.get("ringing_timer", DEFAULT_RINGING_TIMER_S)
        self.length_timer_s: int | None = body.get("length_timer")
        amd = body.get("advanced_machine_detection")
        basic = body.get("machine_detection")
        #: Detection asked for: ``None``, or (mode, behavior); plain ``machine_detection`` is ``basic``.
        self.amd: tuple[str, str] | None = None
        if isinstance(amd, dict):
            self.amd = (amd.get("mode") or DEFAULT_AMD_MODE, amd.get("behavior") or "continue")
        elif basic is not None:
            self.amd = ("basic", basic)
        self.created_at = time.monotonic()
        self.start_time = _iso_now()
        #: ``started`` → ``ringing`` → ``answered`` → ``completed`` (or busy, timeout, cancelled…).
        self.status = "started"
        #: Events posted: (status, HTTP status of the gateway's answer, 0 when unreachable), or
        #: (status, sub_state, HTTP status) for ``machine`` with a ``sub_state``.
        self.events: list[tuple[str, int] | tuple[str, str, int]] = []
        #: The answer webhook: (method, HTTP status, 0 when unreachable), when fetched.
        self.answer_fetch: tuple[str, int] | None = None
        #: The NCCO the call ran (from the answer webhook, or the create request's ``ncco``).
        self.ncco: list[dict[str, Any]] | None = None
        #: The websocket endpoint of its ``connect``.
        self.endpoint: wire.Endpoint | None = None
        self.answered_at: float | None = None
        self.stream_started_at: float | None = None
        #: When the callee first heard the bot (the first audible audio).
        self.first_audio_at: float | None = None
        self.ended_at: float | None = None
        self.report: CallReport | None = None
        #: The gateway's updates: (action, body, HTTP status answered).
        self.commands: list[tuple[str, Any, int]] = []
        #: Who ended it: ``callee``, ``gateway`` (PUT hangup), ``gateway-websocket`` (closed the socket, NCCO
        #: done), ``machine-detection``, ``length_timer``, ``ncco`` (nothing to connect), ``network``.
        self.ended_by = ""
        self.error = ""
        self.log: list[str] = []
        #: Hang up now (the gateway's PUT, detection's ``hangup``, ``length_timer``).
        self.hangup = asyncio.Event()
        self.stream_running = asyncio.Event()
        #: The call is over: detection stops listening.
        self.over = asyncio.Event()
        self.done = asyncio.Event()

    @property
    def first_word_s(self) -> float | None:
        """From the create request reaching the network to the callee hearing the bot's first word."""
        return None if self.first_audio_at is None else self.first_audio_at - self.created_at

    @property
    def statuses(self) -> list[str]:
        """The statuses posted, in order (``machine:beep_start`` for one with a ``sub_state``)."""
        return [e[0] if len(e) == 2 else f"{e[0]}:{e[1]}" for e in self.events]

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "rejected")

    def _hang_up(self, by: str) -> None:
        self.ended_by = self.ended_by or by
        self.hangup.set()


class VonageCalleeSide(VonageSide):
    """Vonage's side of a created call once its NCCO connects a websocket: the socket the endpoint names,
    with its ``authorization`` on the upgrade and its headers in ``websocket:connected``."""

    def __init__(self, call: DialledCall) -> None:
        super().__init__()
        self.call = call

    async def request_call(
        self, http: aiohttp.ClientSession, opts: CallOptions, report: CallReport
    ) -> Offer | None:
        endpoint = self.call.endpoint
        assert endpoint is not None  # the network connects only an NCCO with a websocket endpoint
        report.call_sid = report.stream_sid = self.call.uuid
        self.endpoint, self.rate = endpoint, endpoint.rate
        if self.rate != 8000:
            self._up, self._down = StreamResampler(8000, self.rate), StreamResampler(self.rate, 8000)
        report.pacing = {"messages": 0, "bad_sizes": 0, "max_ahead_ms": 0.0}
        upgrade = {"Authorization": endpoint.authorization} if endpoint.authorization else {}
        return Offer(url=endpoint.uri, headers=upgrade, parameters=dict(endpoint.headers))


class VonageNetwork(SimulatedApi[DialledCall]):
    """Vonage's Voice API calls resource on loopback, and the simulated phones behind it."""

    provider = "vonage"

    #: The status of a …97 number: ``rejected`` (no ``completed`` follows) or ``failed`` (one does).
    failed_status = "rejected"

    def __init__(
        self,
        *,
        application_public_key: RSAPublicKey | str | bytes,
        signature_secret: str,
        application_id: str = "",
        ring_s: float = 0.2,
        behaviours: dict[str, Behaviour] | None = None,
        human_play: str = "builtin:hello",
        machine_record_s: float = MACHINE_RECORD_S,
        on_event: Callable[[str], None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        #: Checks the application JWT of every request (RS256).
        self.application_public_key = application_public_key
        #: Signs every webhook (HS256); the gateway's ``VONAGE_SIGNATURE_SECRET``.
        self.signature_secret = signature_secret
        #: When set, the ``application_id`` claim a JWT must carry.
        self.application_id = application_id
        #: How long a phone rings before it is answered (or declared busy / rejected).
        self.ring_s = ring_s
        #: Per-number behaviour (digits, or ``+`` and digits), over :func:`behaviour_for`.
        self.behaviours: dict[str, Behaviour] = {_digits(k): v for k, v in (behaviours or {}).items()}
        self.human_play = human_play
        #: A machine records this long at most, then hangs up.
        self.machine_record_s = machine_record_s
        super().__init__(on_event=on_event, host=host, port=port)
        #: Every create request, with the status the network answered (accepted or not).
        self.requests: list[tuple[int, Any]] = []

    # --- lifecycle ---------------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/calls", self._create)
        app.router.add_put("/v1/calls/{uuid}", self._update)

    def label(self, call: DialledCall) -> str:
        return call.uuid[:8]

    # --- REST ----------------------------------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> None:
        """The application JWT (RS256), or Vonage's 401."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token.strip():
            raise _Refused(_error(401, "unauthorized", "Unauthorized", "missing Bearer application JWT"))
        try:
            claims = jwt.decode(
                token.strip(),
                self.application_public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "jti", "application_id"]},
            )
        except jwt.PyJWTError as exc:
            raise _Refused(
                _error(401, "unauthorized", "Unauthorized", f"invalid application JWT: {exc}")
            ) from None
        if "exp" not in claims and time.time() > float(claims["iat"]) + JWT_DEFAULT_TTL_S:
            raise _Refused(_error(401, "unauthorized", "Unauthorized", "the application JWT has expired"))
        if self.application_id and not hmac.compare_digest(
            str(claims["application_id"]), self.application_id
        ):
            raise _Refused(_error(401, "unauthorized", "Unauthorized", "the JWT names another application"))

    async def _create(self, request: web.Request) -> web.Response:
        body: Any = None
        try:
            self._authenticate(request)
            raw = await request.read()
            with contextlib.suppress(ValueError):
                body = json.loads(raw)
            if request.content_type != "application/json" or not isinstance(body, dict):
                raise _bad("body", "must be a JSON object (Content-Type: application/json)")
            call = self._check(body)
        except _Refused as exc:
            self.requests.append((exc.response.status, body))
            return exc.response
        self.requests.append((201, body))
        self.dialled[call.uuid] = call
        amd = f", detection {call.amd[0]}/{call.amd[1]}" if call.amd else ""
        self._say(call, f"create {call.from_} → {call.to} ({call.behaviour}{amd})")
        self.ring(call, self._ring(call))
        reply = {
            "uuid": call.uuid,
            "status": "started",
            "direction": "outbound",
            "conversation_uuid": call.conversation_uuid,
        }
        return web.json_response(reply, status=201)

    def _check(self, body: dict[str, Any]) -> DialledCall:
        """A create request checked as Vonage documents it (requests.py, common.py, the API reference)."""
        to = body.get("to")
        if not isinstance(to, list) or len(to) != 1 or not isinstance(to[0], dict):
            raise _bad("to", "must be a list of one endpoint")
        if to[0].get("type") != "phone":
            raise _bad("to", "the simulated network rings phones only (type phone)")
        number = to[0].get("number")
        if not isinstance(number, str) or not _DIGITS.fullmatch(number):
            raise _bad("to", f"number must be E.164 digits without '+', not {number!r}")
        from_ = body.get("from")
        if from_ is not None and body.get("random_from_number") is True:
            raise _bad("from", "from and random_from_number cannot be used together")
        from_number: Any = "14155550000"  # random_from_number: any of the account's numbers
        if from_ is not None or body.get("random_from_number") is not True:
            if not isinstance(from_, dict) or from_.get("type") != "phone":
                raise _bad("from", "must be a phone endpoint {type: phone, number}")
            from_number = from_.get("number")
            if not isinstance(from_number, str) or not _DIGITS.fullmatch(from_number):
                raise _bad("from", f"number must be E.164 digits without '+', not {from_number!r}")
        ncco, answer_url = body.get("ncco"), body.get("answer_url")
        if (ncco is None) == (answer_url is None):
            raise _bad("answer_url", "give either ncco or answer_url, not both or neither")
        if ncco is not None:
            try:
                wire.parse_ncco(json.dumps(ncco), signature_secret=self.signature_secret)
            except (TelephonyProtocolError, TypeError) as exc:
                raise _bad("ncco", str(exc)) from None
        else:
            self._check_urls(body, "answer_url")
        for field in ("answer_method", "event_method"):
            if body.get(field) is not None and body[field] not in ("GET", "POST"):
                raise _bad(field, f"must be GET or POST, not {body[field]!r}")
        if body.get("event_url") is None:
            raise _bad("event_url", "required here: the simulated network has no application event URL")
        self._check_urls(body, "event_url")
        for field, (low, high) in (
            ("ringing_timer", RINGING_TIMER_RANGE),
            ("length_timer", LENGTH_TIMER_RANGE),
        ):
            value = body.get(field)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high
            ):
                raise _bad(field, f"must be an integer {low}-{high}, not {value!r}")
        detection = body.get("machine_detection")
        if detection is not None and detection not in AMD_BEHAVIORS:
            raise _bad("machine_detection", f"must be continue or hangup, not {detection!r}")
        amd = body.get("advanced_machine_detection")
        if amd is not None:
            if not isinstance(amd, dict):
                raise _bad("advanced_machine_detection", "must be an object")
            if amd.get("behavior") is not None and amd["behavior"] not in AMD_BEHAVIORS:
                raise _bad("advanced_machine_detection.behavior", "must be continue or hangup")
            if amd.get("mode") is not None and amd["mode"] not in AMD_MODES:
                raise _bad("advanced_machine_detection.mode", f"must be one of {', '.join(AMD_MODES)}")
            timeout = amd.get("beep_timeout")
            low, high = BEEP_TIMEOUT_RANGE
            if timeout is not None and (
                isinstance(timeout, bool) or not isinstance(timeout, int) or not low <= timeout <= high
            ):
                raise _bad("advanced_machine_detection.beep_timeout", f"must be an integer {low}-{high}")
        return DialledCall(
            body=body,
            behaviour=self.behaviours.get(number) or behaviour_for(number),
            to=number,
            from_=from_number,
        )

    @staticmethod
    def _check_urls(body: dict[str, Any], field: str) -> None:
        urls = body.get(field)
        if not isinstance(urls, list) or len(urls) != 1 or not isinstance(urls[0], str):
            raise _bad(field, "must be a list of one URL")
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", urls[0]):
            raise _bad(field, f"not an absolute http(s) URL: {urls[0]!r}")

    async def _update(self, request: web.Request) -> web.Response:
        try:
            self._authenticate(request)
        except _Refused as exc:
            return exc.response
        raw = await request.read()
        body: Any = None
        with contextlib.suppress(ValueError):
            body = json.loads(raw)
        call = self.dialled.get(request.match_info["uuid"])

        def answer(response: web.Response) -> web.Response:
            if call is not None:
                call.commands.append(
                    (str(body.get("action")) if isinstance(body, dict) else "", body, response.status)
                )
            return response

        if call is None:
            return _error(404, "not-found", "Not Found", "no call with this uuid")
        action = body.get("action") if isinstance(body, dict) else None
        if action not in UPDATE_ACTIONS:
            return answer(
                _error(
                    400, "bad-request", "Bad Request", f"action must be one of {', '.join(UPDATE_ACTIONS)}"
                )
            )
        if call.finished:
            # Vonage answers 400 (or 404) for a call that has ended; 400 here.
            return answer(_error(400, "bad-request", "Bad Request", f"the call has ended ({call.status})"))
        if action == "hangup":
            self._say(call, f"gateway hangs up ({call.status})")
            call._hang_up("gateway")
        else:
            self._say(call, f"gateway {action}: recorded, not simulated")
        return answer(web.Response(status=204))

    # --- the phone -----------------------------------------------------------------------------------

    async def _ring(self, call: DialledCall) -> None:
        amd: asyncio.Task[None] | None = None
        timer: asyncio.TimerHandle | None = None
        try:
            await self._event(call, "started")
            if call.behaviour == "failed":
                if await _waits(call.hangup, min(self.ring_s, 0.2)):
                    await self._unanswered(call, "cancelled")
                else:
                    await self._unanswered(call, self.failed_status)
                return
            await self._event(call, "ringing")
            answers = call.behaviour in ("human", "machine")
            ring = self.ring_s
            if call.behaviour == "no-answer":
                ring = min(call.ringing_timer_s, max(self.ring_s * 2, 0.5))
            if answers and ring >= call.ringing_timer_s:
                answers, ring = False, call.ringing_timer_s  # ringing_timer ends it before the pick-up
            if await _waits(call.hangup, ring):
                await self._unanswered(call, "cancelled")
                return
            if call.behaviour == "busy":
                await self._unanswered(call, "busy")
                return
            if not answers:
                await self._unanswered(call, "timeout")
                return
            call.answered_at = time.monotonic()
            await self._event(call, "answered", {"start_time": call.start_time})
            if call.length_timer_s is not None:
                timer = asyncio.get_running_loop().call_later(
                    call.length_timer_s, call._hang_up, "length_timer"
                )
            mode = call.amd[0] if call.amd else ""
            if mode in ("detect", "detect_beep"):
                if await self._detect_sync(call):
                    await self._run_ncco(call)
            else:
                if call.amd is not None:
                    amd = asyncio.create_task(self._detect_async(call))
                await self._run_ncco(call)
            call.over.set()
            if amd is not None:
                await amd
            await self._completed(call)
        except Exception as exc:  # a simulated phone never takes the network down; the call says why
            call.error = call.error or f"{type(exc).__name__}: {exc}"
            self._say(call, f"error: {call.error}")
            call.over.set()
            if not call.finished:
                call.ended_by = call.ended_by or "network"
                with contextlib.suppress(Exception):
                    await self._completed(call)
        finally:
            call.over.set()
            if timer is not None:
                timer.cancel()
            if amd is not None and not amd.done():
                amd.cancel()
                await asyncio.gather(amd, return_exceptions=True)
            call.done.set()

    async def _unanswered(self, call: DialledCall, status: str) -> None:
        call.ended_by = call.ended_by or ("gateway" if status == "cancelled" else "callee")
        await self._event(call, status)
        if status != "rejected":
            await self._completed(call)
        else:
            call.ended_at = time.monotonic()

    async def _completed(self, call: DialledCall) -> None:
        call.over.set()
        call.ended_at = time.monotonic()
        duration = 0 if call.answered_at is None else round(call.ended_at - call.answered_at)
        await self._event(
            call,
            "completed",
            {"duration": str(duration), "start_time": call.start_time, "end_time": _iso_now()},
        )

    # --- the NCCO --------------------------------------------------------------------------------------

    async def _fetch_ncco(self, call: DialledCall) -> list[dict[str, Any]] | None:
        """The NCCO: the create request's own, or the answer webhook's (signed); None when it failed."""
        if call.body.get("ncco") is not None:
            ncco: list[dict[str, Any]] = call.body["ncco"]
            call.ncco = ncco
            call.endpoint, _ = wire.parse_ncco(json.dumps(ncco), signature_secret=self.signature_secret)
            return ncco
        assert self._http is not None
        assert call.answer_url is not None
        params = {
            "to": call.to,
            "from": call.from_,
            "uuid": call.uuid,
            "conversation_uuid": call.conversation_uuid,
        }
        headers = {"User-Agent": "Vonage-Voice/1.0"}
        kwargs: dict[str, Any]
        if call.answer_method == "POST":
            payload = json.dumps(params).encode()
            headers["Content-Type"] = "application/json"
            kwargs = {"data": payload}
        else:
            payload = wire.query_payload(params)
            kwargs = {"params": params}
        headers["Authorization"] = "Bearer " + wire.signed_jwt(self.signature_secret, payload)
        status, text = 0, ""
        try:
            async with (
                asyncio.timeout(ANSWER_TIMEOUT_S),
                self._http.request(call.answer_method, call.answer_url, headers=headers, **kwargs) as resp,
            ):
                status, text = resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            call.error = f"answer URL unreachable: {type(exc).__name__}: {exc}"
        call.answer_fetch = (call.answer_method, status)
        self._say(call, f"answer webhook ({call.answer_method}): HTTP {status}")
        if status != 200:
            call.error = call.error or f"answer URL answered HTTP {status}: {text[:200]!r}"
            return None
        try:
            call.endpoint, _ = wire.parse_ncco(text, signature_secret=self.signature_secret)
        except TelephonyProtocolError as exc:
            call.error = f"invalid NCCO: {exc}"
            return None
        ncco = json.loads(text)
        call.ncco = ncco
        return ncco

    async def _run_ncco(self, call: DialledCall) -> None:
        """Run the NCCO as Vonage does, action after action, until it runs out or the call is hung up."""
        if call.hangup.is_set():
            return
        ncco = await self._fetch_ncco(call)
        if ncco is None:
            # Vonage would try the fallback answer URL, then disconnect the call.
            self._say(call, f"no NCCO ({call.error}): the call is disconnected")
            call.ended_by = call.ended_by or "network"
            return
        connected = False
        for action in ncco:
            if call.hangup.is_set():
                return
            kind = action.get("action")
            if kind == "talk":
                text = str(action.get("text", ""))
                self._say(call, f"talk {text[:40]!r}")
                if await _waits(call.hangup, min(TALK_MAX_S, TALK_S_PER_CHAR * len(text))):
                    return
            elif kind == "connect" and not connected and self._is_websocket(action):
                connected = True
                if not await self._connect(call):
                    return
            else:
                self._say(call, f"NCCO action {kind!r}: not simulated, skipped")
        leg = connected and call.report is not None  # a websocket that failed to open ran no leg
        call.ended_by = call.ended_by or ("gateway-websocket" if leg else "ncco")
        self._say(call, "the NCCO has run out: the call completes")

    @staticmethod
    def _is_websocket(action: Mapping[str, Any]) -> bool:
        endpoints = action.get("endpoint")
        return (
            isinstance(endpoints, list)
            and len(endpoints) == 1
            and isinstance(endpoints[0], dict)
            and endpoints[0].get("type") == "websocket"
        )

    async def _connect(self, call: DialledCall) -> bool:
        """The websocket leg, with the callee on the line. Whether the NCCO goes on (the gateway closed
        the socket) rather than the call ending (the callee hung up, or it was hung up)."""
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
            call_sid=call.uuid,
            side=VonageCalleeSide(call),
            play=self._machine_play(call) if machine else self.human_play,
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
            self._say(call, f"the websocket failed: {call.error}")
            return not call.hangup.is_set()  # Vonage goes on with the NCCO after a failed connect
        if call.hangup.is_set():
            return False
        if call.report.ended_by == "gateway":
            self._say(call, "the gateway closed the websocket: its leg ends")
            return True
        call.ended_by = call.ended_by or "callee"
        return False

    def _machine_play(self, call: DialledCall) -> Path | str | None:
        """What a machine plays into the stream: its whole greeting (the NCCO ran at once), or, when
        synchronous detection held the NCCO back, what is left of it (None: it is recording)."""
        mode = call.amd[0] if call.amd else ""
        if mode not in ("detect", "detect_beep") or call.answered_at is None:
            return "builtin:machine"
        return self.rest_of_greeting(time.monotonic() - call.answered_at, call.uuid)

    # --- machine detection ------------------------------------------------------------------------------

    async def _detect_async(self, call: DialledCall) -> None:
        """Detection beside the NCCO: the verdict about a second into the callee's audio; with mode
        ``default``, a machine's beep right after it plays; ``hangup``: a machine is hung up."""
        assert call.amd is not None
        mode, behavior = call.amd
        await _waits(call.stream_running, AMD_NO_STREAM_S)
        base = call.stream_started_at or time.monotonic()
        if await _waits(call.over, base + HUMAN_VERDICT_S - time.monotonic()):
            return
        if not await self._verdict(call, behavior):
            return
        if mode == "default" and call.behaviour == "machine":
            if await _waits(call.over, base + MACHINE_GREETING_S + BEEP_VERDICT_S - time.monotonic()):
                return
            await self._event(call, "machine", {"sub_state": "beep_start"})

    async def _detect_sync(self, call: DialledCall) -> bool:
        """Detection before the NCCO (``detect``, ``detect_beep``); whether the NCCO is to run."""
        assert call.amd is not None
        assert call.answered_at is not None
        mode, behavior = call.amd
        base = call.answered_at
        if await _waits(call.hangup, base + HUMAN_VERDICT_S - time.monotonic()):
            return False
        if not await self._verdict(call, behavior):
            return False
        if mode == "detect_beep" and call.behaviour == "machine":
            if await _waits(call.hangup, base + MACHINE_GREETING_S + BEEP_VERDICT_S - time.monotonic()):
                return False
            await self._event(call, "machine", {"sub_state": "beep_start"})
        return True

    async def _verdict(self, call: DialledCall, behavior: str) -> bool:
        """Post ``human`` or ``machine``; whether the call goes on (a machine is hung up on ``hangup``)."""
        verdict: Verdict = "machine" if call.behaviour == "machine" else "human"
        await self._event(call, verdict)
        if verdict == "machine" and behavior == "hangup":
            self._say(call, "a machine answered: Vonage hangs up (behavior hangup)")
            call._hang_up("machine-detection")
            return False
        return True

    # --- events ----------------------------------------------------------------------------------------

    async def _event(self, call: DialledCall, status: str, extra: Mapping[str, str] | None = None) -> int:
        """Send one signed event to ``event_url``; the gateway's HTTP status (0: unreachable)."""
        assert self._http is not None
        fields: dict[str, str] = {
            "from": call.from_,
            "to": call.to,
            "uuid": call.uuid,
            "conversation_uuid": call.conversation_uuid,
            "status": status,
            "direction": "outbound",
            "timestamp": _iso_now(),
            **(extra or {}),
        }
        if status not in ("human", "machine"):
            call.status = status
        headers = {"User-Agent": "Vonage-Voice/1.0"}
        kwargs: dict[str, Any]
        if call.event_method == "GET":
            payload = wire.query_payload(fields)
            kwargs = {"params": fields}
        else:
            payload = json.dumps(fields).encode()
            headers["Content-Type"] = "application/json"
            kwargs = {"data": payload}
        headers["Authorization"] = "Bearer " + wire.signed_jwt(self.signature_secret, payload)
        try:
            async with self._http.request(
                call.event_method, call.event_url, headers=headers, **kwargs
            ) as resp:
                await resp.read()
                code = resp.status
        except (aiohttp.ClientError, TimeoutError):
            code = 0
        sub_state = fields.get("sub_state")
        call.events.append((status, sub_state, code) if sub_state else (status, code))
        self._say(call, f"event {status}{'/' + sub_state if sub_state else ''} posted: HTTP {code}")
        return code
