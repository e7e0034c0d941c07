"""Vonage codec (binary L16 + JSON control), the answer NCCO, signed webhooks and the REST requests."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.errors import AuthError, ConfigError, TelephonyProtocolError, ToolError
from gateway.telephony.events import (
    CallerAudio,
    CallStarted,
    ClearPlayback,
    DtmfPressed,
    MarkReached,
    PlayAudio,
    SetMark,
)
from gateway.telephony.provider import BinaryMediaCodec
from gateway.telephony.vonage import (
    VonageCodec,
    answer_ncco,
    application_jwt,
    create_call_request,
    hangup_request,
    transfer_request,
    verify_vonage_signature,
)

UUID = "63f61863-4a51-4f6b-86e1-46edebcf9356"
SECRET = "signature-secret-0123456789abcdef"
CONNECTED = json.dumps(
    {"event": "websocket:connected", "content-type": "audio/l16;rate=16000", "uuid": UUID,
     "from": "+15550001111", "to": "+15551230000", "token": "tok"}
)  # fmt: skip


def _streaming() -> VonageCodec:
    codec = VonageCodec()
    codec.receive_text(CONNECTED)
    return codec


def test_connected_starts_the_stream_with_the_headers() -> None:
    codec = VonageCodec()
    assert isinstance(codec, BinaryMediaCodec)
    start = codec.receive_text(CONNECTED)
    assert isinstance(start, CallStarted)
    assert (start.call_sid, start.stream_sid, start.sample_rate) == (UUID, UUID, 16000)
    assert (start.from_, start.to) == ("+15550001111", "+15551230000")
    assert start.custom_parameters["token"] == "tok"
    assert (codec.audio.codec, codec.audio.rate, codec.audio.frame_bytes) == ("l16", 16000, 640)
    caps = codec.capabilities
    assert (caps.binary_audio, caps.frames_per_message, caps.provider_buffers) == (True, 1, False)


def test_binary_audio_dtmf_notify_and_cleared() -> None:
    codec = _streaming()
    frame = bytes(range(256)) * 2 + bytes(128)
    assert codec.receive_binary(frame) == CallerAudio(frame)
    assert codec.receive_media('{"event":"websocket:dtmf"}') is None  # text never carries audio
    assert codec.receive_text('{"event":"websocket:dtmf","digit":"5","duration":260}') == DtmfPressed("5")
    assert codec.receive_text('{"event":"websocket:dtmf","dtmf":{"digit":"#"}}') == DtmfPressed("#")
    assert codec.encode(SetMark("t1f10")) == '{"action":"notify","payload":{"mark":"t1f10"}}'
    assert codec.receive_text('{"event":"websocket:notify","payload":{"mark":"t1f10"}}') == MarkReached(
        "t1f10"
    )
    assert codec.receive_text('{"event":"websocket:notify","payload":{"other":1}}') is None
    codec.encode(SetMark("t2f10"))
    codec.encode(SetMark("t2f20"))
    assert codec.encode(ClearPlayback()) == '{"action":"clear"}'
    # The clear stands for the newest notify it dropped; a late echo of a dropped one is ignored.
    assert codec.receive_text('{"event":"websocket:cleared"}') == MarkReached("t2f20")
    assert codec.receive_text('{"event":"websocket:notify","payload":{"mark":"t2f10"}}') is None
    assert codec.receive_text('{"event":"websocket:cleared"}') is None


def test_audio_out_is_exactly_one_binary_20ms_frame() -> None:
    codec = _streaming()
    assert codec.encode(PlayAudio(bytes(640))) == bytes(640)
    for size in (320, 1280, 639):
        with pytest.raises(TelephonyProtocolError) as err:
            codec.encode(PlayAudio(bytes(size)))
        assert err.value.close_code == 1011


def test_8khz_stream_takes_320_byte_frames() -> None:
    codec = VonageCodec()
    codec.receive_text(CONNECTED.replace("rate=16000", "rate=8000"))
    assert codec.audio.rate == 8000
    assert codec.encode(PlayAudio(bytes(320))) == bytes(320)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", 1007),
        ("[1]", 1007),
        ('{"event":5}', 1007),
        ('{"event":"websocket:dtmf","digit":"5"}', 1008),  # before connected
        ('{"event":"websocket:connected","content-type":"audio/l16;rate=44100","uuid":"u"}', 1003),
        ('{"event":"websocket:connected","content-type":"audio/pcmu","uuid":"u"}', 1003),
        ('{"event":"websocket:connected","content-type":"audio/l16;rate=16000"}', 1007),  # no uuid
        ('{"event":"websocket:connected","uuid":"u"}', 1007),
        ('{"event":"something:else"}', 1008),
    ],
)
def test_malformed_before_connected(text: str, code: int) -> None:
    with pytest.raises(TelephonyProtocolError) as err:
        VonageCodec().receive_text(text)
    assert err.value.close_code == code


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (CONNECTED, 1008),  # twice
        ('{"event":"websocket:dtmf","digit":"X"}', 1007),
        ('{"event":"websocket:dtmf"}', 1007),
        ('{"event":"websocket:notify","payload":"x"}', 1007),
        ('{"event":"websocket:unknown"}', 1008),
    ],
)
def test_malformed_while_streaming(text: str, code: int) -> None:
    with pytest.raises(TelephonyProtocolError) as err:
        _streaming().receive_text(text)
    assert err.value.close_code == code


def test_bad_binary_frames() -> None:
    with pytest.raises(TelephonyProtocolError) as err:
        VonageCodec().receive_binary(bytes(640))  # before connected
    assert err.value.close_code == 1008
    for data in (b"", bytes(641), bytes(640 * 51)):
        with pytest.raises(TelephonyProtocolError) as err:
            _streaming().receive_binary(data)
        assert err.value.close_code == 1007
    with pytest.raises(TelephonyProtocolError):
        VonageCodec().encode(SetMark("x"))  # nothing may be sent before connected


def test_answer_ncco() -> None:
    [connect] = answer_ncco(
        "wss://gw.example.com/vonage/media", "tok", call_uuid=UUID, from_="+1555", to="+1666",
        event_url="https://gw.example.com/vonage/event",
    )  # fmt: skip
    assert connect["action"] == "connect"
    assert connect["eventUrl"] == ["https://gw.example.com/vonage/event"]
    [endpoint] = connect["endpoint"]
    assert endpoint == {
        "type": "websocket",
        "uri": "wss://gw.example.com/vonage/media",
        "content-type": "audio/l16;rate=16000",
        "headers": {"uuid": UUID, "from": "+1555", "to": "+1666", "token": "tok"},
        "authorization": {"type": "custom", "value": "tok"},
    }
    with pytest.raises(ConfigError):
        answer_ncco("https://x/y", "tok", call_uuid=UUID, from_="", to="")
    with pytest.raises(ConfigError):
        answer_ncco("wss://x/y", "t" * 600, call_uuid=UUID, from_="", to="")  # headers over 512 bytes
    with pytest.raises(ConfigError):
        answer_ncco("wss://x/y", "tok", call_uuid=UUID, from_="", to="", rate=44100)


def _signed(body: bytes, *, secret: str = SECRET, **claims: object) -> str:
    payload = {"iat": int(time.time()), "jti": "j", "payload_hash": hashlib.sha256(body).hexdigest()} | claims
    return "Bearer " + jwt.encode(payload, secret, algorithm="HS256")


def test_signed_webhook_good_bad_expired_and_tampered() -> None:
    body, now = b'{"uuid":"u","status":"answered"}', time.time()
    claims = verify_vonage_signature(SECRET, _signed(body), body, now=now)
    assert claims["jti"] == "j"
    with pytest.raises(AuthError, match="signature"):
        verify_vonage_signature(
            SECRET, _signed(body, secret="other-secret-0123456789abcdef-longer"), body, now=now
        )
    with pytest.raises(AuthError, match="expired"):
        verify_vonage_signature(SECRET, _signed(body, exp=int(now) - 120), body, now=now)
    with pytest.raises(AuthError, match="too old"):
        verify_vonage_signature(SECRET, _signed(body, iat=int(now) - 900), body, now=now)
    with pytest.raises(AuthError, match="payload_hash"):
        verify_vonage_signature(SECRET, _signed(body), body + b" ", now=now)
    with pytest.raises(AuthError, match="Bearer"):
        verify_vonage_signature(SECRET, "", body, now=now)
    with pytest.raises(AuthError):
        verify_vonage_signature(SECRET, "Bearer not.a.jwt", body, now=now)
    none_alg = "Bearer " + jwt.encode({"iat": int(now)}, None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(AuthError):
        verify_vonage_signature(SECRET, none_alg, b"", now=now)
    with pytest.raises(ConfigError):
        verify_vonage_signature("", _signed(body), body, now=now)
    # A GET's query: its parameters as compact JSON, in order.
    query = {"to": "15551230000", "from": "15550001111", "uuid": UUID}
    compact = json.dumps(query, separators=(",", ":")).encode()
    verify_vonage_signature(SECRET, _signed(compact), b"", now=now, query=query)
    with pytest.raises(AuthError, match="query"):
        verify_vonage_signature(SECRET, _signed(compact), b"", now=now, query=query | {"to": "1"})


def test_rest_requests_carry_an_rs256_application_jwt() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    token = application_jwt("app-id", pem)
    claims = jwt.decode(token, key.public_key(), algorithms=["RS256"])
    assert claims["application_id"] == "app-id"
    assert claims["exp"] > claims["iat"]
    hangup = hangup_request(call_uuid=UUID, app_jwt=token, base_url="http://127.0.0.1:9")
    assert (hangup.method, hangup.url) == ("PUT", f"http://127.0.0.1:9/v1/calls/{UUID}")
    assert json.loads(hangup.body or b"") == {"action": "hangup"}
    assert hangup.headers["Authorization"] == f"Bearer {token}"
    assert token not in repr(hangup)
    transfer = transfer_request(call_uuid=UUID, number="+15550100199", app_jwt=token)
    assert json.loads(transfer.body or b"")["destination"]["ncco"][0]["endpoint"] == [
        {"type": "phone", "number": "15550100199"}
    ]
    with pytest.raises(ToolError):
        hangup_request(call_uuid="../x", app_jwt=token)
    with pytest.raises(ConfigError):
        transfer_request(call_uuid=UUID, number="sales", app_jwt=token)
    with pytest.raises(ConfigError):
        application_jwt("app-id", "not a key")


def test_the_create_call_request_is_vonages() -> None:
    """``POST /v1/calls``: digits for numbers, the answer and event URLs POSTed, the ring time within
    Vonage's 120 s, asynchronous advanced machine detection only when asked for; 201 is success."""
    made = create_call_request(
        to="+15551230000", from_="+15550100100", answer_url="https://gw/vonage/outbound/answer?t=a",
        event_url="https://gw/vonage/outbound/event?t=a", ringing_s=600, machine_detection=True,
        app_jwt="jwt", base_url="http://127.0.0.1:9/",
    )  # fmt: skip
    assert (made.method, made.url, made.ok) == ("POST", "http://127.0.0.1:9/v1/calls", frozenset({201}))
    assert made.headers["Authorization"] == "Bearer jwt"
    assert json.loads(made.body or b"") == {
        "to": [{"type": "phone", "number": "15551230000"}],
        "from": {"type": "phone", "number": "15550100100"},
        "answer_url": ["https://gw/vonage/outbound/answer?t=a"],
        "answer_method": "POST",
        "event_url": ["https://gw/vonage/outbound/event?t=a"],
        "event_method": "POST",
        "ringing_timer": 120,
        "advanced_machine_detection": {"behavior": "continue", "mode": "default"},
    }
    plain = create_call_request(
        to="+15551230000", from_="+15550100100", answer_url="https://a", event_url="https://e",
        ringing_s=30, machine_detection=False, app_jwt="jwt",
    )  # fmt: skip
    body = json.loads(plain.body or b"")
    assert "advanced_machine_detection" not in body
    assert body["ringing_timer"] == 30
    for bad in ({"to": "sales"}, {"from_": "+1"}, {"base_url": "ftp://x"}):
        kwargs: dict[str, Any] = {"to": "+15551230000", "from_": "+15550100100", "answer_url": "https://a",
                                  "event_url": "https://e", "ringing_s": 30, "machine_detection": False,
                                  "app_jwt": "jwt"} | bad  # fmt: skip
        with pytest.raises(ConfigError):
            create_call_request(**kwargs)


def test_the_application_key_is_loaded_once_and_signing_is_cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading an RSA PEM checks the key (tens of ms, on the event loop where it happens): done once per
    key; every later JWT only signs."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    application_jwt("app-id", pem)
    loads: list[bytes] = []
    real = serialization.load_pem_private_key

    def counting(data: bytes, password: bytes | None) -> Any:
        loads.append(data)
        return real(data, password)

    monkeypatch.setattr(serialization, "load_pem_private_key", counting)
    tokens = {application_jwt("app-id", pem) for _ in range(20)}
    assert loads == []
    assert len(tokens) == 20  # each has its own jti
    assert all(
        jwt.decode(t, key.public_key(), algorithms=["RS256"])["application_id"] == "app-id" for t in tokens
    )
