"""Routes, aliases and headers of the ingress, in-process."""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import probe


@pytest.mark.parametrize("path", ["/v1/audio/speech", "/audio/speech", "/tts"])
async def test_speech_aliases_return_mp3_by_default(client, path):
    r = await client.post(path, json={"input": "Hello from vLLM backend!"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "audio/mpeg"
    assert r.headers["x-chatterbox-engine"] == "simulated"
    assert probe(r.content)["container"] == "mp3"


@pytest.mark.parametrize("path", ["/v1/audio/speech/stream", "/audio/speech/stream", "/tts/stream"])
async def test_stream_aliases_stream_raw_audio(client, path):
    r = await client.post(path, json={"input": "Streaming test", "response_format": "wav"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    assert abs(probe(r.content)["duration_s"] - len("Streaming test") / 15) < 0.2


async def test_pcm_is_raw_samples_of_the_right_length(client):
    r = await client.post("/v1/audio/speech", json={"input": "x" * 30, "response_format": "pcm"})
    assert r.headers["content-type"] == "audio/pcm"
    assert abs(len(r.content) / 2 / 24000 - 2.0) < 0.05


async def test_sse_events_carry_base64_audio_and_real_usage(client):
    r = await client.post(
        "/v1/audio/speech",
        json={
            "input": "Hello there. How are you?",
            "response_format": "wav",
            "stream_format": "sse",
        },
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    done = events[-1]
    assert done["type"] == "speech.audio.done"
    audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert probe(audio)["container"] == "wav"
    usage = done["usage"]
    assert usage["input_tokens"] == len("Hello there. How are you?")
    assert usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_instructions_warn_in_headers_and_cfg_weight_does_not(client):
    r = await client.post(
        "/v1/audio/speech", json={"input": "hi", "instructions": "Speak softly", "cfg_weight": 0.9}
    )
    assert r.status_code == 200
    assert r.headers["x-instructions-applied"] == "false"
    assert "cfg_weight" not in r.headers.get("x-chatterbox-warning", "")
    r = await client.post("/v1/audio/speech", json={"input": "hi", "cfg_weight": 0.9})
    assert "x-instructions-applied" not in r.headers
    assert "x-chatterbox-warning" not in r.headers


async def test_models_health_ping_languages_config(client):
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list" and models["data"][0]["id"] == "chatterbox-multilingual"
    assert (await client.get("/models")).json() == models
    health = (await client.get("/health")).json()
    assert health["engine"] == "simulated" and health["model_ready"] is True
    assert (await client.get("/v1/health")).status_code == 200
    assert (await client.get("/ping")).json() == {"status": "ok"}
    for path in ("/health", "/v1/health", "/ping"):  # load balancers probe with HEAD
        assert (await client.head(path)).status_code == 200, path
    langs = (await client.get("/languages")).json()
    assert langs["count"] == 23 and (await client.get("/v1/languages")).json() == langs
    config = (await client.get("/config")).json()
    assert config["engine"] == "simulated"
    assert config["settings"]["MAX_CHUNK_LENGTH"] == 280


async def test_request_id_is_echoed(client):
    r = await client.get("/ping", headers={"X-Request-Id": "abc"})
    assert "x-request-id" not in r.headers or r.headers["x-request-id"] == "abc"
    r = await client.get("/ping")
    assert r.headers["x-request-id"]


async def test_openapi_documents_error_responses(client):
    spec = (await client.get("/openapi.json")).json()
    responses = spec["paths"]["/v1/audio/speech"]["post"]["responses"]
    assert {"400", "404", "413", "500", "503"} <= set(responses)


def test_request_metrics_know_the_routes_of_included_routers():
    # FastAPI nests included routers; a flat walk tagged every speech request `other`.
    from chatterbox_serve.engines.simulated import SimulatedEngine
    from deployments.ingress import build_api
    from deployments.metrics import _route_paths
    from tests.component.conftest import make_settings
    from tests.local_backend import LocalBackend

    settings = make_settings()
    app = build_api(
        settings, LocalBackend(settings, SimulatedEngine(settings.simulated)), "simulated"
    )
    paths = set(_route_paths(app.routes))
    assert {"/v1/audio/speech", "/v1/audio/speech/stream", "/health", "/v1/models"} <= paths
