"""Running jobs: complete, resume, take over a dead worker's job, pause, fail and retry."""

from __future__ import annotations

import asyncio

import pytest

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.jobs import JobService, JobState, JobStore, JobWorker
from chatterbox_serve.jobs.store import JobGone
from tests.conftest import probe
from tests.jobs.helpers import CountingSubmit, long_text, make_runner, params, wait_for


def worker(store: JobStore, settings: Settings, submit: CountingSubmit, name: str) -> JobWorker:
    runner = make_runner(store, settings, submit, holder=name)
    return JobWorker(store, runner, max_jobs=2, lease_s=settings.jobs.lease_s)


async def run_to_end(w: JobWorker, store: JobStore, job_id: str) -> None:
    async def loop() -> None:
        while True:
            await w.poll_once()
            await asyncio.sleep(0.05)

    poller = asyncio.create_task(loop())
    try:
        await wait_for(lambda: store.get(job_id).state.finished, 20)  # type: ignore[union-attr]
        await wait_for(lambda: not w.running, 5)
    finally:
        poller.cancel()


def chunk_files(store: JobStore, job_id: str, generation: int = 0) -> list[str]:
    return [k for k in store.blobs.list(f"jobs/{job_id}/g{generation}/") if k.endswith(".wav")]


async def test_job_completes_with_every_chunk_once(
    service: JobService, store: JobStore, settings: Settings, engine: SimulatedEngine
) -> None:
    record = service.create(None, long_text(), params(response_format="mp3"))
    assert record.total_chunks >= 6
    submit = CountingSubmit(engine)
    w = worker(store, settings, submit, "A")
    await run_to_end(w, store, record.job_id)
    done = store.get(record.job_id)
    assert done is not None and done.state is JobState.COMPLETED
    assert done.completed_chunks == done.total_chunks and done.progress_percent == 100.0
    assert sorted(submit.calls) == list(range(record.total_chunks))
    assert set(submit.calls.values()) == {1}
    assert submit.max_in_flight <= settings.jobs.chunks_in_flight_per_job
    commits = store.commits(record.job_id, 0)
    assert len(chunk_files(store, record.job_id)) == len(commits) == record.total_chunks
    _, key, size = service.output(None, record.job_id)
    data = b"".join(store.blobs.read_range(key, 0, size))
    chunk_s = sum(c.duration_s for c in commits.values())
    fades = (record.total_chunks - 1) * 0.025
    assert probe(data)["duration_s"] == pytest.approx(chunk_s - fades, abs=0.1)
    assert done.output_duration_s == pytest.approx(chunk_s - fades, abs=0.01)
    assert store.queued() == [] and w.reports[-1].outcome == "completed"


async def test_dead_worker_job_is_taken_over_and_finishes_without_gaps_or_doubles(
    service: JobService, store: JobStore, settings: Settings, engine: SimulatedEngine
) -> None:
    record = service.create(None, long_text(12), params())
    slow = CountingSubmit(engine)
    slow.delay_s = 0.15
    a = worker(store, settings, slow, "A")
    await a.poll_once()
    await wait_for(lambda: store.get(record.job_id).completed_chunks >= 3)  # type: ignore[union-attr]
    # A dies: its run is cut off, its lease is neither renewed nor released.
    for task in a.running.values():
        task.cancel()
    await asyncio.sleep(0.05)
    finished_by_a = set(store.commits(record.job_id, 0))
    assert 3 <= len(finished_by_a) < record.total_chunks
    b_submit = CountingSubmit(engine)
    b = worker(store, settings, b_submit, "B")
    assert await b.poll_once() == []  # A's lease is still live
    began = asyncio.get_running_loop().time()
    await run_to_end(b, store, record.job_id)
    took_over_after = asyncio.get_running_loop().time() - began
    assert took_over_after < settings.jobs.lease_s + 3
    done = store.get(record.job_id)
    assert done is not None and done.state is JobState.COMPLETED
    # B resumed from A's last finished chunk: it redid none of them and missed none.
    assert set(b_submit.calls).isdisjoint(finished_by_a)
    assert set(b_submit.calls) | finished_by_a == set(range(record.total_chunks))
    assert len(chunk_files(store, record.job_id)) == record.total_chunks  # none doubled
    assert sorted(store.commits(record.job_id, 0)) == list(range(record.total_chunks))


async def test_pause_stops_and_resume_continues_from_the_last_chunk(
    service: JobService, store: JobStore, settings: Settings, engine: SimulatedEngine
) -> None:
    record = service.create(None, long_text(10), params())
    submit = CountingSubmit(engine)
    submit.delay_s = 0.1
    w = worker(store, settings, submit, "A")
    await w.poll_once()
    await wait_for(lambda: store.get(record.job_id).completed_chunks >= 2)  # type: ignore[union-attr]
    service.pause(None, record.job_id)
    await wait_for(lambda: not w.running)
    paused = store.get(record.job_id)
    assert paused is not None and paused.state is JobState.PAUSED
    await w.poll_once()
    assert not w.running and store.queued() == []  # paused jobs are not picked up
    calls_before = sum(submit.calls.values())
    service.resume(None, record.job_id)
    await run_to_end(w, store, record.job_id)
    assert store.get(record.job_id).state is JobState.COMPLETED  # type: ignore[union-attr]
    assert (
        sum(submit.calls.values()) - calls_before <= record.total_chunks - paused.completed_chunks
    )
    assert len(chunk_files(store, record.job_id)) == record.total_chunks


