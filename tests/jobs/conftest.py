"""Fixtures for the job library tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.jobs import JobService, JobStore
from chatterbox_serve.jobs.storage import JobBlobStore, LocalJobBlobStore
from tests.jobs.helpers import job_settings


@pytest.fixture
def settings() -> Settings:
    return job_settings()


@pytest.fixture
def blobs(tmp_path: Path) -> JobBlobStore:
    return LocalJobBlobStore(tmp_path / "store")


@pytest.fixture
def store(blobs: JobBlobStore) -> JobStore:
    return JobStore(blobs)


@pytest.fixture
def service(store: JobStore, settings: Settings) -> JobService:
    return JobService(store, settings)


@pytest.fixture
def engine(settings: Settings) -> SimulatedEngine:
    return SimulatedEngine(settings.simulated)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from tests.moto_s3 import moto_s3_server

    with moto_s3_server() as endpoint:
        yield endpoint
