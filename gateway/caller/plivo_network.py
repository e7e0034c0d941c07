"""The simulated Plivo network: the Voice API's "Make a call" and the phones it rings.

:class:`PlivoNetwork` serves what the gateway's ``PLIVO_API_BASE`` points at (:attr:`PlivoNetwork.base_url`,
``http://127.0.0.1:PORT``: the part before ``/v1/Account/…``). ``POST /v1/Account/{auth_id}/Call/`` is
checked as Plivo checks it: HTTP Basic ``auth_id:auth_token``, the path naming the same account, or 401; a
JSON body (as the SDK sends it) or a form; ``from``, ``to`` (one number, the country code and the number, a
leading ``+`` taken), an absolute ``answer_url``; ``answer_method``, ``ring_method``, ``hangup_method``,
``fallback_method``, ``machine_detection_method`` ``GET``/``POST`` (default ``POST``); ``ring_url``,
``hangup_url``, ``fallback_url``, ``machine_detection_url`` absolute URLs; ``ring_timeout`` ≥ 0 (default
120), ``time_limit`` ≥ 1 (default 14400), ``hangup_on_ring`` ≥ 1; ``machine_detection`` ``true``/``hangup``,
``machine_detection_time`` 2000-10000 ms, ``machine_detection_maximum_speech_length`` 1000-6000,
``machine_detection_initial_silence`` 2000-10000; Plivo's other options are taken and ignored. A fault is a
400 ``{"api_id", "error"}``. A good request is answered 201 ``{"api_id", "message": "call fired",
"request_uuid"}``; the call's own ``CallUUID`` is another uuid, told only in the callbacks. Then the
callee's phone rings, and every callback is signed as Plivo signs (``X-Plivo-Signature-V3`` over the URL,
its sorted query and the sorted parameters, with ``X-Plivo-Signature-V3-Nonce``; ``X-Plivo-Signature-V2``
over the URL without query and the nonce; the ``-Ma-`` twins, the account being a main account),
form-encoded for POST, in the query for GET, numbers without ``+``; each delivery and its HTTP status is
kept (:attr:`DialledCall.callbacks`):

* ``ring_url``: ``CallStatus=ringing``, ``Event=Ring``, with ``CallUUID``, ``RequestUUID``, ``From``, ``To``,
  ``Direction=outbound``.
* answered: ``answer_url`` (``CallStatus=in-progress``, ``Event=StartApp``, ``ALegUUID`` = the CallUUID,
  ``ALegRequestUUID`` = ``RequestUUID`` = the request_uuid), or ``fallback_url`` when it fails, and its XML
  is run: a ``<Stream>`` (``bidirectional``, ``keepCallAlive``, ``contentType``, ``extraHeaders``) opens
  Plivo's media stream to the URL in its text, query kept, with the callee on the line
  (:class:`PlivoCalleeSide`: the simulated caller's Plivo side in reverse: ``start`` with ``callId`` = the
  CallUUID and ``accountId`` = the auth id, ``media``, ``playedStream`` for ``checkpoint``, ``clearedAudio``
  for ``clearAudio``, ``stop`` when the network ends it); with ``keepCallAlive`` the next element waits for
  the stream's end, without it it runs at once (and the call ends with the XML, stream and all).
  ``<Speak>`` is "spoken" (the call waits as long as saying it takes), ``<Wait length>`` waits,
  ``<Hangup/>`` ends the call; other elements are logged and skipped. When the XML runs out the call ends.
* answering machine detection: the verdict ``HUMAN_VERDICT_S`` into the callee's audio (a machine for
  numbers ending in 0). With ``machine_detection_url`` it is asynchronous: the XML runs at once and the
  verdict is sent there (``Machine``, ``IfMachine``, ``Event=MachineDetection``, ``CallStatus=in-progress``
  and the ids). Without it (from Plivo's older make-call page, as remembered: "no XML is processed during
  the analysis") ``answer_url`` is fetched after the verdict, with ``Machine``, and the callee's greeting
  has meanwhile gone on (the stream gets what is left of it). ``machine_detection=hangup`` and a machine:
  Plivo hangs up itself. Plivo reports no beep (its detection has no "end of greeting" event), so the
  simulated one does not either.
* ``hangup_url`` (``answer_url`` when none is given, as Plivo defaults) at the end: ``CallStatus``
  ``completed``/``busy``/``failed``/``no-answer``/``cancel``, ``Event=Hangup``, ``HangupCause``,
  ``HangupCauseName``, ``HangupCauseCode``, ``HangupSource``, ``Duration``, ``BillDuration``, ``StartTime``,
  ``AnswerTime``, ``EndTime`` (``yyyy-MM-dd HH:mm:ss``, UTC) and the ids (see :data:`HANGUPS`).

``DELETE …/Call/{call_uuid}/`` hangs up (204; the stream gets ``stop`` and is closed; while ringing it is a
cancel), a call that is over or unknown is a 404; ``DELETE …/Request/{request_uuid}/`` cancels a call that
has not been answered (204, then ``cancel``), else 404. ``POST …/Call/{call_uuid}/`` with ``legs=aleg`` and
``aleg_url`` (Transfer a call) is answered 202: the stream is stopped and ``aleg_url`` fetched (signed) and
run in its place (``<Dial>`` is logged, not simulated); ``bleg``/``both`` are recorded only.

Who answers depends on the number dialled (or :attr:`PlivoNetwork.behaviours`), as on the Twilio network
(:func:`gateway.caller.network.behaviour_for`): ending in ``0`` an answering machine (greeting, beep,
silence); ``…99`` busy; ``…98`` no answer; ``…97`` rejected; any other, a person who speaks once the bot's
greeting has played, waits for the reply and hangs up.

Written from Plivo's documents — "Make an outbound call", "Hang up a call", "Asynchronous machine
detection", "XML request" (parameters sent to the answer URL), the Application page (answer and hangup
URLs), "Validation" (V3) and "Signature validation" (V2), the API's response codes, "Hangup causes", "What
do the different call statuses mean" — the plivo-python SDK (``resources/calls.py``: the request ``create``
sends and its defaults, ``delete``, ``cancel`` (``DELETE …/Request/{request_uuid}/``), ``update`` (the
transfer); ``utils/signature_v3.py`` and ``utils/__init__.py``: how the signatures are computed;
``rest/client.py``: Basic auth, JSON bodies; its test fixtures: the replies) and the open-source
plivoframework (``inboundsocket.py``, ``outboundsocket.py``: the parameters of the ring, answer and hangup
requests of an API call, ``hangup_url`` defaulting to ``answer_url``), independently of the gateway's Plivo
code. Assumed, not read: the ``error`` texts and the 401/404 bodies; ``Event=Ring``, ``Event=StartApp`` and
``Event=Hangup`` (seen in a Plivo-compatible API's callbacks, not in Plivo's tables; ``MachineDetection`` is
documented); the hangup cause codes and names other than 4000, 4010 and 1000, and the sources of the ones
Plivo's table does not name (see :data:`HANGUPS`); ``cancel`` for a call the API cancelled (the status page
lists it); ``Duration``/``BillDuration`` counted from the answer; ``AnswerTime`` empty for a call never
answered; ``Machine`` sent for a person too (``false``); a ring_url only for a phone that rings (not for a
busy line); a 404 for cancelling a call already answered; a failed ``<Stream>`` letting the next element
run. ``hangup_on_ring``, the answer URL's retries, the ``<Stream statusCallbackUrl>`` events and the
``Call`` GET are not simulated.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import re
import secrets
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web
from yarl import URL

from gateway.audio.resample import StreamResampler
from gateway.caller import wire_plivo as wire
from gateway.caller.call import CallOptions, CallReport, place_call
from gateway.caller.network import HUMAN_VERDICT_S, MACHINE_RECORD_S, Behaviour, behaviour_for
from gateway.caller.side_plivo import PlivoSide
from gateway.caller.sides import Offer, ws_url
from gateway.caller.simulated_api import SimulatedApi
from gateway.errors import GatewayError, TelephonyProtocolError

__all__ = [
    "HANGUPS",
    "Callback",
    "DialledCall",
    "Hangup",
    "PlivoCalleeSide",
    "PlivoNetwork",
]

#: A number as Plivo takes it: the country code and the number, with or without ``+``.
_NUMBER: Final = re.compile(r"\+?[1-9][0-9]{1,14}")
_URL: Final = re.compile(r"https?://[^/\s?#]+(/\S*)?")
METHODS: Final = ("GET", "POST")
MACHINE_DETECTION: Final = ("true", "hangup")
#: ``ring_timeout``: the SDK's default and check (``0 <= ring_timeout``).
DEFAULT_RING_TIMEOUT_S: Final = 120
#: ``time_limit``: "Default: 14400 (4 hours)".
DEFAULT_TIME_LIMIT_S: Final = 14400
#: Documented ranges, in ms.
RANGES_MS: Final = {
    "machine_detection_time": (2000, 10000),
    "machine_detection_maximum_speech_length": (1000, 6000),
    "machine_detection_initial_silence": (2000, 10000),
}
#: How long speaking a ``<Speak>`` takes, per character (capped by ``SPEAK_MAX_S``).
SPEAK_S_PER_CHAR: Final = 0.06
SPEAK_MAX_S: Final = 10.0
#: Plivo waits this long for the answer URL's XML (it retries; the simulated network does not).
ANSWER_TIMEOUT_S: Final = 10.0
#: Detection listens from the stream's start, or from this long after the answer when no stream starts.
AMD_NO_STREAM_S: Final = 1.0
#: Transfers followed on one call at most (a loop of transfers ends the call).
MAX_TRANSFERS: Final = 5
SIGNATURE_V3: Final = "X-Plivo-Signature-V3"
SIGNATURE_MA_V3: Final = "X-Plivo-Signature-Ma-V3"
NONCE_V3: Final = "X-Plivo-Signature-V3-Nonce"
SIGNATURE_V2: Final = "X-Plivo-Signature-V2"
SIGNATURE_MA_V2: Final = "X-Plivo-Signature-Ma-V2"
NONCE_V2: Final = "X-Plivo-Signature-V2-Nonce"


@dataclass(frozen=True, slots=True)
class Hangup:
    """How a call ended, as ``hangup_url`` tells it."""

    call_status: str
    cause: str
    name: str
    code: int
    source: str


#: Why a call ended (:attr:`DialledCall.ended_by`) → what ``hangup_url`` says. From "Hangup causes": 1000
#: Canceled (API Request), 4000 Normal Hangup, 4010 End Of XML Instructions and the list of sources; the
#: other codes and names are assumed, as is ``Callee`` as the dialled party's source (the Call object's list
#: of sources; the newer page calls it "Call recipient"). ``HangupCause`` is the telephony cause name.
HANGUPS: Final[Mapping[str, Hangup]] = {
    "cancel": Hangup("cancel", "ORIGINATOR_CANCEL", "Canceled", 1000, "API Request"),
    "busy": Hangup("busy", "USER_BUSY", "Busy Line", 3000, "Callee"),
    "rejected": Hangup("failed", "CALL_REJECTED", "Rejected", 3010, "Callee"),
    "no-answer": Hangup("no-answer", "NO_ANSWER", "No Answer", 3020, "Callee"),
    "callee": Hangup("completed", "NORMAL_CLEARING", "Normal Hangup", 4000, "Callee"),
    "api": Hangup("completed", "NORMAL_CLEARING", "Normal Hangup", 4000, "API Request"),
    "xml-hangup": Hangup("completed", "NORMAL_CLEARING", "Normal Hangup", 4000, "Answer XML"),
    "xml-end": Hangup("completed", "NORMAL_CLEARING", "End Of XML Instructions", 4010, "Plivo"),
    "machine-detection": Hangup("completed", "NORMAL_CLEARING", "Normal Hangup", 4000, "Plivo"),
    "time-limit": Hangup("completed", "NORMAL_CLEARING", "Normal Hangup", 4000, "Plivo"),
    "error": Hangup("completed", "NORMAL_TEMPORARY_FAILURE", "Error Reaching Answer URL", 5000, "Error"),
}


@dataclass(frozen=True, slots=True)
class Callback:
    """One request the network made to the gateway: which URL (``ring``, ``answer``, ``fallback``,
    ``machine``, ``transfer``, ``hangup``), how, what it sent, and the HTTP status (0: unreachable)."""

    kind: str
    method: str
    url: str
    params: dict[str, str]
    status: int


# --- signatures (plivo-python utils/signature_v3.py, utils/__init__.py validate_signature) ---------------


def _signed_headers(auth_token: str, url: str, params: Mapping[str, str], method: str) -> dict[str, str]:
    nonce_v3 = str(secrets.randbelow(10**20)).zfill(20)
    nonce_v2 = str(secrets.randbelow(10**20)).zfill(20)
    v3 = wire.sign_v3(auth_token, url, nonce_v3, params, method=method)
    v2 = wire.sign_v2(auth_token, url, nonce_v2)
    # The account is a main account: the main account's signatures are the same ones.
    return {
        SIGNATURE_V3: v3,
        SIGNATURE_MA_V3: v3,
        NONCE_V3: nonce_v3,
        SIGNATURE_V2: v2,
        SIGNATURE_MA_V2: v2,
        NONCE_V2: nonce_v2,
    }


# --- helpers --------------------------------------------------------------------------------------------


def _plivo_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _new_id() -> str:
    return str(uuidlib.uuid4())


async def _waits(event: asyncio.Event, delay_s: float) -> bool:
    """Whether ``event`` is set within ``delay_s``."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, delay_s)):
            await event.wait()
    return event.is_set()


