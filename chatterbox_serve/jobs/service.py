"""What the HTTP routes ask of jobs: create, look at, control, edit, retry, list, remove.

Every method takes the caller's owner id (`None` when the API has no keys, which
means everyone sees everything) and raises our client errors, which the ingress
maps onto the OpenAI envelope: unknown or someone else's job 404, a state that
does not allow the action 409, bad input 400, over the per-key cap 429.
"""

from __future__ import annotations

import enum
import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from chatterbox_serve.config import Settings
from chatterbox_serve.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    StorageQuotaError,
    TooManyJobsError,
)
from chatterbox_serve.jobs.records import (
    OPEN_OWNER,
    PREVIEW_CHARS,
    SEARCH_PREFIX_CHARS,
    ChunkCommit,
    JobParameters,
    JobPlan,
    JobRecord,
    JobState,
    JobSummary,
)
from chatterbox_serve.jobs.store import JobGone, JobStore, StaleUpdate, require
from chatterbox_serve.speech.plan import plan_chunks

_CANCELLABLE = (JobState.PENDING, JobState.CHUNKING, JobState.PROCESSING, JobState.PAUSED)
_RETRYABLE = (JobState.FAILED, JobState.CANCELLED)


class HistorySort(str, enum.Enum):
    """The original API's history orders."""

    CREATED_DESC = "created_desc"
    CREATED_ASC = "created_asc"
    COMPLETED_DESC = "completed_desc"
    COMPLETED_ASC = "completed_asc"
    DURATION_DESC = "duration_desc"
    DURATION_ASC = "duration_asc"
    NAME_ASC = "name_asc"
    NAME_DESC = "name_desc"
    SIZE_DESC = "size_desc"
    SIZE_ASC = "size_asc"


@dataclass(frozen=True)
class HistoryQuery:
    status: JobState | None = None
    start: float | None = None
    end: float | None = None
    search: str | None = None
    is_archived: bool | None = None
    sort: HistorySort = HistorySort.COMPLETED_DESC
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class JobsAccess:
    """What the HTTP routes need for jobs: the service, whether keys are on, and a way
    to tell workers a job is ready (a deployment call in Serve; nothing in tests)."""

    service: JobService
    keys_enabled: bool
    notify: Callable[[str], None] = lambda job_id: None
    sse_poll_s: float = 1.0


@dataclass(frozen=True)
class Listing:
    """One page of a listing: its records, and the summaries of every match."""

    page: list[JobRecord]
    matched: tuple[JobSummary, ...]
    offset: int
    has_more: bool

    @property
    def total(self) -> int:
        return len(self.matched)


@dataclass(frozen=True)
class BulkResult:
    succeeded: tuple[str, ...]
    failed: tuple[str, ...]


