"""Shared fixtures: settings, paths to ../shared data, and audio decoding helpers."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from chatterbox_serve.engines.base import SynthesisRequest
from chatterbox_serve.generation import GenerationParameters

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    assert SHARED.is_dir(), f"../shared not found at {SHARED}"
    return SHARED


def probe(data: bytes) -> dict[str, object]:
    """Decode a whole encoded file with PyAV: container, codec, rate, channels, duration."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return {
            "container": container.format.name,
            "codec": stream.codec_context.name,
            "sample_rate": stream.codec_context.sample_rate,
            "channels": stream.codec_context.channels,
            "duration_s": samples / stream.codec_context.sample_rate,
        }


def pcm16_duration(data: bytes, sample_rate: int = 24_000) -> float:
    return len(data) / 2 / sample_rate


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete random-weight English checkpoint with a 2-layer T3 (tools/write_checkpoint)."""
    from tools.write_checkpoint import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("tiny-checkpoint"), tiny=True, seed=0)


def synthesis_request(text: str, language: str = "en", **kw: Any) -> SynthesisRequest:
    """An engine request; generation parameters may be given by name (`seed=3`)."""
    generation = GenerationParameters(**GenerationParameters.pick(kw))
    rest = {k: v for k, v in kw.items() if k not in GenerationParameters.names()}
    return SynthesisRequest(text=text, language=language, generation=generation, **rest)
