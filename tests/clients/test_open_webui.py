"""Open WebUI, its "OpenAI" text-to-speech engine, pointed at this service.

Shapes from open-webui/open-webui, backend/open_webui/routers/audio.py:
- model discovery, `get_available_models`: `requests.get(f"{TTS_OPENAI_API_BASE_URL}/audio/models")`
  with no headers of its own, reading `response.json()["models"]` (a list of `{"id"}`);
  any failure falls back to OpenAI's `tts-1` and `tts-1-hd`;
- voice discovery, `get_available_voices`: `GET {base}/audio/voices`, reading
  `{"voices": [{"id", "name"}]}`;
- speech, `speech`: the browser's body (src/lib/apis/audio/index.ts
  `synthesizeOpenAISpeech`: `{input, voice, model}`) with `model` set to the admin's
  TTS model and the admin's `TTS_OPENAI_PARAMS` merged over it, posted with aiohttp's
  `json=` to `{base}/audio/speech` under `Content-Type: application/json` and
  `Authorization: Bearer {TTS_OPENAI_API_KEY}` (empty by default). The answer is saved
  as `<hash>.mp3` and served to the browser as it is, so it must be MP3.

The base URL is what the admin types: `http://host:8000/v1`, or without `/v1`.
"""

from __future__ import annotations

import httpx
import pytest

from chatterbox_serve.config import Settings
from chatterbox_serve.voices.library import VoiceLibrary
from tests.clients.conftest import (
    ORIGIN,
    RecordingEngine,
    assert_audio,
    py_json,
    send,
    spoken_seconds,
)
from tests.voice_audio import sample

BASES = [f"{ORIGIN}/v1", ORIGIN]

# What `requests` (python-requests 2.32) sends when given no headers.
REQUESTS_HEADERS = [
    ("User-Agent", "python-requests/2.32.3"),
    ("Accept-Encoding", "gzip, deflate"),
    ("Accept", "*/*"),
    ("Connection", "keep-alive"),
]


def aiohttp_headers(api_key: str) -> list[tuple[str, str]]:
    """The speech call's headers: Open WebUI's two, then what aiohttp 3.12 adds."""
    return [
        ("Content-Type", "application/json"),
        ("Authorization", f"Bearer {api_key}"),
        ("Accept", "*/*"),
        ("Accept-Encoding", "gzip, deflate"),
        ("User-Agent", "Python/3.11 aiohttp/3.12.15"),
    ]


@pytest.mark.parametrize("base", BASES)
async def test_model_discovery_lists_the_served_models(server: httpx.AsyncClient, base: str):
    r = await send(server, "GET", f"{base}/audio/models", REQUESTS_HEADERS)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    models = r.json()["models"]
    served = (await server.get(f"{ORIGIN}/v1/models")).json()["data"]
    assert [m["id"] for m in models] == [m["id"] for m in served]
    assert {"tts-1", "tts-1-hd"} <= {m["id"] for m in models}


@pytest.mark.parametrize("base", BASES)
async def test_a_discovered_voice_speaks_with_the_admins_extra_params(
    server: httpx.AsyncClient,
    engine: RecordingEngine,
    library: VoiceLibrary,
    settings: Settings,
    base: str,
):
    library.add_voice("narrator", sample(0))
    r = await send(server, "GET", f"{base}/audio/voices", REQUESTS_HEADERS)
    assert r.status_code == 200
    voices = {v["id"]: v["name"] for v in r.json()["voices"]}
    assert list(voices.values()) == ["narrator"]
    voice_id = next(iter(voices))

    text = "Here is the answer you asked for. It has two sentences."
    browser_body = {"input": text, "voice": voice_id, "model": "tts-1"}
    # TTS_OPENAI_PARAMS, as an admin would set them for Chatterbox.
    payload = {**browser_body, "model": "tts-1-hd", "exaggeration": 0.7, "cfg_weight": 0.3}
    r = await send(server, "POST", f"{base}/audio/speech", aiohttp_headers(""), py_json(payload))
    assert_audio(r, "mp3", seconds=spoken_seconds(settings, text))
    assert engine.requests, "nothing reached the engine"
    for item in engine.requests:
        assert item.voice is not None
        assert (item.generation.exaggeration, item.generation.cfg_weight) == (0.7, 0.3)


async def test_the_default_openai_voice_name_speaks(server: httpx.AsyncClient, settings: Settings):
    text = "Open WebUI's default voice is alloy."
    payload = {"input": text, "voice": "alloy", "model": "tts-1"}
    r = await send(
        server, "POST", f"{ORIGIN}/v1/audio/speech", aiohttp_headers(""), py_json(payload)
    )
    assert_audio(r, "mp3", seconds=spoken_seconds(settings, text))
