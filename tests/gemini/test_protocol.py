"""LiveProtocol state machine, close-code classification and reconnect backoff: no event loop."""

from __future__ import annotations

import json
import random

import pytest

from gateway.errors import (
    ConfigError,
    LiveConnectError,
    LiveProtocolError,
    LiveSessionClosed,
    LiveSessionError,
    LiveSessionNotFound,
)
from gateway.gemini.backoff import backoff
from gateway.gemini.messages import (
    FunctionResponse,
    SessionConfig,
    SessionResumptionUpdate,
    SetupComplete,
    TurnComplete,
)
from gateway.gemini.protocol import LiveProtocol, LiveState, classify_close

CFG = SessionConfig(model="gemini-3.8-live", voice="Kore")


def _ready(cfg: SessionConfig = CFG) -> LiveProtocol:
    proto = LiveProtocol(cfg)
    proto.setup()
    proto.receive(b'{"setupComplete": {}}')
    return proto


def test_setup_is_the_first_frame_and_moves_to_setup_sent() -> None:
    """setup() returns the setup message as compact JSON and changes state."""
    proto = LiveProtocol(CFG)
    assert proto.state is LiveState.CONNECTING
    msg = json.loads(proto.setup())
    assert list(msg) == ["setup"]
    assert msg["setup"]["model"] == "models/gemini-3.8-live"
    assert proto.state is LiveState.SETUP_SENT


def test_second_setup_is_refused() -> None:
    """A second setup would be closed 1007 by the server; the protocol refuses to produce it."""
    proto = LiveProtocol(CFG)
    proto.setup()
    with pytest.raises(LiveSessionError, match="already"):
        proto.setup()


@pytest.mark.parametrize("state", ["connecting", "setup_sent"])
def test_nothing_but_setup_can_be_sent_before_setup_complete(state: str) -> None:
    """Every client message is refused until setupComplete arrives."""
    proto = LiveProtocol(CFG)
    if state == "setup_sent":
        proto.setup()
    for send in (
        lambda: proto.audio(b"\0\0"),
        lambda: proto.text("hi"),
        proto.audio_stream_end,
        lambda: proto.client_content([("user", "hi")]),
        lambda: proto.tool_response([FunctionResponse("1", "f", {})]),
    ):
        with pytest.raises(LiveSessionError, match="setupComplete"):
            send()


def test_setup_complete_makes_the_session_ready_and_sends_work() -> None:
    """After setupComplete every encoder returns a frame."""
    proto = LiveProtocol(CFG)
    proto.setup()
    assert proto.receive(b'{"setupComplete": {}}') == [SetupComplete()]
    assert proto.state is LiveState.READY
    assert json.loads(proto.audio(b"\1\0"))["realtimeInput"]["audio"]["data"] == "AQA="
    assert (
        json.loads(proto.audio(b"\1\0", 8000))["realtimeInput"]["audio"]["mimeType"] == "audio/pcm;rate=8000"
    )
    assert json.loads(proto.text("x")) == {"realtimeInput": {"text": "x"}}
    assert json.loads(proto.audio_stream_end()) == {"realtimeInput": {"audioStreamEnd": True}}
    assert "clientContent" in json.loads(proto.client_content([("user", "x")]))
    assert "toolResponse" in json.loads(proto.tool_response([FunctionResponse("1", "f", {})]))


def test_first_message_other_than_setup_complete_is_a_protocol_error() -> None:
    """The server must answer setup with setupComplete before anything else."""
    proto = LiveProtocol(CFG)
    proto.setup()
    with pytest.raises(LiveProtocolError, match="setupComplete"):
        proto.receive(b'{"serverContent": {"turnComplete": true}}')
    with pytest.raises(LiveProtocolError):
        LiveProtocol(CFG).receive(b'{"setupComplete": {}}')  # nothing was sent yet


def test_events_after_setup_pass_through() -> None:
    """Once ready, frames are parsed into events unchanged."""
    proto = _ready()
    assert proto.receive('{"serverContent": {"turnComplete": true}}') == [TurnComplete()]


def test_resumption_handle_tracks_only_resumable_updates() -> None:
    """The handle is the latest one that came with resumable: true; non-resumable updates keep it."""
    proto = _ready()
    assert proto.resumption_handle is None
    proto.receive('{"sessionResumptionUpdate": {"newHandle": "h1", "resumable": true}}')
    assert proto.resumption_handle == "h1"
    events = proto.receive('{"sessionResumptionUpdate": {}}')
    assert events == [SessionResumptionUpdate(None, False)]
    proto.receive('{"sessionResumptionUpdate": {"newHandle": "h-not", "resumable": false}}')
    assert proto.resumption_handle == "h1"
    proto.receive('{"sessionResumptionUpdate": {"newHandle": "h2", "resumable": true}}')
    assert proto.resumption_handle == "h2"


def test_resumed_session_starts_from_its_handle() -> None:
    """A connection that resumed with a handle reports it until a newer one arrives."""
    proto = LiveProtocol(SessionConfig(model="m", resumption_handle="old"))
    assert json.loads(proto.setup())["setup"]["sessionResumption"] == {"handle": "old"}
    proto.receive(b'{"setupComplete": {}}')
    assert proto.resumption_handle == "old"


