"""A third engine, written the way a new engine is added: this module plus one registry line.

It speaks silence sized to the text and says it needs a GPU, so a test can see the
builder read `needs_gpu` from the class instead of from the engine's name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import (
    SynthesisOutcome,
    SynthesisRequest,
    SynthesisResult,
    TTSEngine,
)

PATH = "tests.component.dummy_engine:DummyEngine"


class DummyEngine(TTSEngine):
    """Silence, 10 ms per character; built with `DummyEngine(settings)`."""

    name = "dummy"
    needs_gpu = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[SynthesisOutcome]:
        return [
            SynthesisResult(
                audio=np.zeros(len(r.text) * self.sample_rate // 100, dtype=np.float32),
                sample_rate=self.sample_rate,
                input_tokens=len(r.text),
                output_tokens=len(r.text),
                batch_size=len(requests),
            )
            for r in requests
        ]
