"""What a long job sends the engine: the request's settings, each chunk's token budget."""

from __future__ import annotations

import pytest

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.jobs import JobService, JobState, JobStore
from tests.jobs.helpers import CountingSubmit, long_text, make_runner, params


async def _run(store: JobStore, settings: Settings, engine: SimulatedEngine, job_id: str):
    submit = CountingSubmit(engine)
    lease = store.claim(job_id, "w1", settings.jobs.lease_s)
    assert lease is not None
    report = await make_runner(store, settings, submit).run(job_id, lease)
    assert report.outcome == "completed", report
    return submit.items


@pytest.mark.parametrize("weight", [0.0, 1.0])
async def test_a_jobs_cfg_weight_reaches_the_engine(
    service: JobService,
    store: JobStore,
    settings: Settings,
    engine: SimulatedEngine,
    weight: float,
) -> None:
    record = service.create(None, long_text(), params(cfg_weight=weight))
    items = await _run(store, settings, engine, record.job_id)
    assert len(items) == record.total_chunks
    assert {item.generation.cfg_weight for item in items} == {weight}
    assert store.get(record.job_id).state is JobState.COMPLETED  # type: ignore[union-attr]


async def test_a_jobs_chunks_carry_the_audio_caps_token_budget(
    service: JobService, store: JobStore, settings: Settings, engine: SimulatedEngine
) -> None:
    record = service.create(None, long_text(), params())
    items = await _run(store, settings, engine, record.job_id)
    per_char = settings.chunking.max_audio_s_per_char
    for item in items:
        assert item.max_new_tokens is not None
        assert item.max_new_tokens == int(max(5.0, len(item.text) * per_char) * 25)
