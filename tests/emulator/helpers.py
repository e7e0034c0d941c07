"""Shared helpers for the emulator tests: a raw Live API client over websockets, audio makers."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection

from gateway.emulator import LIVE_PATH, Emulator, Scenario

MODEL = "models/gemini-3.8-live"


def fast(**overrides: Any) -> Scenario:
    """A scenario without pacing or artificial delays, so tests run in milliseconds."""
    values: dict[str, Any] = {"speed": 0.0, "first_audio_delay_s": 0.0, "playback_wait": False}
    values.update(overrides)
    return Scenario(**values)


def tone(seconds: float, rate: int = 16000, amplitude: float = 8000.0, freq: float = 220.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def silence(seconds: float, rate: int = 16000) -> bytes:
    return bytes(2 * int(seconds * rate))


def audio_msg(pcm: bytes, rate: int = 16000, *, urlsafe: bool = False, snake: bool = False) -> dict[str, Any]:
    data = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(pcm).decode()
    if snake:
        return {"realtime_input": {"audio": {"data": data, "mime_type": f"audio/pcm;rate={rate}"}}}
    return {"realtimeInput": {"audio": {"data": data, "mimeType": f"audio/pcm;rate={rate}"}}}


def is_turn_complete(msg: dict[str, Any]) -> bool:
    return bool(msg.get("serverContent", {}).get("turnComplete"))


def audio_bytes(messages: list[dict[str, Any]]) -> int:
    total = 0
    for msg in messages:
        for part in msg.get("serverContent", {}).get("modelTurn", {}).get("parts", []):
            total += len(base64.b64decode(part["inlineData"]["data"]))
    return total


def transcript(messages: list[dict[str, Any]], key: str = "outputTranscription") -> str:
    return "".join(m["serverContent"][key]["text"] for m in messages if key in m.get("serverContent", {}))


class LiveClient:
    """A deliberately plain Live API client: JSON in text frames, asserts server frames are binary."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def connect(
        cls, emu: Emulator, *, path: str = LIVE_PATH, query: str = "", headers: dict[str, str] | None = None
    ) -> LiveClient:
        url = emu.base_url + path + (f"?{query}" if query else "")
        ws = await websockets.connect(url, additional_headers=headers or {}, max_size=None)
        return cls(ws)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def recv(self) -> dict[str, Any]:
        raw = await self.ws.recv()
        assert isinstance(raw, bytes), "server frames must be binary"
        doc: dict[str, Any] = json.loads(raw)
        return doc

    async def setup(self, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"model": MODEL}
        body.update(fields)
        await self.send({"setup": body})
        first = await self.recv()
        assert first == {"setupComplete": {}}
        return first

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Every message up to and including the first one matching ``predicate``."""
        seen = []
        while True:
            msg = await self.recv()
            seen.append(msg)
            if predicate(msg):
                return seen

    async def turn(self) -> list[dict[str, Any]]:
        return await self.until(is_turn_complete)

    async def stream(self, pcm: bytes, rate: int = 16000, chunk_ms: int = 20, **kw: Any) -> None:
        step = 2 * rate * chunk_ms // 1000
        for i in range(0, len(pcm), step):
            await self.send(audio_msg(pcm[i : i + step], rate, **kw))

    async def close(self) -> None:
        await self.ws.close()
