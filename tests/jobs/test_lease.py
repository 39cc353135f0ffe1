"""A worker holds a job's lease until the final record is written, assembly included.

The heartbeat once stopped before final assembly: for a long job the lease expired
mid-assembly, and every other worker took the job over and assembled it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.jobs import JobService, JobState, JobStore, JobWorker
from chatterbox_serve.jobs.records import JobRecord
from chatterbox_serve.jobs.storage import BlobWriter, LocalJobBlobStore
from tests.jobs.helpers import CountingSubmit, long_text, make_runner, params, wait_for


class _SlowAssembly(JobStore):
    """Final assembly that takes twice the lease term, as a long job's does."""

    def __init__(self, root: Path, seconds: float) -> None:
        super().__init__(LocalJobBlobStore(root))
        self.seconds = seconds
        self.assembling = threading.Event()

    @contextlib.contextmanager
    def output_writer(self, key: str) -> Iterator[BlobWriter]:
        self.assembling.set()
        time.sleep(self.seconds)
        with super().output_writer(key) as writer:
            yield writer


async def test_the_lease_is_held_through_final_assembly(
    tmp_path: Path, settings: Settings, engine: SimulatedEngine
) -> None:
    lease_s = settings.jobs.lease_s
    store = _SlowAssembly(tmp_path / "jobs", seconds=2.5 * lease_s)
    job_id = JobService(store, settings).create(None, long_text(), params()).job_id
    runner = make_runner(store, settings, CountingSubmit(engine), holder="A")
    worker = JobWorker(store, runner, max_jobs=1, lease_s=lease_s)
    await worker.poll_once()
    await asyncio.to_thread(store.assembling.wait, 20)
    await asyncio.sleep(1.5 * lease_s)  # past the term of the lease taken before assembly
    assert store.claim(job_id, "B", lease_s) is None  # still A's: nobody assembles it again
    await wait_for(lambda: store.get(job_id).state.finished, 20)  # type: ignore[union-attr]
    assert store.get(job_id).state is JobState.COMPLETED  # type: ignore[union-attr]
    await wait_for(lambda: not worker.running, 5)


class _SeedSubmit(CountingSubmit):
    """Notes when each call starts and with which seed."""

    def __init__(self, engine: SimulatedEngine) -> None:
        super().__init__(engine)
        self.started: list[tuple[float, int | None]] = []

    def __call__(self, item):  # type: ignore[no-untyped-def]
        self.started.append((time.monotonic(), item.generation.seed))
        return super().__call__(item)


async def test_a_cancelled_then_retried_run_stops_instead_of_running_on_old_parameters(
    tmp_path: Path, settings: Settings, engine: SimulatedEngine
) -> None:
    store = JobStore(LocalJobBlobStore(tmp_path / "jobs"))
    service = JobService(store, settings)
    job_id = service.create(None, long_text(16), params(seed=7)).job_id
    submit = _SeedSubmit(engine)
    submit.delay_s = 0.1
    old = JobWorker(
        store,
        make_runner(store, settings, submit, holder="A"),
        max_jobs=1,
        lease_s=settings.jobs.lease_s,
    )
    await old.poll_once()
    await wait_for(lambda: store.get(job_id).completed_chunks >= 2)  # type: ignore[union-attr]
    service.cancel(None, job_id)
    service.retry(None, job_id, new_parameters={"seed": 9})  # before the old run noticed
    retried_at = time.monotonic()
    await wait_for(lambda: not old.running, 10)
    assert old.reports[-1].outcome == "superseded"
    late = [seed for began, seed in submit.started if began > retried_at and seed == 7]
    assert len(late) <= settings.jobs.chunks_in_flight_per_job  # only calls already due
    new = JobWorker(
        store,
        make_runner(store, settings, submit, holder="B"),
        max_jobs=1,
        lease_s=settings.jobs.lease_s,
    )

    async def poll() -> None:
        while True:
            await new.poll_once()
            await asyncio.sleep(0.05)

    poller = asyncio.create_task(poll())
    try:
        await wait_for(lambda: store.get(job_id).state.finished, 30)  # type: ignore[union-attr]
    finally:
        poller.cancel()
    assert store.get(job_id).state is JobState.COMPLETED  # type: ignore[union-attr]


