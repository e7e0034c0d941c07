"""The media path's own frame serialiser must produce frames websockets' server side accepts as is."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side

from gateway.gemini.session import _TextFrames


def _server() -> Protocol:
    return Protocol(Side.SERVER, max_size=None)  # OPEN by default: only framing is under test


@pytest.mark.parametrize("size", [0, 1, 125, 126, 900, 65535, 65536, 200_000])
def test_frames_parse_as_masked_text_of_every_length_class(size: int) -> None:
    payload = bytes((i * 7 + 3) % 128 for i in range(size))
    server = _server()
    server.receive_data(_TextFrames().text(payload))
    events = server.events_received()
    assert events == [Frame(Opcode.TEXT, payload)]
    assert server.parser_exc is None  # an unmasked or malformed client frame fails the connection
    assert server.data_to_send() == []  # ... and would have queued a close frame


def test_keys_differ_from_frame_to_frame_and_across_pool_refills() -> None:
    frames = _TextFrames()
    keys = [frames.text(b"x")[2:6] for _ in range(3000)]  # > 2 pools of 1024 keys
    # 4-byte keys from the OS: repeats among 3000 are possible but vanishingly rare (p ~ 1e-3).
    assert len(set(keys)) >= 2995
    server = _server()
    for _ in range(3000):
        server.receive_data(frames.text(b"hello"))
    assert [e.data for e in server.events_received()] == [b"hello"] * 3000
