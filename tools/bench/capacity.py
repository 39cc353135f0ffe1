"""Engine capacity alone: `SimulatedEngine` called directly at full batches, no Ray, no HTTP.

This is the ceiling the served throughput is compared against: audio-seconds made per
wall-second when every call carries `max_batch_size` items of the workload's chunks.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from typing import Any

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult
from chatterbox_serve.engines.simulated import SimulatedEngine


def _template() -> SynthesisRequest:
    return SynthesisRequest(text="", language="en")


async def measure_capacity(
    settings: Settings, chunks: tuple[str, ...], calls: int
) -> dict[str, Any]:
    """Audio-seconds per wall-second over `calls` full batches cycling through `chunks`."""
    engine = SimulatedEngine(settings.simulated)
    await engine.start()
    batch = settings.engine.max_batch_size
    texts = itertools.cycle(chunks)
    audio_s = 0.0
    began = time.monotonic()
    for _ in range(calls):
        items = [
            replace(_template(), text=next(texts), request_id=f"cap-{i}") for i in range(batch)
        ]
        outcomes = await engine.synthesize(items)
        audio_s += sum(o.duration_s for o in outcomes if isinstance(o, SynthesisResult))
    wall = time.monotonic() - began
    return {
        "batch_size": batch,
        "calls": calls,
        "audio_s": audio_s,
        "wall_s": wall,
        "audio_s_per_s": audio_s / wall,
        "modelled_call_s": wall / calls,
    }


def engine_time_alone(settings: Settings, text: str) -> float:
    """Seconds one engine call carrying only `text` (a batch of one) takes.

    This is the cost model's own figure: the simulated engine sleeps exactly this long,
    so reading it off the model keeps scheduler noise out of the reference.
    """
    engine = SimulatedEngine(settings.simulated)
    return engine.cost_s([replace(_template(), text=text)])
