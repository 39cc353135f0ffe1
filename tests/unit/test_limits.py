"""Every configured limit answers a clear 4xx in the OpenAI envelope before any synthesis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from chatterbox_serve.config import load_settings
from chatterbox_serve.engines.simulated import SimulatedEngine
from deployments.ingress import build_api
from tests.local_backend import LocalBackend

LIMITS = {
    "CHATTERBOX_SIM_BASE_S": "0",
    "CHATTERBOX_MAX_JSON_BODY_BYTES": "2048",
    "MAX_TOTAL_LENGTH": "500",
    "MAX_CHUNK_LENGTH": "40",
    "CHATTERBOX_MAX_CHUNKS_PER_REQUEST": "3",
    "CHATTERBOX_MAX_INSTRUCTIONS_LENGTH": "10",
}


@pytest.fixture
def engine() -> SimulatedEngine:
    return SimulatedEngine(load_settings(LIMITS, None).simulated)


@pytest.fixture
async def client(engine: SimulatedEngine) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(LIMITS, None)
    app = build_api(settings, LocalBackend(settings, engine), "simulated")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def _error(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err  # type: ignore[no-any-return]


async def test_declared_body_over_limit_is_413(client, engine) -> None:
    body = '{"input": "' + "a" * 3000 + '"}'
    r = await client.post(
        "/v1/audio/speech", content=body, headers={"content-type": "application/json"}
    )
    err = _error(r, 413)
    assert err["code"] == "payload_too_large" and "2048" in str(err["message"])
    assert engine.recorder.items == 0


async def test_streamed_body_without_length_is_cut_at_the_limit(client, engine) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"input": "'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"}'

    r = await client.post(
        "/v1/audio/speech", content=body(), headers={"content-type": "application/json"}
    )
    assert _error(r, 413)["code"] == "payload_too_large"
    assert engine.recorder.items == 0


async def test_input_over_max_total_length_is_400(client, engine) -> None:
    r = await client.post("/v1/audio/speech", json={"input": "word " * 110})
    err = _error(r, 400)
    assert err["param"] == "input" and err["code"] == "input_too_long"
    assert "MAX_TOTAL_LENGTH" in str(err["message"])
    assert engine.recorder.items == 0


async def test_too_many_chunks_is_400_before_synthesis(client, engine) -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(8))  # about 8 chunks of 40
    r = await client.post("/v1/audio/speech", json={"input": text})
    err = _error(r, 400)
    assert err["param"] == "input"
    assert "CHATTERBOX_MAX_CHUNKS_PER_REQUEST" in str(err["message"])
    assert engine.recorder.items == 0


async def test_too_many_chunks_on_a_stream_is_json_not_audio(client, engine) -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(8))
    r = await client.post("/v1/audio/speech/stream", json={"input": text})
    assert _error(r, 400)["param"] == "input"
    assert engine.recorder.items == 0


async def test_instructions_over_limit_is_400(client) -> None:
    r = await client.post("/v1/audio/speech", json={"input": "hello", "instructions": "x" * 11})
    assert _error(r, 400)["param"] == "instructions"


async def test_within_every_limit_succeeds(client, engine) -> None:
    r = await client.post(
        "/v1/audio/speech",
        json={"input": "Three short chunks. Of text that fits. Here.", "instructions": "calm"},
    )
    assert r.status_code == 200, r.text
    assert engine.recorder.items >= 1
