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
