"""Several model families behind one ingress: listing, routing by `model`, the 404 for a
model not loaded, fields a family ignores, streaming (simulated engines, in-process)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.families import ModelFamily
from deployments.ingress import build_api
from deployments.routes.speech import IGNORED_FIELDS_HEADER
from tests.component.conftest import make_settings
from tests.local_backend import LocalBackend

MULTILINGUAL, TURBO = ModelFamily.MULTILINGUAL, ModelFamily.TURBO
LOADED = "chatterbox-multilingual,chatterbox-turbo"


@pytest.fixture
def engines() -> dict[ModelFamily, SimulatedEngine]:
    settings = make_settings(CHATTERBOX_MODELS=LOADED)
    return {f: SimulatedEngine.from_settings(settings.for_family(f)) for f in settings.families}


@pytest.fixture
async def client(engines: dict[ModelFamily, SimulatedEngine]) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(CHATTERBOX_MODELS=LOADED)
    app = build_api(settings, LocalBackend(settings, engines), "simulated")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def _calls(engines: dict[ModelFamily, SimulatedEngine]) -> dict[ModelFamily, int]:
    return {f: e.recorder.calls for f, e in engines.items()}


async def test_the_listings_name_the_loaded_families_then_openais(
    client: httpx.AsyncClient,
) -> None:
    expected = [
        "chatterbox-multilingual",
        "chatterbox-turbo",
        "tts-1",
        "tts-1-hd",
        "gpt-4o-mini-tts",
    ]
    models = (await client.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == expected
    audio_models = (await client.get("/v1/audio/models")).json()
    assert [m["id"] for m in audio_models["models"]] == expected


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("chatterbox-turbo", TURBO),
        ("chatterbox-multilingual", MULTILINGUAL),
        ("chatterbox", MULTILINGUAL),  # the multilingual model speaks English
        ("tts-1", MULTILINGUAL),  # OpenAI's names: the default family
        ("gpt-4o-mini-tts", MULTILINGUAL),
        (None, MULTILINGUAL),
    ],
)
async def test_each_model_name_reaches_its_familys_engine(
    client: httpx.AsyncClient,
    engines: dict[ModelFamily, SimulatedEngine],
    model: str | None,
    family: ModelFamily,
) -> None:
    body = {"input": "Well [laugh] that was something.", "response_format": "wav"}
    r = await client.post("/v1/audio/speech", json={**body, "model": model} if model else body)
    assert r.status_code == 200, r.text
    assert r.content[:4] == b"RIFF"
    assert _calls(engines) == {f: int(f is family) for f in engines}


@pytest.mark.parametrize("model", ["chatterbox-ultra", "chatterbox-turbo-v2", "whisper-1"])
async def test_an_unknown_model_is_a_404_before_any_work(
    client: httpx.AsyncClient, engines: dict[ModelFamily, SimulatedEngine], model: str
) -> None:
    # A voice that does not exist either: the model is checked first.
    body = {"input": "Hello.", "model": model, "voice": "nobody-by-this-name"}
    r = await client.post("/v1/audio/speech", json=body)
    assert r.status_code == 404
    error = r.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "model_not_found",
        "model",
        "invalid_request_error",
    )
    assert "chatterbox-turbo" in error["message"]
    stream = await client.post("/v1/audio/speech/stream", json=body)
    assert stream.status_code == 404
    assert _calls(engines) == {f: 0 for f in engines}


async def test_a_family_not_loaded_is_a_404() -> None:
    settings = make_settings()  # the default: the multilingual family alone
    app = build_api(settings, LocalBackend(settings, SimulatedEngine(settings.simulated)), "sim")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.post("/v1/audio/speech", json={"input": "Hi.", "model": "chatterbox-turbo"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        ids = [m["id"] for m in (await c.get("/v1/models")).json()["data"]]
        assert ids == ["chatterbox-multilingual", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"]
        ok = await c.post("/v1/audio/speech", json={"input": "Hi.", "model": "chatterbox"})
        assert ok.status_code == 200


@pytest.mark.parametrize(
    ("model", "fields", "header"),
    [
        (
            "chatterbox-turbo",
            {"cfg_weight": 0.3, "min_p": 0.1, "temperature": 0.6},
            "cfg_weight, min_p",
        ),
        ("chatterbox-turbo", {"exaggeration": 0.9}, "exaggeration"),
        ("chatterbox-turbo", {"temperature": 0.6, "top_k": 40}, None),
        ("chatterbox-multilingual", {"top_k": 40, "cfg_weight": 0.3}, "top_k"),
    ],
)
async def test_fields_the_family_ignores_are_reported_in_a_header(
    client: httpx.AsyncClient, model: str, fields: dict[str, float], header: str | None
) -> None:
    body = {"input": "Hello there.", "model": model, "response_format": "wav", **fields}
    r = await client.post("/v1/audio/speech", json=body)
    assert r.status_code == 200
    assert r.headers.get(IGNORED_FIELDS_HEADER) == header
    streamed = await client.post("/v1/audio/speech", json={**body, "stream_format": "audio"})
    assert streamed.status_code == 200
    assert streamed.headers.get(IGNORED_FIELDS_HEADER) == header


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
async def test_turbo_streams_sse_in_every_format(
    client: httpx.AsyncClient, engines: dict[ModelFamily, SimulatedEngine], fmt: str
) -> None:
    body = {
        "input": "First [sigh] sentence here. " * 12,
        "model": "chatterbox-turbo",
        "response_format": fmt,
        "stream_format": "sse",
    }
    r = await client.post("/v1/audio/speech", json=body)
    assert r.status_code == 200
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events][-1] == "speech.audio.done"
    assert sum(e["type"] == "speech.audio.delta" for e in events) >= 1
    assert engines[TURBO].recorder.items > 1 and engines[MULTILINGUAL].recorder.calls == 0


async def test_turbo_speaks_english_only(client: httpx.AsyncClient) -> None:
    body = {"input": "Hola.", "model": "chatterbox-turbo", "language": "es"}
    r = await client.post("/v1/audio/speech", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "language"
    ok = await client.post("/v1/audio/speech", json={**body, "model": "chatterbox-multilingual"})
    assert ok.status_code == 200
