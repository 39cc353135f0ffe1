"""`engine: torch` behind Ray Serve on the CPU: an OpenAI SDK request gets real model audio.

The checkpoint is the tiny random one (tools/write_checkpoint.py --tiny), so the audio
is noise, but it comes from T3 and S3Gen: its length is 40 ms per generated speech
token, which the SSE stream's usage reports.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import probe
from tests.serve.conftest import ServeApp, start_app

# Enough for the test sentence to stay one chunk (the plan shortens chunks until each
# one's speech fits the engine's token limit, text/speech_rates.py), yet a limit that
# bounds the run: random weights almost never say stop.
MAX_NEW_TOKENS = 100
SECONDS_PER_TOKEN = 0.04
# Writing the tiny checkpoint and loading S3Gen in the replica take minutes on a busy 2-core box.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def torch_app(tiny_checkpoint: Path) -> Iterator[ServeApp]:
    yield from start_app(
        settings={
            "CHATTERBOX_MODEL_DIR": str(tiny_checkpoint),
            "USE_MULTILINGUAL_MODEL": False,
            "CHATTERBOX_DEVICE": "cpu",
            "VLLM_DIFFUSION_STEPS": 2,
            "CHATTERBOX_MAX_NEW_TOKENS": MAX_NEW_TOKENS,
        },
        engine="torch",
    )


def _sse_output_tokens(app: ServeApp, body: dict[str, object]) -> tuple[int, float]:
    with app.client() as c:
        r = c.post("/v1/audio/speech", json={**body, "stream_format": "sse"})
    assert r.status_code == 200, r.text
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    return int(events[-1]["usage"]["output_tokens"]), float(probe(audio)["duration_s"])


def test_openai_sdk_speech_length_follows_generated_tokens(torch_app: ServeApp) -> None:
    client = openai.OpenAI(base_url=torch_app.base_url + "/v1", api_key="unused", max_retries=0)
    body = {"input": "Hello from the torch engine.", "response_format": "wav", "seed": 3}
    raw = client.audio.speech.with_raw_response.create(
        model="tts-1",
        voice="alloy",
        input=str(body["input"]),
        response_format="wav",
        extra_body={"seed": 3},
    )
    assert raw.headers["x-chatterbox-engine"] == "torch"
    info = probe(raw.content)
    assert info["container"] == "wav" and info["sample_rate"] == 24_000
    tokens, sse_duration = _sse_output_tokens(torch_app, {**body, "voice": "alloy"})
    assert 0 < tokens <= MAX_NEW_TOKENS
    assert abs(float(info["duration_s"]) - tokens * SECONDS_PER_TOKEN) < 0.005
    assert abs(sse_duration - tokens * SECONDS_PER_TOKEN) < 0.005


def test_health_names_the_torch_engine(torch_app: ServeApp) -> None:
    body = httpx.get(torch_app.base_url + "/health", timeout=30).json()
    assert body["engine"] == "torch"
