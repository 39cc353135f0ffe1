"""The job store: records, plans, leases, queue markers, chunk audio and outputs.

Keys (all built from random job ids and integers, never from user input):

    jobs/<id>/input.txt                     the input text (created once)
    jobs/<id>/plan.json                     the chunk texts (created once)
    jobs/<id>/record/<version>.json         the record, one key per version
    jobs/<id>/lease/<epoch>.json            the lease, one key per epoch
    jobs/<id>/g<gen>/<n>.json               chunk n is done (created once)
    jobs/<id>/g<gen>/<n>-<nonce>.wav        its audio, named by the commit
    jobs/<id>/output/<gen>-<nonce>.<fmt>    the final file, named by the record
    jobs-index/<owner>/<id>                 the job exists, whose it is, and its summary
    jobs-active/<owner>/<version>.json      the owner's runnable jobs (a versioned cell)
    jobs-queue/<id>                         a worker should look at the job

A versioned cell (record, lease) is a folder of numbered keys; the highest is
current. A write creates the next number with an exclusive create, so of two
writers that read the same version exactly one succeeds: a compare-and-swap built
from the store's `create`. Old versions are pruned behind the writer, and a writer
whose slot was pruned (it read very long ago) sees that and withdraws its write.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from chatterbox_serve.errors import NotFoundError
from chatterbox_serve.jobs.records import (
    PREVIEW_CHARS,
    SEARCH_PREFIX_CHARS,
    ChunkCommit,
    JobPlan,
    JobRecord,
    JobSummary,
    Lease,
)
from chatterbox_serve.jobs.storage import BlobWriter, JobBlobStore

# Versions kept per cell; a writer more than this many versions behind is refused.
_KEEP_VERSIONS = 32
# Files of an unindexed job older than this are debris of a deleted job.
_DEBRIS_AGE_S = 3600.0
# A cap reservation counts this long while its job's record does not show it yet.
_RESERVATION_GRACE_S = 30.0


class JobGone(Exception):
    """The job's record no longer exists (deleted while someone was working on it)."""


class StaleUpdate(Exception):
    """An update function refuses the current record; the store leaves it unchanged."""


@dataclass(frozen=True)
class Versioned:
    version: int
    data: bytes


class VersionedCell:
    """A compare-and-swap register over numbered keys in one folder."""

    def __init__(self, store: JobBlobStore, folder: str) -> None:
        self.store = store
        self.folder = folder

    def _key(self, version: int) -> str:
        return f"{self.folder}{version:010d}.json"

    def read(self) -> Versioned | None:
        for _ in range(5):
            keys = self.store.list(self.folder)
            if not keys:
                return None
            latest = keys[-1]
            try:
                data = self.store.get(latest)
            except FileNotFoundError:
                continue  # pruned between list and get: a newer version exists
            return Versioned(int(latest.rsplit("/", 1)[1].split(".")[0]), data)
        raise RuntimeError(f"cannot read a stable version of {self.folder}")

    def write(self, expected: int, data: bytes) -> bool:
        """Write version `expected + 1`; False if another writer got there first."""
        version = expected + 1
        try:
            self.store.create(self._key(version), data)
        except FileExistsError:
            return False
        if version > _KEEP_VERSIONS:
            self.store.delete(self._key(version - _KEEP_VERSIONS))
        # A writer that read long ago may find its slot free again because it was
        # pruned; pruning slot v needs version v + _KEEP_VERSIONS to exist, so seeing
        # that far ahead means our write is stale: withdraw it and report a conflict.
        latest = self.store.list(self.folder)[-1]
        if int(latest.rsplit("/", 1)[1].split(".")[0]) >= version + _KEEP_VERSIONS:
            self.store.delete(self._key(version))
            return False
        # The version we replaced is gone: the cell was deleted while we wrote (a job
        # deleted under a worker). Withdraw, so the write cannot bring it back.
        if expected > 0 and not self._exists(expected):
            self.store.delete(self._key(version))
            return False
        return True

    def _exists(self, version: int) -> bool:
        try:
            self.store.get(self._key(version))
        except FileNotFoundError:
            return False
        return True


