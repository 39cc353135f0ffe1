"""The ingress's start-up sweep of voice-library crash debris."""

from __future__ import annotations

import json
import logging
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
