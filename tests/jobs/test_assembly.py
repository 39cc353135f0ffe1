"""Assembling a job's file: exact WAV sizes, every format decodes, bounded memory."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from chatterbox_serve.audio import SAMPLE_RATE, AudioFormat, Stitcher, change_speed
from chatterbox_serve.jobs.assembly import (
    assemble,
    chunk_wav,
    stitched_length,
    stretched_length,
    wav_samples,
)
from chatterbox_serve.jobs.records import ChunkCommit
from tests.conftest import probe


def tone(seconds: float, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def commits_for(chunks: list[np.ndarray]) -> tuple[list[ChunkCommit], dict[str, bytes]]:
    blobs = {f"c{i}": chunk_wav(a, SAMPLE_RATE) for i, a in enumerate(chunks)}
    commits = [
        ChunkCommit(i, f"c{i}", len(a), SAMPLE_RATE, chars=1, started_at=0, completed_at=0)
        for i, a in enumerate(chunks)
    ]
    return commits, blobs


def test_chunk_wav_round_trips() -> None:
    audio = tone(0.5)
    back = wav_samples(chunk_wav(audio, SAMPLE_RATE))
    assert len(back) == len(audio) and np.max(np.abs(back - audio)) < 1e-4


@pytest.mark.parametrize("lengths", [[5000, 7000, 300], [100, 100], [24000], [0, 700, 10]])
def test_length_arithmetic_matches_the_stitcher(lengths: list[int]) -> None:
    stitcher = Stitcher(SAMPLE_RATE, 25.0)
    out = sum(len(stitcher.push(np.ones(n, np.float32))) for n in lengths)
    out += len(stitcher.flush())
    assert stitched_length(lengths, stitcher.fade) == out


def test_stretched_length_matches_change_speed() -> None:
    audio = tone(1.01)
    for speed in (0.7, 1.5, 1.0):
        assert len(change_speed(audio, speed)) == stretched_length(len(audio), speed)


@pytest.mark.parametrize("fmt", list(AudioFormat))
def test_assembled_file_decodes_to_the_chunks_duration(fmt: AudioFormat) -> None:
    chunks = [tone(1.0), tone(0.5, 330.0), tone(2.0)]
    commits, blobs = commits_for(chunks)
    out = io.BytesIO()
    result = assemble(commits, lambda c: blobs[c.audio_key], out, fmt)
    data = out.getvalue()
    fade = int(SAMPLE_RATE * 0.025)
    expected_s = (sum(len(c) for c in chunks) - 2 * fade) / SAMPLE_RATE
    assert result.size_bytes == len(data)
    assert result.duration_s == pytest.approx(expected_s, abs=1e-6)
    if fmt is AudioFormat.PCM:
        assert len(data) == round(expected_s * SAMPLE_RATE) * 2
        return
    assert probe(data)["duration_s"] == pytest.approx(expected_s, abs=0.08)
    if fmt is AudioFormat.WAV:  # exact sizes in the header, so players can seek
        assert int.from_bytes(data[40:44], "little") == len(data) - 44


def test_speed_change_keeps_the_wav_header_exact() -> None:
    commits, blobs = commits_for([tone(1.0), tone(1.0)])
    out = io.BytesIO()
    result = assemble(commits, lambda c: blobs[c.audio_key], out, AudioFormat.WAV, speed=1.5)
    data = out.getvalue()
    assert int.from_bytes(data[40:44], "little") == len(data) - 44
    assert result.duration_s == pytest.approx((2.0 - 0.025) / 1.5, abs=0.01)


def test_memory_stays_bounded_by_one_chunk(tmp_path: Path) -> None:
    """10 minutes of audio (58 MB as float32) assembled with a few MB of Python memory."""
    chunk = tone(20.0)
    wav = chunk_wav(chunk, SAMPLE_RATE)
    commits = [
        ChunkCommit(i, "same", len(chunk), SAMPLE_RATE, chars=1, started_at=0, completed_at=0)
        for i in range(30)
    ]
    path = tmp_path / "out.wav"
    tracemalloc.start()
    try:
        with open(path, "wb") as f:
            assemble(commits, lambda c: wav, f, AudioFormat.WAV)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.stat().st_size == 44 + 2 * stitched_length([len(chunk)] * 30, 600)
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB"
