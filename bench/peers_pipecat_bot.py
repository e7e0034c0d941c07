"""The canonical Pipecat Twilio + Gemini Live phone bot, as ``bench/peers.py`` runs it.

Run only inside the Pipecat virtual environment that ``bench/peers.py`` makes (never a dependency of the
gateway): ``python bench/peers_pipecat_bot.py --port P``. It follows Pipecat's own Twilio example
(pipecat-examples ``twilio-chatbot``: FastAPI, a voice webhook answering ``<Connect><Stream>``, the
``/ws`` media socket parsed by ``parse_telephony_websocket``, ``TwilioFrameSerializer`` and
``FastAPIWebsocketTransport``), with ``GeminiLiveLLMService`` as the speech-to-speech model, on uvicorn
with uvloop. Left at Pipecat's defaults otherwise, with two choices made for a fair comparison:

* no local Silero VAD: Gemini Live detects turns itself (the gateway runs no local VAD either, and
  Silero would add Pipecat CPU that a speech-to-speech bot does not need);
* no auto hang-up through Twilio's REST API (there is no Twilio here; the callers hang up);
* logging at WARNING, as the bench runs the gateway (Pipecat's default is DEBUG, a line per event).

The Live API is reached at ``GEMINI_BASE_URL`` (the bench's emulator, ``https://`` with a test CA
that google-genai trusts through ``SSL_CERT_FILE``, as the gateway does).
"""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse
from google.genai.types import HttpOptions
from loguru import logger
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.google.gemini_live.llm import GeminiLiveLLMService
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport

SYSTEM = "You are a helpful phone assistant. Keep answers short."
app = FastAPI()


@app.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@app.post("/twilio/voice")
async def voice(request: Request) -> HTMLResponse:
    host = request.headers.get("host", "127.0.0.1")
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        f'<Stream url="ws://{host}/ws"></Stream></Connect><Pause length="40"/></Response>'
    )
    return HTMLResponse(content=twiml, media_type="application/xml")


@app.websocket("/ws")
async def media(websocket: WebSocket) -> None:
    await websocket.accept()
    _, call_data = await parse_telephony_websocket(websocket)
    serializer = TwilioFrameSerializer(
        stream_sid=call_data["stream_id"],
        call_sid=call_data["call_id"],
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False, serializer=serializer
        ),
    )
    llm = GeminiLiveLLMService(
        api_key=os.environ["GEMINI_API_KEY"],
        model=os.environ.get("GEMINI_MODEL") or None,
        voice_id="Puck",
        system_instruction=SYSTEM,
        http_options=HttpOptions(base_url=os.environ["GEMINI_BASE_URL"].replace("wss://", "https://")),
    )
    context = LLMContext([{"role": "user", "content": "Greet the caller."}])
    aggregators = LLMContextAggregatorPair(context)
    pipeline = Pipeline(
        [transport.input(), aggregators.user(), llm, transport.output(), aggregators.assistant()]
    )
    task = PipelineTask(
        pipeline, params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000)
    )

    @transport.event_handler("on_client_connected")
    async def on_connected(transport: object, client: object) -> None:
        await task.queue_frames([LLMRunFrame()])

    @transport.event_handler("on_client_disconnected")
    async def on_disconnected(transport: object, client: object) -> None:
        await task.cancel()

    await PipelineRunner(handle_sigint=False).run(task)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", log_level="warning", ws="websockets")


if __name__ == "__main__":
    main()
