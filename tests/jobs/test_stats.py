"""Stats and the stored-bytes quota read the jobs' summaries, no record: on both stores.

Both once read every record of the caller's jobs, so each submission cost one record
read per job the key stores. The summaries in the jobs' index entries now keep what
they add up (state, stored bytes, processing time, ...), refreshed with the record.
Their values are checked against the same figures computed from the records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.errors import StorageQuotaError, error_payload
from chatterbox_serve.jobs import JobRecord, JobService, JobState, JobStore, owner_of
from tests.jobs.helpers import (
    CountingBlobs,
    CountingSubmit,
    counting_blobs,
    job_settings,
    long_text,
    make_runner,
    params,
    wait_for,
)

A, B = owner_of("key-a"), owner_of("key-b")
DAY_S = 86400.0
FIRST = 1_700_000_000.0  # 2023-11-14


class Clock:
    """Wall time that moves one second a call and can jump ahead (jobs of other months)."""

    def __init__(self) -> None:
        self.now = FIRST

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture(params=["local", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> CountingBlobs:
    return counting_blobs(request, tmp_path)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings() -> Settings:
    return job_settings(CHATTERBOX_MAX_JOBS_PER_KEY=20)


@pytest.fixture
def service(blobs: CountingBlobs, settings: Settings, clock: Clock) -> JobService:
    return JobService(JobStore(blobs, clock=clock), settings, clock=clock)


def stats_from_records(records: list[JobRecord], settings: Settings) -> dict[str, Any]:
    """The stats as they were computed before summaries kept these figures: from records."""
    completed = [r for r in records if r.state is JobState.COMPLETED]
    voices = Counter(r.parameters.voice for r in records if r.parameters.voice)
    months = Counter(
        datetime.fromtimestamp(r.created_at, timezone.utc).strftime("%Y-%m") for r in records
    )
    avg = sum(r.active_s for r in completed) / len(completed) if completed else 0.0
    return {
        "total_jobs": len(records),
        "completed_jobs": len(completed),
        "failed_jobs": sum(1 for r in records if r.state is JobState.FAILED),
        "total_audio_duration_seconds": round(
            sum(r.output_duration_s or 0.0 for r in completed), 3
        ),
        "total_storage_bytes": sum(r.output_size_bytes or 0 for r in completed),
        "average_processing_time_seconds": round(avg, 3) if completed else 0.0,
        "success_rate_percentage": round(100.0 * len(completed) / len(records), 2)
        if records
        else 0.0,
        "most_used_voice": voices.most_common(1)[0][0] if voices else None,
        "jobs_by_month": dict(sorted(months.items())),
        "quota": {
            "active_jobs": sum(1 for r in records if not r.state.finished),
            "max_active_jobs": settings.jobs.max_jobs_per_key,
            "stored_jobs": len(records),
            "max_stored_jobs": settings.tenancy.max_stored_jobs_per_key,
            "stored_bytes": sum(r.stored_bytes for r in records),
            "max_stored_bytes": settings.tenancy.max_stored_bytes_per_key,
        },
    }


async def _start(
    store: JobStore, settings: Settings, engine: SimulatedEngine, job_id: str, **fail: int
) -> asyncio.Future[Any]:
    """A worker's run of the job (chunk `n` fails `fail["c<n>"]` times)."""
    submit = CountingSubmit(engine, {int(k[1:]): v for k, v in fail.items()})
    submit.delay_s = 0.02
    lease = store.claim(job_id, "w1", 30.0)
    assert lease is not None
    return asyncio.ensure_future(make_runner(store, settings, submit).run(job_id, lease))


def _chunks_done(store: JobStore, job_id: str, n: int) -> bool:
    record = store.get(job_id)
    return record is not None and record.completed_chunks >= n


async def make_mix(service: JobService, clock: Clock, engine: SimulatedEngine) -> dict[str, str]:
    """Jobs of key A in every kind of state, of different sizes, over several months."""
    store, settings = service.store, service.settings
    ids: dict[str, str] = {}
    plan = [
        ("completed-wav", 4, "alice", "wav"),
        ("completed-mp3", 9, "bob", "mp3"),
        ("failed", 5, None, "wav"),
        ("cancelled-midway", 8, "bob", "wav"),
        ("processing", 10, None, "wav"),
        ("completed-later", 6, "alice", "wav"),
        ("pending", 3, "alice", "wav"),
    ]
    for name, sentences, voice, fmt in plan:
        clock.now += 20 * DAY_S
        text = long_text(sentences)
        ids[name] = service.create(A, text, params(voice=voice, response_format=fmt)).job_id
    for name in ("completed-wav", "completed-mp3", "completed-later"):
        await (await _start(store, settings, engine, ids[name]))
    await (await _start(store, settings, engine, ids["failed"], c1=settings.jobs.chunk_attempts))
    run = await _start(store, settings, engine, ids["cancelled-midway"])
    await wait_for(lambda: _chunks_done(store, ids["cancelled-midway"], 2))
    service.cancel(A, ids["cancelled-midway"])
    await run
    run = await _start(store, settings, engine, ids["processing"])
    await wait_for(lambda: _chunks_done(store, ids["processing"], 3))
    run.cancel()  # its worker dies mid-job: the record stays `processing`
    with contextlib.suppress(asyncio.CancelledError):
        await run
    await asyncio.sleep(0.3)  # a store write already under way lands
    service.create(B, long_text(7), params(voice="carol"))  # another key's: never counted
    states = {name: store.get(job_id).state for name, job_id in ids.items()}  # type: ignore[union-attr]
    assert states == {
        "completed-wav": JobState.COMPLETED,
        "completed-mp3": JobState.COMPLETED,
        "failed": JobState.FAILED,
        "cancelled-midway": JobState.CANCELLED,
        "processing": JobState.PROCESSING,
        "completed-later": JobState.COMPLETED,
        "pending": JobState.PENDING,
    }
    return ids


