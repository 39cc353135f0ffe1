"""The job store on a local directory and on S3: CAS records, leases, queue, chunks, sweep."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from chatterbox_serve.config import load_settings
from chatterbox_serve.errors import NotFoundError
from chatterbox_serve.jobs import JobPlan, JobRecord, JobState, JobStore, build_job_blob_store
from chatterbox_serve.jobs.records import ChunkCommit, owner_of
from chatterbox_serve.jobs.storage import JobBlobStore, LocalJobBlobStore, S3JobBlobStore
from chatterbox_serve.jobs.store import JobGone, require
from tests.jobs.helpers import params, s3_blobs


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "s3"])
def any_blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobBlobStore]:
    if request.param == "local":
        yield LocalJobBlobStore(tmp_path / "jobs")
    else:
        yield s3_blobs(request.getfixturevalue("s3_endpoint"))


def record(job_id: str = "j1", owner: str = "open", **changes: object) -> JobRecord:
    base = JobRecord(
        job_id=job_id,
        owner=owner,
        created_at=1.0,
        updated_at=1.0,
        state=JobState.PENDING,
        text_length=10,
        text_hash="x",
        total_chunks=2,
        total_chars=10,
        parameters=params(),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_record_round_trips_and_updates_are_compare_and_swap(any_blobs: JobBlobStore) -> None:
    store = JobStore(any_blobs)
    store.create(record(tags=("a",)), "hello world", JobPlan(("hello", "world")))
    assert store.get("j1") == record(tags=("a",))
    assert store.plan("j1").chunks == ("hello", "world")
    assert store.input_text("j1") == "hello world"

    # Two writers read the same version; the second write loses and retries on fresh data.
    seen: list[int] = []

    def bump(r: JobRecord) -> JobRecord:
        seen.append(r.completed_chunks)
        if len(seen) == 1:
            store.update("j1", lambda inner: replace(inner, completed_chunks=5))
        return replace(r, completed_chunks=r.completed_chunks + 1)

    assert store.update("j1", bump).completed_chunks == 6
    assert seen == [0, 5]
    assert store.get("j1").completed_chunks == 6  # type: ignore[union-attr]


def test_concurrent_updates_lose_nothing(tmp_path: Path) -> None:
    store = JobStore(LocalJobBlobStore(tmp_path))
    store.create(record(), "t", JobPlan(("t",)))

    def add() -> None:
        for _ in range(30):
            store.update("j1", lambda r: replace(r, completed_chars=r.completed_chars + 1))

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("j1").completed_chars == 120  # type: ignore[union-attr]
    assert len(store.blobs.list("jobs/j1/record/")) <= 32  # old versions pruned


def test_update_of_a_deleted_job_raises_gone(store: JobStore) -> None:
    store.create(record(), "t", JobPlan(("t",)))
    store.delete("j1", "open")
    with pytest.raises(JobGone):
        store.update("j1", lambda r: r)
    assert store.blobs.list("jobs/") == [] and store.queued() == []


def test_one_lease_holder_and_takeover_after_expiry(any_blobs: JobBlobStore) -> None:
    clock = Clock()
    store = JobStore(any_blobs, clock)
    a = store.claim("j1", "A", ttl_s=10)
    assert a is not None and store.claim("j1", "B", ttl_s=10) is None
    clock.now += 5
    a2 = store.renew(a, "j1", ttl_s=10)
    assert a2 is not None
    clock.now += 9  # A renewed, so still live
    assert store.claim("j1", "B", ttl_s=10) is None
    clock.now += 2  # A stopped renewing: expired
    b = store.claim("j1", "B", ttl_s=10)
    assert b is not None and b.holder == "B"
    assert store.renew(a2, "j1", ttl_s=10) is None  # A learns it lost the job
    store.release(b, "j1")
    assert store.claim("j1", "C", ttl_s=10) is not None  # released: no wait


def test_racing_claims_have_one_winner(tmp_path: Path) -> None:
    store = JobStore(LocalJobBlobStore(tmp_path))
    wins: list[str] = []
    barrier = threading.Barrier(6)

    def claim(name: str) -> None:
        barrier.wait()
        if store.claim("j1", name, ttl_s=30):
            wins.append(name)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_a_chunk_commits_once(any_blobs: JobBlobStore) -> None:
    store = JobStore(any_blobs)
    commit = ChunkCommit(
        3, "", samples=2400, sample_rate=24000, chars=5, started_at=1, completed_at=2
    )
    assert store.commit_chunk("j1", 0, commit, b"first") is True
    assert store.commit_chunk("j1", 0, commit, b"second") is False
    found = store.commits("j1", 0)
    assert list(found) == [3] and store.chunk_audio(found[3]) == b"first"
    assert len(any_blobs.list("jobs/j1/g0/")) == 2  # the loser's audio is gone
    # A worker that died between writing audio and committing it leaves a stray file.
    any_blobs.put("jobs/j1/g0/000004-deadbeef0000.wav", b"orphan")
    assert store.drop_unreferenced_audio("j1", 0) == 1
    assert store.chunk_audio(store.commits("j1", 0)[3]) == b"first"


def test_requeue_survives_a_stale_dequeue(store: JobStore) -> None:
    store.create(record(), "t", JobPlan(("t",)))
    ((job_id, token),) = store.queued()
    store.enqueue("j1")  # someone re-queued after we read the token
    assert store.dequeue(job_id, token) is False
    ((_, fresh),) = store.queued()
    assert store.dequeue("j1", fresh) is True and store.queued() == []


def test_owner_sees_own_jobs_only(store: JobStore) -> None:
    a, b = owner_of("key-a"), owner_of("key-b")
    assert a != b and "key-a" not in a
    store.create(record("ja", a), "t", JobPlan(("t",)))
    store.create(record("jb", b), "t", JobPlan(("t",)))
    assert [r.job_id for r in store.records(a)] == ["ja"]
    assert require(store, "ja", a).job_id == "ja"
    for job_id, owner in (("jb", a), ("nope", a), ("../x", None)):
        with pytest.raises(NotFoundError):
            require(store, job_id, owner)
    assert require(store, "jb", None).owner == b  # no keys: everyone sees everything


def test_sweep_removes_expired_finished_jobs_and_debris(store: JobStore) -> None:
    clock = Clock()
    store.clock = clock
    old = record("old", state=JobState.COMPLETED, processing_completed_at=clock.now - 100)
    new = record("new", state=JobState.COMPLETED, processing_completed_at=clock.now - 10)
    running = record("run", state=JobState.PROCESSING, updated_at=clock.now - 1000)
    for r in (old, new, running):
        store.create(r, "t", JobPlan(("t",)))
    store.blobs.put("jobs/ghost/g0/000000-abc.wav", b"left by a worker after delete")
    assert store.sweep(retention_s=50) == ["old"]
    assert {r.job_id for r in store.records(None)} == {"new", "run"}
    assert store.blobs.list("jobs/ghost/") == [] and store.blobs.list("jobs/old/") == []


def test_streamed_writes_publish_whole_or_nothing(any_blobs: JobBlobStore) -> None:
    with any_blobs.open_writer("jobs/x/out.bin") as w:
        for i in range(3):
            w.write(bytes([i]) * 1000)
    assert any_blobs.size("jobs/x/out.bin") == 3000
    assert b"".join(any_blobs.read_range("jobs/x/out.bin", 999, 1001)) == b"\x00\x01"
    with pytest.raises(RuntimeError), any_blobs.open_writer("jobs/x/broken.bin") as w:
        w.write(b"half")
        raise RuntimeError("encoder died")
    assert any_blobs.list("jobs/x/") == ["jobs/x/out.bin"]


def test_jobs_url_wins_over_the_voice_library(tmp_path: Path) -> None:
    def build(**env: str) -> JobBlobStore:
        return build_job_blob_store(load_settings(environ=env, dotenv_path=None))

    beside = build(VOICE_LIBRARY_DIR=str(tmp_path / "voices"))
    assert isinstance(beside, LocalJobBlobStore) and beside.url == str(tmp_path / "voices")
    own = build(VOICE_LIBRARY_DIR=str(tmp_path / "voices"), JOBS_URL=str(tmp_path / "jobs"))
    assert own.url == str(tmp_path / "jobs")
    remote = build(JOBS_URL="s3://bucket/jobs", AWS_ENDPOINT_URL="http://127.0.0.1:9")
    assert isinstance(remote, S3JobBlobStore)


def test_a_writer_far_behind_is_refused_even_if_its_slot_was_pruned(tmp_path: Path) -> None:
    store = JobStore(LocalJobBlobStore(tmp_path))
    store.create(record(), "t", JobPlan(("t",)))
    cell = store._record_cell("j1")
    stale = cell.read()
    assert stale is not None
    for _ in range(40):
        store.update("j1", lambda r: replace(r, completed_chars=r.completed_chars + 1))
    assert cell.write(stale.version, record(completed_chars=-1).to_json()) is False
    assert store.get("j1").completed_chars == 40  # type: ignore[union-attr]


def test_a_write_racing_a_delete_does_not_bring_the_job_back(tmp_path: Path) -> None:
    store = JobStore(LocalJobBlobStore(tmp_path))
    store.create(record(), "t", JobPlan(("t",)))
    cell = store._record_cell("j1")
    seen = cell.read()
    assert seen is not None
    store.delete("j1", "open")  # a worker read the record just before this delete
    assert cell.write(seen.version, record(completed_chars=9).to_json()) is False
    assert store.get("j1") is None
