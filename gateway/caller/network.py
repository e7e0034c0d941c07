"""The simulated phone network: Twilio's ``Calls`` REST resource and the phones it rings.

``gateway network`` (or :class:`PhoneNetwork` in tests) serves what the gateway's ``TWILIO_API_BASE``
points at. A ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` is checked as Twilio checks it (HTTP
Basic ``AccountSid:AuthToken``, form-encoded, ``To``/``From`` E.164, an absolute ``Url``, the documented
values of ``Method``, ``StatusCallbackEvent``, ``MachineDetection``, ``AsyncAmd``, ``Timeout``) and answered
201 with the call's JSON; then the callee's phone rings:

* status callbacks in Twilio's order, signed with ``X-Twilio-Signature`` (``initiated``, ``ringing``,
  ``in-progress`` when subscribed; the end of the call always);
* answered: the network fetches ``Url`` as Twilio does (``Direction=outbound-api``, signed), follows the
  ``<Connect><Stream>`` with the simulated caller's machinery (:mod:`gateway.caller.call`: the callee is a
  caller side in reverse) and, with ``AsyncAmd``, posts the verdict to ``AsyncAmdStatusCallback``;
* ``POST …/Calls/{CallSid}.json`` with ``Status=completed`` (or ``canceled``) hangs the phone up.

Who answers depends on the number dialled (or :attr:`PhoneNetwork.behaviours`): ending in ``0``, an
answering machine (its greeting, a beep, then silence; AMD says ``machine_end_beep``); ``…99`` busy;
``…98`` no answer; ``…97`` the call fails; any other, a person who says something once the bot's
greeting has played, waits for the reply and hangs up.

Written from Twilio's documents (cited in :mod:`gateway.telephony.twilio_calls`), independently of the
gateway's Twilio code, which it shares nothing with.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hmac
import os
import re
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from gateway.caller import wire
from gateway.caller.call import CallOptions, CallReport, place_call
from gateway.caller.samples import MACHINE_GREETING_S
from gateway.caller.sides import Offer, TwilioSide, parse_twiml, post_webhook, ws_url
from gateway.errors import GatewayError

__all__ = ["Behaviour", "PhoneNetwork", "SimulatedCall", "behaviour_for"]

Behaviour = Literal["human", "machine", "busy", "no-answer", "failed"]
BEHAVIOURS: tuple[Behaviour, ...] = ("human", "machine", "busy", "no-answer", "failed")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_EVENTS = ("initiated", "ringing", "answered", "completed")
#: A person's phone: the verdict comes about this long after the answer (Twilio's AMD hears a "hello").
HUMAN_VERDICT_S = 1.0
#: After the beep, before the machine verdict (``machine_end_beep``) is posted.
BEEP_VERDICT_S = 0.1
#: A machine records this long at most, then hangs up on its own.
MACHINE_RECORD_S = 60.0


def behaviour_for(number: str) -> Behaviour:
    """Who answers ``number`` by default (see the module docstring)."""
    if number.endswith("99"):
        return "busy"
    if number.endswith("98"):
        return "no-answer"
    if number.endswith("97"):
        return "failed"
    if number.endswith("0"):
        return "machine"
    return "human"


@dataclass
class SimulatedCall:
    """One call the network placed: what it was asked, what happened, and when (monotonic seconds)."""

    sid: str
    to: str
    from_: str
    url: str
    behaviour: Behaviour
    form: dict[str, list[str]]
    created_at: float
    #: Status callbacks posted: (CallStatus, HTTP status of the gateway's answer, or 0 when unreachable).
    callbacks: list[tuple[str, int]] = field(default_factory=list)
    #: The AMD verdict posted and the gateway's answer.
    amd: tuple[str, int] | None = None
    status: str = "queued"
    answered_at: float | None = None
    stream_started_at: float | None = None
    #: When the callee first heard the bot (the first audible audio).
    first_audio_at: float | None = None
    report: CallReport | None = None
    error: str = ""
    log: list[str] = field(default_factory=list)
    hangup: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def first_word_s(self) -> float | None:
        """From the dial request reaching the network to the callee hearing the bot's first word."""
        return None if self.first_audio_at is None else self.first_audio_at - self.created_at

    def one(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[-1] if values else None


def _twilio_error(status: int, code: int | None, message: str) -> web.Response:
    """An error as Twilio's REST API shapes it."""
    more = f"https://www.twilio.com/docs/errors/{code}" if code else None
    body = {"code": code, "message": message, "more_info": more, "status": status}
    return web.json_response(body, status=status)


class _Refused(Exception):
    def __init__(self, status: int, code: int | None, message: str) -> None:
        self.response = _twilio_error(status, code, message)
        super().__init__(message)


class CalleeSide(TwilioSide):
    """Twilio's side of an outbound call's answer: the ``Url`` fetch instead of a number's voice webhook."""

    def __init__(self, call: SimulatedCall, account_sid: str) -> None:
        self.call = call
        self.account_sid = account_sid

    async def request_call(
        self, http: aiohttp.ClientSession, opts: CallOptions, report: CallReport
    ) -> Offer | None:
        call = self.call
        # The standard request parameters (Twilio's "TwiML Voice webhook" page) for a REST-created call.
        form = wire.voice_webhook_form(
            call_sid=call.sid, account_sid=self.account_sid, from_=call.from_, to=call.to
        )
        form |= {"Direction": "outbound-api", "CallStatus": "in-progress"}
        headers = {"User-Agent": "TwilioProxy/1.1", "I-Twilio-Idempotency-Token": wire.new_sid("")}
        if opts.auth_token:
            headers["X-Twilio-Signature"] = wire.sign(opts.auth_token, call.url, form)
        body = await post_webhook(http, call.url, data=form, headers=headers, what="outbound answer URL")
        offer = parse_twiml(body, call.url)
        if offer is None:
            report.after_stream = [v.tag for v in ET.fromstring(body)]
            return None
        offer.url, dropped = ws_url(offer.url, keep_query=False)
        if dropped:
            offer.warnings.append("the <Stream url> has a query string; Twilio drops it")
        offer.headers = {"User-Agent": "Twilio.TmeWs/1.0"}
        if opts.auth_token:
            offer.headers["X-Twilio-Signature"] = wire.sign(opts.auth_token, offer.url, {})
        report.stream_sid = wire.new_sid("MZ")
        return offer


class PhoneNetwork:
    """Twilio's ``Calls`` REST resource on loopback, and the simulated phones behind it."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        ring_s: float = 1.0,
        behaviours: dict[str, Behaviour] | None = None,
        human_play: str = "builtin:hello",
        on_event: Any = None,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        #: How long a phone rings before it is answered (or declared busy / failed).
        self.ring_s = ring_s
        #: Per-number behaviour, over :func:`behaviour_for`.
        self.behaviours: dict[str, Behaviour] = dict(behaviours or {})
        self.human_play = human_play
        self.on_event = on_event
        self.calls: dict[str, SimulatedCall] = {}
        #: Every Calls request, with the status the network answered (accepted or not).
        self.requests: list[tuple[int, dict[str, list[str]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.base_url = ""
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls.json", self._create)
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{sid}.json", self._update)
        app.router.add_get("/2010-04-01/Accounts/{account}/Calls/{sid}.json", self._fetch)
        self.app = app

    # --- lifecycle ---------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen; returns the base URL to give the gateway as ``TWILIO_API_BASE``."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.base_url = f"http://{host}:{bound[1]}"
        return self.base_url

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> PhoneNetwork:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait(self, sid: str, timeout_s: float = 30.0) -> SimulatedCall:
        """The call once it is over (every callback posted)."""
        call = self.calls[sid]
        async with asyncio.timeout(timeout_s):
            await call.done.wait()
        return call

    def _say(self, call: SimulatedCall, line: str) -> None:
        text = f"[{time.monotonic() - call.created_at:7.3f}s] {call.sid[:10]}… {line}"
        call.log.append(text)
        if self.on_event is not None:
            self.on_event(text)

    # --- REST ----------------------------------------------------------------------------------------
    def _authenticate(self, request: web.Request) -> None:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        given = request.headers.get("Authorization", "")
        ok = given.startswith("Basic ") and hmac.compare_digest(given[6:].strip().encode(), expected.encode())
        if not ok or request.match_info["account"] != self.account_sid:
            raise _Refused(401, 20003, "Authenticate")

    async def _form(self, request: web.Request) -> dict[str, list[str]]:
        if request.content_type != "application/x-www-form-urlencoded":
            raise _Refused(400, None, "the body must be application/x-www-form-urlencoded")
        form: dict[str, list[str]] = {}
        for key, value in (await request.post()).items():
            form.setdefault(key, []).append(str(value))
        return form

    async def _create(self, request: web.Request) -> web.Response:
        form: dict[str, list[str]] = {}
        try:
            self._authenticate(request)
            form = await self._form(request)
            call = self._check(form)
        except _Refused as exc:
            self.requests.append((exc.response.status, form))
            return exc.response
        self.requests.append((201, form))
        self.calls[call.sid] = call
        self._spawn(self._ring(call), call)
        return web.json_response(self._resource(call), status=201)

    def _check(self, form: dict[str, list[str]]) -> SimulatedCall:
        """A Calls request checked as Twilio documents it ("Call resource", Create a Call)."""

        def one(name: str) -> str | None:
            values = form.get(name)
            if values and len(values) > 1:
                raise _Refused(400, None, f"{name} given {len(values)} times")
            return values[0] if values else None

        to, from_, url = one("To"), one("From"), one("Url")
        if not to:
            raise _Refused(400, 21201, "No 'To' number is specified")
        if not from_:
            raise _Refused(400, 21213, "No 'From' number is specified")
        if not _E164.fullmatch(to):
            raise _Refused(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not _E164.fullmatch(from_):
            raise _Refused(400, 21212, f"Invalid 'From' Phone Number: {from_}")
        if one("Twiml") is not None or one("ApplicationSid") is not None:
            raise _Refused(
                400, None, "the simulated network follows a Url only (no Twiml, no ApplicationSid)"
            )
        if not url or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise _Refused(400, 21205, f"Url is not a valid absolute URL: {url!r}")
        for name in ("Method", "StatusCallbackMethod", "AsyncAmdStatusCallbackMethod"):
            value = one(name)
            if value is not None and value not in ("GET", "POST"):
                raise _Refused(400, None, f"{name} must be GET or POST, not {value!r}")
        if (one("Method") or "POST") != "POST":
            raise _Refused(400, None, "the simulated network fetches the Url with POST only")
        for event in form.get("StatusCallbackEvent", []):
            # Twilio's SDKs send one parameter per event; a space-separated value is also accepted.
            for word in event.split():
                if word not in _EVENTS:
                    raise _Refused(
                        400, None, f"StatusCallbackEvent {word!r} is not one of {', '.join(_EVENTS)}"
                    )
        callback = one("StatusCallback")
        if form.get("StatusCallbackEvent") and not callback:
            raise _Refused(400, None, "StatusCallbackEvent without a StatusCallback URL")
        detection = one("MachineDetection")
        if detection is not None and detection not in ("Enable", "DetectMessageEnd"):
            raise _Refused(
                400, None, f"MachineDetection must be Enable or DetectMessageEnd, not {detection!r}"
            )
        async_amd = one("AsyncAmd")
        if async_amd is not None and async_amd not in ("true", "false"):
            raise _Refused(400, None, f"AsyncAmd must be true or false, not {async_amd!r}")
        if async_amd == "true" and not one("AsyncAmdStatusCallback"):
            raise _Refused(
                400, 21262, "AsyncAmd=true needs an AsyncAmdStatusCallback (nowhere to send AnsweredBy)"
            )
        timeout = one("Timeout")
        if timeout is not None and (not timeout.isdigit() or not 1 <= int(timeout) <= 600):
            raise _Refused(400, None, f"Timeout must be 1-600 seconds, not {timeout!r}")
        behaviour = self.behaviours.get(to) or behaviour_for(to)
        return SimulatedCall(
            sid=wire.new_sid("CA"),
            to=to,
            from_=from_,
            url=url,
            behaviour=behaviour,
            form=form,
            created_at=time.monotonic(),
        )

    def _resource(self, call: SimulatedCall) -> dict[str, Any]:
        """The Call resource's JSON (the fields Twilio's reply has; prices and the like left null)."""
        now = formatdate(usegmt=True)
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call.sid}.json"
        duration = None
        if call.answered_at is not None and call.status == "completed":
            duration = str(round(call.report.duration_s if call.report else 0.0))
        return {
            "sid": call.sid,
            "account_sid": self.account_sid,
            "to": call.to,
            "to_formatted": call.to,
            "from": call.from_,
            "from_formatted": call.from_,
            "status": call.status,
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "answered_by": call.amd[0] if call.amd else None,
            "date_created": now,
            "date_updated": now,
            "start_time": None,
            "end_time": None,
            "duration": duration,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "caller_name": None,
            "forwarded_from": None,
            "group_sid": None,
            "queue_time": "0",
            "trunk_sid": None,
            "annotation": None,
            "uri": uri,
            "subresource_uris": {
                "notifications": uri.replace(".json", "/Notifications.json"),
                "recordings": uri.replace(".json", "/Recordings.json"),
            },
        }

    async def _update(self, request: web.Request) -> web.Response:
        try:
            self._authenticate(request)
            form = await self._form(request)
        except _Refused as exc:
            return exc.response
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return _twilio_error(404, 20404, "The requested resource was not found")
        status = (form.get("Status") or [""])[-1]
        if status in ("completed", "canceled") or form.get("Twiml") or form.get("Url"):
            self._say(call, f"gateway updates the call ({status or 'new instructions'}): hanging up")
            call.hangup.set()
        return web.json_response(self._resource(call))

    async def _fetch(self, request: web.Request) -> web.Response:
        try:
            self._authenticate(request)
        except _Refused as exc:
            return exc.response
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return _twilio_error(404, 20404, "The requested resource was not found")
        return web.json_response(self._resource(call))

    # --- the phone ---------------------------------------------------------------------------------------
    def _spawn(self, work: Any, call: SimulatedCall) -> None:
        task = asyncio.create_task(work, name=f"network:{call.sid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ring(self, call: SimulatedCall) -> None:
        sequence = 0
        try:
            sequence = await self._status(call, "initiated", sequence)
            if call.behaviour == "failed":
                await asyncio.sleep(min(self.ring_s, 0.2))
                await self._status(call, "failed", sequence)
                return
            sequence = await self._status(call, "ringing", sequence)
            timeout = float(call.one("Timeout") or 60)
            ring = min(self.ring_s, timeout)
            if call.behaviour == "no-answer":
                ring = min(timeout, max(self.ring_s * 2, 0.5))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ring):
                    await call.hangup.wait()  # canceled while ringing
            if call.hangup.is_set():
                await self._status(call, "canceled", sequence)
                return
            if call.behaviour in ("busy", "no-answer"):
                await self._status(call, call.behaviour, sequence)
                return
            call.answered_at = time.monotonic()
            sequence = await self._status(call, "in-progress", sequence)
            await self._answer(call)
            await self._status(call, "completed", sequence)
        except Exception as exc:  # a simulated phone never takes the network down; the report says why
            call.error = f"{type(exc).__name__}: {exc}"
            self._say(call, f"error: {call.error}")
            if call.status not in ("completed", "busy", "no-answer", "failed", "canceled"):
                with contextlib.suppress(Exception):
                    await self._status(call, "failed" if call.answered_at is None else "completed", sequence)
        finally:
            call.done.set()

    async def _answer(self, call: SimulatedCall) -> None:
        """The callee picks up: follow the gateway's TwiML as Twilio does, as a person or a machine."""
        machine = call.behaviour == "machine"
        amd = call.one("AsyncAmd") == "true" and call.one("MachineDetection") is not None
        stream_started = asyncio.Event()

        def heard(line: str) -> None:
            if " stream " in line and line.endswith(" started"):
                call.stream_started_at = time.monotonic()
                stream_started.set()
            elif "bot audio starts" in line and call.first_audio_at is None:
                call.first_audio_at = time.monotonic()
            self._say(call, line.split("] ", 1)[-1])

        if amd:
            self._spawn(self._verdict(call, stream_started), call)
        opts = CallOptions(
            to=call.to,
            from_=call.from_,
            call_sid=call.sid,
            account_sid=self.account_sid,
            side=CalleeSide(call, self.account_sid),
            auth_token=self.auth_token,
            play="builtin:machine" if machine else self.human_play,
            speak_at_s=0.0 if machine else None,
            hangup_when_done_s=None if machine else 1.5,
            max_duration_s=MACHINE_RECORD_S if machine else 300.0,
            hangup_event=call.hangup,
            on_event=heard,
        )
        try:
            call.report = await place_call(opts)
        except GatewayError as exc:
            call.error = f"{type(exc).__name__}: {exc}"
            self._say(call, f"the answer failed: {call.error}")

    async def _verdict(self, call: SimulatedCall, stream_started: asyncio.Event) -> None:
        """Asynchronous AMD: a person is recognised soon after the answer; with ``DetectMessageEnd`` a
        machine only once its greeting ended (at the beep), with ``Enable`` as soon as it is heard."""
        await stream_started.wait()
        if call.behaviour == "machine":
            end = call.one("MachineDetection") == "DetectMessageEnd"
            await asyncio.sleep(MACHINE_GREETING_S + BEEP_VERDICT_S if end else HUMAN_VERDICT_S)
            answered_by = "machine_end_beep" if end else "machine_start"
        else:
            await asyncio.sleep(HUMAN_VERDICT_S)
            answered_by = "human"
        url = call.one("AsyncAmdStatusCallback")
        if not url or call.done.is_set():
            return
        duration_ms = round((time.monotonic() - (call.answered_at or call.created_at)) * 1000)
        form = {
            "AccountSid": self.account_sid,
            "CallSid": call.sid,
            "AnsweredBy": answered_by,
            "MachineDetectionDuration": str(duration_ms),
        }
        status = await self._post(url, form)
        call.amd = (answered_by, status)
        self._say(call, f"AMD verdict {answered_by} posted: HTTP {status}")

    async def _status(self, call: SimulatedCall, status: str, sequence: int) -> int:
        """Post one status callback (Twilio's "call status callback" parameters); the next sequence number.

        ``initiated``, ``ringing`` and ``in-progress`` (the ``answered`` event) only when subscribed; the
        end of the call always."""
        call.status = status
        event = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered"}.get(
            status, "completed"
        )
        subscribed = {w for e in call.form.get("StatusCallbackEvent", []) for w in e.split()}
        url = call.one("StatusCallback")
        if not url or (event != "completed" and event not in subscribed):
            return sequence
        form = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call.sid,
            "CallStatus": status,
            "Called": call.to,
            "Caller": call.from_,
            "Direction": "outbound-api",
            "From": call.from_,
            "To": call.to,
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(sequence),
            "Timestamp": formatdate(usegmt=True),
        }
        if event == "completed":
            duration = 0.0 if call.report is None else call.report.duration_s
            form["CallDuration"] = str(round(duration))
        code = await self._post(url, form)
        call.callbacks.append((status, code))
        self._say(call, f"status {status} posted: HTTP {code}")
        return sequence + 1

    async def _post(self, url: str, form: dict[str, str]) -> int:
        """POST a signed callback; the gateway's status (0: unreachable)."""
        assert self._http is not None
        headers = {
            "X-Twilio-Signature": wire.sign(self.auth_token, url, form),
            "User-Agent": "TwilioProxy/1.1",
        }
        try:
            async with self._http.post(url, data=form, headers=headers) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError):
            return 0


