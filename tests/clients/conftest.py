"""Real clients' requests, sent as they send them, to the in-process app.

Each module here holds one client: the request it sends (method, path under the base
URL a user configures, headers, body bytes), read from the client's source, whose file
the module names. The request goes out exactly as written: `send` merges in none of
httpx's default headers, so the app sees what that client puts on the wire (plus the
`Host` and `Content-Length` every HTTP client adds). Each test then asserts what that
client needs back to play the audio.

The app runs with its default limits (only the simulated engine is made instant), so
the tests also hold the defaults to what these clients send.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatterbox_serve.config import Settings, load_settings
from chatterbox_serve.engines.base import SynthesisOutcome, SynthesisRequest, SynthesisResult
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.voices.library import VoiceLibrary, build_voice_library
from deployments.ingress import build_api
from tests.conftest import probe
from tests.local_backend import LocalBackend

# Where the service listens in the tests; users give clients this plus their base path.
ORIGIN = "http://chatterbox.local:8000"


class RecordingEngine(SimulatedEngine):
    """The simulated engine, keeping every item it was asked to speak."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.simulated, settings.engine.stream_first_tokens)
        self.requests: list[SynthesisRequest] = []

    async def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[SynthesisOutcome]:
        self.requests.extend(requests)
        return await super().synthesize(requests)

    async def synthesize_stream(self, request: SynthesisRequest) -> AsyncIterator[SynthesisResult]:
        self.requests.append(request)
        async for result in super().synthesize_stream(request):
            yield result


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        {
            "CHATTERBOX_SIM_BASE_S": "0",
            "CHATTERBOX_SIM_PER_ITEM_S": "0",
            "CHATTERBOX_SIM_PER_CHAR_S": "0",
            "VOICE_LIBRARY_DIR": str(tmp_path / "voices"),
        },
        dotenv_path=None,
    )


@pytest.fixture
def engine(settings: Settings) -> RecordingEngine:
    return RecordingEngine(settings)


@pytest.fixture
def library(settings: Settings) -> VoiceLibrary:
    return build_voice_library(settings)


@pytest.fixture
async def server(
    settings: Settings, engine: RecordingEngine, library: VoiceLibrary
) -> AsyncIterator[httpx.AsyncClient]:
    app = build_api(settings, LocalBackend(settings, engine), engine.name, voices=library)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        yield client


async def send(
    server: httpx.AsyncClient,
    method: str,
    url: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | None = None,
) -> httpx.Response:
    """Send exactly `headers` and `body`, in that order; the client's defaults stay out."""
    return await server.send(httpx.Request(method, url, headers=list(headers), content=body))


def js_json(payload: dict[str, Any]) -> bytes:
    """`JSON.stringify(payload)`: no spaces (Node clients: node-fetch, axios)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def py_json(payload: dict[str, Any]) -> bytes:
    """`json.dumps(payload)` with its defaults (Python clients: aiohttp `json=`, urllib)."""
    return json.dumps(payload).encode()


def assert_audio(r: httpx.Response, fmt: str, *, seconds: float) -> dict[str, object]:
    """200, the format's media type and a file that decodes to about `seconds` of audio."""
    containers = {"mp3": ("mp3", "audio/mpeg"), "opus": ("ogg", "audio/ogg")}
    container, media_type = containers[fmt]
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == media_type
    info = probe(r.content)
    assert info["container"] == container
    duration = float(str(info["duration_s"]))
    assert abs(duration - seconds) < 0.05 * seconds + 0.1, (duration, seconds)
    return info


def spoken_seconds(settings: Settings, text: str, speed: float = 1.0) -> float:
    """How long the simulated engine speaks `text`, after `speed`."""
    return len(text) / settings.simulated.chars_per_second / speed


def prose(length: int) -> str:
    """Sentences of plain prose, exactly `length` characters with no outer whitespace."""
    sentence = "The keeper climbed the stairs, lit the lamp and watched the ships come home. "
    text = (sentence * (length // len(sentence) + 1))[:length]
    return text[:-1] + "." if text.endswith(" ") else text