async def test_failed_chunk_fails_the_job_and_retry_reruns_only_it(
    service: JobService, store: JobStore, settings: Settings, engine: SimulatedEngine
) -> None:
    record = service.create(None, long_text(), params())
    # Chunk 2 fails on every attempt of the first run (two attempts allowed).
    submit = CountingSubmit(engine, fail={2: settings.jobs.chunk_attempts})
    w = worker(store, settings, submit, "A")
    await run_to_end(w, store, record.job_id)
    failed = store.get(record.job_id)
    assert failed is not None and failed.state is JobState.FAILED
    assert failed.failed_chunks == (2,) and "chunk 2" in (failed.error or "")
    assert failed.completed_chunks == record.total_chunks - 1
    submit.calls.clear()
    retried = service.retry(None, record.job_id, preserve_chunks=True)
    assert retried.retry_count == 1 and retried.state is JobState.PENDING
    await run_to_end(w, store, record.job_id)
    assert store.get(record.job_id).state is JobState.COMPLETED  # type: ignore[union-attr]
    assert dict(submit.calls) == {2: 1}


async def test_retry_without_preserving_redoes_every_chunk(
    service: JobService, store: JobStore, settings: Settings, engine: SimulatedEngine
) -> None:
    record = service.create(None, long_text(), params())
    submit = CountingSubmit(engine)
    w = worker(store, settings, submit, "A")
    service.cancel(None, record.job_id)
    service.retry(None, record.job_id, preserve_chunks=False, new_parameters={"seed": 9})
    await run_to_end(w, store, record.job_id)
    done = store.get(record.job_id)
    assert done is not None and done.generation == 1 and done.parameters.generation.seed == 9
    assert chunk_files(store, record.job_id, 0) == []
    assert len(chunk_files(store, record.job_id, 1)) == record.total_chunks


async def test_deleting_a_running_job_stops_its_worker(
    service: JobService, store: JobStore, settings: Settings, engine: SimulatedEngine
) -> None:
    record = service.create(None, long_text(10), params())
    submit = CountingSubmit(engine)
    submit.delay_s = 0.1
    w = worker(store, settings, submit, "A")
    await w.poll_once()
    await wait_for(lambda: store.get(record.job_id).completed_chunks >= 1)  # type: ignore[union-attr]
    service.delete(None, record.job_id)
    await wait_for(lambda: not w.running)
    assert w.reports[-1].outcome in ("deleted", "lost")
    with pytest.raises(JobGone):
        store.update(record.job_id, lambda r: r)

    # A chunk write already in a thread may land after the run ends; the sweep takes it.
    def swept() -> bool:
        store.sweep(retention_s=1e9)
        return store.blobs.list(f"jobs/{record.job_id}/") == []

    await wait_for(swept, 5)


async def test_total_chunks_in_flight_are_bounded_across_jobs(
    service: JobService, store: JobStore, settings: Settings, engine: SimulatedEngine
) -> None:
    ids = [service.create(None, long_text(), params()).job_id for _ in range(2)]
    submit = CountingSubmit(engine)
    submit.delay_s = 0.05
    w = worker(store, settings, submit, "A")
    for job_id in ids:
        await run_to_end(w, store, job_id)
    assert submit.max_in_flight == settings.jobs.chunks_in_flight_total  # 3 < 2 jobs x 2


async def test_events_follow_a_job_to_the_end(
    service: JobService, store: JobStore, settings: Settings, engine: SimulatedEngine
) -> None:
    from chatterbox_serve.jobs.events import job_events

    record = service.create(None, long_text(), params())
    assert service.estimate_s(record) is None  # nothing measured yet
    w = worker(store, settings, CountingSubmit(engine), "A")
    events: list[tuple[str, dict[str, object]]] = []

    async def listen() -> None:
        async for event in job_events(service, None, record.job_id, poll_s=0.05):
            events.append(event)

    listener = asyncio.create_task(listen())
    await run_to_end(w, store, record.job_id)
    await asyncio.wait_for(listener, 5)
    kinds = [kind for kind, _ in events]
    ready = [data["chunk_index"] for kind, data in events if kind == "chunk_ready"]
    assert sorted(ready) == list(range(record.total_chunks))  # each chunk once
    assert kinds[0] == "progress" and kinds[-1] == "completed"
    assert "status_change" in kinds
    assert events[-2][1]["progress"] == 100.0
    assert service.estimate_s(service.create(None, long_text(), params())) is not None


async def test_a_jobs_voice_audio_travels_about_once_not_with_every_chunk(
    service: JobService, store: JobStore, settings: Settings, engine: SimulatedEngine
) -> None:
    from chatterbox_serve.engines.base import VoicePrompt
    from chatterbox_serve.jobs import JobRunner

    voice = VoicePrompt.from_bytes(b"voice audio " * 50_000)
    record = service.create(None, long_text(), params(voice="narrator"))
    submit = CountingSubmit(engine)
    runner = JobRunner(
        store, settings, submit, lambda name, by_id: voice, holder="A", retry_backoff_s=0.01
    )
    w = JobWorker(store, runner, max_jobs=2, lease_s=settings.jobs.lease_s)
    await run_to_end(w, store, record.job_id)
    done = store.get(record.job_id)
    assert done is not None and done.state is JobState.COMPLETED and done.total_chunks >= 6
    # Cold, each lane's first chunk misses once and is resent whole; then the model
    # side holds the voice. Before, every chunk carried it.
    lanes = settings.jobs.chunks_in_flight_per_job
    assert voice.size <= submit.voice_bytes <= lanes * voice.size
