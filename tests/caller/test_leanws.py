"""The load peers' bare RFC 6455 framing, without sockets."""

from __future__ import annotations

import pytest

from gateway.caller import leanws


def _collect(masked: bool, max_size: int = 1 << 20) -> tuple[leanws.FrameReader, list[tuple[int, bytes]]]:
    out: list[tuple[int, bytes]] = []
    return leanws.FrameReader(lambda op, data: out.append((op, data)), masked=masked, max_size=max_size), out


def _unmask(frame: bytes) -> tuple[int, bytes]:
    """Decode one masked frame by the RFC's arithmetic (independent of the reader)."""
    n = frame[1] & 0x7F
    at = 2
    if n == 126:
        n, at = int.from_bytes(frame[2:4], "big"), 4
    elif n == 127:
        n, at = int.from_bytes(frame[2:10], "big"), 10
    key, body = frame[at : at + 4], frame[at + 4 :]
    assert len(body) == n
    return frame[0], bytes(b ^ key[i % 4] for i, b in enumerate(body))


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_every_length_encoding_round_trips(size: int) -> None:
    """7-, 16- and 64-bit lengths, masked (client → server) and not (server → client)."""
    payload = bytes(i % 251 for i in range(size))
    server, got_server = _collect(masked=True)
    server.feed(leanws.masked_frame(leanws.TEXT, payload))
    client, got_client = _collect(masked=False)
    client.feed(leanws.frame(leanws.BINARY, payload))
    assert got_server == [(leanws.TEXT, payload)]
    assert got_client == [(leanws.BINARY, payload)]
    assert _unmask(leanws.masked_frame(leanws.TEXT, payload)) == (0x81, payload)


def test_masks_are_fresh_per_frame() -> None:
    """RFC 6455 §5.3: a new unpredictable key for every frame a client sends."""
    frames = {leanws.masked_frame(leanws.TEXT, b"x" * 200)[4:8] for _ in range(50)}
    assert len(frames) > 45


def test_byte_by_byte_and_many_per_read() -> None:
    """Frames split across reads at every byte, and several frames in one read, come out whole."""
    stream = b"".join(leanws.masked_frame(leanws.TEXT, f"message {i}".encode() * 30) for i in range(3))
    reader, got = _collect(masked=True)
    for i in range(len(stream)):
        reader.feed(memoryview(stream)[i : i + 1])
    reader2, got2 = _collect(masked=True)
    reader2.feed(stream)
    expected = [(leanws.TEXT, f"message {i}".encode() * 30) for i in range(3)]
    assert got == expected
    assert got2 == expected


def test_fragments_are_reassembled_around_a_ping() -> None:
    """A control frame between fragments is delivered at once; the message when its last part arrives."""

    def part(first: bool, fin: bool, data: bytes) -> bytes:
        opcode = leanws.TEXT if first else leanws.CONTINUATION
        raw = leanws.masked_frame(opcode, data)
        return bytes([raw[0] & 0x7F | (0x80 if fin else 0)]) + raw[1:]

    reader, got = _collect(masked=True)
    reader.feed(part(True, False, b"hel") + leanws.masked_frame(leanws.PING, b"p") + part(False, True, b"lo"))
    assert got == [(leanws.PING, b"p"), (leanws.TEXT, b"hello")]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(leanws.frame(leanws.TEXT, b"unmasked"), 1002, id="unmasked-to-a-server"),
        pytest.param(
            bytes([0xC1]) + leanws.masked_frame(leanws.TEXT, b"x")[1:], 1002, id="rsv1-no-extension"
        ),
        pytest.param(leanws.masked_frame(leanws.CONTINUATION, b"x"), 1002, id="nothing-to-continue"),
        pytest.param(leanws.masked_frame(leanws.PING, b"x" * 126), 1002, id="control-over-125-bytes"),
        pytest.param(leanws.masked_frame(0x3, b"x"), 1002, id="reserved-opcode"),
        pytest.param(leanws.masked_frame(leanws.TEXT, b"x" * 201), 1009, id="over-max-size"),
    ],
)
def test_violations_name_their_close_code(data: bytes, code: int) -> None:
    """A broken frame raises ProtocolViolation with the code to fail the connection with."""
    reader, _ = _collect(masked=True, max_size=200)
    with pytest.raises(leanws.ProtocolViolation) as caught:
        reader.feed(data)
    assert caught.value.code == code


def test_client_side_rejects_masked_frames() -> None:
    """A client must not get masked frames from a server."""
    reader, _ = _collect(masked=False)
    with pytest.raises(leanws.ProtocolViolation):
        reader.feed(leanws.masked_frame(leanws.TEXT, b"x" * 300))


def test_handshake_key_and_close_reason() -> None:
    """The RFC's own accept-key example; close reasons are cut to 123 bytes on a character boundary."""
    assert leanws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    body = leanws.close_payload(1008, "é" * 100)
    assert body[:2] == (1008).to_bytes(2, "big")
    assert len(body) - 2 == 122
    assert body[2:].decode("utf-8") == "é" * 61
