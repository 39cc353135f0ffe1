"""The ingress's start-up sweep of voice-library crash debris."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator

import pytest

from chatterbox_serve.voices.library import VoiceLibrary
from chatterbox_serve.voices.store import LocalVoiceStore
from deployments.ingress import sweep_voice_debris
from tests.voice_audio import sample


class _DiesBeforeClaiming(LocalVoiceStore):
    def create(self, key: str, data: bytes) -> None:
        raise KeyboardInterrupt("killed")


class _UnreachableStore(LocalVoiceStore):
    def list(self, prefix: str) -> list[str]:
        raise ConnectionError("storage is down")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def logs() -> Iterator[_Records]:
    # Ray's "ray.serve" logger does not propagate to the root, so caplog cannot see it.
    handler, serve_logger = _Records(), logging.getLogger("ray.serve")
    level = serve_logger.level
    serve_logger.addHandler(handler)
    serve_logger.setLevel(logging.INFO)
    yield handler
    serve_logger.removeHandler(handler)
    serve_logger.setLevel(level)


def _age_every_record(root, seconds: int) -> None:
    for record in root.glob("voices/*/voice.json"):
        body = json.loads(record.read_bytes())
        body["created_at"] -= seconds
        record.write_text(json.dumps(body))


def test_sweep_removes_old_debris_and_keeps_live_voices(tmp_path, logs):
    root = tmp_path / "v"
    with pytest.raises(KeyboardInterrupt):
        VoiceLibrary(_DiesBeforeClaiming(root)).add_voice("half", sample(0))
    library = VoiceLibrary(LocalVoiceStore(root))
    library.add_voice("live", sample(1))
    _age_every_record(root, 7200)

    sweep_voice_debris(library)
    assert "removed 1 unreachable voices" in logs.text
    assert len(library.store.list("voices/")) == 2  # live's audio and record, nothing else
    assert library.find("live").prompt.audio == sample(1)


def test_a_fresh_upload_in_progress_is_not_swept(tmp_path):
    root = tmp_path / "v"
    with pytest.raises(KeyboardInterrupt):
        VoiceLibrary(_DiesBeforeClaiming(root)).add_voice("half", sample(0))
    library = VoiceLibrary(LocalVoiceStore(root))
    sweep_voice_debris(library)
    assert len(library.store.list("voices/")) == 2


def test_an_unreachable_store_is_logged_not_raised(tmp_path, logs):
    sweep_voice_debris(VoiceLibrary(_UnreachableStore(tmp_path / "v")))
    assert "sweep failed" in logs.text and "storage is down" in logs.text


def test_the_cleanup_route_is_for_operators_and_spares_fresh_and_job_files(tmp_path):
    # It once swept temporaries of age 0 across the whole storage root: a job's output
    # mid-assembly (JOBS_URL unset puts jobs beside the voices) and uploads in flight.
    import asyncio

    import httpx

    from chatterbox_serve.engines.simulated import SimulatedEngine
    from deployments.ingress import build_api
    from tests.component.conftest import make_settings
    from tests.local_backend import LocalBackend

    root = tmp_path / "v"
    with pytest.raises(KeyboardInterrupt):
        VoiceLibrary(_DiesBeforeClaiming(root)).add_voice("half", sample(0))
    library = VoiceLibrary(LocalVoiceStore(root))
    in_flight = root / "jobs" / "j1" / "output" / ".tmp-assembling"
    in_flight.parent.mkdir(parents=True)
    in_flight.write_bytes(b"RIFF")
    old = in_flight.stat().st_mtime - 7200  # a long job's output, being written for 2 h
    os.utime(in_flight, (old, old))
    settings = make_settings(API_KEYS="tenant", ADMIN_API_KEYS="ops")
    engine = SimulatedEngine(settings.simulated)
    app = build_api(settings, LocalBackend(settings, engine), "simulated", voices=library)

    async def call(key: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post("/voices/cleanup", headers={"Authorization": f"Bearer {key}"})

    tenant, operator = asyncio.run(call("tenant")), asyncio.run(call("ops"))
    assert tenant.status_code == 403 and tenant.json()["error"]["code"] == "operator_only"
    assert operator.status_code == 200 and operator.json()["count"] == 0
    assert in_flight.exists()
    assert len(library.store.list("voices/")) == 2  # the fresh half-upload stays too
