"""`DirectSubmitter`: the model side played by a local engine, one call per item.

The bench's baseline (one request at a time, one chunk per engine call) and the tests
drive `SpeechPipeline` and `JobRunner` through it instead of a Serve handle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import replace

from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult, TTSEngine
from chatterbox_serve.engines.voice_audio import VoiceAudioCache, synthesize_with_voices
from chatterbox_serve.errors import ChatterboxError
from chatterbox_serve.speech import SubmitStream


class DirectSubmitter:
    """Sends each item straight to a local engine, one call per item (tests, bench baseline).

    It plays the model side in full, voice audio cache included, so a detached voice
    that this submitter never saw fails as it would on a fresh model replica.
    """

    def __init__(self, engine: TTSEngine, voice_cache_bytes: int = 64 * 1_048_576) -> None:
        self.engine = engine
        self.voices = VoiceAudioCache(voice_cache_bytes)

    def __call__(self, item: SynthesisRequest) -> asyncio.Task[SynthesisResult]:
        return asyncio.ensure_future(self._one(item))

    async def stream(self, item: SynthesisRequest) -> AsyncGenerator[SynthesisResult, None]:
        """`engine.synthesize_stream` of one item, its voice audio handled as in a call."""
        (ready,) = self.voices.attach([item])
        if isinstance(ready, ChatterboxError):
            raise ready
        async for piece in self.engine.synthesize_stream(ready):
            yield piece

    @property
    def streams(self) -> SubmitStream | None:
        """`stream`, for a `SpeechPipeline`, when the engine streams its audio."""
        return self.stream if self.engine.streams_audio else None

    async def _one(self, item: SynthesisRequest) -> SynthesisResult:
        began = time.monotonic()
        (outcome,) = await synthesize_with_voices(self.engine, self.voices, [item])
        if isinstance(outcome, ChatterboxError):
            raise outcome
        return replace(outcome, engine_s=time.monotonic() - began)
