"""The official OpenAI Python SDK (`openai` package, resources/audio/speech.py), base_url here.

OpenAI's speech API takes up to 4096 input characters, and SDK users send that much:
the default `MAX_TOTAL_LENGTH` must let it through, and one more character must be a
400 the SDK raises as `BadRequestError`, with OpenAI's envelope naming `input`.
`client.models.retrieve` (resources/models.py: `GET {base}/models/{model}`) finds every
listed model, and an unknown one is the SDK's `NotFoundError`.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from chatterbox_serve.config import Settings
from tests.clients.conftest import ORIGIN, RecordingEngine, prose, spoken_seconds
from tests.conftest import probe

# OpenAI's documented maximum length of `input` for /v1/audio/speech.
OPENAI_MAX_INPUT = 4096


def sdk(server: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="sk-local", base_url=f"{ORIGIN}/v1", http_client=server)


async def test_openais_longest_input_is_spoken(server: httpx.AsyncClient, settings: Settings):
    text = prose(OPENAI_MAX_INPUT)
    speech = await sdk(server).audio.speech.create(model="tts-1", voice="alloy", input=text)
    assert speech.response.status_code == 200
    assert speech.response.headers["content-type"] == "audio/mpeg"
    info = probe(speech.content)
    assert info["container"] == "mp3"
    seconds = spoken_seconds(settings, text)
    assert abs(float(str(info["duration_s"])) - seconds) < 0.05 * seconds


async def test_one_character_more_is_a_400_naming_input(
    server: httpx.AsyncClient, engine: RecordingEngine
):
    with pytest.raises(openai.BadRequestError) as raised:
        await sdk(server).audio.speech.create(
            model="tts-1", voice="alloy", input=prose(OPENAI_MAX_INPUT + 1)
        )
    assert raised.value.status_code == 400
    envelope = raised.value.response.json()
    assert set(envelope) == {"error"}
    assert envelope["error"]["param"] == "input"
    assert envelope["error"]["code"] == "input_too_long"
    assert str(OPENAI_MAX_INPUT) in envelope["error"]["message"]
    assert engine.requests == []


async def test_a_streamed_response_in_opus(server: httpx.AsyncClient, settings: Settings):
    text = "Streaming through the SDK's streaming response."
    async with sdk(server).audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="coral", input=text, response_format="opus"
    ) as response:
        assert response.headers["content-type"] == "audio/ogg"
        data = b"".join([chunk async for chunk in response.iter_bytes()])
    info = probe(data)
    assert (info["container"], info["codec"]) == ("ogg", "opus")
    seconds = spoken_seconds(settings, text)
    assert abs(float(str(info["duration_s"])) - seconds) < 0.05 * seconds + 0.1


async def test_models_retrieve_finds_each_listed_model(server: httpx.AsyncClient):
    client = sdk(server)
    listed = (await client.models.list()).data
    for card in listed:
        model = await client.models.retrieve(card.id)
        assert model.model_dump() == card.model_dump()
    chatterbox = await client.models.retrieve("tts-1")
    assert chatterbox.object == "model" and chatterbox.id == "tts-1"


async def test_models_retrieve_of_an_unknown_model_is_model_not_found(
    server: httpx.AsyncClient,
):
    with pytest.raises(openai.NotFoundError) as raised:
        await sdk(server).models.retrieve("whisper-1")
    assert raised.value.body == {
        "message": raised.value.body["message"],
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert "whisper-1" in raised.value.body["message"]
