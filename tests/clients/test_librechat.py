"""LibreChat, its `openai` TTS provider (librechat.yaml `speech.tts.openai`), at this service.

Shapes from danny-avila/LibreChat, api/server/services/Files/Audio/TTSService.js:
- `openAIProvider`: URL `ttsSchema.url` (the full speech endpoint); body
  `{input, model, voice, backend}` with undefined keys removed; headers
  `Content-Type: application/json` and `Authorization: Bearer <apiKey>` (an empty key
  gives an empty bearer).
- `ttsRequest`: `axios.post(url, data, {headers, responseType: 'stream'})`, so
  `JSON.stringify` bytes and axios's own headers.
- `processTextToSpeech`: an input shorter than 4096 characters goes out as ONE request
  (longer ones in 1000-character pieces); the reply is piped to the browser under
  `Content-Type: audio/mpeg`, so it must be MP3.
"""

from __future__ import annotations

import httpx

from chatterbox_serve.config import Settings
from tests.clients.conftest import ORIGIN, assert_audio, js_json, prose, send, spoken_seconds

URL = f"{ORIGIN}/v1/audio/speech"
# LibreChat's own limit for one request: inputs below it are not split.
LIBRECHAT_SINGLE_REQUEST_BELOW = 4096

# axios 1.x puts its Accept first and its User-Agent and Accept-Encoding after.
HEADERS = [
    ("Accept", "application/json, text/plain, */*"),
    ("Content-Type", "application/json"),
    ("Authorization", "Bearer "),
    ("User-Agent", "axios/1.12.2"),
    ("Accept-Encoding", "gzip, compress, deflate, br"),
]


async def test_the_longest_unsplit_message_is_spoken_whole(
    server: httpx.AsyncClient, settings: Settings
):
    text = prose(LIBRECHAT_SINGLE_REQUEST_BELOW - 1)
    r = await send(
        server, "POST", URL, HEADERS, js_json({"input": text, "model": "tts-1", "voice": "alloy"})
    )
    assert_audio(r, "mp3", seconds=spoken_seconds(settings, text))


async def test_without_a_voices_list_no_voice_is_sent(
    server: httpx.AsyncClient, settings: Settings
):
    # `voice` is left undefined when librechat.yaml lists no voices, and dropped.
    text = "A short reply."
    r = await send(server, "POST", URL, HEADERS, js_json({"input": text, "model": "tts-1"}))
    assert_audio(r, "mp3", seconds=spoken_seconds(settings, text))
