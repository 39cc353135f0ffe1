"""`LocalBackend`: the speech pipeline and an engine in this process, without Ray.

The test harness for the HTTP layer: `build_api` over it behaves as the Serve app
does over its deployment handles, minus batching across requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult, TTSEngine
from chatterbox_serve.families import ModelFamily
from chatterbox_serve.speech import AudioPiece, RenderedSpeech, SpeechOrder, SpeechPipeline
from tools.bench.direct import DirectSubmitter


class LocalBackend:
    """Runs the pipeline and an engine in this process, without Ray.

    Several families: one engine each, items routed by their family as the audio
    deployment routes them to each family's model deployment.
    """

    def __init__(
        self, settings: Settings, engine: TTSEngine | Mapping[ModelFamily, TTSEngine]
    ) -> None:
        default = settings.engine.default_family
        engines = dict(engine) if isinstance(engine, Mapping) else {default: engine}
        self.engine = engines[default]
        if len(engines) == 1:
            submitter = DirectSubmitter(self.engine)
            self.pipeline = SpeechPipeline(settings, submitter, submitter.streams)
            return
        submitters = {f: DirectSubmitter(e) for f, e in engines.items()}

        def submit(item: SynthesisRequest) -> Any:
            return submitters[item.family or default](item)

        def stream(item: SynthesisRequest) -> AsyncIterator[SynthesisResult]:
            return submitters[item.family or default].stream(item)

        streams = any(e.streams_audio for e in engines.values())
        self.pipeline = SpeechPipeline(settings, submit, stream if streams else None)

    async def render(self, job: SpeechOrder) -> RenderedSpeech:
        return await self.pipeline.render(job)

    def stream(self, job: SpeechOrder) -> AsyncIterator[AudioPiece]:
        return self.pipeline.stream(job)

    async def health(self) -> dict[str, Any]:
        await self.engine.check_health()
        return {"model_ready": True, "replicas": 1, **self.engine.info()}
