"""The baseline: one request at a time, its chunks one after another, over the same engine.

This is how the single-process Chatterbox API servers serve: a global lock around the
model, each chunk generated with batch size one. We drive the library's own
`SpeechPipeline` (the same chunking, stitching and encoding code as the served app) over a
`SimulatedEngine` with the same cost model, sequentially. `DirectSubmitter` sends each
chunk as its own engine call, and the engine serialises calls as one GPU would, so the
chunks run one after another at batch size one. Encoding of chunk k overlaps the engine
time of chunk k+1, which favours the baseline slightly; the ratios are therefore
conservative. No Ray and no HTTP are involved, which also favours the baseline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.protocol import SpeechRequest
from chatterbox_serve.speech import SpeechPipeline
from chatterbox_serve.voices.resolve import EmptyVoiceLibrary, resolve_voice
from tools.bench.direct import DirectSubmitter


async def run_sequential(
    settings: Settings, texts: list[str], fmt: str, on_done: Callable[[], Any] = lambda: None
) -> dict[str, Any]:
    """Serve `texts` strictly one after another; wall time, audio made, and per-request latency."""
    engine = SimulatedEngine(settings.simulated)
    await engine.start()
    pipeline = SpeechPipeline(settings, DirectSubmitter(engine))
    voice = resolve_voice(None, EmptyVoiceLibrary())
    latencies: list[float] = []
    audio_s = 0.0
    began = time.monotonic()
    for i, text in enumerate(texts):
        request = SpeechRequest.model_validate({"input": text, "response_format": fmt})
        job = request.to_order(settings, voice, f"baseline-{i}", streaming=False)
        t0 = time.monotonic()
        rendered = await pipeline.render(job)
        latencies.append(time.monotonic() - t0)
        audio_s += rendered.audio_s
        on_done()
    wall = time.monotonic() - began
    snap = engine.recorder.snapshot()
    return {
        "requests": len(texts),
        "wall_s": wall,
        "audio_s": audio_s,
        "audio_s_per_s": audio_s / wall,
        "latencies_s": latencies,
        "engine_calls": snap["calls"],
        "mean_batch": snap["items"] / max(snap["calls"], 1),
    }
