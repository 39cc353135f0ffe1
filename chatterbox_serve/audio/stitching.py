"""Joining chunks (crossfade) and changing speed with the pitch kept."""

from __future__ import annotations

import numpy as np

from chatterbox_serve.audio.formats import SAMPLE_RATE


class Stitcher:
    """Joins consecutive chunks with an equal-power crossfade, one chunk at a time.

    `push` returns the audio that is final so far and keeps back the tail that the
    next chunk will fade into, so streaming and whole-file output are identical.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, crossfade_ms: float = 25.0) -> None:
        self.fade = int(sample_rate * crossfade_ms / 1000.0)
        self._tail = np.zeros(0, dtype=np.float32)

    def push(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float32)
        fade = min(self.fade, len(self._tail), len(chunk))
        if fade > 0:
            t = np.linspace(0.0, np.pi / 2, fade, dtype=np.float32)
            mixed = self._tail[-fade:] * np.cos(t) + chunk[:fade] * np.sin(t)
            head = np.concatenate([self._tail[:-fade], mixed, chunk[fade:]])
        else:
            head = np.concatenate([self._tail, chunk])
        keep = min(self.fade, len(head))
        self._tail = head[len(head) - keep :].copy()
        return head[: len(head) - keep]

    def extend(self, piece: np.ndarray) -> np.ndarray:
        """More of the chunk being pushed: appended as is, no crossfade inside a chunk."""
        head = np.concatenate([self._tail, np.asarray(piece, dtype=np.float32)])
        keep = min(self.fade, len(head))
        self._tail = head[len(head) - keep :].copy()
        return head[: len(head) - keep]

    def flush(self) -> np.ndarray:
        tail, self._tail = self._tail, np.zeros(0, dtype=np.float32)
        return tail


def change_speed(audio: np.ndarray, speed: float) -> np.ndarray:
    """Play `speed` times faster with the pitch kept (phase-vocoder time stretch)."""
    if abs(speed - 1.0) < 1e-6 or len(audio) == 0:
        return np.asarray(audio, dtype=np.float32)
    import librosa

    stretched = librosa.effects.time_stretch(np.asarray(audio, dtype=np.float32), rate=speed)
    return np.asarray(stretched, dtype=np.float32)