def _error(status: int, error: str) -> web.Response:
    """Plivo's error shape: ``{"api_id", "error"}``."""
    return web.json_response({"api_id": _new_id(), "error": error}, status=status)


class _Refused(Exception):
    def __init__(self, status: int, error: str) -> None:
        self.response = _error(status, error)
        super().__init__(error)


def _bad(error: str) -> _Refused:
    return _Refused(400, error)


# --- the call -------------------------------------------------------------------------------------------


class DialledCall:
    """One call the gateway made: what it asked, what happened, and when (monotonic seconds)."""

    def __init__(self, *, body: dict[str, Any], behaviour: Behaviour, options: dict[str, Any]) -> None:
        #: The request as the gateway sent it.
        self.body = body
        self.behaviour = behaviour
        #: What the create request answered; the gateway knows the call by it until the callbacks come.
        self.request_uuid = _new_id()
        #: The call's own id (``CallUUID``), told only in the callbacks.
        self.call_uuid = _new_id()
        #: Digits, no ``+``, as Plivo writes numbers.
        self.to: str = options["to"]
        self.from_: str = options["from"]
        self.answer_url: str = options["answer_url"]
        self.answer_method: str = options["answer_method"]
        self.ring_url: str | None = options["ring_url"]
        self.ring_method: str = options["ring_method"]
        #: ``answer_url`` when the request named none (Plivo's default).
        self.hangup_url: str = options["hangup_url"] or options["answer_url"]
        self.hangup_method: str = options["hangup_method"]
        self.fallback_url: str | None = options["fallback_url"]
        self.fallback_method: str = options["fallback_method"]
        #: ``None``, ``true`` or ``hangup``.
        self.machine_detection: str | None = options["machine_detection"]
        self.machine_detection_url: str | None = options["machine_detection_url"]
        self.machine_detection_method: str = options["machine_detection_method"]
        self.ring_timeout_s: int = options["ring_timeout"]
        self.time_limit_s: int = options["time_limit"]
        self.created_at = time.monotonic()
        self.start_time = _plivo_time()
        self.answer_time = ""
        self.end_time = ""
        #: ``queued`` → ``ringing`` → ``in-progress`` → the final ``CallStatus``.
        self.status = "queued"
        #: Every request made to the gateway, in order.
        self.callbacks: list[Callback] = []
        #: The XML documents run (answer, fallback, transfer), as fetched.
        self.documents: list[str] = []
        #: The elements run, in order (``Stream``, ``Speak``…).
        self.elements: list[str] = []
        #: The streams opened, as Plivo read their ``<Stream>``.
        self.streams: list[wire.StreamSpec] = []
        #: The detection's verdict (``true``: a machine), once made.
        self.machine: str | None = None
        #: The gateway's requests on this call: (method, what, HTTP status answered).
        self.commands: list[tuple[str, str, int]] = []
        #: What Plivo would note about the gateway's answers (not refused).
        self.problems: list[str] = []
        self.answered_at: float | None = None
        self.stream_started_at: float | None = None
        #: When the callee first heard the bot (the first audible audio).
        self.first_audio_at: float | None = None
        self.ended_at: float | None = None
        #: The first stream's report (:attr:`reports`: all of them).
        self.report: CallReport | None = None
        self.reports: list[CallReport] = []
        #: Why it ended: a key of :data:`HANGUPS`.
        self.ended_by = ""
        self.hangup: Hangup | None = None
        self.error = ""
        self.log: list[str] = []
        #: A transfer asked for and not yet followed: (aleg_url, aleg_method).
        self.transfer: tuple[str, str] | None = None
        #: The call must end now.
        self.ending = asyncio.Event()
        #: The running XML (and its streams) must stop: the call ends, or a transfer replaces the XML.
        self.leave = asyncio.Event()
        self.stream_running = asyncio.Event()
        #: The call is over: detection stops listening.
        self.over = asyncio.Event()
        self.done = asyncio.Event()

    @property
    def kinds(self) -> list[str]:
        """The callbacks made, by URL kind, in order."""
        return [callback.kind for callback in self.callbacks]

    def sent(self, kind: str) -> dict[str, str]:
        """The parameters of the first callback of ``kind``."""
        return next(callback.params for callback in self.callbacks if callback.kind == kind)

    @property
    def first_word_s(self) -> float | None:
        """From the request reaching the network to the callee hearing the bot's first word."""
        return None if self.first_audio_at is None else self.first_audio_at - self.created_at

    @property
    def finished(self) -> bool:
        return self.hangup is not None

    def end(self, by: str) -> None:
        """End the call now (the first reason given is kept)."""
        self.ended_by = self.ended_by or by
        self.ending.set()
        self.leave.set()


