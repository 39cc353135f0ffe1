"""Tenants in-process: what one API key may hold, and what it may see of another's work.

No job worker runs here, so a created job stays pending: a stream on it has nothing
to report, which is what a paused or stuck job looks like to a client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.jobs import JobsAccess, JobService, JobStore
from chatterbox_serve.jobs.storage import LocalJobBlobStore
from deployments.ingress import build_api
from tests.component.conftest import make_settings
from tests.local_backend import LocalBackend

LONG = "/v1/audio/speech/long"
A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
TEXT = " ".join(f"Sentence {i} of a story that goes on." for i in range(40))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        API_KEYS="key-a,key-b",
        MAX_TOTAL_LENGTH="300",
        MAX_CHUNK_LENGTH="80",
        CHATTERBOX_SSE_IDLE_TIMEOUT_S="1",
        CHATTERBOX_MAX_SSE_STREAMS_PER_KEY="1",
    )
    store = JobStore(LocalJobBlobStore(tmp_path / "jobs"))
    access = JobsAccess(JobService(store, settings), keys_enabled=True, sse_poll_s=0.05)
    engine = SimulatedEngine(settings.simulated)
    app = build_api(settings, LocalBackend(settings, engine), "simulated", jobs=access)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def _job(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    r = await client.post(LONG, json={"input": TEXT}, headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["job_id"])


def _events(body: str) -> list[str]:
    return [
        line.split(":", 1)[1].strip() for line in body.splitlines() if line.startswith("event:")
    ]


async def test_a_stream_with_nothing_to_report_ends_with_a_final_idle_event(
    client: httpx.AsyncClient,
) -> None:
    job = await _job(client, A)
    started = time.monotonic()
    r = await client.get(f"{LONG}/{job}/sse", headers=A)
    took = time.monotonic() - started
    assert r.status_code == 200
    events = _events(r.text)
    assert events[-1] == "idle" and events.count("idle") == 1
    assert "Reconnect" in r.text
    assert 1.0 <= took < 5.0


async def test_progress_streams_are_capped_per_key_not_across_keys(
    client: httpx.AsyncClient,
) -> None:
    job_a, job_b = await _job(client, A), await _job(client, B)
    held = asyncio.create_task(client.get(f"{LONG}/{job_a}/sse", headers=A))
    await asyncio.sleep(0.3)  # the first stream is open (and idle) now
    second = await client.get(f"{LONG}/{job_a}/sse", headers=A)
    other = await client.get(f"{LONG}/{job_b}/sse", headers=B)
    assert second.status_code == 429
    err = second.json()["error"]
    assert err["code"] == "too_many_streams" and err["type"] == "rate_limit_error"
    assert "CHATTERBOX_MAX_SSE_STREAMS_PER_KEY" in err["message"]
    assert other.status_code == 200 and _events(other.text)[-1] == "idle"
    assert (await held).status_code == 200
    again = await client.get(f"{LONG}/{job_a}/sse", headers=A)  # the slot came back
    assert again.status_code == 200


@pytest.mark.parametrize("first", ["Bearer junk-1", "Basic eDp4", "Bearer key-b", "Bearer key-a"])
async def test_more_than_one_authorization_header_is_refused(
    client: httpx.AsyncClient, first: str
) -> None:
    # Checked by one reader and used by another, two headers once made jobs in fresh
    # namespaces past the cap, or in the open-mode namespace.
    headers = [(b"authorization", first.encode()), (b"authorization", b"Bearer key-a")]
    r = await client.post(LONG, json={"input": TEXT}, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "duplicate_authorization"
    assert (await client.get(LONG, headers=A)).json()["total_jobs"] == 0


async def test_the_owner_is_the_key_the_middleware_accepted(client: httpx.AsyncClient) -> None:
    job = await _job(client, A)
    assert (await client.get(f"{LONG}/{job}", headers=A)).status_code == 200
    assert (await client.get(f"{LONG}/{job}", headers=B)).status_code == 404
    mixed_case = {"AUTHORIZATION": "bearer key-a"}
    assert (await client.get(f"{LONG}/{job}", headers=mixed_case)).status_code == 200
