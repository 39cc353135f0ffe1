"""The original Chatterbox API's own web frontend, pointed at this service.

Shapes from travisvn/chatterbox-tts-api, frontend/src (fetch with the browser's
defaults; the base URL is what the user picks, the service's origin):
- readiness, hooks/useVoiceLibrary.ts and hooks/useDefaultVoice.ts: `GET {base}/health`
  every 3 s; the voice library and the default voice load only while its `status` is
  `healthy` or `initializing`, so any other word leaves both empty; its header
  (components/StatusHeader.tsx) says "Model Loading" while `model_loaded` is not true;
- the library, services/tts.ts `getVoices`: `GET {base}/voices`, then each voice's
  `/download`, wrapped as a `File` whose type comes from the item's `file_extension`
  (`.mp3`, `.wav`, `.flac`, `.m4a`, `.ogg`; anything else becomes audio/mpeg);
- `listAliases` reads `{voice_name, aliases, count}` and `getAllVoiceNames`
  `{voice_names, count}`;
- speech, `generateSpeech`: a multipart form to `{base}/audio/speech/upload` with
  `input`, `voice`, the generation parameters it set and `session_id`.
"""

from __future__ import annotations

import httpx

from chatterbox_serve.voices.library import VoiceLibrary
from tests.clients.conftest import ORIGIN
from tests.voice_audio import encode, sample

# What the frontend's `getAudioMimeType` knows (hooks/useVoiceLibrary.ts).
FRONTEND_MIME_TYPES = {
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".m4a": "audio/mp4",
    ".ogg": "audio/ogg",
}


async def test_health_says_ready_in_the_frontends_words(server: httpx.AsyncClient):
    r = await server.get(f"{ORIGIN}/health")
    assert r.status_code == 200
    assert r.json()["status"] in ("healthy", "initializing")
    assert r.json()["model_loaded"] is True  # else its header says "Model Loading"


async def test_each_voice_names_its_file_extension(
    server: httpx.AsyncClient, library: VoiceLibrary
):
    library.add_voice("narrator", sample(0))
    library.add_voice("wave", encode(3.0), original_filename="wave.wav")
    voices = (await server.get(f"{ORIGIN}/voices")).json()["voices"]
    for voice in voices:
        r = await server.get(f"{ORIGIN}/voices/{voice['name']}/download")
        assert r.status_code == 200
        assert voice["filename"].endswith(voice["file_extension"])
        assert FRONTEND_MIME_TYPES[voice["file_extension"]] == r.headers["content-type"]


async def test_alias_listings_in_the_frontends_shapes(
    server: httpx.AsyncClient, library: VoiceLibrary
):
    library.add_voice("narrator", sample(0))
    r = await server.post(f"{ORIGIN}/voices/narrator/aliases", data={"alias": "storyteller"})
    assert r.status_code == 201, r.text
    aliases = (await server.get(f"{ORIGIN}/voices/narrator/aliases")).json()
    assert aliases["voice_name"] == "narrator"
    assert aliases["aliases"] == ["storyteller"] and aliases["count"] == 1
    names = (await server.get(f"{ORIGIN}/voices/all-names")).json()
    assert names["voice_names"] == ["narrator", "storyteller"] and names["count"] == 2


async def test_the_speech_form_with_a_session_id_speaks(
    server: httpx.AsyncClient, library: VoiceLibrary
):
    library.add_voice("narrator", sample(0))
    form = {
        "input": "Hello from the original frontend.",
        "voice": "narrator",
        "exaggeration": "0.7",
        "cfg_weight": "0.4",
        "temperature": "0.8",
        "session_id": "session-1733612345-abc",
    }
    # The browser's FormData: multipart, every field a plain part.
    parts = [(key, (None, value)) for key, value in form.items()]
    r = await server.post(f"{ORIGIN}/audio/speech/upload", files=parts)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/mpeg"
