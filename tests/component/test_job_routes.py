"""The job routes in-process: a worker in the same event loop, the store in a temp dir."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.errors import RangeNotSatisfiableError
from chatterbox_serve.jobs import JobRunner, JobsAccess, JobService, JobStore, JobWorker
from chatterbox_serve.jobs.storage import LocalJobBlobStore
from deployments.ingress import build_api
from deployments.routes.jobs import parse_range
from tests.component.conftest import make_settings
from tests.conftest import probe
from tests.local_backend import LocalBackend
from tools.bench.direct import DirectSubmitter

LONG = "/v1/audio/speech/long"
A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
OPS = {"Authorization": "Bearer ops-key"}
TEXT = " ".join(f"Sentence {i} of a story that goes on." for i in range(40))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        API_KEYS="key-a,key-b",
        ADMIN_API_KEYS="ops-key",
        MAX_TOTAL_LENGTH="300",
        MAX_CHUNK_LENGTH="80",
        CHATTERBOX_MAX_JOBS_PER_KEY="2",
        CHATTERBOX_JOB_LEASE_S="2",
    )
    engine = SimulatedEngine(settings.simulated)
    store = JobStore(LocalJobBlobStore(tmp_path / "jobs"))
    runner = JobRunner(store, settings, DirectSubmitter(engine), lambda v, by_id: None, holder="w")
    worker = JobWorker(store, runner, max_jobs=2, lease_s=2.0)
    access = JobsAccess(JobService(store, settings), keys_enabled=True, sse_poll_s=0.05)
    app = build_api(settings, LocalBackend(settings, engine), "simulated", jobs=access)

    async def poll() -> None:
        while True:
            await worker.poll_once()
            await asyncio.sleep(0.05)

    poller = asyncio.create_task(poll())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=A) as c:
        yield c
    poller.cancel()
    await worker.stop()


async def finished(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    for _ in range(400):
        job = (await client.get(f"{LONG}/{job_id}")).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return dict(job)
        await asyncio.sleep(0.05)
    raise AssertionError("job did not finish")


def test_parse_range() -> None:
    assert parse_range(None, 1000) == (0, 1000)
    assert parse_range("bytes=0-99", 1000) == (0, 100)
    assert parse_range("bytes=900-", 1000) == (900, 1000)
    assert parse_range("bytes=-100", 1000) == (900, 1000)
    assert parse_range("bytes=990-5000", 1000) == (990, 1000)
    for bad in ("bytes=1000-", "bytes=5-2", "items=0-1", "bytes=0-1,5-6", "bytes=x-"):
        with pytest.raises(RangeNotSatisfiableError):
            parse_range(bad, 1000)


async def test_create_run_download_and_delete(client: httpx.AsyncClient) -> None:
    r = await client.post(LONG, json={"input": TEXT, "response_format": "flac", "speed": 1.25})
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["sse_url"] == f"{LONG}/{created['job_id']}/sse"
    job = await finished(client, created["job_id"])
    assert job["status"] == "completed" and job["progress"]["overall_progress"] == 100.0
    assert job["metadata"]["parameters"]["speed"] == 1.25
    audio = await client.get(job["download_url"])
    assert audio.headers["content-type"] == "audio/flac"
    assert probe(audio.content)["duration_s"] == pytest.approx(
        job["metadata"]["output_duration_seconds"], abs=0.05
    )
    ranged = await client.get(job["download_url"], headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.content == audio.content[10:20]
    details = (await client.get(f"{LONG}/{created['job_id']}/details")).json()
    assert details["input_text"] == TEXT and len(details["chunks"]) == created["total_chunks"]
    edit = await client.patch(
        f"{LONG}/{created['job_id']}", json={"tags": ["a"], "is_archived": True}
    )
    assert edit.json() == {
        "success": True,
        "message": "Job metadata updated successfully",
        "status": "completed",
    }
    history = (await client.get("/audio/speech/long-history", params={"is_archived": True})).json()
    assert [j["job_id"] for j in history["jobs"]] == [created["job_id"]]
    stats = (await client.get("/v1/audio/speech/long-history/stats")).json()
    assert stats["completed_jobs"] == 1 and stats["success_rate_percentage"] == 100.0
    gone = await client.delete(f"{LONG}/{created['job_id']}", params={"action": "delete"})
    assert gone.status_code == 200
    assert (await client.get(f"{LONG}/{created['job_id']}")).status_code == 404


async def test_history_route_is_not_a_job_id(client: httpx.AsyncClient) -> None:
    job_id = (await client.post(LONG, json={"input": TEXT})).json()["job_id"]
    await finished(client, job_id)
    refused = await client.delete(f"{LONG}/history")
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "confirm"
    cleared = await client.delete(f"{LONG}/history", params={"confirm": "true"})
    assert cleared.json()["cleared_count"] == 1


async def test_keys_own_their_jobs_and_are_capped(client: httpx.AsyncClient) -> None:
    ids = [(await client.post(LONG, json={"input": TEXT})).json()["job_id"] for _ in range(2)]
    for job_id in ids:
        await client.put(f"{LONG}/{job_id}/pause")
    over = await client.post(LONG, json={"input": TEXT})
    assert over.status_code == 429 and over.json()["error"]["type"] == "rate_limit_error"
    for method, path in (
        ("GET", f"{LONG}/{ids[0]}"),
        ("PUT", f"{LONG}/{ids[0]}/resume"),
        ("DELETE", f"{LONG}/{ids[0]}"),
        ("GET", f"{LONG}/{ids[0]}/sse"),
    ):
        r = await client.request(method, path, headers=B)
        assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    assert (await client.get(LONG, headers=B)).json()["total_jobs"] == 0
    bulk = await client.post(
        f"{LONG}/bulk", json={"job_ids": [*ids, "nope"], "action": "archive", "confirm": True}
    )
    assert bulk.json()["success_count"] == 2 and bulk.json()["failed_jobs"] == ["nope"]
    assert (await client.get(LONG)).json()["total_jobs"] == 2
    unauthenticated = await client.get(LONG, headers={"Authorization": ""})
    assert unauthenticated.status_code == 401


async def test_bad_input_gets_400_envelopes(client: httpx.AsyncClient) -> None:
    job_id = (await client.post(LONG, json={"input": TEXT})).json()["job_id"]
    for r in (
        await client.post(LONG, json={"input": "short"}),
        await client.post(LONG, json={"input": TEXT, "voice": ""}),
        await client.post(LONG, json={"input": TEXT, "language": "xx"}),
        await client.get(LONG, params={"status": "sleeping"}),
        await client.patch(f"{LONG}/{job_id}", json={"tags": ["x" * 51]}),
        await client.post(f"{LONG}/{job_id}/retry", json={"new_parameters": {"seed": -1}}),
        await client.post(f"{LONG}/{job_id}/retry", json={}),  # not failed or cancelled
        await client.delete(f"{LONG}/{job_id}", params={"action": "explode"}),
        await client.get(f"{LONG}/{job_id}/chunks/999"),
    ):
        assert r.status_code in (400, 404), r.text
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    missing_voice = await client.post(LONG, json={"input": TEXT, "voice": "nobody"})
    assert missing_voice.status_code == 404
    await finished(client, job_id)


async def test_original_ops_routes_and_aliases(client: httpx.AsyncClient) -> None:
    await client.post("/v1/audio/speech", json={"input": "Hello there.", "response_format": "pcm"})
    info = (await client.get("/api/info")).json()
    assert info["status"] == "operational" and info["statistics"]["completed_requests"] == 1
    stats = (await client.get("/stats")).json()
    assert stats["total_requests"] == 1 and stats["success_rate"] == 100.0
    history = (await client.get("/history", params={"limit": 5})).json()
    assert history["request_history"][0]["path"] == "/v1/audio/speech"
    for path in ("/progress", "/processing", "/processing/status"):
        assert (await client.get(path)).json()["is_processing"] is False
    routes = (await client.get("/routes")).json()["mappings"]
    assert "/tts" in routes["POST /v1/audio/speech"]["aliases"]
    assert routes["DELETE /v1/audio/speech/long/history"]["primary"].endswith("/history")
    assert (await client.get("/v1/config")).status_code == 200
    for path in ("/memory/reset", "/status/history/clear"):
        refused = await client.post(path, headers=OPS)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "confirm"
    cleared = await client.post("/status/history/clear", params={"confirm": "true"}, headers=OPS)
    assert cleared.json()["success"]
    assert (await client.get("/status/history")).json()["total_records"] == 0
    reset = await client.post("/v1/memory/reset", params={"confirm": "true"}, headers=OPS)
    assert reset.json()["status"] == "success"
    bad = await client.post("/memory/config", params={"cpu_memory_percent": 20}, headers=OPS)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "cpu_memory_percent"
    ok = await client.post("/memory/config", params={"cpu_memory_percent": 60}, headers=OPS)
    assert ok.json()["new_thresholds"]["cpu_memory_percent"] == 60
    assert (await client.get("/memory/config")).json()["alert_thresholds"][
        "cpu_memory_percent"
    ] == 60
    recs = (await client.get("/v1/memory/recommendations")).json()
    assert recs["recommendation_count"] == len(recs["recommendations"])


async def test_lists_are_paged_and_keep_the_original_fields(client: httpx.AsyncClient) -> None:
    ids = []
    for _ in range(3):
        job_id = (await client.post(LONG, json={"input": TEXT})).json()["job_id"]
        await client.put(f"{LONG}/{job_id}/pause")
        await client.delete(f"{LONG}/{job_id}")  # cancelled: the cap of 2 is not reached
        ids.append(job_id)
    first = (await client.get(LONG, params={"limit": 2})).json()
    assert [j["job_id"] for j in first["jobs"]] == ids[::-1][:2]
    assert first["total_jobs"] == 3 and first["has_more"] and first["offset"] == 0
    rest = (await client.get(LONG, params={"limit": 2, "offset": 2})).json()
    assert [j["job_id"] for j in rest["jobs"]] == [ids[0]] and not rest["has_more"]
    assert rest["jobs"][0]["text_preview"] == TEXT[:100]
    history = (
        await client.get(
            "/audio/speech/long-history", params={"sort": "created_asc", "limit": 1, "offset": 1}
        )
    ).json()
    assert [j["job_id"] for j in history["jobs"]] == [ids[1]]
    assert history["total_jobs"] == 3 and history["has_more"] and history["limit"] == 1
    bad = await client.get(LONG, params={"offset": -1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "offset"
