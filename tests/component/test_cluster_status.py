"""The pieces of `/status` and `/memory` that need no Ray cluster: load, memory, routes.

The routes are exercised over a `StatusSource` test double (our own protocol); the
real source, joined with `serve.status()`, is tested in tests/serve/test_metrics.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from chatterbox_serve.config import load_settings
from chatterbox_serve.engines.simulated import SimulatedEngine
from deployments.cluster_status import LoadTrackingMiddleware, ReplicaLoad, host_memory
from deployments.ingress import build_api
from tests.local_backend import LocalBackend


def test_queued_is_in_flight_minus_running_only_where_there_is_a_queue() -> None:
    batched, plain = ReplicaLoad(has_queue=True), ReplicaLoad()
    for load in (batched, plain):
        with load.track(), load.track(), load.track(), load.running(2):
            assert load.in_flight == 3
            queued = load.queued
        assert load.in_flight == 0
        assert (load is batched and queued == 1) or (load is plain and queued == 0)


def test_host_memory_reads_this_process() -> None:
    before = host_memory()
    block = bytearray(64 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page so it is resident
    after = host_memory()
    assert after["rss_bytes"] - before["rss_bytes"] > 48 * 2**20
    assert after["rss_bytes"] <= after["peak_rss_bytes"]
    assert 0 < after["node_available_bytes"] < after["node_total_bytes"]
    del block


async def test_a_streamed_response_stays_in_flight_until_its_last_byte() -> None:
    load = ReplicaLoad()
    seen: list[int] = []
    app = FastAPI()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(3):
                seen.append(load.in_flight)
                yield b"x"

        return StreamingResponse(body())

    app.add_middleware(LoadTrackingMiddleware, load=load)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        assert (await c.get("/stream")).content == b"xxx"
    assert seen == [1, 1, 1]
    assert load.in_flight == 0


class _FixedStatus:
    async def status(self) -> dict[str, Any]:
        return {"application": "chatterbox", "deployments": {"SpeechIngress": {"queued": 0}}}

    async def memory(self) -> dict[str, Any]:
        return {"application": "chatterbox", "deployments": {}}


async def test_status_routes_exist_only_with_a_status_source() -> None:
    settings = load_settings({"CHATTERBOX_SIM_BASE_S": "0"}, dotenv_path=None)
    backend = LocalBackend(settings, SimulatedEngine(settings.simulated))
    for source, expected in ((None, 404), (_FixedStatus(), 200)):
        app = build_api(settings, backend, "simulated", status=source)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            status, memory = await c.get("/status"), await c.get("/memory")
            v1 = await c.get("/v1/status"), await c.get("/v1/memory")
        assert (status.status_code, memory.status_code) == (expected, expected)
        assert tuple(r.status_code for r in v1) == (expected, expected)
        if source is not None:
            assert status.json() == v1[0].json() == await source.status()
            assert memory.json() == v1[1].json() == await source.memory()
        else:
            assert status.json()["error"]["code"] == "http_404"  # the OpenAI envelope
