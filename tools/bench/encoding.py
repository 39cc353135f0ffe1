"""Encoding speed: seconds of 24 kHz mono audio encoded per CPU-second, for every format."""

from __future__ import annotations

import time
from typing import Any

from chatterbox_serve.audio import AudioFormat, encode_audio
from chatterbox_serve.engines.base import SynthesisRequest
from chatterbox_serve.engines.simulated import SAMPLE_RATE, render_tone_speech
from tools.bench.options import SHORT_TEXT


def measure_encoding(audio_s: float, repeats: int, mp3_bitrate_kbps: int) -> dict[str, Any]:
    """Encode `audio_s` seconds of simulated speech `repeats` times per format.

    CPU time is this process's (`time.process_time`), so it counts the codec's threads too
    and is the figure to divide a core budget by.
    """
    chars = max(1, int(audio_s * 15))
    text = (SHORT_TEXT + " ") * (chars // len(SHORT_TEXT) + 1)
    audio = render_tone_speech(SynthesisRequest(text=text, language="en"), 15.0)
    audio = audio[: int(audio_s * SAMPLE_RATE)]
    seconds = len(audio) / SAMPLE_RATE
    results: dict[str, Any] = {}
    for fmt in AudioFormat:
        encode_audio(audio[:SAMPLE_RATE], fmt, mp3_bitrate_kbps=mp3_bitrate_kbps)  # warm up
        cpu0, wall0 = time.process_time(), time.perf_counter()
        size = 0
        for _ in range(repeats):
            size = len(encode_audio(audio, fmt, mp3_bitrate_kbps=mp3_bitrate_kbps))
        cpu = max(time.process_time() - cpu0, 1e-9)
        wall = time.perf_counter() - wall0
        results[fmt.value] = {
            "audio_s": seconds * repeats,
            "cpu_s": cpu,
            "wall_s": wall,
            "realtime_per_cpu_s": seconds * repeats / cpu,
            "bytes": size,
        }
    return results