class PlivoCalleeSide(PlivoSide):
    """Plivo's side of a dialled call's ``<Stream>``: the socket its text names, query kept, with the call's
    ``CallUUID`` as ``callId`` and the account's auth id as ``accountId`` in ``start``."""

    def __init__(self, call: DialledCall, spec: wire.StreamSpec, account_id: str) -> None:
        super().__init__()
        self.call, self.spec, self.account_id = call, spec, account_id

    async def request_call(
        self, http: aiohttp.ClientSession, opts: CallOptions, report: CallReport
    ) -> Offer | None:
        spec = self.spec
        report.call_sid = self.call.call_uuid
        report.account_sid = self.account_id
        warnings = []
        if not spec.bidirectional:
            warnings.append("the <Stream> is not bidirectional: Plivo would ignore everything the bot sends")
        if not spec.keep_call_alive:
            warnings.append("the <Stream> lacks keepCallAlive: Plivo ran the next element at once")
        stream_url, _ = ws_url(spec.url, keep_query=True)
        self._content_type = spec.content_type
        self._extra_headers = ";".join(f"{k}={v}" for k, v in spec.extra_headers.items())
        if wire.CONTENT_TYPES[spec.content_type][1] == 16000:
            self._up, self._down = StreamResampler(8000, 16000), StreamResampler(16000, 8000)
        report.stream_sid = wire.new_uuid()
        return Offer(
            url=stream_url,
            parameters=dict(spec.extra_headers),
            status_callback=spec.status_callback_url,
            after=spec.after,
            warnings=warnings,
        )