def test_closed_protocol_ignores_frames_and_refuses_sends() -> None:
    """After the close, late frames are dropped and sends raise."""
    proto = _ready()
    err = proto.closed(1011, "Internal error encountered.")
    assert isinstance(err, LiveSessionClosed)
    assert proto.state is LiveState.CLOSED
    assert proto.receive(b'{"serverContent": {"turnComplete": true}}') == []
    with pytest.raises(LiveSessionError):
        proto.audio(b"\0\0")


def test_close_during_setup_is_a_connect_error() -> None:
    """A close before setupComplete is reported as LiveConnectError with the code."""
    proto = LiveProtocol(CFG)
    proto.setup()
    err = proto.closed(1007, "API key not valid. Please pass a valid API key.")
    assert isinstance(err, LiveConnectError)
    assert err.code == 1007
    assert not err.retryable
    assert "API key not valid" in str(err)


# ------------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("code", "reason", "kind", "retryable"),
    [
        (1007, "API key not valid. Please pass a valid API key.", LiveConnectError, False),
        (1007, "Request contains an invalid argument.", LiveConnectError, False),
        (1008, "models/nope is not found for API version v1beta, or is not supp", LiveConnectError, False),
        (1008, "BidiGenerateContent session not found", LiveSessionNotFound, False),
        (1011, "Internal error encountered.", LiveConnectError, True),
        (1011, "The service is currently unavailable.", LiveConnectError, True),
        (1006, "", LiveConnectError, True),
        (None, "", LiveConnectError, True),
        (1001, "", LiveConnectError, True),
        (1013, "", LiveConnectError, True),
        (1000, "The operation was cancelled.", LiveConnectError, False),
    ],
)
def test_close_classification_during_setup(
    code: int | None, reason: str, kind: type, retryable: bool
) -> None:
    """Setup-phase closes: config/auth/model errors are final, transport and server errors retryable."""
    err = classify_close(code, reason, during_setup=True)
    assert type(err) is kind
    assert isinstance(err, LiveConnectError)
    assert err.retryable is retryable
    assert err.code == (1006 if code is None else code)


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        (1000, True),
        (1001, True),
        (1006, True),
        (None, True),
        (1007, False),
        (1008, False),
        (1009, False),
        (1011, True),
        (1012, True),
        (1013, True),
        (1014, True),
        (4000, False),
    ],
)
def test_close_classification_mid_session(code: int | None, retryable: bool) -> None:
    """Mid-session closes are LiveSessionClosed; drops, 1011 and a server's clean 1000 are retryable."""
    err = classify_close(code, "why", during_setup=False)
    assert type(err) is LiveSessionClosed
    assert err.code == (1006 if code is None else code)
    assert err.reason == "why"
    assert err.retryable is retryable


def test_session_not_found_is_distinguishable_and_not_retryable() -> None:
    """A dead resumption handle tells the caller to start fresh rather than retry the same resume."""
    err = classify_close(1008, "BidiGenerateContent session not found", during_setup=True)
    assert isinstance(err, LiveSessionNotFound)
    assert not err.retryable


# ----------------------------------------------------------------------------------------- backoff


def test_backoff_first_delay_is_random_and_then_grows_to_the_cap() -> None:
    """First delay in [0, initial_max]; then geometric growth from min to max, never above max."""
    gen = backoff(initial_max_s=0.5, min_s=0.25, max_s=4.0, factor=2.0, jitter=0.0, rng=random.Random(1))
    delays = [next(gen) for _ in range(10)]
    assert 0.0 <= delays[0] <= 0.5
    assert delays[1:] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]


def test_backoff_bounds_hold_with_jitter_for_many_seeds() -> None:
    """With jitter every delay stays within [0, max] and near the geometric value."""
    for seed in range(50):
        gen = backoff(
            initial_max_s=1.0, min_s=0.1, max_s=3.0, factor=1.5, jitter=0.2, rng=random.Random(seed)
        )
        first = next(gen)
        assert 0.0 <= first <= 1.0
        nominal = 0.1
        for _ in range(30):
            d = next(gen)
            assert 0.0 < d <= 3.0
            assert nominal * 0.8 - 1e-9 <= d <= min(3.0, nominal * 1.2) + 1e-9
            nominal = min(3.0, nominal * 1.5)


def test_backoff_first_delays_differ_between_calls() -> None:
    """Independent generators spread their first reconnects (no thundering herd)."""
    firsts = {round(next(backoff()), 6) for _ in range(20)}
    assert len(firsts) > 10


@pytest.mark.parametrize(
    "kwargs",
    [{"min_s": 0}, {"min_s": 5, "max_s": 1}, {"factor": 0.5}, {"jitter": 1.0}, {"initial_max_s": -1}],
)
def test_backoff_rejects_inconsistent_bounds(kwargs: dict[str, float]) -> None:
    """Nonsense bounds are a ConfigError at the first step."""
    with pytest.raises(ConfigError):
        next(backoff(**kwargs))