class JobStore:
    """Everything about jobs that is kept; every method is safe across processes."""

    def __init__(self, blobs: JobBlobStore, clock: Callable[[], float] = time.time) -> None:
        self.blobs = blobs
        self.clock = clock

    # -- creation and records ------------------------------------------------------

    def create(self, record: JobRecord, text: str, plan: JobPlan) -> None:
        base = f"jobs/{record.job_id}/"
        self.blobs.create(base + "input.txt", text.encode())
        self.blobs.create(base + "plan.json", plan.to_json())
        if not self._record_cell(record.job_id).write(0, record.to_json()):
            raise FileExistsError(record.job_id)
        self._index(record.owner, record.job_id).put(JobSummary.of(record))
        self.enqueue(record.job_id)

    def _index(self, owner: str, job_id: str) -> _IndexEntry:
        return _IndexEntry(self, f"jobs-index/{owner}/{job_id}", job_id)

    def _record_cell(self, job_id: str) -> VersionedCell:
        return VersionedCell(self.blobs, f"jobs/{job_id}/record/")

    def get(self, job_id: str) -> JobRecord | None:
        current = self._record_cell(job_id).read()
        return None if current is None else JobRecord.from_json(current.data)

    def update(self, job_id: str, change: Callable[[JobRecord], JobRecord]) -> JobRecord:
        """Apply `change` to the current record until it lands (optimistic concurrency).

        Raises:
            JobGone: the job no longer exists.
            StaleUpdate: raised by `change` itself to give up without writing.
        """
        cell = self._record_cell(job_id)
        while True:
            current = cell.read()
            if current is None:
                raise JobGone(job_id)
            old = JobRecord.from_json(current.data)
            new = change(old)
            if cell.write(current.version, new.to_json()):
                if JobSummary.of(new) != JobSummary.of(old):
                    self._index(new.owner, job_id).put(JobSummary.of(new))
                return new

    def plan(self, job_id: str) -> JobPlan:
        return JobPlan.from_json(self.blobs.get(f"jobs/{job_id}/plan.json"))

    def input_text(self, job_id: str) -> str:
        return self.blobs.get(f"jobs/{job_id}/input.txt").decode()

    def owners_jobs(self, owner: str | None) -> list[str]:
        """Job ids of one owner, or of everyone when `owner` is None."""
        prefix = "jobs-index/" if owner is None else f"jobs-index/{owner}/"
        return [key.rsplit("/", 1)[1] for key in self.blobs.list(prefix)]

    def summaries(self, owner: str | None) -> list[JobSummary]:
        """The summary of every job of one owner (of everyone when `owner` is None).

        One listing and one batch of small reads; no record and no input is read,
        except once for a job whose entry an earlier version wrote (no summary, or one
        lacking a field this version's has).
        """
        prefix = "jobs-index/" if owner is None else f"jobs-index/{owner}/"
        keys = self.blobs.list(prefix)
        found = self.blobs.get_many(keys)
        out = []
        for key in keys:
            _, key_owner, job_id = key.split("/")
            summary = _IndexEntry(self, key, job_id).parse(found.get(key))
            if summary is None and key in found:
                summary = self._summarise_old(key_owner, job_id)
            if summary is not None:
                out.append(summary)
        return out

    def _summarise_old(self, owner: str, job_id: str) -> JobSummary | None:
        """Write the summary of a job whose index entry has none, or an earlier version's,
        from its record, with its input's preview and search prefix, read this once."""
        record = self.get(job_id)
        if record is None:
            return None
        if not record.search_prefix:
            try:
                text = self.input_text(job_id)
            except FileNotFoundError:
                text = ""
            preview, prefix = text[:PREVIEW_CHARS], text[:SEARCH_PREFIX_CHARS].casefold()
            with contextlib.suppress(JobGone):
                record = self.update(
                    job_id, lambda r: replace(r, preview=preview, search_prefix=prefix)
                )
        summary = JobSummary.of(record)
        self._index(owner, job_id).put(summary)
        return summary

    def records(self, owner: str | None) -> list[JobRecord]:
        found = []
        for job_id in self.owners_jobs(owner):
            record = self.get(job_id)
            if record is not None:
                found.append(record)
        return found

    # -- the per-owner cap on unfinished jobs ---------------------------------------

    def reserve_active(self, owner: str, job_id: str, cap: int, retry_count: int = 0) -> int | None:
        """Count `job_id` among the owner's unfinished jobs if fewer than `cap` are.

        The owner's set of unfinished jobs is one versioned cell, so of any number of
        replicas reserving at once only as many succeed as the cap leaves room for.
        Entries whose job has finished or gone are dropped as the set is read. An entry
        whose record does not show it yet (not created, or not yet at `retry_count`:
        the caller writes the record after reserving) counts for
        `_RESERVATION_GRACE_S`.

        Returns None when reserved, else how many unfinished jobs the owner has.
        """
        cell = VersionedCell(self.blobs, f"jobs-active/{owner}/")
        while True:
            current = cell.read()
            if current is None:
                unfinished = (r for r in self.records(owner) if not r.state.finished)
                held = {r.job_id: (0.0, r.retry_count) for r in unfinished}
                version = 0
            else:
                held = {k: (float(t), int(n)) for k, (t, n) in json.loads(current.data).items()}
                version = current.version
            now = self.clock()
            held = {k: v for k, v in held.items() if k != job_id and self._counts(k, *v, now)}
            if len(held) >= cap:
                return len(held)
            held[job_id] = (now, retry_count)
            if cell.write(version, json.dumps(held, sort_keys=True).encode()):
                return None

    def _counts(self, job_id: str, reserved_at: float, retry_count: int, now: float) -> bool:
        record = self.get(job_id)
        if record is None or record.retry_count < retry_count:
            return now - reserved_at < _RESERVATION_GRACE_S
        return not record.state.finished

    # -- measured throughput ------------------------------------------------------

    def throughput(self) -> float | None:
        """Characters per second of the last finished job, for estimates of new ones."""
        try:
            return float(self.blobs.get("jobs-stats/throughput").decode())
        except (FileNotFoundError, ValueError):
            return None

    def record_throughput(self, chars_per_s: float) -> None:
        self.blobs.put("jobs-stats/throughput", f"{chars_per_s:.3f}".encode())

    # -- the work queue ------------------------------------------------------------

    def enqueue(self, job_id: str) -> None:
        """Ask workers to look at a job. Write the record first, then call this.

        Each call writes a fresh token, so a worker that read an older token cannot
        remove a marker written after it looked (see `dequeue`).
        """
        self.blobs.put(f"jobs-queue/{job_id}", uuid.uuid4().hex.encode())

    def queued(self) -> list[tuple[str, bytes]]:
        """(job id, token) of every queued job; read the token before the record."""
        out = []
        for key in self.blobs.list("jobs-queue/"):
            with contextlib.suppress(FileNotFoundError):
                out.append((key.rsplit("/", 1)[1], self.blobs.get(key)))
        return out

    def queue_token(self, job_id: str) -> bytes | None:
        try:
            return self.blobs.get(f"jobs-queue/{job_id}")
        except FileNotFoundError:
            return None

    def dequeue(self, job_id: str, token: bytes) -> bool:
        return self.blobs.take(f"jobs-queue/{job_id}", token)

    # -- leases --------------------------------------------------------------------

    def _lease_cell(self, job_id: str) -> VersionedCell:
        return VersionedCell(self.blobs, f"jobs/{job_id}/lease/")

    def lease(self, job_id: str) -> Lease | None:
        current = self._lease_cell(job_id).read()
        return None if current is None else Lease.from_json(current.data, current.version)

    def claim(self, job_id: str, holder: str, ttl_s: float) -> Lease | None:
        """Take the job's lease if it is free, expired or already ours; None otherwise."""
        now = self.clock()
        current = self.lease(job_id)
        if current is not None and current.live(now) and current.holder != holder:
            return None
        epoch = 0 if current is None else current.epoch
        new = Lease(holder, now + ttl_s, epoch + 1)
        return new if self._lease_cell(job_id).write(epoch, new.to_json()) else None

    def renew(self, lease: Lease, job_id: str, ttl_s: float) -> Lease | None:
        """Extend our lease; None if it was lost (taken over after it expired)."""
        current = self.lease(job_id)
        if current is None or current.epoch != lease.epoch or current.holder != lease.holder:
            return None
        new = Lease(lease.holder, self.clock() + ttl_s, lease.epoch + 1)
        return new if self._lease_cell(job_id).write(lease.epoch, new.to_json()) else None

    def release(self, lease: Lease, job_id: str) -> None:
        """Give the lease up at once, so another worker need not wait for it to expire."""
        with contextlib.suppress(FileNotFoundError):
            self._lease_cell(job_id).write(lease.epoch, Lease(lease.holder, 0.0).to_json())

    # -- chunks --------------------------------------------------------------------

    def commit_chunk(self, job_id: str, generation: int, commit: ChunkCommit, wav: bytes) -> bool:
        """Store one chunk's audio and mark it done; False if it was already done.

        The audio goes under a fresh name first; the commit marker, created once,
        names it. A second worker finishing the same chunk loses the create and
        removes its own audio, so a chunk is never stored twice.
        """
        folder = f"jobs/{job_id}/g{generation}/"
        audio_key = f"{folder}{commit.index:06d}-{uuid.uuid4().hex[:12]}.wav"
        self.blobs.put(audio_key, wav)
        try:
            self.blobs.create(
                f"{folder}{commit.index:06d}.json",
                ChunkCommit(**{**commit.__dict__, "audio_key": audio_key}).to_json(),
            )
        except FileExistsError:
            self.blobs.delete(audio_key)
            return False
        return True

    def commits(self, job_id: str, generation: int) -> dict[int, ChunkCommit]:
        """Every finished chunk of a generation, by index."""
        folder = f"jobs/{job_id}/g{generation}/"
        keys = [k for k in self.blobs.list(folder) if k.endswith(".json")]
        found = self.blobs.get_many(keys)
        commits = (ChunkCommit.from_json(raw) for raw in found.values())
        return {c.index: c for c in commits}

    def commit(self, job_id: str, generation: int, index: int) -> ChunkCommit | None:
        try:
            raw = self.blobs.get(f"jobs/{job_id}/g{generation}/{index:06d}.json")
        except FileNotFoundError:
            return None
        return ChunkCommit.from_json(raw)

    def chunk_audio(self, commit: ChunkCommit) -> bytes:
        return self.blobs.get(commit.audio_key)

    def drop_unreferenced_audio(self, job_id: str, generation: int) -> int:
        """Delete chunk audio no commit names: left by a worker that died between
        writing a chunk's audio and committing it. Returns how many were removed."""
        named = {c.audio_key for c in self.commits(job_id, generation).values()}
        folder = f"jobs/{job_id}/g{generation}/"
        stray = [k for k in self.blobs.list(folder) if k.endswith(".wav") and k not in named]
        for key in stray:
            self.blobs.delete(key)
        return len(stray)

    def drop_generation(self, job_id: str, generation: int) -> None:
        for key in self.blobs.list(f"jobs/{job_id}/g{generation}/"):
            self.blobs.delete(key)

    # -- output --------------------------------------------------------------------

    def output_key(self, job_id: str, generation: int, fmt: str) -> str:
        return f"jobs/{job_id}/output/{generation}-{uuid.uuid4().hex[:12]}.{fmt}"

    @contextlib.contextmanager
    def output_writer(self, key: str) -> Iterator[BlobWriter]:
        with self.blobs.open_writer(key) as writer:
            yield writer

    # -- removal -------------------------------------------------------------------

    def delete(self, job_id: str, owner: str) -> None:
        """Remove a job and everything it stored; the record goes first, so a worker
        still running it stops at its next update."""
        for key in self.blobs.list(f"jobs/{job_id}/record/"):
            self.blobs.delete(key)
        for key in self.blobs.list(f"jobs/{job_id}/"):
            self.blobs.delete(key)
        self.blobs.delete(f"jobs-index/{owner}/{job_id}")
        self.blobs.delete(f"jobs-queue/{job_id}")
        self._unreserve(owner, job_id)

    def _unreserve(self, owner: str, job_id: str) -> None:
        """Drop a deleted job from the owner's unfinished set at once: with its record
        gone, `reserve_active` could not tell it from a job still being created."""
        cell = VersionedCell(self.blobs, f"jobs-active/{owner}/")
        while (current := cell.read()) is not None:
            held = json.loads(current.data)
            if held.pop(job_id, None) is None:
                return
            if cell.write(current.version, json.dumps(held, sort_keys=True).encode()):
                return

    def sweep(self, retention_s: float) -> list[str]:
        """Delete finished jobs older than `retention_s`, and debris of deleted jobs.

        Debris: files of a job whose record is gone, which a worker that was still
        finishing a chunk can leave behind after a delete. A kept job's summary that
        differs from its record (its writer died between the record and the index
        entry) is written again, so stats and quotas do not keep a stale figure.
        Returns the ids removed.
        """
        now = self.clock()
        removed = []
        keys = self.blobs.list("jobs-index/")
        entries = self.blobs.get_many(keys)
        for key in keys:
            _, owner, job_id = key.split("/")
            record = self.get(job_id)
            if record is None:
                self.blobs.delete(key)
                continue
            done_at = record.processing_completed_at or record.updated_at
            if record.state.finished and now - done_at > retention_s:
                self.delete(job_id, owner)
                removed.append(job_id)
                continue
            entry = _IndexEntry(self, key, job_id)
            if key in entries and entry.parse(entries[key]) != JobSummary.of(record):
                entry.put(JobSummary.of(record))
        indexed = {k.rsplit("/", 1)[1] for k in self.blobs.list("jobs-index/")}
        for job_id in {key.split("/")[1] for key in self.blobs.list("jobs/")} - indexed:
            record = self.get(job_id)
            # A job being created has its record a moment before its index entry.
            if record is None or now - record.updated_at > _DEBRIS_AGE_S:
                for key in self.blobs.list(f"jobs/{job_id}/"):
                    self.blobs.delete(key)
        return removed


