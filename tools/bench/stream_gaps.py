"""What a listener of a multi-chunk stream hears: piece arrivals against audio, and stalls.

Drives the library's own `SpeechPipeline` over a streaming `SimulatedEngine` (the vllm
engine's render rule, `RenderSchedule`) whose T3 makes `--speed` times real time, with
`--concurrency` streams at once. Each stream's PCM pieces are logged as (arrival time,
seconds of audio) and scored by the GPU proof's own measure (`t3_reference.stall_s`):
silence after the first audio. The GPU engine under load makes about 1.1 times real time
per stream (64 streams on an H200), so that is the default.

    PYTHONPATH=. python -m tools.bench.stream_gaps --concurrency 1 4

The simulated engine takes streamed items uncontended (continuous batching), while
whole-chunk calls queue behind one another on its device lock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from chatterbox_serve.audio import AudioFormat
from chatterbox_serve.config import Settings, SimulatedEngineConfig, load_settings
from chatterbox_serve.engines.base import SynthesisRequest
from chatterbox_serve.speech import SpeechOrder, SpeechPipeline
from tools.gpu.t3_reference import percentile, stall_s

PCM_BYTES_PER_S = 24_000 * 2
# Short first chunk, then longer ones: the boundary where a whole chunk 1 fell silent.
TEXT = (
    "Hello there, listener. "
    "This second sentence runs a good deal longer than the first one did. "
    "A third sentence follows it here, long enough to take a while to say. "
    "And the fourth one closes the whole thing at a comparable length."
)


def stream_settings(**env: str) -> Settings:
    """Chunking for the measurement: a short first chunk, longer later ones, no watermark."""
    return load_settings(
        {
            "MAX_CHUNK_LENGTH": "80",
            "CHATTERBOX_STREAM_FIRST_CHUNK_LENGTH": "24",
            "WATERMARK": "off",
            **env,
        },
        dotenv_path=None,
    )


def engine_config(speed: float, chars_per_second: float = 15.0) -> SimulatedEngineConfig:
    """A streaming simulated engine whose T3 makes `speed` times real time per item."""
    return SimulatedEngineConfig(
        base_s=0.0,
        per_item_s=0.0,
        per_char_s=1.0 / (chars_per_second * speed),
        chars_per_second=chars_per_second,
        streaming=True,
    )


@dataclass
class Heard:
    """One stream as its listener got it."""

    arrivals: list[tuple[float, float]] = field(default_factory=list)  # (s since start, audio s)

    @property
    def stall_s(self) -> float:
        return stall_s(self.arrivals)


async def listen(pipeline: SpeechPipeline, text: str, request_id: str) -> Heard:
    """Stream `text` as PCM and log each piece's arrival against its audio."""
    order = SpeechOrder(
        request_id, text, AudioFormat.PCM, SynthesisRequest("", "en"), streaming=True
    )
    heard = Heard()
    began = time.monotonic()
    async for piece in pipeline.stream(order):
        if piece.data:
            heard.arrivals.append((time.monotonic() - began, len(piece.data) / PCM_BYTES_PER_S))
    return heard


async def listen_all(pipeline: SpeechPipeline, text: str, concurrency: int) -> list[Heard]:
    """`concurrency` streams of `text` at once."""
    return list(
        await asyncio.gather(*(listen(pipeline, text, f"gap-{i}") for i in range(concurrency)))
    )


def summary(streams: list[Heard]) -> dict[str, Any]:
    stalls = [s.stall_s for s in streams]
    return {
        "streams": len(streams),
        "stall_s_p50": round(percentile(stalls, 50), 3),
        "stall_s_p95": round(percentile(stalls, 95), 3),
        "stall_s_max": round(max(stalls), 3),
        "arrival_s_vs_audio_s": [
            [(round(at, 3), round(audio, 3)) for at, audio in s.arrivals] for s in streams
        ],
    }


async def _main(concurrency: list[int], speed: float) -> dict[str, Any]:
    from chatterbox_serve.engines.simulated import SimulatedEngine
    from tools.bench.direct import DirectSubmitter

    settings = stream_settings()
    out: dict[str, Any] = {"speed_over_real_time": speed, "text_chars": len(TEXT), "runs": {}}
    for c in concurrency:
        sub = DirectSubmitter(SimulatedEngine(engine_config(speed)))
        pipeline = SpeechPipeline(settings, sub, sub.streams)
        out["runs"][f"c={c}"] = summary(await listen_all(pipeline, TEXT, c))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--speed", type=float, default=1.1, help="T3 speed over real time")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_main(args.concurrency, args.speed)), indent=1))


if __name__ == "__main__":
    main()
