"""Two model families served at once by `serve run serve_config.yaml` (simulated engine).

Each family is its own model deployment; the ingress lists both and sends a request
to the one its `model` names. The simulated engine's audio depends on the family of
the engine that spoke it, so equal requests to two families come back different.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.serve.serve_cli import ServeRun, serve_run

LONG = "/v1/audio/speech/long"
SETTINGS = {
    "CHATTERBOX_MODELS": "chatterbox-multilingual,chatterbox-turbo",
    "CHATTERBOX_DEFAULT_MODEL": "chatterbox-multilingual",
    "VOICE_LIBRARY_DIR": tempfile.mkdtemp(prefix="families-voices-"),
    "JOBS_URL": tempfile.mkdtemp(prefix="families-jobs-"),
    "MAX_TOTAL_LENGTH": "200",
    "CHATTERBOX_SIM_BASE_S": "0.05",
    "CHATTERBOX_JOB_POLL_S": "0.5",
    "WATERMARK": "off",
}
TEXT = "Well [laugh] that was something, wasn't it?"


@pytest.fixture(scope="module")
def app() -> Iterator[ServeRun]:
    with serve_run(SETTINGS) as running:
        yield running


def _speak(c: httpx.Client, model: str, **extra: Any) -> httpx.Response:
    body = {"input": TEXT, "model": model, "response_format": "pcm", "seed": 3, **extra}
    return c.post("/v1/audio/speech", json=body)


def test_the_models_listing_names_both_families(app: ServeRun) -> None:
    with app.client() as c:
        ids = [m["id"] for m in c.get("/v1/models").json()["data"]]
    assert ids == [
        "chatterbox-multilingual",
        "chatterbox-turbo",
        "tts-1",
        "tts-1-hd",
        "gpt-4o-mini-tts",
    ]


def test_chatterbox_turbo_is_spoken_by_the_turbo_deployment(app: ServeRun) -> None:
    with app.client() as c:
        turbo = _speak(c, "chatterbox-turbo", cfg_weight=0.2)
        again = _speak(c, "chatterbox-turbo")
        multilingual = _speak(c, "chatterbox-multilingual")
        openai_name = _speak(c, "tts-1")
    for r in (turbo, again, multilingual, openai_name):
        assert r.status_code == 200, r.text
        assert len(r.content) > 24_000
    assert turbo.headers["X-Chatterbox-Ignored-Fields"] == "cfg_weight"
    assert "X-Chatterbox-Ignored-Fields" not in multilingual.headers
    # Same text, voice and seed: only the engine's family tells the audio apart.
    assert turbo.content == again.content
    assert turbo.content != multilingual.content
    assert openai_name.content == multilingual.content  # tts-1: the default family


def test_an_unknown_model_is_a_404_in_the_envelope(app: ServeRun) -> None:
    with app.client() as c:
        r = _speak(c, "chatterbox-turbo-9000")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_a_long_text_job_runs_on_its_family(app: ServeRun) -> None:
    text = " ".join(f"Sentence {i} [sigh] of a story." for i in range(12))
    with app.client() as c:
        r = c.post(LONG, json={"input": text, "model": "chatterbox-turbo"})
        assert r.status_code == 200, r.text
        job_id = r.json()["job_id"]
        deadline = time.monotonic() + 120
        while (job := c.get(f"{LONG}/{job_id}").json())["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, job["status"]
            time.sleep(0.5)
        assert job["status"] == "completed", job
        details = c.get(f"{LONG}/{job_id}/details").json()
        assert details["metadata"]["parameters"]["model"] == "chatterbox-turbo"
        assert c.get(f"{LONG}/{job_id}/download").status_code == 200
