"""Helpers for the job library tests: small limits, a fast simulated engine, S3 stores."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatterbox_serve.config import Settings, load_settings
from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.errors import EngineError
from chatterbox_serve.generation import GenerationParameters
from chatterbox_serve.jobs import JobParameters, JobRunner, JobStore
from chatterbox_serve.jobs.storage import (
    BlobWriter,
    JobBlobStore,
    LocalJobBlobStore,
    S3JobBlobStore,
)
from tools.bench.direct import DirectSubmitter

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank. "


def job_settings(**extra: Any) -> Settings:
    overrides = {
        "MAX_TOTAL_LENGTH": 100,
        "MAX_CHUNK_LENGTH": 70,
        "LONG_TEXT_MAX_LENGTH": 5000,
        "CHATTERBOX_MAX_JOBS_PER_KEY": 3,
        "CHATTERBOX_JOB_LEASE_S": 1.0,
        "CHATTERBOX_JOB_CHUNKS_IN_FLIGHT": 2,
        "CHATTERBOX_JOB_TOTAL_CHUNKS_IN_FLIGHT": 3,
        "CHATTERBOX_JOB_CHUNK_ATTEMPTS": 2,
        "CHATTERBOX_SIM_BASE_S": 0.002,
        "CHATTERBOX_SIM_PER_ITEM_S": 0.0,
        "CHATTERBOX_SIM_PER_CHAR_S": 0.0,
        **extra,
    }
    return load_settings(environ={}, dotenv_path=None, overrides=overrides)


def params(**changes: Any) -> JobParameters:
    """A job's parameters; generation parameters may be given by name."""
    generation = GenerationParameters(**{"seed": 7, **GenerationParameters.pick(changes)})
    rest = {k: v for k, v in changes.items() if k not in GenerationParameters.names()}
    base: dict[str, Any] = {"voice": None, "language": "en", "response_format": "wav"}
    return JobParameters(**{**base, "generation": generation, **rest})


class CountingSubmit:
    """The model handle's contract over a local engine: counts calls per chunk, can fail
    chosen chunks (as a crashed model replica would), and tracks calls in flight."""

    def __init__(self, engine: SimulatedEngine, fail: dict[int, int] | None = None) -> None:
        self.direct = DirectSubmitter(engine)
        self.calls: Counter[int] = Counter()
        self.fail = dict(fail or {})
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay_s = 0.0
        self.voice_bytes = 0
        # Every request as the engine gets it, in the order sent.
        self.items: list[SynthesisRequest] = []

    def __call__(self, item: SynthesisRequest) -> asyncio.Task[SynthesisResult]:
        return asyncio.ensure_future(self._one(item))

    async def _one(self, item: SynthesisRequest) -> SynthesisResult:
        self.calls[item.chunk_index] += 1
        self.items.append(item)
        self.voice_bytes += len(item.voice.audio) if item.voice else 0
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fail.get(item.chunk_index, 0) > 0:
                self.fail[item.chunk_index] -= 1
                raise EngineError("replica died")
            return await self.direct(item)
        finally:
            self.in_flight -= 1


def make_runner(
    store: JobStore, settings: Settings, submit: CountingSubmit, holder: str = "w1"
) -> JobRunner:
    return JobRunner(
        store, settings, submit, lambda voice, by_id: None, holder=holder, retry_backoff_s=0.01
    )


def long_text(sentences: int = 8) -> str:
    return SENTENCE * sentences


class CountingBlobs(JobBlobStore):
    """A job blob store that counts the reads of each kind of key (records, inputs)."""

    def __init__(self, inner: JobBlobStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.reads: Counter[str] = Counter()

    def _count(self, keys: Iterable[str]) -> None:
        for key in keys:
            kind = "record" if "/record/" in key else key.rsplit("/", 1)[-1]
            self.reads["input" if kind == "input.txt" else kind] += 1

    def taken(self) -> Counter[str]:
        """The reads counted since the last call."""
        reads = self.reads.copy()
        self.reads.clear()
        return reads

    def get(self, key: str) -> bytes:
        self._count([key])
        return self.inner.get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        found = self.inner.get_many(keys)
        self._count(found)
        return found

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)

    def create(self, key: str, data: bytes) -> None:
        self.inner.create(key, data)

    def take(self, key: str, expected: bytes) -> bool:
        return self.inner.take(key, expected)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def modified(self, key: str) -> float:
        return self.inner.modified(key)

    def open_writer(self, key: str) -> contextlib.AbstractContextManager[BlobWriter]:
        return self.inner.open_writer(key)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        return self.inner.read_range(key, start, end)


def counting_blobs(request: pytest.FixtureRequest, tmp_path: Path) -> CountingBlobs:
    """For a fixture with params ["local", "s3"]: that store, its reads counted."""
    if request.param == "local":
        return CountingBlobs(LocalJobBlobStore(tmp_path / "jobs"))
    return CountingBlobs(s3_blobs(request.getfixturevalue("s3_endpoint")))


def s3_blobs(endpoint: str) -> S3JobBlobStore:
    import uuid

    bucket = f"jobs-{uuid.uuid4().hex[:12]}"
    store = S3JobBlobStore(
        f"s3://{bucket}/jobs",
        endpoint,
        key="testing",
        secret="testing",
        client_kwargs={"region_name": "us-east-1"},
    )
    store.fs.call_s3("create_bucket", Bucket=bucket)
    return store


async def wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
