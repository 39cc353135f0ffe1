"""Tenants against Ray's real proxy, started by `serve run serve_config.yaml`.

A client must not lift the proxy's limits with Ray's per-request headers, and one
key must not hold every long-lived response. Jobs here are created and paused at
once, so their progress streams have nothing to report until they end as idle.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.serve.serve_cli import ServeRun, serve_run

LONG = "/v1/audio/speech/long"
A = {"Authorization": "Bearer tenant-a"}
B = {"Authorization": "Bearer tenant-b"}
IDLE_S = 6.0
SINGLE = {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 1}
SETTINGS = {
    "API_KEYS": "tenant-a,tenant-b",
    "MAX_TOTAL_LENGTH": "300",
    "MAX_CHUNK_LENGTH": "80",
    "VOICE_LIBRARY_DIR": tempfile.mkdtemp(prefix="tenant-voices-"),
    "JOBS_URL": tempfile.mkdtemp(prefix="tenant-jobs-"),
    "CHATTERBOX_SSE_IDLE_TIMEOUT_S": str(IDLE_S),
    "CHATTERBOX_MAX_SSE_STREAMS_PER_KEY": "1",
    "CHATTERBOX_SIM_BASE_S": "0.5",
}
OPTIONS: dict[str, Any] = {
    name: {"autoscaling_config": SINGLE}
    for name in ("SpeechModelDeployment", "TextAudioDeployment", "SpeechIngress")
}
TEXT = " ".join(f"Sentence {i} of a story that goes on." for i in range(40))


@pytest.fixture(scope="module")
def app() -> Iterator[ServeRun]:
    with serve_run(SETTINGS, deployments=OPTIONS) as running:
        yield running


def _paused_job(c: httpx.Client, headers: dict[str, str]) -> str:
    r = c.post(LONG, json={"input": TEXT}, headers=headers)
    assert r.status_code == 200, r.text
    job = str(r.json()["job_id"])
    paused = c.put(f"{LONG}/{job}/pause", headers=headers)
    assert paused.status_code == 200, paused.text
    return job


def _read_events(response: httpx.Response) -> list[str]:
    return [
        line.split(":", 1)[1].strip() for line in response.iter_lines() if line.startswith("event:")
    ]


def test_a_client_cannot_change_the_proxys_timeout(app: ServeRun) -> None:
    # Honoured, this header would cut the stream after 1 s, with no final event; `0`
    # would take the end-to-end timeout away altogether.
    with app.client() as c:
        job = _paused_job(c, A)
        headers = {**A, "x-request-timeout-seconds": "1"}
        started = time.monotonic()
        with c.stream("GET", f"{LONG}/{job}/sse", headers=headers) as r:
            assert r.status_code == 200
            events = _read_events(r)
        took = time.monotonic() - started
    assert events[-1] == "idle", events
    assert IDLE_S - 0.5 <= took < IDLE_S + 10


def test_a_client_that_leaves_frees_its_stream_whatever_it_asked(app: ServeRun) -> None:
    # The key's only stream slot comes back when its client hangs up, not at the idle
    # end, also when the client asked Ray's proxy not to cancel on disconnect (the
    # middleware drops that header; tests/unit/test_proxy_errors.py checks it).
    with app.client() as c:
        job = _paused_job(c, A)
        headers = {**A, "x-request-disconnect-disabled": "?1"}
        with c.stream("GET", f"{LONG}/{job}/sse", headers=headers) as r:
            assert r.status_code == 200
            next(r.iter_lines())
        left = time.monotonic()
        while True:
            with c.stream("GET", f"{LONG}/{job}/sse", headers=A) as again:
                status, waited = again.status_code, time.monotonic() - left
            if status == 200 or waited > IDLE_S:
                break
            time.sleep(0.2)
        assert status == 200
        assert waited < IDLE_S / 2  # freed on disconnect, not by the idle end


def test_one_key_cannot_hold_every_stream(app: ServeRun) -> None:
    with app.client() as c:
        job_a, job_b = _paused_job(c, A), _paused_job(c, B)
        with c.stream("GET", f"{LONG}/{job_a}/sse", headers=A) as held:
            assert held.status_code == 200
            lines = held.iter_lines()  # kept: a discarded iterator closes the connection
            next(lines)
            second = c.get(f"{LONG}/{job_a}/sse", headers=A)
            assert second.status_code == 429
            assert second.json()["error"]["code"] == "too_many_streams"
            with c.stream("GET", f"{LONG}/{job_b}/sse", headers=B) as other:
                assert other.status_code == 200
