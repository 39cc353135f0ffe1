"""Listings and history cost a page, not the whole history: counted on both stores.

Listing once read every job's record (a listing and a read on S3, each) and search
read every job's whole input. Jobs' index entries now keep a summary (what listings
filter, sort and search by), so a page reads its own records only, and no input.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from chatterbox_serve.jobs import HistoryQuery, JobService, JobState, JobStore, owner_of
from tests.jobs.helpers import SENTENCE, CountingBlobs, counting_blobs, job_settings, params

A = owner_of("key-a")
JOBS = 24
PAGE = 5


@pytest.fixture(params=["local", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> CountingBlobs:
    return counting_blobs(request, tmp_path)


@pytest.fixture
def service(blobs: CountingBlobs) -> JobService:
    settings = job_settings(CHATTERBOX_MAX_JOBS_PER_KEY=JOBS)
    ticks = itertools.count(1_700_000_000)
    return JobService(JobStore(blobs), settings, clock=lambda: float(next(ticks)))


def _jobs(service: JobService) -> list[str]:
    ids = []
    for i in range(JOBS):
        text = f"Chapter {i}: " + SENTENCE * 3 + ("A dragon appears. " if i % 6 == 0 else "")
        ids.append(service.create(A, text, params()).job_id)
    for job_id in ids[::2]:
        service.cancel(A, job_id)
    return ids


def test_a_page_reads_its_own_records_and_no_input(
    service: JobService, blobs: CountingBlobs
) -> None:
    ids = _jobs(service)
    blobs.taken()
    found = service.listing(A, None, PAGE, offset=PAGE)
    assert [r.job_id for r in found.page] == ids[::-1][PAGE : 2 * PAGE]
    assert found.total == JOBS and found.has_more
    reads = blobs.taken()
    assert reads["record"] == PAGE and reads["input"] == 0, reads

    query = HistoryQuery(status=JobState.CANCELLED, sort="completed_desc", limit=PAGE)
    page, total = service.history(A, query)
    assert total == JOBS // 2 and len(page) == PAGE
    assert all(r.state is JobState.CANCELLED for r in page)
    reads = blobs.taken()
    assert reads["record"] == PAGE and reads["input"] == 0, reads


def test_search_reads_no_input(service: JobService, blobs: CountingBlobs) -> None:
    ids = _jobs(service)
    blobs.taken()
    page, total = service.history(A, HistoryQuery(search="DRAGON", sort="created_asc"))
    assert [r.job_id for r in page] == ids[::6] and total == JOBS // 6
    reads = blobs.taken()
    assert reads["input"] == 0 and reads["record"] == total, reads


def test_an_entry_from_before_summaries_is_summarised_once(
    service: JobService, blobs: CountingBlobs
) -> None:
    job_id = service.create(A, "Old story. " + SENTENCE * 3, params()).job_id
    store = service.store
    # As stored before: an empty index entry, and a record without the input's start.
    store.update(job_id, lambda r: replace(r, preview="", search_prefix=""))
    blobs.put(f"jobs-index/{A}/{job_id}", b"")
    stored = store.get(job_id)
    assert stored is not None and stored.search_prefix == "" and stored.preview == ""
    blobs.taken()
    page, _ = service.history(A, HistoryQuery(search="old story"))
    assert [r.job_id for r in page] == [job_id]
    assert page[0].preview.startswith("Old story.")
    assert blobs.taken()["input"] == 1
    page, _ = service.history(A, HistoryQuery(search="old story"))
    assert [r.job_id for r in page] == [job_id]
    assert blobs.taken()["input"] == 0  # kept: in the record and in its summary


def test_summaries_follow_record_changes_and_deletes(service: JobService) -> None:
    ids = _jobs(service)
    service.edit(A, ids[1], display_name="Zebra", is_archived=True, tags=["kept"])
    page, total = service.history(A, HistoryQuery(is_archived=True, sort="name_asc"))
    assert [r.job_id for r in page] == [ids[1]] and total == 1
    found, _ = service.history(A, HistoryQuery(search="zebra"))
    assert [r.job_id for r in found] == [ids[1]]
    service.delete(A, ids[1])
    assert service.history(A, HistoryQuery(is_archived=True)) == ([], 0)
    assert service.listing(A, None, 100).total == JOBS - 1


def test_a_summary_written_out_of_order_is_put_right(service: JobService) -> None:
    job_id = service.create(A, "Late news. " + SENTENCE * 3, params()).job_id
    store = service.store
    stale = store.summaries(A)[0]
    service.edit(A, job_id, display_name="Fresh")
    # A slower writer's put of the summary it computed before the edit lands last.
    store._index(A, job_id).put(stale)
    (summary,) = store.summaries(A)
    assert summary.display_name == "Fresh"
