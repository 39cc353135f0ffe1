"""Home Assistant's OpenAI TTS integration (custom component), pointed at this service.

Shapes from sfortis/openai_tts, custom_components/openai_tts/openaitts_engine.py:
- `_RequestBuilder.build`: headers `Content-Type: application/json` and
  `User-Agent: HomeAssistant-OpenAI-TTS`, plus `Authorization: Bearer <key>` only when
  a key is set; payload `{model, input, voice, response_format}`, `speed` only when it
  is not 1.0, `instructions` only for models that may take them (not `tts-1`), then the
  user's `extra_payload` JSON object merged over it (its example: `{"temperature": 0.7}`).
- `get_tts` (the classic TTS call): urllib `Request(url, data=json.dumps(payload))`,
  read whole; a `Content-Type` holding `application/json` is taken as a JSON-wrapped
  audio blob, so audio must come back under an audio type.
- `async_get_tts_stream` (Home Assistant 2025.7+ streaming TTS): the same request
  through aiohttp `json=`, in the profile's format; the first ~1 KB must carry the
  format's magic bytes (`is_valid_audio`) or the audio is refused.
The URL is the full speech endpoint the user types.
"""

from __future__ import annotations

import httpx

from chatterbox_serve.config import Settings
from tests.clients.conftest import (
    ORIGIN,
    RecordingEngine,
    assert_audio,
    py_json,
    send,
    spoken_seconds,
)

URL = f"{ORIGIN}/v1/audio/speech"

# urllib capitalises header names as given and adds its own; no key, no Authorization.
URLLIB_HEADERS = [
    ("Accept-Encoding", "identity"),
    ("Content-type", "application/json"),
    ("User-agent", "HomeAssistant-OpenAI-TTS"),
    ("Connection", "close"),
]

# The integration's headers through Home Assistant's shared aiohttp session.
AIOHTTP_HEADERS = [
    ("Content-Type", "application/json"),
    ("User-Agent", "HomeAssistant-OpenAI-TTS"),
    ("Accept", "*/*"),
    ("Accept-Encoding", "gzip, deflate"),
]


async def test_an_announcement_with_extra_payload_and_speed(
    server: httpx.AsyncClient, engine: RecordingEngine, settings: Settings
):
    text = "The washing machine has finished. Please empty it."
    payload = {
        "model": "tts-1",
        "input": text,
        "voice": "nova",
        "response_format": "mp3",
        "speed": 1.2,
        "temperature": 0.7,
    }
    r = await send(server, "POST", URL, URLLIB_HEADERS, py_json(payload))
    assert_audio(r, "mp3", seconds=spoken_seconds(settings, text, speed=1.2))
    assert "application/json" not in r.headers["content-type"]
    assert engine.requests and all(item.generation.temperature == 0.7 for item in engine.requests)


async def test_a_streamed_opus_reply_opens_with_ogg_magic(
    server: httpx.AsyncClient, settings: Settings
):
    text = "Good morning. It is seven degrees outside and the front door is locked."
    payload = {
        "model": "gpt-4o-mini-tts",
        "input": text,
        "voice": "shimmer",
        "response_format": "opus",
        "instructions": "Speak calmly.",
    }
    r = await send(server, "POST", URL, AIOHTTP_HEADERS, py_json(payload))
    assert_audio(r, "opus", seconds=spoken_seconds(settings, text))
    assert len(r.content) >= 1024 and r.content[:4] == b"OggS"
