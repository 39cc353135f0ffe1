"""SillyTavern, its "OpenAI Compatible" TTS provider, pointed at this service.

Shapes from SillyTavern/SillyTavern:
- public/scripts/extensions/tts/openai-compatible.js, `fetchTtsGeneration`: the browser
  posts `{provider_endpoint, model, input, voice, response_format: 'mp3', speed}` to
  SillyTavern's own server. `provider_endpoint` is the full speech URL the user types
  (default `http://127.0.0.1:8000/v1/audio/speech`); `speed` comes from a 0.25-4 slider.
- src/endpoints/openai.js, `custom.post('/generate-voice')`: the server re-posts with
  node-fetch to `provider_endpoint`, body `JSON.stringify({input, response_format, voice,
  speed, model})`, headers `Content-Type: application/json` and
  `Authorization: Bearer ${key ?? ''}` (no key saved: an empty bearer). Any non-2xx
  becomes a 500 carrying our body's text; a 2xx is relayed as `audio/mpeg`, so the
  bytes must be MP3.
"""

from __future__ import annotations

import httpx

from chatterbox_serve.config import Settings
from chatterbox_serve.voices.library import VoiceLibrary
from tests.clients.conftest import (
    ORIGIN,
    RecordingEngine,
    assert_audio,
    js_json,
    send,
    spoken_seconds,
)
from tests.voice_audio import sample

ENDPOINT = f"{ORIGIN}/v1/audio/speech"

# SillyTavern's two headers, then what node-fetch 3 adds.
HEADERS = [
    ("Content-Type", "application/json"),
    ("Authorization", "Bearer "),
    ("Accept", "*/*"),
    ("User-Agent", "node-fetch"),
    ("Accept-Encoding", "gzip,deflate,br"),
    ("Connection", "close"),
]


def body(text: str, voice: str, speed: float | int) -> bytes:
    return js_json(
        {"input": text, "response_format": "mp3", "voice": voice, "speed": speed, "model": "tts-1"}
    )


async def test_a_roleplay_message_at_the_sliders_speed(
    server: httpx.AsyncClient, settings: Settings
):
    text = '*She sets the lantern down.* "You made it through the storm, traveller!"'
    r = await send(server, "POST", ENDPOINT, HEADERS, body(text, "alloy", 1.25))
    assert_audio(r, "mp3", seconds=spoken_seconds(settings, text, speed=1.25))


async def test_a_library_voice_in_the_available_voices_list(
    server: httpx.AsyncClient, engine: RecordingEngine, library: VoiceLibrary, settings: Settings
):
    library.add_voice("innkeeper", sample(1))
    text = "Welcome in. Sit by the fire."
    # `speed ?? 1` in JavaScript: an integer on the wire.
    r = await send(server, "POST", ENDPOINT, HEADERS, body(text, "innkeeper", 1))
    assert_audio(r, "mp3", seconds=spoken_seconds(settings, text))
    assert all(item.voice is not None for item in engine.requests)


async def test_an_unknown_voice_is_a_readable_error_before_any_work(
    server: httpx.AsyncClient, engine: RecordingEngine
):
    r = await send(server, "POST", ENDPOINT, HEADERS, body("Hello.", "bella", 1))
    # SillyTavern shows the body text: it must say what is wrong.
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["param"] == "voice" and "bella" in error["message"]
    assert engine.requests == []
