"""The watermark over HTTP, with perth's real network: every format, speed and stream.

The engine here speaks real speech (the Chatterbox samples, cut to the text's length),
because perth's detector is trained on speech: on the simulated engine's pure tones it
answers 0.35 to 0.68 for unmarked audio, so "off means not detected" is only a claim
about speech (README, "Watermark").
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from chatterbox_serve.audio import SAMPLE_RATE, AudioFormat, encode_audio
from chatterbox_serve.audio.watermark import DETECTION_THRESHOLD, load_watermarker
from deployments.ingress import build_api
from tests.component.conftest import make_settings
from tests.component.test_job_routes import LONG, finished
from tests.component.test_job_routes import TEXT as LONG_TEXT
from tests.component.test_job_routes import client as jobs_client  # noqa: F401 - a fixture
from tests.local_backend import LocalBackend
from tests.voice_audio import NOT_AUDIO, corrupt, encode, sample
from tools.hostile_sweep import SDP, _flac_with, _wav_header
from tools.watermark_bench import SpeechSampleEngine, response_samples, speech_samples

SPEECH = "/v1/audio/speech"
DETECT = "/v1/audio/watermark/detect"
TEXT = "A first sentence to speak here. And a second sentence after it."


def _client(watermark: str, streams: bool = False) -> httpx.AsyncClient:
    settings = make_settings(WATERMARK=watermark, MAX_CHUNK_LENGTH="40")
    backend = LocalBackend(settings, SpeechSampleEngine(streams))
    app = build_api(settings, backend, "speech-samples")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture(scope="module", autouse=True)
def _network_loaded() -> None:
    load_watermarker()


@pytest.fixture
async def marked() -> AsyncIterator[httpx.AsyncClient]:
    async with _client("on") as c:
        yield c


@pytest.fixture
async def unmarked() -> AsyncIterator[httpx.AsyncClient]:
    async with _client("off") as c:
        yield c


def _confidence(data: bytes, fmt: str) -> float:
    return load_watermarker().confidence(*response_samples(data, fmt))


@pytest.mark.parametrize("fmt", [f.value for f in AudioFormat])
async def test_every_format_is_detected_when_on_and_not_when_off(
    marked: httpx.AsyncClient, unmarked: httpx.AsyncClient, fmt: str
) -> None:
    body = {"model": "tts-1", "input": TEXT, "response_format": fmt}
    on = await marked.post(SPEECH, json=body)
    assert on.status_code == 200, on.text
    assert on.headers["x-watermark"] == "perth"
    assert _confidence(on.content, fmt) > DETECTION_THRESHOLD
    off = await unmarked.post(SPEECH, json=body)
    assert off.status_code == 200 and "x-watermark" not in off.headers
    assert _confidence(off.content, fmt) < DETECTION_THRESHOLD


@pytest.mark.parametrize("speed", [0.5, 1.5, 3.0])
async def test_speed_changes_keep_the_mark(marked: httpx.AsyncClient, speed: float) -> None:
    body = {"model": "tts-1", "input": TEXT, "response_format": "wav", "speed": speed}
    r = await marked.post(SPEECH, json=body)
    assert r.status_code == 200
    assert _confidence(r.content, "wav") > DETECTION_THRESHOLD


async def test_a_stream_in_model_pieces_reassembled_is_detected() -> None:
    async with _client("on", streams=True) as c:
        body = {"model": "tts-1", "input": TEXT, "response_format": "pcm"}
        async with c.stream("POST", f"{SPEECH}/stream", json=body) as r:
            assert r.headers["x-watermark"] == "perth"
            data = b"".join([part async for part in r.aiter_bytes()])
    assert _confidence(data, "pcm") > DETECTION_THRESHOLD


async def test_an_sse_stream_reassembled_is_detected(marked: httpx.AsyncClient) -> None:
    body = {"model": "tts-1", "input": TEXT, "response_format": "pcm", "stream_format": "sse"}
    r = await marked.post(SPEECH, json=body)
    assert r.headers["x-watermark"] == "perth"
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if "audio" in e)
    assert _confidence(audio, "pcm") > DETECTION_THRESHOLD


async def test_detect_answers_both_cases(
    marked: httpx.AsyncClient, unmarked: httpx.AsyncClient
) -> None:
    body = {"model": "tts-1", "input": TEXT, "response_format": "mp3"}
    ours = (await marked.post(SPEECH, json=body)).content
    found = await marked.post(DETECT, files={"file": ("ours.mp3", ours, "audio/mpeg")})
    assert found.status_code == 200, found.text
    assert found.json()["watermarked"] is True and found.json()["confidence"] > 0.9
    plain = (await unmarked.post(SPEECH, json=body)).content
    for data in (plain, sample(2)):
        r = await unmarked.post(DETECT, files={"file": ("plain.mp3", data, "audio/mpeg")})
        assert r.json()["watermarked"] is False and r.json()["confidence"] < 0.5


def _hostile() -> list[tuple[str, bytes, int]]:
    return [
        ("text file", NOT_AUDIO, 400),
        ("corrupt mp3", corrupt(), 400),
        ("SDP (a network demuxer)", SDP, 400),
        ("FLAC claiming 2^36 samples", _flac_with((1 << 36) - 1), 400),
        ("WAV header: 2^31 Hz", _wav_header(2**31 - 1, 1), 400),
        ("WAV header: 200 channels", _wav_header(8000, 200), 400),
        ("61 s of FLAC", encode(61.0, fmt="flac", codec="flac", amplitude=0.0), 400),
        ("empty", b"", 400),
    ]


@pytest.mark.parametrize("name,data,status", _hostile(), ids=[c[0] for c in _hostile()])
async def test_detect_refuses_hostile_files_like_voice_uploads(
    marked: httpx.AsyncClient, name: str, data: bytes, status: int
) -> None:
    r = await marked.post(DETECT, files={"file": ("x.bin", data, "application/octet-stream")})
    assert r.status_code == status, (name, r.text)
    error = r.json()["error"]
    assert error["param"] == "file" and error["type"] == "invalid_request_error"


async def test_detect_caps_the_upload_size_and_needs_a_file() -> None:
    settings = make_settings(CHATTERBOX_MAX_UPLOAD_BYTES="100000")
    app = build_api(settings, LocalBackend(settings, SpeechSampleEngine()), "speech-samples")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        big = encode_audio(speech_samples()[: 3 * SAMPLE_RATE], AudioFormat.WAV)
        r = await c.post(DETECT, files={"file": ("big.wav", big, "audio/wav")})
        assert r.status_code == 413 and r.json()["error"]["param"] == "file"
        r = await c.post(DETECT, data={"x": "1"})
        assert r.status_code == 400 and "error" in r.json()


async def test_the_switch_shows_in_config_and_health(
    marked: httpx.AsyncClient, unmarked: httpx.AsyncClient
) -> None:
    for client, value in ((marked, "on"), (unmarked, "off")):
        assert (await client.get("/config")).json()["settings"]["WATERMARK"] == value
        assert (await client.get("/health")).json()["watermark"] == value


async def test_a_long_jobs_chunks_and_file_are_marked(
    jobs_client: httpx.AsyncClient,  # noqa: F811 - the job routes' fixture, imported above
) -> None:
    """The simulated engine's tones here: marked, they are detected like speech."""
    r = await jobs_client.post(LONG, json={"input": LONG_TEXT, "response_format": "wav"})
    job = await finished(jobs_client, r.json()["job_id"])
    assert job["status"] == "completed"
    audio = await jobs_client.get(job["download_url"])
    assert audio.headers["x-watermark"] == "perth"
    assert _confidence(audio.content, "wav") > 0.99
    chunk = await jobs_client.get(f"{LONG}/{job['job_id']}/chunks/0")
    assert chunk.headers["x-watermark"] == "perth"
    assert _confidence(chunk.content, "wav") > 0.99
