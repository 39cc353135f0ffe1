"""Per-key caps and quotas: every path that makes a job runnable counts, atomically.

The cap once counted only at creation, read-then-created (so racing creates all
passed), and retry and bulk retry never asked: a cap of 2 gave 4 active jobs.
"""

from __future__ import annotations

import threading

import pytest

from chatterbox_serve.errors import (
    StorageQuotaError,
    TooManyJobsError,
    error_payload,
)
from chatterbox_serve.jobs import JobService, JobState, JobStore, owner_of
from chatterbox_serve.jobs.storage import JobBlobStore
from tests.jobs.helpers import job_settings, long_text, params

A, B = owner_of("key-a"), owner_of("key-b")


def _active(service: JobService, owner: str) -> int:
    return sum(1 for r in service.store.records(owner) if not r.state.finished)


def test_retry_and_bulk_retry_respect_the_cap(service: JobService) -> None:
    ids = [service.create(A, long_text(), params()).job_id for _ in range(3)]  # cap 3
    for job_id in ids[:2]:
        service.cancel(A, job_id)
    service.create(A, long_text(), params())
    service.create(A, long_text(), params())  # 3 active again: 2 new, 1 old
    with pytest.raises(TooManyJobsError):
        service.retry(A, ids[0])
    result = service.bulk(A, ids[:2], "retry")
    assert result.succeeded == () and set(result.failed) == set(ids[:2])
    assert _active(service, A) == 3
    assert service.get(A, ids[0]).state is JobState.CANCELLED


def test_racing_creates_and_retries_never_pass_the_cap(store: JobStore) -> None:
    service = JobService(store, job_settings(CHATTERBOX_MAX_JOBS_PER_KEY=2))
    cancelled = [service.create(A, long_text(), params()).job_id for _ in range(2)]
    for job_id in cancelled:
        service.cancel(A, job_id)
    start = threading.Barrier(8)
    refused: list[Exception] = []

    def attempt(i: int) -> None:
        start.wait()
        try:
            if i < 2:
                service.retry(A, cancelled[i])
            else:
                service.create(A, long_text(), params())
        except TooManyJobsError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _active(service, A) == 2
    assert len(refused) == 6


def test_stored_jobs_and_bytes_have_per_key_quotas(blobs: JobBlobStore) -> None:
    store = JobStore(blobs)
    service = JobService(
        store,
        job_settings(
            CHATTERBOX_MAX_JOBS_PER_KEY=10,
            CHATTERBOX_MAX_STORED_JOBS_PER_KEY=3,
            CHATTERBOX_MAX_STORED_BYTES_PER_KEY=len(long_text()) * 2 + 10,
        ),
    )
    # A create-cancel loop once filled the shared volume: finished jobs count too.
    for _ in range(2):
        service.cancel(A, service.create(A, long_text(), params()).job_id)
    with pytest.raises(StorageQuotaError) as full:
        service.create(A, long_text(), params())
    payload = error_payload(full.value)
    assert payload.status_code == 507
    assert payload.body["error"]["code"] == "storage_quota_exceeded"
    assert "CHATTERBOX_MAX_STORED_BYTES_PER_KEY" in payload.body["error"]["message"]
    service.create(B, long_text(), params())  # another key has its own quota
    roomy = JobService(store, job_settings(CHATTERBOX_MAX_STORED_JOBS_PER_KEY=2))
    with pytest.raises(TooManyJobsError) as many:
        roomy.create(A, long_text(), params())
    err = error_payload(many.value).body["error"]
    assert err["code"] == "stored_jobs_quota_exceeded"
    assert "CHATTERBOX_MAX_STORED_JOBS_PER_KEY" in err["message"]
    quota = service.stats(A)["quota"]
    assert quota == {
        "active_jobs": 0,
        "max_active_jobs": 10,
        "stored_jobs": 2,
        "max_stored_jobs": 3,
        "stored_bytes": 2 * len(long_text().strip()),
        "max_stored_bytes": len(long_text()) * 2 + 10,
    }


def test_a_deleted_job_frees_its_place_at_once(service: JobService) -> None:
    ids = [service.create(A, long_text(), params()).job_id for _ in range(3)]  # cap 3
    service.delete(A, ids[0])  # running, not finished: deleted, not cancelled
    service.create(A, long_text(), params())


def test_listing_and_search_read_no_job_inputs(blobs: JobBlobStore) -> None:
    # Search once read every job's whole input, and listings read each one's preview.
    reads: list[str] = []

    class CountingStore(JobStore):
        def input_text(self, job_id: str) -> str:
            reads.append(job_id)
            return super().input_text(job_id)

    store = CountingStore(blobs)
    service = JobService(store, job_settings(CHATTERBOX_MAX_JOBS_PER_KEY=10))
    for word in ("alpha", "beta"):
        service.create(A, f"{word} " + long_text(), params())
    from chatterbox_serve.jobs import HistoryQuery

    page, total = service.history(A, HistoryQuery(search="BETA"))
    assert total == 1 and page[0].preview.startswith("beta The quick")
    assert len(page[0].preview) == 100
    assert reads == []
