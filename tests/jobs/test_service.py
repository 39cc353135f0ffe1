"""Job operations as the routes see them: limits, caps, ownership, states, lists, stats."""

from __future__ import annotations

import pytest

from chatterbox_serve.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    TooManyJobsError,
    error_payload,
)
from chatterbox_serve.jobs import HistoryQuery, JobService, JobState, owner_of
from tests.jobs.helpers import long_text, params

A, B = owner_of("key-a"), owner_of("key-b")


def test_input_must_be_longer_than_speech_and_within_the_job_limit(service: JobService) -> None:
    with pytest.raises(InvalidRequestError) as short:
        service.create(A, "x" * 100, params())
    assert short.value.code == "input_too_short" and short.value.param == "input"
    with pytest.raises(InvalidRequestError) as long:
        service.create(A, "word " * 1001, params())
    assert long.value.code == "input_too_long"
    record = service.create(A, "  " + long_text() + "  ", params())
    assert record.text_length == len(long_text().strip()) and record.owner == A


def test_unfinished_jobs_per_key_are_capped_with_429(service: JobService) -> None:
    ids = [service.create(A, long_text(), params()).job_id for _ in range(3)]
    with pytest.raises(TooManyJobsError) as over:
        service.create(A, long_text(), params())
    payload = error_payload(over.value)
    assert payload.status_code == 429 and payload.body["error"]["code"] == "too_many_jobs"
    service.create(B, long_text(), params())  # another key has its own allowance
    service.cancel(A, ids[0])  # a finished job no longer counts
    service.create(A, long_text(), params())


def test_other_keys_get_404_for_everything(service: JobService) -> None:
    job_id = service.create(A, long_text(), params()).job_id
    for action in (
        lambda: service.get(B, job_id),
        lambda: service.pause(B, job_id),
        lambda: service.resume(B, job_id),
        lambda: service.cancel(B, job_id),
        lambda: service.delete(B, job_id),
        lambda: service.edit(B, job_id, display_name="mine now"),
        lambda: service.retry(B, job_id),
        lambda: service.output(B, job_id),
        lambda: service.chunk(B, job_id, 0),
    ):
        with pytest.raises(NotFoundError):
            action()
    assert service.jobs(B, None, 10) == [] and service.stats(B)["total_jobs"] == 0
    assert [r.job_id for r in service.jobs(None, None, 10)] == [job_id]  # no keys: all
    assert service.bulk(B, [job_id], "delete").failed == (job_id,)
    assert service.get(A, job_id).state is JobState.PENDING


def test_actions_check_the_state(service: JobService) -> None:
    job_id = service.create(A, long_text(), params()).job_id
    with pytest.raises(ConflictError):
        service.resume(A, job_id)
    with pytest.raises(ConflictError):
        service.output(A, job_id)
    with pytest.raises(ConflictError):
        service.chunk(A, job_id, 0)
    with pytest.raises(NotFoundError):
        service.chunk(A, job_id, 999)
    with pytest.raises(InvalidRequestError) as retry:
        service.retry(A, job_id)
    assert retry.value.code == "invalid_state"
    assert service.pause(A, job_id).state is JobState.PAUSED
    with pytest.raises(ConflictError):
        service.pause(A, job_id)
    assert service.resume(A, job_id).state is JobState.PENDING
    assert service.cancel(A, job_id).state is JobState.CANCELLED
    assert service.cancel(A, job_id).state is JobState.CANCELLED  # idempotent
    with pytest.raises(ConflictError):
        service.pause(A, job_id)


def test_edit_history_stats_and_bulk(service: JobService) -> None:
    first = service.create(A, long_text(), params(voice="alice")).job_id
    second = service.create(A, long_text(3), params(voice="alice")).job_id
    third = service.create(A, long_text(4), params(voice="bob")).job_id
    edited = service.edit(A, first, display_name="Chapter 1", tags=["book"], is_archived=True)
    assert (edited.display_name, edited.tags, edited.is_archived) == ("Chapter 1", ("book",), True)
    page, total = service.history(A, HistoryQuery(is_archived=False, sort="created_asc"))
    assert [r.job_id for r in page] == [second, third] and total == 2
    found, _ = service.history(A, HistoryQuery(search="chapter"))
    assert [r.job_id for r in found] == [first]
    paged, total = service.history(A, HistoryQuery(sort="created_desc", limit=1, offset=1))
    assert [r.job_id for r in paged] == [second] and total == 3
    stats = service.stats(A)
    assert stats["total_jobs"] == 3 and stats["most_used_voice"] == "alice"
    assert stats["success_rate_percentage"] == 0.0
    service.cancel(A, third)
    result = service.bulk(A, [first, "missing", third], "unarchive")
    assert result.succeeded == (first, third) and result.failed == ("missing",)
    assert service.bulk(A, [third], "retry").succeeded == (third,)
    service.cancel(A, second)
    assert service.clear_history(A) == (1, 0)  # only the finished one
    assert {r.job_id for r in service.jobs(A, None, 10)} == {first, third}
    assert [r.job_id for r in service.jobs(A, JobState.PENDING, 10)] == [third, first]
    assert [r.job_id for r in service.jobs(A, JobState.PENDING, 1)] == [third]
