"""Tenants against Ray's real proxy, started by `serve run serve_config.yaml`.

A client must not lift the proxy's limits with Ray's per-request headers, one key
must not hold every long-lived response, and a client that stops reading must not
make the ingress push a whole file into Ray's queues. Jobs here are created and
paused at once, so their progress streams have nothing to report until they end as
idle; the large download is a finished job written straight into the job store.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from chatterbox_serve.jobs import JobPlan, JobRecord, JobState, JobStore, owner_of
from chatterbox_serve.jobs.storage import LocalJobBlobStore
from tests.jobs.helpers import params
from tests.serve.serve_cli import ServeRun, serve_run

LONG = "/v1/audio/speech/long"
A = {"Authorization": "Bearer tenant-a"}
B = {"Authorization": "Bearer tenant-b"}
OPS = {"Authorization": "Bearer tenant-ops"}
IDLE_S = 6.0
WINDOW = 1 << 20
FILE_BYTES = 48 << 20
JOBS_DIR = tempfile.mkdtemp(prefix="tenant-jobs-")
SINGLE = {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 1}
SETTINGS = {
    "API_KEYS": "tenant-a,tenant-b",
    "ADMIN_API_KEYS": "tenant-ops",
    "MAX_TOTAL_LENGTH": "300",
    "MAX_CHUNK_LENGTH": "80",
    "VOICE_LIBRARY_DIR": tempfile.mkdtemp(prefix="tenant-voices-"),
    "JOBS_URL": JOBS_DIR,
    "CHATTERBOX_SSE_IDLE_TIMEOUT_S": str(IDLE_S),
    "CHATTERBOX_MAX_SSE_STREAMS_PER_KEY": "1",
    "CHATTERBOX_MAX_DOWNLOADS_PER_KEY": "1",
    "CHATTERBOX_STREAM_WINDOW_BYTES": str(WINDOW),
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


def _finished_job(owner_key: str, audio: bytes) -> str:
    """A completed job whose output is `audio`, written into the service's job store."""
    store = JobStore(LocalJobBlobStore(JOBS_DIR))
    now = time.time()
    job_id = os.urandom(16).hex()
    record = JobRecord(
        job_id=job_id,
        owner=owner_of(owner_key),
        created_at=now,
        updated_at=now,
        state=JobState.COMPLETED,
        text_length=len(TEXT),
        text_hash=hashlib.sha256(TEXT.encode()).hexdigest(),
        total_chunks=1,
        total_chars=len(TEXT),
        parameters=params(),
    )
    key = store.output_key(job_id, 0, "wav")
    with store.output_writer(key) as writer:
        writer.write(audio)
    done = replace(record, output_key=key, output_size_bytes=len(audio))
    store.create(done, TEXT, JobPlan((TEXT,)))
    return job_id


def _ingress_streams(c: httpx.Client) -> dict[str, int]:
    r = c.get("/status", headers=OPS)
    assert r.status_code == 200, r.text
    (replica,) = r.json()["deployments"]["SpeechIngress"]["replicas"]
    return dict(replica.get("streams") or {})


def _stalled_download(app: ServeRun, job_id: str) -> socket.socket:
    """A client that asks for the file, reads the first bytes, then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    host, port = app.base_url.removeprefix("http://").split(":")
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET {LONG}/{job_id}/download HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: {A['Authorization']}\r\n\r\n".encode()
    )
    assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    return sock


def test_a_client_that_stops_reading_holds_a_bounded_amount_and_its_slot(app: ServeRun) -> None:
    audio = os.urandom(FILE_BYTES)
    job = _finished_job("tenant-a", audio)
    with app.client() as c:
        sock = _stalled_download(app, job)
        try:
            deadline = time.monotonic() + 60
            while not (streams := _ingress_streams(c)).get("waiting_for_client"):
                assert time.monotonic() < deadline, streams
                time.sleep(0.5)
            time.sleep(3.0)  # a stalled reader stays stalled: nothing more is sent
            later = _ingress_streams(c)
            # Sent: what the socket buffers took, plus the window; never the whole file.
            assert later["sent_bytes"] == streams["sent_bytes"], (streams, later)
            assert later["sent_bytes"] < FILE_BYTES // 3, later
            assert later["unacknowledged_bytes"] <= WINDOW + (1 << 20), later
            # The stalled download holds the key's only download slot; another key's
            # requests are not affected.
            second = c.get(f"{LONG}/{job}/download", headers=A)
            assert second.status_code == 429, second.text
            assert second.json()["error"]["code"] == "too_many_streams"
            assert c.get(f"{LONG}/{job}/download", headers=B).status_code == 404
        finally:
            sock.close()
        # A reader that reads gets the whole file, once the stalled one has gone.
        deadline = time.monotonic() + 30
        while True:
            digest, got = hashlib.sha256(), 0
            with c.stream("GET", f"{LONG}/{job}/download", headers=A) as r:
                if r.status_code == 200:
                    for block in r.iter_bytes():
                        digest.update(block)
                        got += len(block)
                    break
            assert r.status_code == 429 and time.monotonic() < deadline, r.status_code
            time.sleep(0.5)
    assert got == FILE_BYTES
    assert digest.hexdigest() == hashlib.sha256(audio).hexdigest()
