"""The ingress app keeps nothing per request: memory stays flat under sustained traffic.

Runs the app in-process (no Ray) and measures Python allocations with tracemalloc, so it
sees what our code retains: a cache keyed by request, a list of bodies, a task that is
never released. A replica's RSS also moves with the allocator and Ray's own plumbing;
the soak (docs/RELIABILITY.md) watches that.
"""

from __future__ import annotations

import gc
import itertools
import tracemalloc

import httpx

from chatterbox_serve.engines.simulated import SimulatedEngine
from deployments.ingress import build_api
from tests.component.conftest import make_settings
from tests.local_backend import LocalBackend

WARM_UP, MEASURED = 100, 300
# Each response is kilobytes of audio; keeping even a reference per request would
# cost far more than this.
MAX_RETAINED_BYTES_PER_REQUEST = 512
REQUESTS = itertools.cycle(
    [
        {"response_format": "mp3"},
        {"response_format": "wav", "stream_format": "audio"},
        {"response_format": "opus", "stream_format": "sse"},
        {"response_format": "pcm", "speed": 1.25},
        {"response_format": "flac", "voice": "no-such-voice"},  # a 404 envelope
    ]
)


async def test_sustained_traffic_retains_no_memory_per_request():
    settings = make_settings()
    backend = LocalBackend(settings, SimulatedEngine(settings.simulated))
    app = build_api(settings, backend, "simulated")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:

        async def send(n: int) -> None:
            for i in range(n):
                body = {"input": f"Sentence number {i} for the memory test.", **next(REQUESTS)}
                r = await c.post("/v1/audio/speech", json=body)
                assert r.status_code in (200, 404), r.text

        await send(WARM_UP)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            await send(MEASURED)
            gc.collect()
            growth = tracemalloc.take_snapshot().compare_to(before, "filename")
        finally:
            tracemalloc.stop()
    retained = sum(stat.size_diff for stat in growth)
    assert retained / MEASURED < MAX_RETAINED_BYTES_PER_REQUEST, [str(s) for s in growth[:5]]