class JobService:
    """Job operations over a `JobStore`, with the settings' limits."""

    def __init__(
        self, store: JobStore, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    # -- create --------------------------------------------------------------------

    def create(
        self,
        owner: str | None,
        text: str,
        parameters: JobParameters,
        *,
        session_id: str | None = None,
        display_name: str | None = None,
    ) -> JobRecord:
        """Validate, plan (as a speech request of the text would be) and store a new job."""
        text = text.strip()
        low = self.settings.chunking.max_total_length
        high = self.settings.jobs.max_length
        if len(text) <= low:
            raise InvalidRequestError(
                f"'input' is {len(text)} characters; long-text jobs take more than {low} "
                f"(MAX_TOTAL_LENGTH). Use /v1/audio/speech for shorter texts.",
                param="input",
                code="input_too_short",
            )
        if len(text) > high:
            raise InvalidRequestError(
                f"'input' is {len(text)} characters; the limit is {high} (LONG_TEXT_MAX_LENGTH).",
                param="input",
                code="input_too_long",
            )
        chunks = plan_chunks(text, parameters.language, self.settings, family=parameters.model)
        owner = owner or OPEN_OWNER
        self._check_storage_quota(owner, len(text))
        job_id = uuid.uuid4().hex
        self._reserve(owner, job_id, 0)
        now = self.clock()
        record = JobRecord(
            job_id=job_id,
            owner=owner,
            created_at=now,
            updated_at=now,
            state=JobState.PENDING,
            text_length=len(text),
            text_hash=hashlib.sha256(text.encode()).hexdigest(),
            total_chunks=len(chunks),
            total_chars=sum(len(c) for c in chunks),
            parameters=parameters,
            session_id=session_id,
            display_name=display_name,
            preview=text[:PREVIEW_CHARS],
            search_prefix=text[:SEARCH_PREFIX_CHARS].casefold(),
        )
        self.store.create(record, text, JobPlan(tuple(chunks)))
        return record

    def _reserve(self, owner: str, job_id: str, retry_count: int) -> None:
        """Take one of the owner's unfinished-job places, atomically; 429 if none is free."""
        cap = self.settings.jobs.max_jobs_per_key
        active = self.store.reserve_active(owner, job_id, cap, retry_count)
        if active is not None:
            raise TooManyJobsError(
                f"This API key has {active} unfinished jobs; the limit is {cap} "
                "(CHATTERBOX_MAX_JOBS_PER_KEY). Wait for one to finish, or cancel one.",
                param=None,
            )

    def _check_storage_quota(self, owner: str, new_bytes: int) -> None:
        """429 past the stored-jobs quota, 507 past the stored-bytes quota (finished jobs
        count too: they stay for LONG_TEXT_JOB_RETENTION_DAYS on a shared volume)."""
        tenancy = self.settings.tenancy
        stored = self.store.summaries(owner)  # index entries only: no record is read
        if len(stored) >= tenancy.max_stored_jobs_per_key:
            raise TooManyJobsError(
                f"This API key stores {len(stored)} jobs; the limit is "
                f"{tenancy.max_stored_jobs_per_key} (CHATTERBOX_MAX_STORED_JOBS_PER_KEY). "
                "Delete finished jobs (DELETE /v1/audio/speech/long/history?confirm=true).",
                code="stored_jobs_quota_exceeded",
            )
        used = sum(s.stored_bytes for s in stored)
        if used + new_bytes > tenancy.max_stored_bytes_per_key:
            raise StorageQuotaError(
                f"This API key stores {used} bytes of jobs; the limit is "
                f"{tenancy.max_stored_bytes_per_key} (CHATTERBOX_MAX_STORED_BYTES_PER_KEY). "
                "Delete finished jobs to make room.",
            )

    def estimate_s(self, record: JobRecord) -> int | None:
        """Seconds the job should take at the throughput the last finished job measured."""
        rate = self.store.throughput()
        return None if not rate else int(round(record.total_chars / rate))

    # -- look ----------------------------------------------------------------------

    def get(self, owner: str | None, job_id: str) -> JobRecord:
        return require(self.store, job_id, owner)

    def commits(self, record: JobRecord) -> dict[int, ChunkCommit]:
        return self.store.commits(record.job_id, record.generation)

    def chunk(self, owner: str | None, job_id: str, index: int) -> ChunkCommit:
        """A finished chunk; 404 past the last chunk, 409 while it is not done yet."""
        record = self.get(owner, job_id)
        if not 0 <= index < record.total_chunks:
            raise NotFoundError(
                f"Chunk {index} not found for job {job_id}; it has {record.total_chunks}.",
                param="chunk_index",
                code="chunk_not_found",
            )
        commit = self.store.commit(job_id, record.generation, index)
        if commit is None:
            raise ConflictError(f"Chunk {index} audio not yet generated.", param="chunk_index")
        return commit

    def output(self, owner: str | None, job_id: str) -> tuple[JobRecord, str, int]:
        """The finished file: record, key and size; 409 unless the job is completed."""
        record = self.get(owner, job_id)
        if record.state is not JobState.COMPLETED or record.output_key is None:
            raise ConflictError(
                f"Job is not completed (status: {record.state.value}).", param="job_id"
            )
        return record, record.output_key, self.store.blobs.size(record.output_key)

    def details(self, owner: str | None, job_id: str) -> tuple[JobRecord, str, JobPlan]:
        record = self.touch(owner, job_id)
        return record, self.store.input_text(job_id), self.store.plan(job_id)

    def touch(self, owner: str | None, job_id: str) -> JobRecord:
        """The record, with `last_accessed` set to now."""
        self.get(owner, job_id)
        now = self.clock()
        return self._update(job_id, lambda r: replace(r, last_accessed=now))

    # -- control -------------------------------------------------------------------

    def pause(self, owner: str | None, job_id: str) -> JobRecord:
        self.get(owner, job_id)
        now = self.clock()

        def pause(r: JobRecord) -> JobRecord:
            if not r.state.runnable:
                raise ConflictError(f"Cannot pause job in {r.state.value} state.", param="job_id")
            return r.touched(now, state=JobState.PAUSED, processing_paused_at=now)

        return self._update(job_id, pause)

    def resume(self, owner: str | None, job_id: str) -> JobRecord:
        self.get(owner, job_id)
        now = self.clock()

        def resume(r: JobRecord) -> JobRecord:
            if r.state is not JobState.PAUSED:
                raise ConflictError(f"Cannot resume job in {r.state.value} state.", param="job_id")
            # A pause ends a run that did not fail: the runs before a resume are the
            # user's choice, not failures, so they stop counting toward the limit.
            return r.touched(now, state=JobState.PENDING, processing_paused_at=None, attempts=0)

        record = self._update(job_id, resume)
        self.store.enqueue(job_id)
        return record

    def cancel(self, owner: str | None, job_id: str) -> JobRecord:
        self.get(owner, job_id)
        now = self.clock()

        def cancel(r: JobRecord) -> JobRecord:
            if r.state is JobState.CANCELLED:
                return r
            if r.state not in _CANCELLABLE:
                raise ConflictError(f"Cannot cancel job in {r.state.value} state.", param="job_id")
            return r.touched(
                now, state=JobState.CANCELLED, processing_completed_at=now, current_chunk=None
            )

        return self._update(job_id, cancel)

    def delete(self, owner: str | None, job_id: str) -> None:
        record = self.get(owner, job_id)
        self.store.delete(job_id, record.owner)

    def edit(
        self,
        owner: str | None,
        job_id: str,
        *,
        display_name: str | None = None,
        is_archived: bool | None = None,
        tags: Iterable[str] | None = None,
    ) -> JobRecord:
        self.get(owner, job_id)
        now = self.clock()

        def edit(r: JobRecord) -> JobRecord:
            changes: dict[str, Any] = {"last_accessed": now}
            if display_name is not None:
                changes["display_name"] = display_name
            if is_archived is not None:
                changes["is_archived"] = is_archived
            if tags is not None:
                changes["tags"] = tuple(tags)
            return r.touched(now, **changes)

        return self._update(job_id, edit)

    def retry(
        self,
        owner: str | None,
        job_id: str,
        *,
        preserve_chunks: bool = True,
        new_parameters: dict[str, Any] | None = None,
    ) -> JobRecord:
        """Run a failed or cancelled job again, in place.

        With `preserve_chunks`, finished chunks are kept and only the missing ones
        (the failed ones, and those never reached) are synthesised; without it,
        every chunk is made again under a new generation.
        """
        before = self.get(owner, job_id)
        if before.state in _RETRYABLE:
            self._reserve(before.owner, job_id, before.retry_count + 1)
        now = self.clock()

        def retry(r: JobRecord) -> JobRecord:
            if r.state not in _RETRYABLE:
                raise InvalidRequestError(
                    f"Cannot retry job in {r.state.value} state; only failed or cancelled jobs.",
                    param="job_id",
                    code="invalid_state",
                )
            params = r.parameters.with_changes(new_parameters or {})
            return r.touched(
                now,
                state=JobState.PENDING,
                parameters=params,
                generation=r.generation if preserve_chunks else r.generation + 1,
                completed_chunks=r.completed_chunks if preserve_chunks else 0,
                completed_chars=r.completed_chars if preserve_chunks else 0,
                failed_chunks=(),
                error=None,
                processing_completed_at=None,
                output_key=None,
                output_size_bytes=None,
                output_duration_s=None,
                output_watermark=None,
                retry_count=r.retry_count + 1,
                attempts=0,
            )

        record = self._update(job_id, retry)
        if not preserve_chunks:
            self.store.drop_generation(job_id, before.generation)
        self.store.enqueue(job_id)
        return record

    def _update(self, job_id: str, change: Callable[[JobRecord], JobRecord]) -> JobRecord:
        try:
            return self.store.update(job_id, change)
        except JobGone:
            raise NotFoundError(
                f"Job {job_id} not found.", param="job_id", code="job_not_found"
            ) from None
        except StaleUpdate as exc:  # pragma: no cover - our change functions raise client errors
            raise ConflictError(str(exc), param="job_id") from None

    # -- lists ---------------------------------------------------------------------

    def listing(
        self, owner: str | None, status: JobState | None, limit: int, offset: int = 0
    ) -> Listing:
        """The caller's jobs, newest first, one page of them; `status` filters."""
        matched = self.store.summaries(owner)
        if status is not None:
            matched = [s for s in matched if s.state is status]
        matched.sort(key=lambda s: s.created_at, reverse=True)
        return self._page(matched, limit, offset)

    def jobs(
        self, owner: str | None, status: JobState | None, limit: int, offset: int = 0
    ) -> list[JobRecord]:
        return self.listing(owner, status, limit, offset).page

    def history(self, owner: str | None, query: HistoryQuery) -> tuple[list[JobRecord], int]:
        """Filtered, sorted page of jobs, and how many matched before paging."""
        found = self.history_listing(owner, query)
        return found.page, found.total

    def history_listing(self, owner: str | None, query: HistoryQuery) -> Listing:
        """Filtered, sorted page of jobs: filters and order come from the jobs' summaries,
        so only the page's records are read, and no input text."""
        q = query
        matched = self.store.summaries(owner)
        if q.status is not None:
            matched = [s for s in matched if s.state is q.status]
        if q.start is not None:
            matched = [s for s in matched if s.created_at >= q.start]
        if q.end is not None:
            matched = [s for s in matched if s.created_at <= q.end]
        if q.is_archived is not None:
            matched = [s for s in matched if s.is_archived == q.is_archived]
        if q.search:
            needle = q.search.casefold()
            matched = [s for s in matched if needle in s.searchable]
        key, reverse = _SORT_KEYS[HistorySort(q.sort).value]
        matched.sort(key=key, reverse=reverse)
        return self._page(matched, q.limit, q.offset)

    def _page(self, matched: list[JobSummary], limit: int, offset: int) -> Listing:
        """The records of one page of `matched` (a job deleted meanwhile is left out)."""
        chosen = matched[offset : offset + limit]
        records = (self.store.get(s.job_id) for s in chosen)
        page = [r for r in records if r is not None]
        return Listing(page, tuple(matched), offset, has_more=offset + len(chosen) < len(matched))

    def stats(self, owner: str | None) -> dict[str, Any]:
        """The original API's history statistics, over the caller's jobs only; from the
        jobs' summaries, so no record is read."""
        jobs = self.store.summaries(owner)
        completed = [s for s in jobs if s.state is JobState.COMPLETED]
        failed = sum(1 for s in jobs if s.state is JobState.FAILED)
        voices = Counter(s.voice for s in jobs if s.voice)
        months = Counter(
            datetime.fromtimestamp(s.created_at, timezone.utc).strftime("%Y-%m") for s in jobs
        )
        return {
            "total_jobs": len(jobs),
            "completed_jobs": len(completed),
            "failed_jobs": failed,
            "total_audio_duration_seconds": round(sum(s.duration_s or 0.0 for s in completed), 3),
            "total_storage_bytes": sum(s.size_bytes or 0 for s in completed),
            "average_processing_time_seconds": round(
                sum(s.active_s for s in completed) / len(completed), 3
            )
            if completed
            else 0.0,
            "success_rate_percentage": round(100.0 * len(completed) / len(jobs), 2)
            if jobs
            else 0.0,
            "most_used_voice": voices.most_common(1)[0][0] if voices else None,
            "jobs_by_month": dict(sorted(months.items())),
            "quota": self._quota(jobs),
        }

    def _quota(self, jobs: list[JobSummary]) -> dict[str, int]:
        """The caller's usage beside its limits (over every job when the API is open)."""
        limits, tenancy = self.settings.jobs, self.settings.tenancy
        return {
            "active_jobs": sum(1 for s in jobs if not s.state.finished),
            "max_active_jobs": limits.max_jobs_per_key,
            "stored_jobs": len(jobs),
            "max_stored_jobs": tenancy.max_stored_jobs_per_key,
            "stored_bytes": sum(s.stored_bytes for s in jobs),
            "max_stored_bytes": tenancy.max_stored_bytes_per_key,
        }

    def clear_history(self, owner: str | None, session_id: str | None = None) -> tuple[int, int]:
        """Delete the caller's finished jobs (of one session, if given); (cleared, failed)."""
        cleared = failed = 0
        for record in self.store.records(owner):
            if not record.state.finished or session_id not in (None, record.session_id):
                continue
            try:
                self.store.delete(record.job_id, record.owner)
                cleared += 1
            except OSError:
                failed += 1
        return cleared, failed

    def bulk(self, owner: str | None, job_ids: Iterable[str], action: str) -> BulkResult:
        """Apply delete, archive, unarchive or retry to each job; report which failed."""
        ok: list[str] = []
        bad: list[str] = []
        for job_id in job_ids:
            try:
                if action == "delete":
                    self.delete(owner, job_id)
                elif action in ("archive", "unarchive"):
                    self.edit(owner, job_id, is_archived=action == "archive")
                elif action == "retry":
                    self.retry(owner, job_id)
                else:
                    raise InvalidRequestError(f"Unknown bulk action {action!r}.", param="action")
            except (NotFoundError, ConflictError, InvalidRequestError, TooManyJobsError):
                bad.append(job_id)
            else:
                ok.append(job_id)
        return BulkResult(tuple(ok), tuple(bad))


def _completed(s: JobSummary) -> float:
    return s.completed_at or 0.0


_SORT_KEYS: dict[str, tuple[Callable[[JobSummary], Any], bool]] = {
    "created_desc": (lambda s: s.created_at, True),
    "created_asc": (lambda s: s.created_at, False),
    "completed_desc": (_completed, True),
    "completed_asc": (_completed, False),
    "duration_desc": (lambda s: s.duration_s or 0.0, True),
    "duration_asc": (lambda s: s.duration_s or 0.0, False),
    "name_asc": (lambda s: (s.display_name or "").lower(), False),
    "name_desc": (lambda s: (s.display_name or "").lower(), True),
    "size_desc": (lambda s: s.size_bytes or 0, True),
    "size_asc": (lambda s: s.size_bytes or 0, False),
}
