"""Voice uploads for tests: the real samples, and generated good and bad files."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np

from tests.conftest import SHARED

SAMPLES = sorted((SHARED / "data" / "voices").glob("*.mp3"))


def sample(i: int = 0) -> bytes:
    """One of the real Chatterbox speech samples (24 kHz mp3, a few seconds)."""
    return Path(SAMPLES[i]).read_bytes()


def encode(
    seconds: float,
    *,
    fmt: str = "wav",
    codec: str = "pcm_s16le",
    rate: int = 24_000,
    channels: int = 1,
    amplitude: float = 0.3,
    freq: float = 220.0,
) -> bytes:
    """A tone (or silence, with amplitude 0) encoded with PyAV."""
    layout = "mono" if channels == 1 else "stereo"
    t = np.arange(int(seconds * rate)) / rate
    wave = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        # The native vorbis encoder is marked experimental in FFmpeg.
        options = {"strict": "experimental"} if codec == "vorbis" else {}
        stream = container.add_stream(codec, rate=rate, layout=layout, options=options)
        fmt_name = stream.codec_context.format.name
        data = np.tile(wave, (channels, 1))
        if fmt_name.startswith("s16"):
            data = (data * 32767).astype(np.int16)
        elif fmt_name.startswith("s32"):
            data = (data * (2**31 - 1)).astype(np.int32)
        if not fmt_name.endswith("p"):
            data = data.T.reshape(1, -1)
        step = 1024 * (1 if fmt_name.endswith("p") else channels)
        for i in range(0, data.shape[1], step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data[:, i : i + step]), format=fmt_name, layout=layout
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def corrupt() -> bytes:
    """An mp3's first bytes followed by garbage."""
    rng = np.random.default_rng(7)
    return sample(0)[:64] + rng.bytes(20_000)


def truncated() -> bytes:
    """The first half of a real mp3, whose header still declares the whole length."""
    data = sample(0)
    return data[: len(data) // 2]


NOT_AUDIO = b"This is a text file, not audio.\n" * 200
