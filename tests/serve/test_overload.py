"""Overload on a real cluster: ten times the configured capacity at once.

Two apps share one cluster. `/` has a model deployment that takes 2 requests at a
time and queues 2 more (capacity 4); `/narrow` has an ingress that takes 1 and
queues 1, so Ray's proxy itself rejects. Either way the rejected requests get 503,
fast, with `Retry-After` and the OpenAI envelope; the accepted ones complete; no
replica restarts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ray import serve

from deployments.builder import build_app
from tests.conftest import probe
from tests.serve.conftest import ServeApp, start_app
from tests.serve.proxy_env import proxy_envelopes
from tools.replicas import list_replicas

ENGINE_S = 1.0  # each engine call costs this, so accepted requests take >= 1 s
SINGLE = {"max_replicas": 1, "min_replicas": 1, "initial_replicas": 1}
TIGHT_MODEL: dict[str, Any] = {
    "SpeechModelDeployment": {
        "max_ongoing_requests": 2,
        "max_queued_requests": 2,
        "autoscaling_config": {**SINGLE, "target_ongoing_requests": 2},
    },
    "TextAudioDeployment": {"autoscaling_config": {**SINGLE, "target_ongoing_requests": 16}},
    "SpeechIngress": {"autoscaling_config": {**SINGLE, "target_ongoing_requests": 64}},
}
NARROW_INGRESS: dict[str, Any] = {
    **TIGHT_MODEL,
    "SpeechModelDeployment": {"autoscaling_config": {**SINGLE, "target_ongoing_requests": 8}},
    "SpeechIngress": {
        "max_ongoing_requests": 1,
        "max_queued_requests": 1,
        "autoscaling_config": {**SINGLE, "target_ongoing_requests": 1},
    },
}
SETTINGS = {"VLLM_MAX_BATCH_SIZE": "2", "CHATTERBOX_SIM_BASE_S": str(ENGINE_S)}
TEXT = "Overload test sentence."


@pytest.fixture(scope="module")
def apps() -> Iterator[ServeApp]:
    with proxy_envelopes():
        for app in start_app(settings=SETTINGS, deployments=TIGHT_MODEL):
            narrow = build_app(
                {
                    "engine": "simulated",
                    "dotenv_path": None,
                    "settings": SETTINGS,
                    "deployments": NARROW_INGRESS,
                }
            )
            serve.run(narrow, name="narrow", route_prefix="/narrow")
            yield app


async def _burst(app: ServeApp, path: str, n: int) -> list[tuple[httpx.Response, float]]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with app.async_client(limits=limits) as c:

        async def one(i: int) -> tuple[httpx.Response, float]:
            began = time.monotonic()
            r = await c.post(path, json={"input": f"{TEXT} {i}", "response_format": "mp3"})
            return r, time.monotonic() - began

        return await asyncio.gather(*(one(i) for i in range(n)))


def _check_rejections(rejected: list[tuple[httpx.Response, float]]) -> float:
    for r, _ in rejected:
        assert r.headers["content-type"] == "application/json"
        assert int(r.headers["retry-after"]) >= 1
        err = r.json()["error"]
        assert err["code"] == "overloaded" and err["type"] == "server_error"
        assert "retry" in err["message"].lower()
    return max(s for _, s in rejected)


def _check_accepted(accepted: list[tuple[httpx.Response, float]]) -> None:
    for r, seconds in accepted:
        assert seconds >= ENGINE_S * 0.9
        info = probe(r.content)
        assert info["container"] == "mp3" and float(info["duration_s"]) > 1.0  # type: ignore[arg-type]


def _overload(
    apps: ServeApp, app_name: str, prefix: str, n: int, min_served: int, min_rejected: int
) -> None:
    """Send n requests at once; some are served, the rest get fast 503 envelopes."""
    before = list_replicas(app_name)
    results = asyncio.run(_burst(apps, f"{prefix}/v1/audio/speech", n))
    accepted = [(r, s) for r, s in results if r.status_code == 200]
    rejected = [(r, s) for r, s in results if r.status_code == 503]
    assert len(accepted) + len(rejected) == n, sorted(r.status_code for r, _ in results)
    assert len(accepted) >= min_served and len(rejected) >= min_rejected, (
        len(accepted),
        len(rejected),
    )
    slowest_rejection = _check_rejections(rejected)
    # Fast means: answered before the accepted work finished, never queued behind it.
    # (The sub-second figure lives in docs/RELIABILITY.md; a loaded 2-core CI box may
    # take longer to even accept the connections, so no wall-clock bound is asserted.)
    assert slowest_rejection < max(s for _, s in accepted), slowest_rejection
    _check_accepted(accepted)
    print(
        f"{app_name} overload: {len(accepted)} served, {len(rejected)} rejected, "
        f"slowest 503 {slowest_rejection:.3f} s"
    )
    assert list_replicas(app_name) == before  # nothing crashed or restarted
    with apps.client() as c:
        assert c.post(f"{prefix}/v1/audio/speech", json={"input": TEXT}).status_code == 200


# The configured capacity (ongoing + queued) is an upper bound on what is served, not a
# promise: Ray's router counts a request that is still being assigned as queued, so a
# burst may see one fewer slot than configured. What must hold is that some work is
# served, most of the burst is refused fast, and the service stays up.
def test_ten_times_model_capacity(apps: ServeApp) -> None:
    _overload(apps, "chatterbox", "", 40, min_served=2, min_rejected=20)


def test_ten_times_ingress_capacity_rejected_by_the_proxy(apps: ServeApp) -> None:
    _overload(apps, "narrow", "/narrow", 20, min_served=1, min_rejected=10)
