"""`AudioAssembler`: the one path from chunks to bytes (speed, crossfade, encode, cap)."""

from __future__ import annotations

import numpy as np
import pytest

from chatterbox_serve.audio import SAMPLE_RATE, AudioAssembler, AudioFormat
from chatterbox_serve.errors import EngineError


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE), dtype=np.float32) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_chunks_are_crossfaded_and_pieces_of_one_chunk_are_not() -> None:
    chunks = AudioAssembler(AudioFormat.PCM, crossfade_ms=25.0)
    pieces = AudioAssembler(AudioFormat.PCM, crossfade_ms=25.0)
    a, b = _tone(0.5), _tone(0.5)
    joined = np.concatenate([chunks.stitch(a, last=False), chunks.stitch(b, last=True)])
    whole = np.concatenate(
        [pieces.stitch(a, last=False), pieces.stitch(b, last=True, continues=True)]
    )
    assert len(whole) == len(a) + len(b)
    assert len(joined) == len(a) + len(b) - chunks.fade
    assert chunks.samples_out == len(joined) and pieces.samples_out == len(whole)


def test_speed_is_applied_per_chunk() -> None:
    fast = AudioAssembler(AudioFormat.PCM, speed=2.0, crossfade_ms=0.0)
    out = fast.stitch(_tone(1.0), last=True)
    assert len(out) == pytest.approx(SAMPLE_RATE / 2, abs=2)


def test_the_cap_bounds_what_the_engine_made_before_speed() -> None:
    capped = AudioAssembler(AudioFormat.PCM, speed=2.0, cap_s=5.0)
    capped.count(3.0)
    with pytest.raises(EngineError):
        capped.count(2.5)


def test_encode_finishes_the_stream_once() -> None:
    wav = AudioAssembler(AudioFormat.WAV, total_samples=SAMPLE_RATE // 2, crossfade_ms=0.0)
    data = wav.encode(wav.stitch(_tone(0.5), last=True), finish=True)
    assert data[:4] == b"RIFF" and len(data) == 44 + SAMPLE_RATE  # 16-bit samples