class _FailingAssembly(JobStore):
    """Final assembly that always fails, as on a full disk."""

    @contextlib.contextmanager
    def output_writer(self, key: str) -> Iterator[BlobWriter]:
        raise OSError(28, "No space left on device")
        yield  # pragma: no cover


async def test_a_job_whose_assembly_keeps_failing_fails_after_the_attempt_limit(
    tmp_path: Path, engine: SimulatedEngine
) -> None:
    from tests.jobs.helpers import job_settings

    settings = job_settings(CHATTERBOX_JOB_MAX_ATTEMPTS=3)
    store = _FailingAssembly(LocalJobBlobStore(tmp_path / "jobs"))
    job_id = JobService(store, settings).create(None, long_text(), params()).job_id
    worker = JobWorker(
        store,
        make_runner(store, settings, CountingSubmit(engine)),
        max_jobs=1,
        lease_s=settings.jobs.lease_s,
    )

    async def poll() -> None:
        while True:
            await worker.poll_once()
            await asyncio.sleep(0.05)

    poller = asyncio.create_task(poll())
    try:
        await wait_for(lambda: store.get(job_id).state.finished, 90)  # type: ignore[union-attr]
    finally:
        poller.cancel()
    record = store.get(job_id)
    assert record is not None and record.state is JobState.FAILED
    assert record.attempts == 3
    assert "3 attempts" in (record.error or "") and "No space left" in (record.error or "")
    assert record.failed_chunks == ()  # every chunk was made: only the assembly failed
    # The run that wrote FAILED may still be winding down on a loaded machine; once it
    # has, a finished job's queue marker goes at the next look.
    await wait_for(lambda: not worker.running, 30)
    await worker.poll_once()
    assert store.queued() == []


async def _one_run(
    jobs: JobStore, settings: Settings, engine: SimulatedEngine, job_id: str
) -> JobRecord:
    """The job's record once one worker's single poll has run it to its end."""
    worker = JobWorker(
        jobs,
        make_runner(jobs, settings, CountingSubmit(engine)),
        max_jobs=1,
        lease_s=settings.jobs.lease_s,
    )
    await worker.poll_once()
    await wait_for(lambda: jobs.get(job_id).state.finished, 60)  # type: ignore[union-attr]
    record = jobs.get(job_id)
    assert record is not None
    return record


async def test_a_job_given_up_lists_the_chunks_a_retry_would_make(
    tmp_path: Path, engine: SimulatedEngine
) -> None:
    """Runs lost one after another (workers that died mid-job) end the job as failed; its
    failed chunks are the ones still to make, as for a chunk that failed itself."""
    from dataclasses import replace

    from tests.jobs.helpers import job_settings

    settings = job_settings(CHATTERBOX_JOB_MAX_ATTEMPTS=2)
    jobs = JobStore(LocalJobBlobStore(tmp_path / "jobs"))
    job = JobService(jobs, settings).create(None, long_text(), params())
    jobs.update(job.job_id, lambda rec: replace(rec, attempts=2))  # two runs lost already
    record = await _one_run(jobs, settings, engine, job.job_id)
    assert record.state is JobState.FAILED
    assert "Gave up after 2 attempts" in (record.error or "")
    assert record.failed_chunks == tuple(range(record.total_chunks)) and record.total_chunks > 1


async def test_pausing_and_resuming_never_uses_up_the_attempt_limit(
    tmp_path: Path, engine: SimulatedEngine
) -> None:
    """A pause ends the run that was going: once, each resume counted as a failed run,
    so a user who paused a job as often as the attempt limit saw it fail unmade."""
    from dataclasses import replace

    from tests.jobs.helpers import job_settings

    settings = job_settings(CHATTERBOX_JOB_MAX_ATTEMPTS=2)
    jobs = JobStore(LocalJobBlobStore(tmp_path / "jobs"))
    service = JobService(jobs, settings)
    job = service.create(None, long_text(), params())
    jobs.update(job.job_id, lambda rec: replace(rec, attempts=2))  # two runs, each paused
    service.pause(None, job.job_id)
    service.resume(None, job.job_id)
    record = await _one_run(jobs, settings, engine, job.job_id)
    assert record.state is JobState.COMPLETED, record.error
    assert record.attempts == 1
