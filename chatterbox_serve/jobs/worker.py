"""The job worker's loop: find queued jobs, claim their leases, run them, sweep old jobs.

Any number of workers, in any number of processes, can poll the same store: the
lease makes sure one runs a job at a time, and a job whose worker died is claimed
again once its lease expires, at most `lease_s + poll_s` later.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid

from chatterbox_serve.jobs.runner import JobRunner, RunReport
from chatterbox_serve.jobs.store import JobStore

logger = logging.getLogger(__name__)


class JobWorker:
    """Claims and runs jobs from the store's queue, a bounded number at a time."""

    def __init__(
        self, store: JobStore, runner: JobRunner, *, max_jobs: int, lease_s: float
    ) -> None:
        self.store = store
        self.runner = runner
        self.max_jobs = max_jobs
        self.lease_s = lease_s
        self.running: dict[str, asyncio.Task[RunReport]] = {}
        self.reports: list[RunReport] = []
        self.id = runner.holder or uuid.uuid4().hex

    async def poll_once(self) -> list[str]:
        """Look at every queued job once; returns the ids started by this call.

        Markers of jobs that need no worker (finished, paused, deleted) are removed.
        The marker's token is read before the record, so a marker that someone
        re-queued after we looked survives (`JobStore.enqueue`).
        """
        started = []
        for job_id, token in await asyncio.to_thread(self.store.queued):
            if job_id in self.running:
                continue
            record = await asyncio.to_thread(self.store.get, job_id)
            if record is None or not record.state.runnable:
                await asyncio.to_thread(self.store.dequeue, job_id, token)
                continue
            if len(self.running) >= self.max_jobs:
                continue
            lease = await asyncio.to_thread(self.store.claim, job_id, self.id, self.lease_s)
            if lease is None:
                continue
            self.adopt(job_id, asyncio.create_task(self.runner.run(job_id, lease)))
            started.append(job_id)
        return started

    def adopt(self, job_id: str, task: asyncio.Task[RunReport]) -> None:
        """Track a run started elsewhere (a direct request), so polls leave it alone."""
        self.running[job_id] = task
        task.add_done_callback(functools.partial(self._finished, job_id))

    def drain_reports(self) -> list[RunReport]:
        """Reports of runs that ended since the last call."""
        reports, self.reports = self.reports, []
        return reports

    def _finished(self, job_id: str, task: asyncio.Task[RunReport]) -> None:
        self.running.pop(job_id, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error("job %s: run ended with an error", job_id, exc_info=exc)
            return
        self.reports.append(task.result())
        del self.reports[:-100]

    async def stop(self) -> None:
        """Cancel every run; their leases lapse and another worker resumes them."""
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