class PlivoNetwork(SimulatedApi[DialledCall]):
    """Plivo's Voice API Call resource on loopback, and the simulated phones behind it."""

    provider = "plivo"

    def __init__(
        self,
        *,
        auth_id: str,
        auth_token: str,
        ring_s: float = 1.0,
        behaviours: dict[str, Behaviour] | None = None,
        human_play: str = "builtin:hello",
        machine_record_s: float = MACHINE_RECORD_S,
        on_event: Callable[[str], None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        request_ids: bool = True,
    ) -> None:
        #: Whether callbacks carry ``RequestUUID`` and ``ALegRequestUUID`` (Plivo's pages list them only for
        #: some URLs; False checks that a gateway does not depend on them).
        self.request_ids = request_ids
        #: The account (``PLIVO_AUTH_ID``) and its token (``PLIVO_AUTH_TOKEN``): Basic auth, and the key
        #: every callback is signed with.
        self.auth_id = auth_id
        self.auth_token = auth_token
        #: How long a phone rings before it is answered (or declared busy / rejected).
        self.ring_s = ring_s
        #: Per-number behaviour (digits, or ``+`` and digits), over :func:`behaviour_for`.
        self.behaviours: dict[str, Behaviour] = {k.lstrip("+"): v for k, v in (behaviours or {}).items()}
        self.human_play = human_play
        #: A machine records this long at most, then hangs up.
        self.machine_record_s = machine_record_s
        super().__init__(on_event=on_event, host=host, port=port)
        self._by_call_uuid: dict[str, DialledCall] = {}
        #: Every create request, with the status the network answered (accepted or not).
        self.requests: list[tuple[int, Any]] = []
        #: Every other request: (method, path, body, status answered), known call or not.
        self.commands: list[tuple[str, str, Any, int]] = []

    # --- lifecycle ---------------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        account = "/v1/Account/{auth_id}"
        app.router.add_post(account + "/Call/", self._create)
        app.router.add_delete(account + "/Call/{call_uuid}/", self._delete_call)
        app.router.add_post(account + "/Call/{call_uuid}/", self._transfer)
        app.router.add_delete(account + "/Request/{request_uuid}/", self._cancel)

    def label(self, call: DialledCall) -> str:
        return call.call_uuid[:8]

    def call(self, call_id: str) -> DialledCall:
        """The call with this request_uuid or CallUUID."""
        return self.dialled.get(call_id) or self._by_call_uuid[call_id]

    # --- REST ------------------------------------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> None:
        """HTTP Basic ``auth_id:auth_token`` for the account the path names, or Plivo's 401."""
        expected = base64.b64encode(f"{self.auth_id}:{self.auth_token}".encode()).decode()
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        ok = scheme == "Basic" and hmac.compare_digest(given.strip().encode(), expected.encode())
        if not ok or request.match_info["auth_id"] != self.auth_id:
            raise _Refused(401, "Authentication failed")

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        """The JSON object (as the SDK sends it) or the form; an empty body is ``{}``."""
        raw = await request.read()
        if not raw.strip():
            return {}
        if request.content_type == "application/x-www-form-urlencoded":
            return {key: value for key, value in (await request.post()).items() if isinstance(value, str)}
        try:
            body = json.loads(raw)
        except ValueError:
            raise _bad("the body must be a JSON object or a form") from None
        if not isinstance(body, dict):
            raise _bad("the body must be a JSON object or a form")
        return body

    async def _create(self, request: web.Request) -> web.Response:
        body: Any = None
        try:
            self._authenticate(request)
            body = await self._body(request)
            call = self._check(body)
        except _Refused as exc:
            self.requests.append((exc.response.status, body))
            return exc.response
        self.requests.append((201, body))
        self.dialled[call.request_uuid] = call
        self._by_call_uuid[call.call_uuid] = call
        amd = f", machine detection {call.machine_detection}" if call.machine_detection else ""
        self._say(call, f"call {call.from_} → {call.to} ({call.behaviour}{amd}), request {call.request_uuid}")
        self.ring(call, self._ring(call))
        reply = {"api_id": _new_id(), "message": "call fired", "request_uuid": call.request_uuid}
        return web.json_response(reply, status=201)

    def _check(self, body: dict[str, Any]) -> DialledCall:
        """A "Make a call" request checked as Plivo documents it."""
        options: dict[str, Any] = {}
        for field in ("from", "to"):
            value = body.get(field)
            if value is None or value == "":
                raise _bad(f"{field} is a required parameter")
            if not isinstance(value, str):
                raise _bad(f"{field} must be a string")
            if field == "to" and ("<" in value or value.startswith("sip:")):
                raise _bad("the simulated network rings one phone number (no bulk calls, no SIP endpoints)")
            if not _NUMBER.fullmatch(value):
                raise _bad(f"{field} must be a phone number with its country code, not {value!r}")
            options[field] = value.lstrip("+")
        for field in ("answer_url", "ring_url", "hangup_url", "fallback_url", "machine_detection_url"):
            value = body.get(field)
            if value is None or value == "":
                if field == "answer_url":
                    raise _bad("answer_url is a required parameter")
                options[field] = None
                continue
            if not isinstance(value, str) or not _URL.fullmatch(value):
                raise _bad(f"{field} is not a valid URL: {value!r}")
            options[field] = value
        for field in (
            "answer_method",
            "ring_method",
            "hangup_method",
            "fallback_method",
            "machine_detection_method",
        ):
            value = body.get(field, "POST")
            if value not in METHODS:
                raise _bad(f"{field} must be GET or POST, not {value!r}")
            options[field] = value
        detection = body.get("machine_detection")
        if detection is True:
            detection = "true"
        if detection is not None and detection not in MACHINE_DETECTION:
            raise _bad(f"machine_detection must be true or hangup, not {detection!r}")
        options["machine_detection"] = detection
        for field, (low, high) in RANGES_MS.items():
            self._integer(body, field, low, high)
        options["ring_timeout"] = self._integer(body, "ring_timeout", 0, None, DEFAULT_RING_TIMEOUT_S)
        options["time_limit"] = self._integer(body, "time_limit", 1, None, DEFAULT_TIME_LIMIT_S)
        self._integer(body, "hangup_on_ring", 1, None)
        number = options["to"]
        return DialledCall(
            body=body,
            behaviour=self.behaviours.get(number) or behaviour_for(number),
            options=options,
        )

    @staticmethod
    def _integer(body: Mapping[str, Any], field: str, low: int, high: int | None, default: int = 0) -> int:
        """An integer parameter (a JSON number, or digits in a form), within ``low``-``high``."""
        value = body.get(field)
        if value is None or value == "":
            return default
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
            within = f"{low}-{high}" if high else f">= {low}"
            raise _bad(f"{field} must be an integer {within}, not {value!r}")
        return value

    def _command(self, request: web.Request, body: Any, response: web.Response) -> web.Response:
        self.commands.append((request.method, request.path, body, response.status))
        return response

    async def _delete_call(self, request: web.Request) -> web.Response:
        """Hang up a call: 204; a call unknown or already over: 404."""
        try:
            self._authenticate(request)
            body = await self._body(request)
        except _Refused as exc:
            return self._command(request, None, exc.response)
        call = self._by_call_uuid.get(request.match_info["call_uuid"])
        if call is None or call.ending.is_set() or call.finished:
            response = _error(404, "not found")
        else:
            answered = call.answered_at is not None
            self._say(call, f"DELETE: the gateway hangs up ({call.status})")
            call.end("api" if answered else "cancel")
            response = web.Response(status=204)
        if call is not None:
            call.commands.append(("DELETE", "Call", response.status))
        return self._command(request, body, response)

    async def _cancel(self, request: web.Request) -> web.Response:
        """Cancel a call not yet answered by its request_uuid: 204; else (answered, over, unknown) 404."""
        try:
            self._authenticate(request)
            body = await self._body(request)
        except _Refused as exc:
            return self._command(request, None, exc.response)
        call = self.dialled.get(request.match_info["request_uuid"])
        if call is None or call.answered_at is not None or call.ending.is_set() or call.finished:
            response = _error(404, "not found")
        else:
            self._say(call, f"DELETE Request: the gateway cancels the call ({call.status})")
            call.end("cancel")
            response = web.Response(status=204)
        if call is not None:
            call.commands.append(("DELETE", "Request", response.status))
        return self._command(request, body, response)

    async def _transfer(self, request: web.Request) -> web.Response:
        """Transfer a call (``legs``, ``aleg_url``, ``aleg_method``): 202; the a-leg's new XML is followed."""
        body: Any = None
        try:
            self._authenticate(request)
            body = await self._body(request)
            legs = body.get("legs")
            if legs not in ("aleg", "bleg", "both"):
                raise _bad(f"legs must be aleg, bleg or both, not {legs!r}")
            for leg in ("aleg", "bleg"):
                url, method = body.get(f"{leg}_url"), body.get(f"{leg}_method", "POST")
                if url is not None and (not isinstance(url, str) or not _URL.fullmatch(url)):
                    raise _bad(f"{leg}_url is not a valid URL: {url!r}")
                if method not in METHODS:
                    raise _bad(f"{leg}_method must be GET or POST, not {method!r}")
            if legs in ("aleg", "both") and not body.get("aleg_url"):
                raise _bad("aleg_url is required to transfer the aleg")
        except _Refused as exc:
            return self._command(request, body, exc.response)
        call = self._by_call_uuid.get(request.match_info["call_uuid"])
        if call is None or call.ending.is_set() or call.finished or call.answered_at is None:
            response = _error(404, "not found")
        else:
            response = web.json_response({"api_id": _new_id(), "message": "call transfered"}, status=202)
            if legs == "bleg":
                self._say(call, "transfer of the bleg: recorded, not simulated (the call has no bleg)")
            else:
                self._say(call, f"transfer: the aleg is to run {body['aleg_url']}")
                call.transfer = (str(body["aleg_url"]), str(body.get("aleg_method", "POST")))
                call.leave.set()
        if call is not None:
            call.commands.append(("POST", "Call", response.status))
        return self._command(request, body, response)

    # --- the phone -------------------------------------------------------------------------------------

    async def _ring(self, call: DialledCall) -> None:
        detect: asyncio.Task[None] | None = None
        timer: asyncio.TimerHandle | None = None
        try:
            answers = call.behaviour in ("human", "machine")
            if call.behaviour == "busy":
                # A busy line answers before it rings.
                if await _waits(call.ending, min(self.ring_s, 0.2)):
                    return
                call.end("busy")
                return
            call.status = "ringing"
            await self._send(call, "ring", {"CallStatus": "ringing", "Event": "Ring"})
            if call.behaviour == "failed":
                ring = min(self.ring_s, 0.2)
            elif call.behaviour == "no-answer":
                ring = min(call.ring_timeout_s, max(self.ring_s * 2, 0.5))
            else:
                ring = self.ring_s
            if answers and ring >= call.ring_timeout_s:
                answers, ring = False, call.ring_timeout_s  # ring_timeout: Plivo gives up first
            if await _waits(call.ending, ring):
                return
            if not answers:
                call.end("rejected" if call.behaviour == "failed" else "no-answer")
                return
            call.answered_at, call.answer_time = time.monotonic(), _plivo_time()
            call.status = "in-progress"
            self._say(call, "answered")
            timer = asyncio.get_running_loop().call_later(call.time_limit_s, call.end, "time-limit")
            machine: dict[str, str] = {}
            if call.machine_detection is not None and call.machine_detection_url is None:
                # Synchronous: "no XML is processed during the analysis".
                if await _waits(call.ending, HUMAN_VERDICT_S):
                    return
                if not await self._verdict(call):
                    return
                machine = {"Machine": call.machine or "false"}
            elif call.machine_detection is not None:
                detect = asyncio.create_task(self._detect(call))
            await self._answered(call, machine)
        except Exception as exc:  # a simulated phone never takes the network down; the call says why
            call.error = call.error or f"{type(exc).__name__}: {exc}"
            self._say(call, f"error: {call.error}")
            call.end("error")
        finally:
            call.over.set()
            if timer is not None:
                timer.cancel()
            if detect is not None:
                if not detect.done():
                    detect.cancel()
                await asyncio.gather(detect, return_exceptions=True)
            task = asyncio.current_task()
            if task is None or not task.cancelling():  # the network closing posts nothing more
                with contextlib.suppress(Exception):
                    await self._hung_up(call)
            call.done.set()

    async def _answered(self, call: DialledCall, machine: Mapping[str, str]) -> None:
        """The answer URL's XML, then any transfer's, run until the call ends."""
        params = {"CallStatus": "in-progress", "Event": "StartApp", **machine}
        text = await self._fetch_xml(call, "answer", call.answer_url, call.answer_method, params)
        if text is None and call.fallback_url is not None and not call.ending.is_set():
            text = await self._fetch_xml(call, "fallback", call.fallback_url, call.fallback_method, params)
        if text is None:
            if not call.ending.is_set():
                self._say(call, f"no XML ({call.error}): Plivo hangs up")
            call.end("error")
            return
        transfers = 0
        background: list[asyncio.Task[None]] = []
        try:
            while text is not None:
                if not await self._run_xml(call, text, background):
                    self._say(call, f"{call.error}: Plivo hangs up")
                    call.end("error")
                if call.ending.is_set():
                    return
                if call.transfer is not None and transfers < MAX_TRANSFERS:
                    # The transfer stops what runs (the streams get ``stop``), then the new XML takes over.
                    await asyncio.gather(*background, return_exceptions=True)
                    background.clear()
                    if call.ending.is_set():
                        return
                    url, method = call.transfer
                    call.transfer, transfers = None, transfers + 1
                    call.leave.clear()
                    text = await self._fetch_xml(call, "transfer", url, method, {"CallStatus": "in-progress"})
                    if text is None:
                        self._say(call, f"no XML to transfer to ({call.error}): Plivo hangs up")
                        call.end("error")
                        return
                    continue
                text = None
            if not call.ending.is_set():
                self._say(call, "the XML has run out: the call ends")
                call.end("xml-end")
        finally:
            call.leave.set()
            await asyncio.gather(*background, return_exceptions=True)

    async def _fetch_xml(
        self, call: DialledCall, kind: str, url: str, method: str, extra: Mapping[str, str]
    ) -> str | None:
        """Fetch one XML document (signed); None when it could not be had (``call.error`` says why)."""
        status, text, content_type = await self._request(call, kind, url, method, extra, ANSWER_TIMEOUT_S)
        if status != 200:
            call.error = call.error or f"{kind} URL answered HTTP {status}: {text[:200]!r}"
            return None
        if content_type not in ("text/xml", "application/xml"):
            call.problems.append(f"{kind} URL answered Content-Type {content_type!r}, not text/xml")
        call.documents.append(text)
        return text

    async def _run_xml(self, call: DialledCall, text: str, background: list[asyncio.Task[None]]) -> bool:
        """Run one document element after element until it runs out, the call ends or a transfer comes;
        False when it is not Plivo XML (``call.error`` says why)."""
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            call.error = f"invalid XML: {exc}"
            return False
        if root.tag != "Response":
            call.error = f"invalid XML: the root is <{root.tag}>, Plivo expects <Response>"
            return False
        for element in root:
            if call.leave.is_set():
                return True
            tag = element.tag
            call.elements.append(tag)
            if tag == "Stream":
                try:
                    spec = self._stream_spec(element)
                except TelephonyProtocolError as exc:
                    call.problems.append(str(exc))
                    self._say(call, f"<Stream> refused ({exc}): the next element runs")
                    continue
                call.streams.append(spec)
                if spec.keep_call_alive:
                    await self._stream(call, spec)
                else:
                    task = asyncio.create_task(self._stream(call, spec))
                    background.append(task)
            elif tag == "Speak":
                words = "".join(element.itertext()).strip()
                self._say(call, f"<Speak> {words[:40]!r}")
                await _waits(call.leave, min(SPEAK_MAX_S, SPEAK_S_PER_CHAR * len(words)))
            elif tag == "Wait":
                length = element.get("length", "1")
                await _waits(call.leave, float(length) if length.isdigit() else 1.0)
            elif tag == "Hangup":
                self._say(call, "<Hangup/>: the call ends")
                call.end("xml-hangup")
                return True
            else:
                self._say(call, f"<{tag}>: not simulated, skipped")
        return True

    @staticmethod
    def _stream_spec(element: ET.Element) -> wire.StreamSpec:
        """A ``<Stream>`` as Plivo reads it (:func:`gateway.caller.wire_plivo.parse_answer`)."""
        document = "<Response>" + ET.tostring(element, encoding="unicode") + "</Response>"
        spec, _ = wire.parse_answer(document)
        assert spec is not None
        return spec

    async def _stream(self, call: DialledCall, spec: wire.StreamSpec) -> None:
        """The media stream, with the callee on the line, until it ends; a callee hanging up ends the call."""
        machine = call.behaviour == "machine"

        def heard(line: str) -> None:
            if " stream " in line and line.endswith(" started"):
                call.stream_started_at = call.stream_started_at or time.monotonic()
                call.stream_running.set()
            elif "bot audio starts" in line and call.first_audio_at is None:
                call.first_audio_at = time.monotonic()
            self._say(call, line.split("] ", 1)[-1])

        opts = CallOptions(
            to=call.to,
            from_=call.from_,
            call_sid=call.call_uuid,
            account_sid=self.auth_id,
            side=PlivoCalleeSide(call, spec, self.auth_id),
            play=self._machine_play(call) if machine else self.human_play,
            speak_at_s=0.0 if machine else None,
            hangup_when_done_s=None if machine else 1.5,
            max_duration_s=self.machine_record_s if machine else 300.0,
            hangup_event=call.leave,
            on_event=heard,
        )
        try:
            report = await place_call(opts)
        except GatewayError as exc:
            call.problems.append(f"the stream failed: {type(exc).__name__}: {exc}")
            self._say(call, f"the stream failed: {exc}")
            return
        call.reports.append(report)
        call.report = call.report or report
        if call.leave.is_set():
            return
        if report.ended_by == "gateway":
            self._say(call, "the gateway closed the stream: the stream ends, the call goes on")
            return
        call.end("callee")

    def _machine_play(self, call: DialledCall) -> Path | str | None:
        """What a machine plays into a stream: its greeting from where it is now (it began at the answer);
        None once it is over (it is recording)."""
        elapsed = 0.0 if call.answered_at is None else time.monotonic() - call.answered_at
        if elapsed < 0.1:
            return "builtin:machine"
        return self.rest_of_greeting(elapsed, f"{call.call_uuid}-{len(call.streams)}")

    # --- machine detection ------------------------------------------------------------------------------

    async def _detect(self, call: DialledCall) -> None:
        """Asynchronous detection: the verdict about a second into the callee's audio, to
        ``machine_detection_url``; nothing once the call is over."""
        await _waits(call.stream_running, AMD_NO_STREAM_S)
        base = call.stream_started_at or time.monotonic()
        if await _waits(call.over, base + HUMAN_VERDICT_S - time.monotonic()):
            return
        await self._verdict(call)

    async def _verdict(self, call: DialledCall) -> bool:
        """Decide (and post it when asynchronous); whether the call goes on (``hangup`` and a machine: no)."""
        call.machine = "true" if call.behaviour == "machine" else "false"
        if_machine = "hangup" if call.machine_detection == "hangup" else "continue"
        self._say(call, f"machine detection: Machine={call.machine}")
        if call.machine_detection_url is not None:
            params = {
                "Machine": call.machine,
                "IfMachine": if_machine,
                "CallStatus": "in-progress",
                "Event": "MachineDetection",
            }
            await self._send(call, "machine", params)
        if call.machine == "true" and if_machine == "hangup":
            self._say(call, "a machine answered: Plivo hangs up (machine_detection=hangup)")
            call.end("machine-detection")
            return False
        return True

    # --- callbacks --------------------------------------------------------------------------------------

    async def _hung_up(self, call: DialledCall) -> None:
        hangup = HANGUPS[call.ended_by or "error"]
        call.hangup, call.status = hangup, hangup.call_status
        call.ended_at = time.monotonic()
        call.end_time = _plivo_time()
        duration = 0 if call.answered_at is None else round(call.ended_at - call.answered_at)
        params = {
            "CallStatus": hangup.call_status,
            "Event": "Hangup",
            "HangupCause": hangup.cause,
            "HangupCauseName": hangup.name,
            "HangupCauseCode": str(hangup.code),
            "HangupSource": hangup.source,
            "Duration": str(duration),
            "BillDuration": str(duration),
            "StartTime": call.start_time,
            "AnswerTime": call.answer_time,
            "EndTime": call.end_time,
        }
        if call.machine is not None and call.machine_detection_url is None:
            params["Machine"] = call.machine
        self._say(call, f"hangup: {hangup.call_status} {hangup.cause} ({hangup.source})")
        await self._send(call, "hangup", params)

    def _target(self, call: DialledCall, kind: str) -> tuple[str, str]:
        if kind == "ring":
            assert call.ring_url is not None
            return call.ring_url, call.ring_method
        if kind == "machine":
            assert call.machine_detection_url is not None
            return call.machine_detection_url, call.machine_detection_method
        return call.hangup_url, call.hangup_method

    async def _send(self, call: DialledCall, kind: str, extra: Mapping[str, str]) -> int:
        """A notification (ring, machine, hangup) to its URL, when there is one; the gateway's status."""
        if kind == "ring" and call.ring_url is None:
            return 0
        url, method = self._target(call, kind)
        status, _, _ = await self._request(call, kind, url, method, extra, 20.0)
        return status

    async def _request(
        self, call: DialledCall, kind: str, url: str, method: str, extra: Mapping[str, str], timeout_s: float
    ) -> tuple[int, str, str]:
        """One signed request to the gateway: (HTTP status, 0 when unreachable; body; content type)."""
        assert self._http is not None
        params = {
            "CallUUID": call.call_uuid,
            "From": call.from_,
            "To": call.to,
            "Direction": "outbound",
            "ALegUUID": call.call_uuid,
            **extra,
        }
        if self.request_ids:
            params |= {"RequestUUID": call.request_uuid, "ALegRequestUUID": call.request_uuid}
        headers = _signed_headers(self.auth_token, url, params, method)
        target: str | URL = url
        kwargs: dict[str, Any] = {}
        if method == "GET":
            target = URL(url).extend_query(params)
        else:
            kwargs["data"] = params
        status, text, content_type = 0, "", ""
        try:
            async with (
                asyncio.timeout(timeout_s),
                self._http.request(method, target, headers=headers, **kwargs) as resp,
            ):
                status, text, content_type = resp.status, await resp.text(), resp.content_type
        except (aiohttp.ClientError, TimeoutError) as exc:
            text = f"unreachable: {type(exc).__name__}: {exc}"
            call.problems.append(f"{kind} URL {text}")
        call.callbacks.append(Callback(kind, method, url, params, status))
        self._say(call, f"{kind} URL ({method}): HTTP {status}")
        return status, text, content_type
