"""Speech and long-text jobs share one plan: the same settings and chunks reach the engine."""

from __future__ import annotations

import asyncio
import typing
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import annotated_types
import httpx
import pytest

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import SynthesisOutcome, SynthesisRequest
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.generation import GenerationParameters
from chatterbox_serve.jobs import JobRunner, JobsAccess, JobService, JobStore, JobWorker
from chatterbox_serve.jobs.storage import LocalJobBlobStore
from deployments.ingress import build_api
from tests.component.conftest import make_settings
from tests.local_backend import LocalBackend
from tools.bench.direct import DirectSubmitter

LONG = "/v1/audio/speech/long"
SPEECH = "/v1/audio/speech"
# A job takes more than MAX_TOTAL_LENGTH characters, speech at most that: the two apps
# differ in that alone.
JOB_MIN, SPEECH_MAX = "200", "2000"
STORY = " ".join(f"Sentence {i} of a story that goes on." for i in range(10))
# Combining marks alone split into letterless chunks, which the plan joins to a neighbour.
MARKED = f"{STORY} {chr(0x301) * 100} {STORY}"


class RecordingEngine(SimulatedEngine):
    """Keeps every request it is asked to speak."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.simulated)
        self.seen: list[SynthesisRequest] = []

    async def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[SynthesisOutcome]:
        self.seen.extend(requests)
        return await super().synthesize(requests)


@dataclass
class Apps:
    speech: httpx.AsyncClient
    jobs: httpx.AsyncClient
    engine: RecordingEngine

    def requests_of(self, request_id: str) -> list[SynthesisRequest]:
        return sorted(
            (r for r in self.engine.seen if r.request_id == request_id),
            key=lambda r: r.chunk_index,
        )


def _settings(total: str) -> Settings:
    return make_settings(MAX_TOTAL_LENGTH=total, MAX_CHUNK_LENGTH="80")


@pytest.fixture
async def apps(tmp_path: Path) -> AsyncIterator[Apps]:
    speech_settings, job_settings = _settings(SPEECH_MAX), _settings(JOB_MIN)
    engine = RecordingEngine(job_settings)
    store = JobStore(LocalJobBlobStore(tmp_path / "jobs"))
    runner = JobRunner(
        store, job_settings, DirectSubmitter(engine), lambda v, by_id: None, holder="w"
    )
    worker = JobWorker(store, runner, max_jobs=2, lease_s=5.0)
    access = JobsAccess(JobService(store, job_settings), keys_enabled=False)
    jobs_app = build_api(job_settings, LocalBackend(job_settings, engine), "simulated", jobs=access)
    speech_app = build_api(speech_settings, LocalBackend(speech_settings, engine), "simulated")

    async def poll() -> None:
        while True:
            await worker.poll_once()
            await asyncio.sleep(0.02)

    poller = asyncio.create_task(poll())
    base = "http://test"
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=speech_app), base_url=base) as s,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=jobs_app), base_url=base) as j,
    ):
        yield Apps(s, j, engine)
    poller.cancel()
    await worker.stop()


async def _speak(apps: Apps, body: dict[str, Any]) -> list[SynthesisRequest]:
    r = await apps.speech.post(SPEECH, json={"response_format": "wav", **body})
    assert r.status_code == 200, r.text
    return apps.requests_of(r.headers["x-request-id"])


async def _run_job(apps: Apps, body: dict[str, Any]) -> list[SynthesisRequest]:
    r = await apps.jobs.post(LONG, json={"response_format": "wav", **body})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    for _ in range(500):
        status = (await apps.jobs.get(f"{LONG}/{job_id}")).json()["status"]
        if status in ("completed", "failed", "cancelled"):
            break
        await asyncio.sleep(0.02)
    assert status == "completed"
    return apps.requests_of(f"job-{job_id}")


def _off_default(name: str) -> Any:
    """A valid value of a generation parameter that is not its default: 30 % into its range."""
    hint = typing.get_type_hints(GenerationParameters, include_extras=True)[name]
    if typing.get_origin(hint) is typing.Union:  # `Seed | None`
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    base, *meta = typing.get_args(hint)
    low = high = None
    for m in (x for item in meta for x in getattr(item, "metadata", [item])):
        if isinstance(m, annotated_types.Ge | annotated_types.Gt):
            low = m.ge if isinstance(m, annotated_types.Ge) else m.gt
        if isinstance(m, annotated_types.Le):
            high = m.le
    assert low is not None and high is not None, f"{name} has no bounds"
    value = low + 0.3 * (high - low)
    value = int(value) if base is int else round(value, 3)
    assert value != getattr(GenerationParameters(), name)
    return value


@pytest.mark.parametrize("name", [f.name for f in fields(GenerationParameters)])
async def test_every_generation_parameter_reaches_the_engine_from_speech_and_jobs(
    apps: Apps, name: str
) -> None:
    value = _off_default(name)
    spoken = await _speak(apps, {"input": "Hello there, how are you today?", name: value})
    done = await _run_job(apps, {"input": STORY, name: value})
    assert spoken and done
    assert {getattr(r.generation, name) for r in spoken} == {value}
    assert {getattr(r.generation, name) for r in done} == {value}


async def test_a_jobs_chunks_and_budgets_are_a_speech_requests_of_the_same_text(
    apps: Apps,
) -> None:
    spoken = await _speak(apps, {"input": MARKED})
    done = await _run_job(apps, {"input": MARKED})
    assert [r.text for r in done] == [r.text for r in spoken]
    assert [r.max_new_tokens for r in done] == [r.max_new_tokens for r in spoken]
    assert all(any(ch.isalpha() for ch in r.text) for r in done)


async def test_a_voice_given_by_id_matches_ids_only_for_speech_and_jobs(apps: Apps) -> None:
    # "alloy" is an OpenAI voice name that means the default voice; as {"id": ...} it
    # names a voice id, and no voice has that id.
    for body in ({"voice": {"id": "alloy"}}, {"voice": "alloy"}):
        speech = await apps.speech.post(SPEECH, json={"input": "Hello.", **body})
        job = await apps.jobs.post(LONG, json={"input": STORY, **body})
        expected = 404 if isinstance(body["voice"], dict) else 200
        assert (speech.status_code, job.status_code) == (expected, expected), body
