"""`LocalBackend`: the speech pipeline and an engine in this process, without Ray.

The test harness for the HTTP layer: `build_api` over it behaves as the Serve app
does over its deployment handles, minus batching across requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import TTSEngine
from chatterbox_serve.speech import AudioPiece, RenderedSpeech, SpeechOrder, SpeechPipeline
from tools.bench.direct import DirectSubmitter


class LocalBackend:
    """Runs the pipeline and an engine in this process, without Ray."""

    def __init__(self, settings: Settings, engine: TTSEngine) -> None:
        self.engine = engine
        submitter = DirectSubmitter(engine)
        self.pipeline = SpeechPipeline(settings, submitter, submitter.streams)

    async def render(self, job: SpeechOrder) -> RenderedSpeech:
        return await self.pipeline.render(job)

    def stream(self, job: SpeechOrder) -> AsyncIterator[AudioPiece]:
        return self.pipeline.stream(job)

    async def health(self) -> dict[str, Any]:
        await self.engine.check_health()
        return {"model_ready": True, "replicas": 1, **self.engine.info()}