def _records(store: JobStore, owner: str) -> list[JobRecord]:
    return store.records(owner)


async def test_stats_equal_the_records_figures_and_read_no_record(
    service: JobService, blobs: CountingBlobs, clock: Clock, engine: SimulatedEngine
) -> None:
    ids = await make_mix(service, clock, engine)
    records = _records(service.store, A)
    expected = stats_from_records(records, service.settings)
    # The mix means something: partial audio counts, outputs differ, months differ.
    partial = {r.job_id: r for r in records}
    assert partial[ids["processing"]].audio_s > 0 and partial[ids["failed"]].audio_s > 0
    assert partial[ids["cancelled-midway"]].stored_bytes > partial[ids["pending"]].stored_bytes
    assert expected["total_storage_bytes"] > 0 and expected["average_processing_time_seconds"] > 0
    assert len(expected["jobs_by_month"]) >= 3 and expected["failed_jobs"] == 1
    blobs.taken()
    assert service.stats(A) == expected
    reads = blobs.taken()
    assert reads["record"] == 0 and reads["input"] == 0, reads
    # Open API (no keys): over every key's jobs, still from the summaries.
    everyone = stats_from_records(_records(service.store, None), service.settings)
    blobs.taken()
    assert service.stats(None) == everyone and everyone["total_jobs"] == len(ids) + 1
    assert blobs.taken()["record"] == 0


async def test_the_quota_counts_stored_bytes_exactly_and_reads_no_record(
    service: JobService, blobs: CountingBlobs, clock: Clock, engine: SimulatedEngine
) -> None:
    await make_mix(service, clock, engine)
    used = sum(r.stored_bytes for r in _records(service.store, A))
    text = long_text(3).strip()

    def with_limit(limit: int) -> JobService:
        settings = job_settings(
            CHATTERBOX_MAX_JOBS_PER_KEY=20, CHATTERBOX_MAX_STORED_BYTES_PER_KEY=limit
        )
        return JobService(service.store, settings, clock=clock)

    blobs.taken()
    with pytest.raises(StorageQuotaError) as full:
        with_limit(used + len(text) - 1).create(A, text, params())
    assert blobs.taken()["record"] == 0  # the whole check, at 7 jobs as at 7000
    payload = error_payload(full.value)
    assert payload.status_code == 507
    assert payload.body == {
        "error": {
            "message": f"This API key stores {used} bytes of jobs; the limit is "
            f"{used + len(text) - 1} (CHATTERBOX_MAX_STORED_BYTES_PER_KEY). "
            "Delete finished jobs to make room.",
            "type": "insufficient_quota",
            "param": None,
            "code": "storage_quota_exceeded",
        }
    }
    with_limit(used + len(text)).create(A, text, params())  # exactly at the limit: room
    blobs.taken()
    with_limit(10**9).create(A, text, params())
    # What an accepted create reads: the records of the key's unfinished jobs (the
    # processing, the pending and the one just made: the cap on unfinished jobs counts
    # them) and its own new record once; none of its finished jobs'.
    assert blobs.taken()["record"] == 3 + 1


async def test_entries_an_earlier_version_wrote_give_the_same_stats_and_quota(
    service: JobService, blobs: CountingBlobs, clock: Clock, engine: SimulatedEngine
) -> None:
    await make_mix(service, clock, engine)
    store = service.store
    expected = stats_from_records(_records(store, A), service.settings)
    keys = blobs.list(f"jobs-index/{A}/")
    for key in keys:  # as the previous version wrote them: without the new fields
        entry = json.loads(blobs.get(key))
        del entry["stored_bytes"], entry["active_s"]
        blobs.put(key, json.dumps(entry).encode())
    blobs.taken()
    assert service.stats(A) == expected
    # Each summarised again from its record, and the rewritten entry checked against it.
    assert blobs.taken()["record"] == 2 * len(keys)
    assert service.stats(A) == expected
    assert blobs.taken()["record"] == 0
    for key in keys:  # and back to the old form: the quota falls back the same way
        entry = json.loads(blobs.get(key))
        del entry["stored_bytes"]
        blobs.put(key, json.dumps(entry).encode())
    used = expected["quota"]["stored_bytes"]
    text = long_text(3).strip()
    tight = job_settings(
        CHATTERBOX_MAX_JOBS_PER_KEY=20, CHATTERBOX_MAX_STORED_BYTES_PER_KEY=used + len(text) - 1
    )
    with pytest.raises(StorageQuotaError, match=f"stores {used} bytes"):
        JobService(store, tight, clock=clock).create(A, text, params())
    assert blobs.taken()["record"] == 2 * len(keys)


async def test_the_sweep_puts_right_a_summary_its_writer_died_before_writing(
    service: JobService, blobs: CountingBlobs, engine: SimulatedEngine
) -> None:
    store = service.store
    job_id = service.create(A, long_text(5), params(voice="alice")).job_id
    key = f"jobs-index/{A}/{job_id}"
    as_created = blobs.get(key)
    await (await _start(store, service.settings, engine, job_id))
    blobs.put(key, as_created)  # the record's later writes landed, their index writes not
    expected = stats_from_records(_records(store, A), service.settings)
    assert expected["completed_jobs"] == 1 and service.stats(A) != expected
    assert store.sweep(retention_s=3600.0) == []
    assert service.stats(A) == expected
