"""Custom metrics on a live Prometheus scrape, and the cluster `/status` and `/memory` routes.

One cluster for the module, with a fixed metrics export port. The simulated engine's
fixed call cost is raised to 1 s and batches are capped at 2 items, so a call's duration
and size are known, and so requests stay in flight and queue long enough for a status
report (every 2 s) to catch them.

Ray 2.60 exports a histogram's `_sum` approximated from bucket midpoints; counts and
buckets are exact, so the assertions read those.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deployments.metrics import METRICS
from tests.serve.conftest import ServeApp, start_app

BASE_S = 1.0
BATCH = 2
CHARS_PER_S = 15.0  # simulated engine default
DEPLOYMENTS = {
    "SpeechIngress",
    "TextAudioDeployment",
    "SpeechModelDeployment",
    "JobWorkerDeployment",
}
SHORT = "Metrics should count this sentence."
LONG = " ".join(["A longer passage that the chunker must split into several pieces."] * 8)

Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture(scope="module")
def app() -> Iterator[ServeApp]:
    settings = {
        "CHATTERBOX_SIM_BASE_S": BASE_S,
        "VLLM_MAX_BATCH_SIZE": BATCH,
        "MAX_TOTAL_LENGTH": 600,
        "JOBS_URL": tempfile.mkdtemp(prefix="metrics-jobs-"),
        "CHATTERBOX_JOB_POLL_S": 0.5,
    }
    yield from start_app(settings=settings, metrics=True)


@pytest.fixture(scope="module")
def traffic(app: ServeApp) -> dict[str, float]:
    """Known requests; returns the seconds of audio the successful ones must produce."""
    with app.client() as c:
        for _ in range(2):
            ok = c.post("/v1/audio/speech", json={"input": SHORT, "response_format": "mp3"})
            assert ok.status_code == 200, ok.text
        streamed = c.post("/v1/audio/speech/stream", json={"input": LONG, "response_format": "wav"})
        assert streamed.status_code == 200, streamed.text
        bad = c.post("/v1/audio/speech", json={"input": SHORT, "response_format": "midi"})
        assert bad.status_code == 400
        failed = c.post("/v1/audio/speech", json={"input": "x <<simulate-engine-failure>>"})
        assert failed.status_code >= 500
        job = c.post("/v1/audio/speech/long", json={"input": f"{LONG} {LONG}"}).json()
        deadline = time.monotonic() + 60
        while c.get(f"/v1/audio/speech/long/{job['job_id']}").json()["status"] != "completed":
            assert time.monotonic() < deadline, "long-text job did not complete"
            time.sleep(0.5)
    return {
        "audio_s": (2 * len(SHORT) + len(LONG)) / CHARS_PER_S,
        "job_chunks": job["total_chunks"],
    }


def _scrape(url: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def _total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if labels.items() <= lab.items())


@pytest.fixture(scope="module")
def scraped(app: ServeApp, traffic: dict[str, float]) -> Samples:
    """Poll until every custom metric is exported with all the traffic counted (or 60 s)."""
    assert app.metrics_url is not None
    deadline = time.monotonic() + 60
    while True:
        samples = _scrape(app.metrics_url)
        names_ok = all(
            (m.exported_name + ("_count" if m.kind == "histogram" else "")) in samples
            for m in METRICS
        )
        # Each replica exports on its own period: wait for every request of `traffic`,
        # not for a total that the long job's polls alone can reach.
        name = "ray_chatterbox_requests_total"
        counted = (
            _total(samples, name, route="/v1/audio/speech", status="200") >= 2
            and _total(samples, name, route="/v1/audio/speech/stream") >= 1
            and _total(samples, name, route="/v1/audio/speech", status="400") >= 1
            and _total(samples, name, route="/v1/audio/speech", status="500") >= 1
        )
        if names_ok and counted:
            return samples
        if time.monotonic() > deadline:
            missing = [
                m.exported_name
                for m in METRICS
                if not any(n.startswith(m.exported_name) for n in samples)
            ]
            pytest.fail(f"metrics not exported within 60 s; missing {missing}")
        time.sleep(1.0)


def test_requests_counted_by_route_format_and_status(scraped: Samples) -> None:
    name = "ray_chatterbox_requests_total"
    assert _total(scraped, name, route="/v1/audio/speech", response_format="mp3", status="200") == 2
    assert (
        _total(scraped, name, route="/v1/audio/speech/stream", response_format="wav", status="200")
        == 1
    )
    assert _total(scraped, name, route="/v1/audio/speech", status="400") == 1
    assert _total(scraped, name, route="/v1/audio/speech", status="500") == 1


def test_audio_seconds_match_the_audio_served(scraped: Samples, traffic: dict[str, float]) -> None:
    produced = _total(scraped, "ray_chatterbox_audio_seconds_total")
    assert produced == pytest.approx(traffic["audio_s"], rel=0.1)
    assert _total(scraped, "ray_chatterbox_audio_seconds_total", mode="stream") > 0


def test_per_request_histograms_have_plausible_values(scraped: Samples) -> None:
    def buckets(metric: str) -> tuple[float, dict[str, float]]:
        count = _total(scraped, f"{metric}_count")
        les = {lab["le"] for lab, _ in scraped[f"{metric}_bucket"]}
        return count, {le: _total(scraped, f"{metric}_bucket", le=le) for le in les}

    # 2 files and 1 stream succeeded; each took at least one 1 s engine call for
    # more than 2 s of audio, and none took twice as long as its audio lasts.
    count, rtf = buckets("ray_chatterbox_real_time_factor")
    assert count == 3 and rtf["0.05"] == 0 and rtf["2.0"] == 3
    count, ttfa = buckets("ray_chatterbox_time_to_first_audio_seconds")
    assert count == 3 and ttfa["0.5"] == 0 and ttfa["32.0"] == 3
    # The long input is several chunks; the short ones are one each.
    count, chunks = buckets("ray_chatterbox_chunks_per_request")
    assert count == 3 and chunks["1.0"] == 2 and chunks["2.0"] == 2


def test_engine_histograms_and_errors(scraped: Samples) -> None:
    calls = _total(scraped, "ray_chatterbox_engine_call_seconds_count")
    assert calls >= 3
    assert _total(scraped, "ray_chatterbox_engine_call_seconds_bucket", le="0.5") == 0
    # Batches never exceed the configured size.
    assert _total(scraped, "ray_chatterbox_engine_batch_size_count") == calls
    assert _total(scraped, "ray_chatterbox_engine_batch_size_bucket", le="2.0") == calls
    # One queue-wait observation per item: 2 short + 3 or more long + 1 failing.
    assert _total(scraped, "ray_chatterbox_engine_queue_wait_seconds_count") >= 6
    errors = "ray_chatterbox_engine_errors_total"
    assert _total(scraped, errors, scope="item", error="EngineError") == 1


def test_conditionals_cache_gauge_exists_per_result(scraped: Samples) -> None:
    # The simulated engine keeps no conditionals cache, so both counts stay 0.
    series = scraped["ray_chatterbox_conditionals_cache_lookups"]
    assert {lab["result"] for lab, _ in series} == {"hit", "miss"}
    assert all(v == 0 for _, v in series)


def test_status_reports_every_deployment_and_sees_load(app: ServeApp) -> None:
    def status() -> dict[str, Any]:
        with app.client() as c:
            r = c.get("/status")
        assert r.status_code == 200, r.text
        return dict(r.json())

    idle = status()
    assert idle["application"] == "chatterbox" and idle["status"] == "RUNNING"
    assert set(idle["deployments"]) == DEPLOYMENTS
    for d in idle["deployments"].values():
        assert d["status"] == "HEALTHY" and d["replicas_running"] == 1
        assert len(d["replicas"]) == 1 and d["replicas"][0]["last_report_s"] < 10

    # Keep the model busy for several seconds and watch the load show up.
    seen: dict[str, int] = {}
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(_speak, app, LONG) for _ in range(4)]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(f.done() for f in futures):
            for name, d in status()["deployments"].items():
                seen[name] = max(seen.get(name, 0), d["in_flight"])
                seen["queued"] = max(seen.get("queued", 0), d["queued"])
            time.sleep(0.5)
        assert all(f.result() == 200 for f in futures)
    assert seen["TextAudioDeployment"] >= 1
    assert seen["SpeechModelDeployment"] >= 1
    assert seen["queued"] >= 1  # 8 chunks arrive at once; a batch takes 2


def test_memory_reports_each_replica_process(app: ServeApp) -> None:
    with app.client() as c:
        body = c.get("/memory").json()
    replicas = {name: d["replicas"] for name, d in body["deployments"].items()}
    assert set(replicas) == DEPLOYMENTS
    pids = {r["pid"] for rs in replicas.values() for r in rs}
    assert len(pids) == 4  # four replica processes, each reading its own figures
    for rs in replicas.values():
        host = rs[0]["host"]
        assert 20 * 2**20 < host["rss_bytes"] <= host["peak_rss_bytes"]
        assert host["rss_bytes"] < host["node_total_bytes"]
        assert rs[0]["gpus"] == []  # a CPU-only cluster


def _speak(app: ServeApp, text: str) -> int:
    with httpx.Client(base_url=app.base_url, timeout=60) as c:
        r = c.post("/v1/audio/speech", json={"input": text, "response_format": "mp3"})
        return r.status_code


def test_job_chunks_and_runs_are_counted(scraped: Samples, traffic: dict[str, float]) -> None:
    done = _total(scraped, "ray_chatterbox_job_chunks_total", outcome="done")
    assert done == traffic["job_chunks"]
    assert _total(scraped, "ray_chatterbox_job_seconds_count", outcome="completed") == 1
