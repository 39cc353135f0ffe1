"""The job worker deployment: runs long-text jobs from the job store on the model deployment.

Work reaches a worker two ways. The ingress calls `run_job` when a job is created,
resumed or retried; that call lasts as long as the job runs, so Serve's autoscaler
sees running jobs as ongoing requests and adds replicas (up to `max_replicas`) when
each has `jobs_per_worker` of them. And every replica polls the store's queue, which
is how jobs survive everything: a job whose worker died is claimed again once its
lease expires, and after a restart of the whole application its jobs are found
in the store and resumed from their last finished chunk.

Chunks go to the model's `synthesize_background`, which admits them to a batch
only where interactive requests leave room (deployments/admission.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import SynthesisRequest, VoicePrompt
from chatterbox_serve.jobs import JobRunner, JobStore, JobWorker, build_job_blob_store
from chatterbox_serve.voices import resolve_voice
from chatterbox_serve.voices.library import build_voice_library
from deployments.cluster_status import ReplicaLoad, StatusReporter
from deployments.metrics import JobMetrics
from deployments.model_routing import ModelHandles

logger = logging.getLogger("ray.serve")

SWEEP_EVERY_S = 600.0
# Jobs by state, for the gauge: reads every record, so not on every poll.
COUNT_EVERY_S = 15.0


class JobWorkerDeployment:
    """Claims queued jobs and feeds their chunks to the model deployment."""

    def __init__(self, models: dict[str, DeploymentHandle[Any]], settings: Settings) -> None:
        """`models`: each loaded family's model deployment, by family name."""
        self.settings = settings
        self.store = JobStore(build_job_blob_store(settings))
        self._voices = build_voice_library(settings)
        self._models = ModelHandles(models, settings.engine.default_family)
        self._metrics = JobMetrics()
        # Reported to `/status` and `/memory` like every deployment; `run_job` is its load.
        self._load = ReplicaLoad()
        self._reporter = StatusReporter(self._load)
        try:
            holder = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a replica (tests building the class directly)
            holder = uuid.uuid4().hex
        runner = JobRunner(
            self.store,
            settings,
            self._submit,
            self._resolve,
            holder=f"{holder}-{uuid.uuid4().hex[:6]}",
            on_chunk=self._metrics.chunk,
        )
        self.worker = JobWorker(
            self.store,
            runner,
            max_jobs=settings.jobs.jobs_per_worker,
            lease_s=settings.jobs.lease_s,
        )
        self._loop = asyncio.get_running_loop().create_task(self._poll_forever())

    def _submit(self, item: SynthesisRequest) -> Any:
        return self._models.of(item).synthesize_background.remote(item)

    def _resolve(self, voice: str | None, by_id: bool) -> VoicePrompt | None:
        return resolve_voice(voice, self._voices, by_id=by_id).prompt

    async def run_job(self, job_id: str) -> str:
        """Run one job to its end on this replica, unless another worker holds it."""
        with self._load.track():
            return await self._run_job(job_id)

    async def _run_job(self, job_id: str) -> str:
        task = self.worker.running.get(job_id)
        if task is None:
            lease = await asyncio.to_thread(
                self.store.claim, job_id, self.worker.id, self.settings.jobs.lease_s
            )
            if lease is None:
                return "held elsewhere"
            task = asyncio.create_task(self.worker.runner.run(job_id, lease))
            self.worker.adopt(job_id, task)
        report = await asyncio.shield(task)
        return report.outcome

    async def _poll_forever(self) -> None:
        last_sweep = last_count = 0.0
        while True:
            try:
                await self.worker.poll_once()
                now = time.monotonic()
                if now - last_sweep > SWEEP_EVERY_S:
                    last_sweep = now
                    retention = self.settings.jobs.retention_days * 86400
                    removed = await asyncio.to_thread(self.store.sweep, retention)
                    if removed:
                        logger.info("Job retention removed %d jobs", len(removed))
                if now - last_count > COUNT_EVERY_S:
                    last_count = now
                    records = await asyncio.to_thread(self.store.records, None)
                    self._metrics.states(records)
                for report in self.worker.drain_reports():
                    self._metrics.run(report)
            except Exception:
                logger.exception("Job worker poll failed; retrying")
            await asyncio.sleep(self.settings.jobs.poll_s)

    def check_health(self) -> None:
        if self._loop.done():
            raise RuntimeError("job worker loop ended")

    def status(self) -> dict[str, Any]:
        return {"worker": self.worker.id, "running": sorted(self.worker.running)}

    async def __del__(self) -> None:
        self._reporter.stop()
        self._loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._loop
        await self.worker.stop()
