"""Long-text jobs on a real cluster: lifecycle, Range, retry, durability, ownership, errors.

One app: two ingress replicas, two job-worker replicas, API keys A and B, jobs and
voices in a temporary directory, chunks of at most 60 characters. The last test
stops the whole application mid-job and starts it again.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ray import serve

from chatterbox_serve.jobs import JobStore
from chatterbox_serve.jobs.storage import LocalJobBlobStore
from deployments.builder import build_app
from tests.conftest import probe
from tests.serve.conftest import ServeApp, start_app
from tools.replicas import kill_replica, list_replicas

APP, WORKER, INGRESS = "chatterbox", "JobWorkerDeployment", "SpeechIngress"
JOBS_DIR = tempfile.mkdtemp(prefix="jobs-cluster-")
MARKER = "<<simulate-engine-failure>>"
SETTINGS = {
    "API_KEYS": "key-a,key-b",
    "JOBS_URL": JOBS_DIR,
    "VOICE_LIBRARY_DIR": tempfile.mkdtemp(prefix="jobs-voices-"),
    "MAX_TOTAL_LENGTH": "200",
    "MAX_CHUNK_LENGTH": "60",
    "LONG_TEXT_MAX_LENGTH": "20000",
    "CHATTERBOX_MAX_JOBS_PER_KEY": "4",
    # A 3 s lease lets the restart test's takeover come quickly; on a loaded 2-core
    # machine it also lapses now and then mid-run, and each takeover is a run. Those
    # takeovers are correct; the attempt limit has its own tests (tests/jobs/test_lease.py).
    "CHATTERBOX_JOB_LEASE_S": "3",
    "CHATTERBOX_JOB_MAX_ATTEMPTS": "20",
    "CHATTERBOX_JOB_POLL_S": "0.3",
    "CHATTERBOX_JOB_CHUNK_ATTEMPTS": "2",
    "CHATTERBOX_SIM_BASE_S": "0.1",
}
TWO = {"min_replicas": 2, "initial_replicas": 2, "max_replicas": 2}
OPTIONS: dict[str, Any] = {
    INGRESS: {"autoscaling_config": TWO},
    WORKER: {"autoscaling_config": TWO},
}
A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
LONG = "/v1/audio/speech/long"


def text(sentences: int, marker_at: int | None = None) -> str:
    parts = [f"Sentence {i} of a long story, told slowly." for i in range(sentences)]
    if marker_at is not None:
        parts[marker_at] = f"This one breaks {MARKER}."
    return " ".join(parts)


@pytest.fixture(scope="module")
def app() -> Iterator[ServeApp]:
    yield from start_app(settings=SETTINGS, deployments=OPTIONS)


@pytest.fixture(scope="module")
def client(app: ServeApp) -> Iterator[httpx.Client]:
    with app.client(headers=A) as c:
        yield c


def create(client: httpx.Client, sentences: int = 30, **body: Any) -> dict[str, Any]:
    r = client.post(LONG, json={"input": text(sentences), "response_format": "wav", **body})
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_status(
    client: httpx.Client, job_id: str, states: set[str], timeout_s: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        r = client.get(f"{LONG}/{job_id}")
        job = r.json() if r.status_code == 200 else {"status": f"http {r.status_code}"}
        if job["status"] in states:
            return dict(job)
        assert time.monotonic() < deadline, f"job stuck in {job['status']}"
        time.sleep(0.2)


def stored_chunks(job_id: str, generation: int = 0) -> list[str]:
    store = JobStore(LocalJobBlobStore(JOBS_DIR))
    return [k for k in store.blobs.list(f"jobs/{job_id}/g{generation}/") if k.endswith(".wav")]


def test_lifecycle_create_sse_pause_resume_download(client: httpx.Client) -> None:
    created = create(client, 40)
    job_id = created["job_id"]
    assert created["status_url"] == f"{LONG}/{job_id}" and created["total_chunks"] >= 20
    paused = client.put(f"{LONG}/{job_id}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    time.sleep(1.0)
    frozen = client.get(f"{LONG}/{job_id}").json()
    time.sleep(1.0)
    assert client.get(f"{LONG}/{job_id}").json()["progress"] == frozen["progress"]
    assert frozen["can_resume"] and not frozen["can_pause"]
    assert client.put(f"{LONG}/{job_id}/resume").json()["status"] == "pending"
    events: list[tuple[str, dict[str, Any]]] = []
    with client.stream("GET", f"{LONG}/{job_id}/sse") as stream:
        kind = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    kinds = [k for k, _ in events]
    assert kinds[-1] == "completed", (kinds, events[-1])
    ready = sorted(d["chunk_index"] for k, d in events if k == "chunk_ready")
    assert ready == list(range(created["total_chunks"]))
    job = client.get(f"{LONG}/{job_id}").json()
    assert job["status"] == "completed" and job["download_url"].endswith("/download")
    chunks = job["progress"]["completed_chunks"]
    audio = client.get(job["download_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    chunk_s = sum(c["duration_ms"] for c in chunks) / 1000
    fades = 0.025 * (len(chunks) - 1)
    assert probe(audio.content)["duration_s"] == pytest.approx(chunk_s - fades, abs=0.05)
    assert len(stored_chunks(job_id)) == created["total_chunks"]
    chunk = client.get(f"{LONG}/{job_id}/chunks/0")
    assert chunk.status_code == 200 and probe(chunk.content)["duration_s"] > 0.5
    listed = client.get(LONG, params={"status": "completed"}).json()
    assert job_id in [j["job_id"] for j in listed["jobs"]]
    assert client.delete(f"{LONG}/{job_id}", params={"action": "delete"}).status_code == 200
    assert client.get(f"{LONG}/{job_id}").status_code == 404


def test_range_download(client: httpx.Client) -> None:
    job_id = create(client, 12)["job_id"]
    wait_status(client, job_id, {"completed"})
    url = f"{LONG}/{job_id}/download"
    whole = client.get(url).content
    part = client.get(url, headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == whole[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(whole)}"
    tail = client.get(url, headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == whole[-500:]
    bad = client.get(url, headers={"Range": f"bytes={len(whole)}-"})
    assert bad.status_code == 416 and bad.json()["error"]["code"] == "range_not_satisfiable"


def test_retry_with_preserved_chunks_reruns_only_failed_ones(client: httpx.Client) -> None:
    r = client.post(LONG, json={"input": text(16, marker_at=5), "response_format": "mp3"})
    job_id = r.json()["job_id"]
    failed = wait_status(client, job_id, {"failed"})
    # Under load the failed chunk's record can land a moment after the job's state
    # (seen once in CI on 2 cores); the listing must show it within seconds.
    deadline = time.monotonic() + 10
    while not failed["metadata"]["failed_chunks"] and time.monotonic() < deadline:
        time.sleep(0.2)
        failed = client.get(f"{LONG}/{job_id}").json()
    assert failed["metadata"]["failed_chunks"] and failed["metadata"]["error"]
    before = client.get(f"{LONG}/{job_id}/details").json()["chunks"]
    bad = failed["metadata"]["failed_chunks"]
    kept = {c["index"]: c["processing_completed_at"] for c in before if c["audio_file"]}
    assert len(kept) == len(before) - len(bad)
    retry = client.post(f"{LONG}/{job_id}/retry", json={"preserve_chunks": True})
    assert retry.status_code == 200 and retry.json()["job_id"] == job_id
    again = wait_status(client, job_id, {"failed"})
    assert again["metadata"]["retry_count"] == 1
    after = client.get(f"{LONG}/{job_id}/details").json()["chunks"]
    assert {c["index"]: c["processing_completed_at"] for c in after if c["audio_file"]} == kept


def test_killed_worker_job_completes_elsewhere_with_every_chunk_once(
    client: httpx.Client,
) -> None:
    created = create(client, 60)
    job_id = created["job_id"]
    store = JobStore(LocalJobBlobStore(JOBS_DIR))
    deadline = time.monotonic() + 30
    while store.get(job_id) is None or store.get(job_id).completed_chunks < 5:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    lease = store.lease(job_id)
    assert lease is not None
    (victim,) = [r for r in list_replicas(APP, WORKER) if lease.holder.startswith(r.replica_id)]
    done_before = store.get(job_id).completed_chunks  # type: ignore[union-attr]
    assert done_before < created["total_chunks"]
    kill_replica(victim)
    job = wait_status(client, job_id, {"completed", "failed"}, timeout_s=120)
    assert job["status"] == "completed"
    assert not store.lease(job_id).holder.startswith(victim.replica_id)  # type: ignore[union-attr]
    # Every chunk committed exactly once, and stored once (strays of the dead worker
    # are removed at completion); the file holds each chunk once.
    commits = store.commits(job_id, 0)
    assert sorted(commits) == list(range(created["total_chunks"]))
    assert sorted(stored_chunks(job_id)) == sorted(c.audio_key for c in commits.values())
    chunk_s = sum(c.duration_s for c in commits.values())
    fades = 0.025 * (len(commits) - 1)
    audio = client.get(f"{LONG}/{job_id}/download").content
    assert probe(audio)["duration_s"] == pytest.approx(chunk_s - fades, abs=0.05)


def test_two_ingress_replicas_agree(app: ServeApp, client: httpx.Client) -> None:
    assert len(list_replicas(APP, INGRESS)) == 2
    job_id = create(client, 20)["job_id"]
    seen = []
    for _ in range(30):
        with app.client(headers=A) as fresh:  # new connections spread over both replicas
            r = fresh.get(f"{LONG}/{job_id}")
        assert r.status_code == 200
        seen.append(r.json()["progress"]["overall_progress"])
    assert seen == sorted(seen)  # progress never goes backwards between replicas
    wait_status(client, job_id, {"completed"})


def test_other_keys_cannot_see_or_touch_a_job(app: ServeApp, client: httpx.Client) -> None:
    job_id = create(client, 8)["job_id"]
    wait_status(client, job_id, {"completed"})
    with app.client(headers=B) as other:
        for method, path in (
            ("GET", f"{LONG}/{job_id}"),
            ("GET", f"{LONG}/{job_id}/download"),
            ("GET", f"{LONG}/{job_id}/details"),
            ("GET", f"{LONG}/{job_id}/chunks/0"),
            ("PUT", f"{LONG}/{job_id}/pause"),
            ("DELETE", f"{LONG}/{job_id}?action=delete"),
        ):
            r = other.request(method, path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
        assert job_id not in [j["job_id"] for j in other.get(LONG).json()["jobs"]]
        assert other.get("/v1/audio/speech/long-history/stats").json()["total_jobs"] == 0
    assert client.get(f"{LONG}/{job_id}").status_code == 200


def test_errors_are_envelopes(app: ServeApp, client: httpx.Client) -> None:
    unknown = "0" * 32
    for method, path in (
        ("GET", f"{LONG}/{unknown}"),
        ("GET", f"{LONG}/{unknown}/download"),
        ("GET", f"{LONG}/{unknown}/sse"),
        ("GET", f"{LONG}/{unknown}/chunks/0"),
        ("GET", f"{LONG}/{unknown}/details"),
        ("PUT", f"{LONG}/{unknown}/pause"),
        ("PUT", f"{LONG}/{unknown}/resume"),
        ("DELETE", f"{LONG}/{unknown}"),
        ("PATCH", f"{LONG}/{unknown}"),
        ("POST", f"{LONG}/{unknown}/retry"),
    ):
        r = client.request(method, path, json={} if method in ("PATCH", "POST") else None)
        assert r.status_code == 404, (method, path, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    bad = [
        client.post(LONG, json={"input": "too short"}),
        client.post(LONG, json={"input": text(30), "response_format": "ogg"}),
        client.get(LONG, params={"limit": 0}),
        client.get("/v1/audio/speech/long-history", params={"sort": "random"}),
        client.get("/v1/audio/speech/long-history", params={"start_date": "yesterday"}),
        client.delete(f"{LONG}/history"),
        client.post(f"{LONG}/bulk", json={"job_ids": ["x"], "action": "explode", "confirm": True}),
        client.post(f"{LONG}/bulk", json={"job_ids": ["x"], "action": "delete", "confirm": False}),
    ]
    for r in bad:
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "invalid_request_error"
    huge = client.post(
        LONG,
        content=b'{"input": "' + b"a" * 2_000_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert huge.status_code == 413 and "error" in huge.json()
    with app.client(headers=B) as other:
        for _ in range(4):
            assert other.post(LONG, json={"input": text(300)}).status_code == 200
        over = other.post(LONG, json={"input": text(300)})
        assert over.status_code == 429 and over.json()["error"]["code"] == "too_many_jobs"
        for job in other.get(LONG).json()["jobs"]:
            other.delete(f"{LONG}/{job['job_id']}", params={"action": "cancel"})
    cleared = client.delete(f"{LONG}/history", params={"confirm": "true"})
    assert cleared.status_code == 200 and cleared.json()["cleared_count"] >= 1


def test_job_survives_a_restart_of_the_whole_app(app: ServeApp, client: httpx.Client) -> None:
    created = create(client, 80)
    job_id = created["job_id"]
    store = JobStore(LocalJobBlobStore(JOBS_DIR))
    deadline = time.monotonic() + 30
    while store.get(job_id).completed_chunks < 5:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    serve.delete(APP)
    stopped_at = store.get(job_id).completed_chunks  # type: ignore[union-attr]
    assert stopped_at < created["total_chunks"]
    args = {
        "engine": "simulated",
        "dotenv_path": None,
        "settings": SETTINGS,
        "deployments": OPTIONS,
    }
    serve.run(build_app(args), name=APP, route_prefix="/", blocking=False)
    job = wait_status(client, job_id, {"completed", "failed"}, timeout_s=120)
    assert job["status"] == "completed"
    assert len(stored_chunks(job_id)) == created["total_chunks"]
    assert Path(JOBS_DIR, "jobs", job_id).is_dir()
