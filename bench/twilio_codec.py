"""µs per Twilio media message through TwilioCodec, in and out (not a test: run it by hand).

.venv/bin/python tests/telephony/bench_twilio.py
"""

from __future__ import annotations

import base64
import json
import timeit

from gateway.telephony import PlayAudio, TwilioCodec

SID = "MZ" + "1" * 32


def main() -> None:
    codec = TwilioCodec()
    codec.receive_text('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    start = {
        "accountSid": "AC" + "0" * 32,
        "streamSid": SID,
        "callSid": "CA" + "2" * 32,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {},
    }
    codec.receive_text(
        json.dumps({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": SID})
    )
    payload = base64.b64encode(bytes(range(160))).decode()
    media = {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": payload}
    text = json.dumps({"event": "media", "sequenceNumber": "3", "media": media, "streamSid": SID})
    command = PlayAudio(bytes(range(160)))
    n = 200_000
    for name, fn in (
        ("receive_text(media, 160 B)", lambda: codec.receive_text(text)),
        ("encode(PlayAudio, 160 B)", lambda: codec.encode(command)),
    ):
        best = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6
        print(f"{name:28} {best:6.2f} µs/message")


if __name__ == "__main__":
    main()
