"""Operator routes and what tenants may see of each other's requests.

`ADMIN_API_KEYS` names the operators. Tenants (`API_KEYS`) may not reset memory,
clear request history, change alert thresholds, or read the cluster's status and
memory; they see only their own requests in `/info` and `/status/*`. In open mode
the job history is one shared namespace, so wiping it needs an operator key or a
session to scope it to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from chatterbox_serve.config import ConfigError
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.jobs import JobsAccess, JobService, JobStore
from chatterbox_serve.jobs.storage import LocalJobBlobStore
from deployments.auth import load_admin_keys
from deployments.ingress import build_api
from tests.component.conftest import make_settings
from tests.local_backend import LocalBackend

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
OPS = {"Authorization": "Bearer ops-key"}
TEXT = " ".join(f"Sentence {i} of a story that goes on." for i in range(40))


class _Cluster:
    async def status(self) -> dict[str, Any]:
        return {"nodes": ["10.0.0.7"], "pids": [4242]}

    async def memory(self) -> dict[str, Any]:
        return {"replicas": [{"node_ip": "10.0.0.7", "pid": 4242}]}


def _client(tmp_path: Path, **env: str) -> httpx.AsyncClient:
    settings = make_settings(MAX_TOTAL_LENGTH="300", MAX_CHUNK_LENGTH="80", **env)
    store = JobStore(LocalJobBlobStore(tmp_path / "jobs"))
    access = JobsAccess(JobService(store, settings), keys_enabled=True)
    engine = SimulatedEngine(settings.simulated)
    app = build_api(
        settings, LocalBackend(settings, engine), "simulated", status=_Cluster(), jobs=access
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


OPERATOR_ONLY = [
    ("POST", "/memory/reset?confirm=true"),
    ("POST", "/v1/memory/reset?confirm=true"),
    ("POST", "/status/history/clear?confirm=true"),
    ("POST", "/memory/config?cpu_memory_percent=60"),
    ("GET", "/status"),
    ("GET", "/memory"),
]


@pytest.mark.parametrize(("method", "path"), OPERATOR_ONLY)
async def test_operator_routes_need_an_operator_key(tmp_path: Path, method: str, path: str) -> None:
    async with _client(tmp_path, API_KEYS="key-a,key-b", ADMIN_API_KEYS="ops-key") as c:
        tenant = await c.request(method, path, headers=A)
        operator = await c.request(method, path, headers=OPS)
    assert tenant.status_code == 403, tenant.text
    assert tenant.json()["error"]["code"] == "operator_only"
    assert "ADMIN_API_KEYS" in tenant.json()["error"]["message"]
    assert operator.status_code == 200, operator.text


async def test_without_admin_keys_no_tenant_is_an_operator(tmp_path: Path) -> None:
    async with _client(tmp_path, API_KEYS="key-a") as c:
        assert (await c.post("/memory/reset?confirm=true", headers=A)).status_code == 403
        assert (await c.get("/status", headers=A)).status_code == 403


async def test_tenants_see_only_their_own_requests(tmp_path: Path) -> None:
    async with _client(tmp_path, API_KEYS="key-a,key-b", ADMIN_API_KEYS="ops-key") as c:
        for _ in range(2):
            r = await c.post("/v1/audio/speech", json={"input": "Hello there."}, headers=A)
            assert r.status_code == 200
        r = await c.post("/v1/audio/speech", json={"input": "Mine."}, headers=B)
        assert r.status_code == 200
        mine = (await c.get("/status/history", headers=B)).json()
        stats = (await c.get("/status/statistics", headers=B)).json()
        info = (await c.get("/info", headers=B)).json()
        everyone = (await c.get("/status/history", headers=OPS)).json()
    assert mine["total_records"] == 1 and stats["completed_requests"] == 1
    assert stats["total_requests"] == 1
    assert len(info["recent_requests"]) == 1 and "memory_info" not in info
    assert everyone["total_records"] == 3


async def test_open_mode_history_wipe_needs_an_operator_or_a_session(tmp_path: Path) -> None:
    async with _client(tmp_path, ADMIN_API_KEYS="ops-key") as c:
        mine = await c.post("/v1/audio/speech/long", json={"input": TEXT, "session_id": "tab-1"})
        theirs = await c.post("/v1/audio/speech/long", json={"input": TEXT})
        for job in (mine, theirs):
            assert job.status_code == 200, job.text
            job_id = job.json()["job_id"]
            await c.delete(f"/v1/audio/speech/long/{job_id}")  # cancel: now history
        wipe = await c.delete("/v1/audio/speech/long/history?confirm=true")
        scoped = await c.delete("/v1/audio/speech/long/history?confirm=true&session_id=tab-1")
        left = (await c.get("/v1/audio/speech/long-history")).json()["total_jobs"]
        full = await c.delete("/v1/audio/speech/long/history?confirm=true", headers=OPS)
    assert wipe.status_code == 403 and wipe.json()["error"]["code"] == "operator_only"
    assert scoped.status_code == 200 and scoped.json()["cleared_count"] == 1
    assert left == 1
    assert full.status_code == 200 and full.json()["cleared_count"] == 1


def test_an_empty_admin_keys_stops_startup() -> None:
    with pytest.raises(ConfigError, match="ADMIN_API_KEYS"):
        load_admin_keys(make_settings(ADMIN_API_KEYS=" "))
