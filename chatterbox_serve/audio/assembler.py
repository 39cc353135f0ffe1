"""One request's audio, chunk by chunk: speed, crossfade, encode, and the audio cap.

Streams, whole files and long-text jobs all turn their chunks into bytes through an
`AudioAssembler`, so the three agree to the sample: the same speed change per chunk,
the same crossfade between chunks (none inside a chunk that arrives in pieces), the
same encoder, and the same bound on how much audio a text may become.
"""

from __future__ import annotations

import numpy as np

from chatterbox_serve.audio.formats import SAMPLE_RATE, AudioFormat, StreamingEncoder
from chatterbox_serve.audio.stitching import Stitcher, change_speed
from chatterbox_serve.audio.watermark import WatermarkStream
from chatterbox_serve.errors import EngineError


class AudioAssembler:
    """Stitches chunks in order into one encoded stream.

    Args:
        total_samples: the stitched length, where the format needs it up front (WAV).
        cap_s: most seconds of audio (before speed) the engine may make for the whole
            request; past it `count` raises `EngineError`, so a runaway engine (or a
            text that tricks it) cannot make hours of audio.
        marks: watermarks each chunk as it comes, before the speed change; None where
            the chunks arrive marked already (long-text jobs mark each chunk they store).
    """

    def __init__(
        self,
        fmt: AudioFormat,
        *,
        speed: float = 1.0,
        crossfade_ms: float = 25.0,
        mp3_bitrate_kbps: int = 64,
        total_samples: int | None = None,
        cap_s: float | None = None,
        sample_rate: int = SAMPLE_RATE,
        marks: WatermarkStream | None = None,
    ) -> None:
        self.speed = speed
        self._marks = marks
        self.cap_s = cap_s
        self.made_s = 0.0
        self.samples_out = 0
        self._stitcher = Stitcher(sample_rate, crossfade_ms)
        self._encoder = StreamingEncoder(
            fmt, sample_rate, total_samples=total_samples, mp3_bitrate_kbps=mp3_bitrate_kbps
        )

    @property
    def fade(self) -> int:
        """Samples of each crossfade."""
        return self._stitcher.fade

    def count(self, seconds: float) -> None:
        """Add `seconds` the engine made; raises `EngineError` past the cap."""
        self.made_s += seconds
        if self.cap_s is not None and self.made_s > self.cap_s:
            raise EngineError(f"the engine made more than {self.cap_s:.0f} s of audio")

    def stitch(
        self, audio: np.ndarray, *, last: bool, continues: bool = False, ends: bool = True
    ) -> np.ndarray:
        """`audio` at the request's speed, joined to what came before.

        A new chunk is crossfaded into the one before; `continues` appends a further
        piece of the chunk being stitched. `last` also returns the held-back tail.
        `ends`: `audio` completes its chunk (the watermark marks a chunk once, as
        upstream marks each clip it generates).
        """
        if self._marks is not None:
            audio = self._marks.mark(audio, ends)
        audio = change_speed(audio, self.speed)
        stitcher = self._stitcher
        out = stitcher.extend(audio) if continues else stitcher.push(audio)
        if last:
            out = np.concatenate([out, stitcher.flush()])
        self.samples_out += len(out)
        return out

    def encode(self, audio: np.ndarray, *, finish: bool = False) -> bytes:
        """Encoded bytes for stitched `audio`; `finish` ends the stream."""
        out = self._encoder.encode(audio)
        return out + self._encoder.finish() if finish else out
