"""The speech API over real HTTP against a running Serve app (simulated engine).

The app runs with a batch size of 4 and 70-character chunks so that a long text
needs several engine calls and streaming can be seen delivering audio before the end.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import openai
import pytest
from ray import serve

from tests.conftest import probe
from tests.serve.conftest import start_app

LONG = " ".join(f"This is sentence number {i}, spoken for the streaming test." for i in range(12))


@pytest.fixture(scope="module")
def serve_app():
    yield from start_app(settings={"VLLM_MAX_BATCH_SIZE": 4, "MAX_CHUNK_LENGTH": 70})


def _model_stats():
    handle = serve.get_deployment_handle("SpeechModelDeployment", app_name="chatterbox")
    return handle.stats.remote().result()


def _reset_stats():
    serve.get_deployment_handle(
        "SpeechModelDeployment", app_name="chatterbox"
    ).reset_stats.remote().result()


@pytest.mark.parametrize(
    ("fmt", "container", "rate"),
    [
        ("mp3", "mp3", 24000),
        ("opus", "ogg", 48000),
        ("aac", "aac", 24000),
        ("flac", "flac", 24000),
        ("wav", "wav", 24000),
    ],
)
def test_each_format_decodes_with_expected_duration(serve_app, fmt, container, rate):
    text = "Hello from vLLM backend! This is a formats test."
    with serve_app.client() as c:
        r = c.post("/v1/audio/speech", json={"input": text, "response_format": fmt})
    assert r.status_code == 200, r.text
    assert r.headers["x-chatterbox-engine"] == "simulated"
    info = probe(r.content)
    assert info["container"].split(",")[0] == container
    assert info["sample_rate"] == rate and info["channels"] == 1
    assert abs(info["duration_s"] - len(text) / 15.0) < 0.25, info


def test_pcm_is_24khz_s16le_mono(serve_app):
    with serve_app.client() as c:
        r = c.post("/v1/audio/speech", json={"input": "x" * 45, "response_format": "pcm"})
    assert r.headers["content-type"] == "audio/pcm"
    assert abs(len(r.content) / 2 / 24000 - 3.0) < 0.05


def test_streaming_delivers_audio_before_the_end(serve_app):
    arrivals: list[tuple[float, int]] = []
    began = time.monotonic()
    with (
        serve_app.client() as c,
        c.stream(
            "POST",
            "/v1/audio/speech",
            json={"input": LONG, "response_format": "mp3", "stream_format": "audio"},
        ) as r,
    ):
        assert r.status_code == 200
        assert r.headers.get("transfer-encoding") == "chunked"
        body = b""
        for piece in r.iter_raw():
            arrivals.append((time.monotonic() - began, len(piece)))
            body += piece
    # 12+ chunks at 4 per engine call: several calls, so audio arrives in stages.
    assert len(arrivals) >= 3
    assert arrivals[0][0] < arrivals[-1][0] - 0.3
    expected = sum(len(s) for s in LONG.split(". ")) / 15.0
    assert abs(probe(body)["duration_s"] - expected) < 1.5


def test_sse_over_http(serve_app):
    with serve_app.client() as c:
        r = c.post(
            "/v1/audio/speech",
            json={"input": "Hello", "response_format": "wav", "stream_format": "sse"},
        )
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    assert events[-1]["usage"]["input_tokens"] == 5
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert abs(probe(audio)["duration_s"] - 5 / 15) < 0.1


def test_long_request_chunks_are_batched_together(serve_app):
    _reset_stats()
    with serve_app.client() as c:
        r = c.post("/v1/audio/speech", json={"input": LONG, "response_format": "wav"})
    assert r.status_code == 200
    sizes = _model_stats()["batch_sizes"]
    assert sum(sizes) >= 12 and max(sizes) == 4, sizes  # never one chunk after another


def test_concurrent_requests_share_engine_calls(serve_app):
    async def send_all():
        async with serve_app.async_client() as c:
            return await asyncio.gather(
                *(
                    c.post(
                        "/v1/audio/speech",
                        json={"input": f"Request number {i}.", "response_format": "pcm"},
                    )
                    for i in range(8)
                )
            )

    _reset_stats()
    rs = asyncio.run(send_all())
    assert all(r.status_code == 200 for r in rs)
    stats = _model_stats()
    assert stats["items"] == 8 and stats["calls"] < 8, stats


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": ""}, 400, "input"),
        ({"input": "hi", "speed": 10}, 400, "speed"),
        ({"input": "hi", "voice": "no-such-voice"}, 404, "voice"),
        ({"input": "hi <<simulate-engine-failure>>"}, 500, None),
        ({"input": "hi <<simulate-engine-failure>>", "stream_format": "audio"}, 500, None),
        ({"input": "hi <<simulate-engine-failure>>", "stream_format": "sse"}, 500, None),
    ],
)
def test_errors_over_http_use_the_envelope(serve_app, body, status, param):
    with serve_app.client() as c:
        r = c.post("/v1/audio/speech", json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and err["type"]
    if status == 500:
        assert r.headers["x-request-id"] in err["message"]


def test_body_too_large_is_413(serve_app):
    with serve_app.client() as c:
        r = c.post("/v1/audio/speech", json={"input": "x" * 2_000_000})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_openai_sdk_create_and_streaming(serve_app):
    client = openai.OpenAI(base_url=serve_app.base_url + "/v1", api_key="unused")
    speech = client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hello from the OpenAI SDK."
    )
    assert probe(speech.content)["container"] == "mp3"
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="nova",
        input=LONG,
        response_format="wav",
    ) as response:
        pieces = list(response.iter_bytes())
    assert len(pieces) >= 2
    assert probe(b"".join(pieces))["container"] == "wav"
    models = client.models.list()
    assert "chatterbox-multilingual" in [m.id for m in models.data]


def test_openai_sdk_sees_errors(serve_app):
    client = openai.OpenAI(base_url=serve_app.base_url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.audio.speech.create(model="tts-1", voice="ghost", input="hi")
    assert info.value.body["param"] == "voice"


def test_health_reports_engine_and_model_readiness(serve_app):
    body = httpx.get(serve_app.base_url + "/health").json()
    assert body["status"] == "healthy" and body["engine"] == "simulated"
    assert body["model_ready"] is True and body["batching"]["max_batch_size"] == 4


def test_health_and_config_report_the_one_batch_size(serve_app):
    # VLLM_MAX_BATCH_SIZE is the one setting; the model's Serve batch size follows it.
    health = httpx.get(serve_app.base_url + "/health").json()
    config = httpx.get(serve_app.base_url + "/config").json()
    assert health["batching"]["max_batch_size"] == config["settings"]["VLLM_MAX_BATCH_SIZE"] == 4
