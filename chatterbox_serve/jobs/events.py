"""Progress events of one job, in the original API's SSE shape.

Events, each `event: <type>` with a JSON `data` line:

- `chunk_ready`: a chunk finished; its audio is at `chunk_url` (sent once per chunk);
- `status_change`: the job moved to another state;
- `progress`: percent, current chunk and the estimate from measured throughput,
  sent when any of them changes;
- `completed` or `error`: the last event, when the job is completed, or has failed,
  been cancelled or deleted;
- `idle`: the last event when nothing happened for `idle_timeout_s` (a paused or
  stuck job): the stream ends instead of holding a connection forever, and a client
  that still cares reconnects.

The stream polls the store, so it works from any ingress replica, whichever worker
runs the job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from chatterbox_serve.errors import NotFoundError
from chatterbox_serve.jobs.protocol import API
from chatterbox_serve.jobs.records import JobState
from chatterbox_serve.jobs.service import JobService


async def job_events(
    service: JobService,
    owner: str | None,
    job_id: str,
    poll_s: float = 1.0,
    idle_timeout_s: float = 300.0,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Yield (event type, data) until the job ends; the first look raises 404 if unknown."""
    record = await asyncio.to_thread(service.get, owner, job_id)
    plan = await asyncio.to_thread(service.store.plan, job_id)
    sent: set[int] = set()
    last_state: JobState | None = None
    last_progress: tuple[Any, ...] | None = None
    generation: int | None = None
    last_event = clock()
    while True:
        # Chunk records are read only while the job record counts chunks not yet sent:
        # a paused job's stream costs one record read per poll, not one per chunk.
        if record.generation != generation or len(sent) < record.completed_chunks:
            commits = await asyncio.to_thread(service.commits, record)
        else:
            commits = {}
        generation = record.generation
        before = len(sent), last_state, last_progress
        for index in sorted(set(commits) - sent):
            sent.add(index)
            text = plan.chunks[index]
            yield (
                "chunk_ready",
                {
                    "chunk_index": index,
                    "total_chunks": record.total_chunks,
                    "chunk_url": f"{API}/{job_id}/chunks/{index}",
                    "text_preview": text[:50] + ("..." if len(text) > 50 else ""),
                    "duration_ms": int(commits[index].duration_s * 1000),
                },
            )
        if record.state is not last_state:
            if last_state is not None:
                yield "status_change", {"status": record.state.value, "previous": last_state.value}
            last_state = record.state
        progress = (record.progress_percent, record.current_chunk, record.estimated_remaining_s)
        if progress != last_progress:
            last_progress = progress
            yield (
                "progress",
                {
                    "status": record.state.value,
                    "progress": record.progress_percent,
                    "current_chunk": record.current_chunk,
                    "total_chunks": record.total_chunks,
                    "estimated_remaining_seconds": record.estimated_remaining_s,
                },
            )
        if record.state.finished:
            if record.state is JobState.COMPLETED:
                yield (
                    "completed",
                    {
                        "status": record.state.value,
                        "message": "Job completed successfully",
                        "download_url": f"{API}/{job_id}/download",
                    },
                )
            else:
                yield "error", {"status": record.state.value, "message": record.error}
            return
        if (len(sent), last_state, last_progress) != before:
            last_event = clock()
        elif clock() - last_event >= idle_timeout_s:
            yield (
                "idle",
                {
                    "status": record.state.value,
                    "message": f"No progress for {idle_timeout_s:g} s; the stream ends here. "
                    "Reconnect to keep following the job.",
                },
            )
            return
        await asyncio.sleep(poll_s)
        try:
            record = await asyncio.to_thread(service.get, owner, job_id)
        except NotFoundError:
            yield "error", {"status": "deleted", "message": f"Job {job_id} was deleted."}
            return
