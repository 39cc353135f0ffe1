"""The final file of a job: chunk audio streamed, in order, through stitching and the encoder.

Only one chunk's audio (plus the crossfade tail and the encoder's buffers) is in
memory at any time, whatever the length of the job: each chunk is read from the
store, stitched, encoded, and its bytes written to the output before the next is
read.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from chatterbox_serve.audio import SAMPLE_RATE, AudioAssembler, AudioFormat, to_pcm16, wav_header
from chatterbox_serve.jobs.records import ChunkCommit
from chatterbox_serve.jobs.storage import BlobWriter


def chunk_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    """One chunk's audio as a PCM16 WAV file, the form chunks are stored and served in."""
    pcm = to_pcm16(audio)
    return wav_header(sample_rate, len(pcm)) + pcm


def wav_samples(data: bytes) -> np.ndarray:
    """The float samples of a WAV written by `chunk_wav`."""
    if data[:4] != b"RIFF" or data[36:40] != b"data":
        raise ValueError("not a chunk WAV")
    (size,) = struct.unpack("<I", data[40:44])
    pcm = np.frombuffer(data[44 : 44 + size], dtype="<i2")
    return pcm.astype(np.float32) / 32767.0


def stretched_length(samples: int, speed: float) -> int:
    """Samples after `change_speed` (librosa fixes the output to round(n / rate))."""
    if abs(speed - 1.0) < 1e-6 or samples == 0:
        return samples
    return int(round(samples / speed))


def stitched_length(lengths: Sequence[int], fade: int) -> int:
    """Samples a `Stitcher` puts out for chunks of these lengths, computed without audio."""
    out, tail = 0, 0
    for n in lengths:
        overlap = min(fade, tail, n)
        head = tail + n - overlap
        keep = min(fade, head)
        out += head - keep
        tail = keep
    return out + tail


@dataclass(frozen=True)
class AssembledOutput:
    size_bytes: int
    duration_s: float


def assemble(
    commits: Sequence[ChunkCommit],
    read_chunk: Callable[[ChunkCommit], bytes],
    writer: BlobWriter,
    fmt: AudioFormat,
    *,
    speed: float = 1.0,
    crossfade_ms: float = 25.0,
    mp3_bitrate_kbps: int = 64,
) -> AssembledOutput:
    """Write the whole job's audio, chunk by chunk, into `writer`.

    WAV needs its sizes in the header before the first sample is written; they are
    computed from the chunk lengths recorded in the commits, and checked at the end.
    """
    fade = AudioAssembler(fmt, crossfade_ms=crossfade_ms).fade
    lengths = [stretched_length(c.samples, speed) for c in commits]
    expected = stitched_length(lengths, fade)
    assembler = AudioAssembler(
        fmt,
        speed=speed,
        crossfade_ms=crossfade_ms,
        mp3_bitrate_kbps=mp3_bitrate_kbps,
        total_samples=expected,
    )
    size = 0
    for i, commit in enumerate(commits):
        if commit.sample_rate != SAMPLE_RATE:
            raise ValueError(f"chunk {commit.index} is at {commit.sample_rate} Hz")
        last = i == len(commits) - 1
        out = assembler.stitch(wav_samples(read_chunk(commit)), last=last)
        size += writer.write(assembler.encode(out, finish=last))
    if assembler.samples_out != expected:
        raise RuntimeError(f"assembled {assembler.samples_out} samples, expected {expected}")
    return AssembledOutput(size, assembler.samples_out / SAMPLE_RATE)
