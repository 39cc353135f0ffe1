"""The CPU audio deployment: chunking, fan-out to the model, stitching, speed and encoding."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Generator
from typing import Any

import numpy as np
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator

from chatterbox_serve.audio import change_speed
from chatterbox_serve.audio.watermark import load_watermarker
from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult
from chatterbox_serve.errors import EngineOverloadedError
from chatterbox_serve.speech import AudioPiece, RenderedSpeech, SpeechOrder, SpeechPipeline
from deployments.cluster_status import ReplicaLoad, StatusReporter
from deployments.metrics import SpeechMetrics
from deployments.model_routing import ModelHandles


def _warm_up_speed_change() -> None:
    change_speed(np.zeros(4800, dtype=np.float32), 1.25)


class _ModelCall:
    """A model handle call that reports Serve back-pressure as `EngineOverloadedError`."""

    def __init__(self, response: DeploymentResponse[SynthesisResult]) -> None:
        self._response = response

    def __await__(self) -> Generator[Any, None, SynthesisResult]:
        return self._result().__await__()

    async def _result(self) -> SynthesisResult:
        try:
            result: SynthesisResult = await self._response
        except BackPressureError as exc:
            raise EngineOverloadedError("model queue full") from exc
        return result

    def cancel(self) -> None:
        self._response.cancel()  # type: ignore[no-untyped-call]


class TextAudioDeployment:
    """Runs `SpeechPipeline`; raw audio flows model -> here, only encoded bytes go on."""

    def __init__(
        self,
        models: dict[str, DeploymentHandle[Any]],
        settings: Settings,
        streams_audio: bool = False,
    ) -> None:
        """`models`: each loaded family's model deployment, by family name.
        `streams_audio`: a model's engine yields first audio before a chunk is done."""
        self._models = ModelHandles(models, settings.engine.default_family)
        self.pipeline = SpeechPipeline(
            settings, self._submit, self._submit_stream if streams_audio else None
        )
        self._metrics = SpeechMetrics()
        self._load = ReplicaLoad()
        self._reporter = StatusReporter(self._load)
        # librosa's import and JIT take seconds; pay them now, off the request path.
        threading.Thread(target=_warm_up_speed_change, daemon=True).start()
        if settings.audio.watermarked:
            # Before the replica is ready: a request that waited for the network's load
            # would hold back every piece of its stream until it was done.
            load_watermarker().apply(np.zeros(4800, dtype=np.float32))

    def _submit(self, item: SynthesisRequest) -> _ModelCall:
        response = self._models.of(item).synthesize.remote(item)
        assert isinstance(response, DeploymentResponse)
        return _ModelCall(response)

    async def _submit_stream(self, item: SynthesisRequest) -> AsyncIterator[SynthesisResult]:
        pieces = self._models.of(item).options(stream=True).synthesize_stream.remote(item)
        assert isinstance(pieces, DeploymentResponseGenerator)
        ended = False
        try:
            async for piece in pieces:
                yield piece
            ended = True
        except BackPressureError as exc:
            raise EngineOverloadedError("model queue full") from exc
        finally:
            if not ended:
                # The listener went away (or a piece failed): stop the model's work too.
                pieces.cancel()  # type: ignore[no-untyped-call]

    async def render(self, order: SpeechOrder) -> RenderedSpeech:
        with self._load.track():
            rendered = await self.pipeline.render(order)
        self._metrics.record("file", rendered.audio_s, rendered.timings)
        return rendered

    async def stream(self, order: SpeechOrder) -> AsyncIterator[AudioPiece]:
        with self._load.track():
            async for piece in self.pipeline.stream(order):
                if piece.final and piece.timings is not None:
                    self._metrics.record("stream", piece.audio_s, piece.timings)
                yield piece