# --- `gateway network` ------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the network's arguments."""
    parser.add_argument(
        "--provider",
        choices=("twilio", "telnyx", "vonage", "plivo"),
        default="twilio",
        help="whose API the network serves: Twilio's Calls (default), Telnyx Call Control's Dial, "
        "Vonage's create-call request, or Plivo's Make a call",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="listen port (default 8765)")
    parser.add_argument(
        "--ring", type=float, default=1.0, metavar="S", help="seconds a phone rings (default 1)"
    )
    for behaviour in BEHAVIOURS:
        parser.add_argument(
            f"--{behaviour}",
            action="append",
            default=[],
            metavar="NUMBER",
            help=f"this number answers as: {behaviour} (repeatable; overrides the number's last digits)",
        )


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C."""
    behaviours: dict[str, Behaviour] = {}
    for behaviour in BEHAVIOURS:
        for number in getattr(args, behaviour.replace("-", "_")):
            if not _E164.fullmatch(number):
                print(f"gateway network: --{behaviour} {number!r} is not an E.164 number", file=sys.stderr)
                return 2
            behaviours[number] = behaviour
    if args.provider == "telnyx":
        return _run_telnyx(args, behaviours)
    if args.provider == "vonage":
        return _run_vonage(args, behaviours)
    if args.provider == "plivo":
        return _run_plivo(args, behaviours)
    account = os.environ.get("TWILIO_ACCOUNT_SID", "")
    token = os.environ.get("TWILIO_AUTH_TOKEN", "")
    if not account or not token:
        print(
            "gateway network: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to any values (e.g. AC0123… "
            "and a long random string), the same for the gateway: each signs and checks with them",
            file=sys.stderr,
        )
        return 2

    async def open_network() -> tuple[PhoneNetwork, list[str]]:
        network = PhoneNetwork(
            account_sid=account, auth_token=token, ring_s=args.ring, behaviours=behaviours, on_event=print
        )
        base = await network.start(args.host, args.port)
        return network, [
            f"simulated phone network on {base}: start the gateway with TWILIO_API_BASE={base}",
            "numbers ending in 0 answer as a machine; 99 busy, 98 no answer, 97 failed; others a person",
        ]

    return _serve(open_network)


class _Network(Protocol):
    async def close(self) -> None: ...


def _serve(open_network: Callable[[], Awaitable[tuple[_Network, list[str]]]]) -> int:
    """Run the network ``open_network`` starts, say what to give the gateway, until Ctrl-C."""

    async def serve() -> None:
        network, lines = await open_network()
        print("\n".join(lines), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await network.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def _run_telnyx(args: argparse.Namespace, behaviours: dict[str, Behaviour]) -> int:
    """Serve Telnyx Call Control's Dial (gateway/caller/telnyx_network.py) until Ctrl-C."""
    from gateway.caller.telnyx_network import TelnyxNetwork  # it builds on this module

    api_key = os.environ.get("TELNYX_API_KEY", "")
    if not api_key:
        print(
            "gateway network --provider telnyx: set TELNYX_API_KEY to any value, the same for the gateway "
            "(the network checks the Bearer key the gateway sends)",
            file=sys.stderr,
        )
        return 2

    async def open_network() -> tuple[TelnyxNetwork, list[str]]:
        network = TelnyxNetwork(
            api_key=api_key,
            ring_s=args.ring,
            behaviours=behaviours,
            on_event=print,
            host=args.host,
            port=args.port,
        )
        await network.start()
        base = network.base_url
        return network, [
            f"simulated Telnyx network on {base}: start the gateway with",
            f"  TELNYX_API_BASE={base} TELNYX_PUBLIC_KEY={network.public_key} TELNYX_CONNECTION_ID=any",
            "numbers ending in 0 answer as a machine; 99 busy, 98 no answer, 97 rejected; others a person",
        ]

    return _serve(open_network)