@dataclass(frozen=True)
class _IndexEntry:
    """A job's index entry: its existence under its owner, and its summary."""

    store: JobStore
    key: str
    job_id: str

    def put(self, summary: JobSummary) -> None:
        """Write the summary, then check it against the record: two writers' puts may
        land out of order, so each writes again until what it wrote is the record's
        summary (the last put is always followed by such a check). Withdrawn if the job
        was deleted meanwhile: a write racing a delete must not bring its entry back."""
        while True:
            self.store.blobs.put(self.key, summary.to_json())
            record = self.store.get(self.job_id)
            if record is None:
                self.store.blobs.delete(self.key)
                return
            current = JobSummary.of(record)
            if current == summary:
                return
            summary = current

    def parse(self, raw: bytes | None) -> JobSummary | None:
        """The summary in `raw`; None for a missing entry, or one an earlier version wrote
        (from before summaries, or lacking a field of this version's)."""
        if not raw:
            return None
        try:
            return JobSummary.from_json(raw)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def require(store: JobStore, job_id: str, owner: str | None) -> JobRecord:
    """The record of a job the caller may see; others' jobs are 404, as unknown ones are."""
    record = store.get(job_id) if _plausible_id(job_id) else None
    if record is None or (owner is not None and record.owner != owner):
        raise NotFoundError(f"Job {job_id} not found.", param="job_id", code="job_not_found")
    return record


def _plausible_id(job_id: str) -> bool:
    return 0 < len(job_id) <= 64 and all(c.isalnum() or c in "-_" for c in job_id)