#: Where ``gateway network --provider vonage`` keeps the application key it made (the gateway reads it).
VONAGE_KEY_FILE = "vonage-network.key"
#: The application id the simulated Vonage network expects when none is given.
VONAGE_APPLICATION = "00000000-0000-4000-8000-000000000000"


def _run_vonage(args: argparse.Namespace, behaviours: dict[str, Behaviour]) -> int:
    """Serve Vonage's create-call request (gateway/caller/vonage_network.py) until Ctrl-C."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from gateway.caller.vonage_network import VonageNetwork  # it builds on this module

    secret = os.environ.get("VONAGE_SIGNATURE_SECRET", "")
    if not secret:
        print(
            "gateway network --provider vonage: set VONAGE_SIGNATURE_SECRET to any long value, the same for "
            "the gateway (the network signs its webhooks with it)",
            file=sys.stderr,
        )
        return 2
    application_id = os.environ.get("VONAGE_APPLICATION_ID", "") or VONAGE_APPLICATION
    key_path = Path(os.environ.get("VONAGE_PRIVATE_KEY", "") or VONAGE_KEY_FILE).resolve()
    if key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            print(f"gateway network: {key_path} is not an RSA private key", file=sys.stderr)
            return 2
    else:  # the application's key pair, made here as Vonage's dashboard makes it
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        key_path.touch(mode=0o600)
        key_path.write_bytes(pem)

    async def open_network() -> tuple[VonageNetwork, list[str]]:
        network = VonageNetwork(
            application_public_key=key.public_key(), signature_secret=secret, application_id=application_id,
            ring_s=args.ring, behaviours=behaviours, on_event=print, host=args.host, port=args.port,
        )  # fmt: skip
        await network.start()
        return network, [
            f"simulated Vonage network on {network.base_url}: start the gateway with",
            f"  VONAGE_API_BASE={network.base_url} VONAGE_APPLICATION_ID={application_id} "
            f"VONAGE_PRIVATE_KEY={key_path}",
            "(and the same VONAGE_SIGNATURE_SECRET); numbers ending in 0 answer as a machine; 99 busy, "
            "98 no answer, 97 rejected; others a person",
        ]

    return _serve(open_network)


def _run_plivo(args: argparse.Namespace, behaviours: dict[str, Behaviour]) -> int:
    """Serve Plivo's Make a call (gateway/caller/plivo_network.py) until Ctrl-C."""
    from gateway.caller.plivo_network import PlivoNetwork  # it builds on this module

    auth_id = os.environ.get("PLIVO_AUTH_ID", "")
    auth_token = os.environ.get("PLIVO_AUTH_TOKEN", "")
    if not auth_id or not auth_token:
        print(
            "gateway network --provider plivo: set PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN to any values (e.g. "
            "MA0123… and a long random string), the same for the gateway: the network checks its Basic auth "
            "and signs its callbacks with them",
            file=sys.stderr,
        )
        return 2

    async def open_network() -> tuple[PlivoNetwork, list[str]]:
        network = PlivoNetwork(
            auth_id=auth_id, auth_token=auth_token, ring_s=args.ring, behaviours=behaviours,
            on_event=print, host=args.host, port=args.port,
        )  # fmt: skip
        await network.start()
        return network, [
            f"simulated Plivo network on {network.base_url}: start the gateway with",
            f"  PLIVO_API_BASE={network.base_url} PLIVO_AUTH_ID={auth_id}",
            "(and the same PLIVO_AUTH_TOKEN); numbers ending in 0 answer as a machine; 99 busy, "
            "98 no answer, 97 rejected; others a person",
        ]

    return _serve(open_network)
