"""The TTS model deployment: one engine per replica, fed by `@serve.batch`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from ray import serve

from chatterbox_serve.config import Settings
from chatterbox_serve.engines import build_engine
from chatterbox_serve.engines.base import SynthesisOutcome, SynthesisRequest, SynthesisResult
from chatterbox_serve.engines.voice_audio import VoiceAudioCache, synthesize_with_voices
from chatterbox_serve.errors import ChatterboxError, EngineError
from deployments.admission import BatchGate, Ticket
from deployments.cluster_status import ReplicaLoad, StatusReporter
from deployments.metrics import EngineMetrics

logger = logging.getLogger("ray.serve")


class SpeechModelDeployment:
    """Collects synthesis items from every concurrent request into one engine call."""

    async def __init__(  # type: ignore[misc]  # Serve awaits it
        self, settings: Settings, engine: str
    ) -> None:
        """`engine` is the import path the builder resolved; no `auto` is decided here."""
        self.settings = settings
        self.engine = build_engine(settings, engine)
        await self.engine.start()
        # Voice audio by sha256: a request's later chunks arrive without it (issue 11).
        self._voices = VoiceAudioCache(settings.engine.voice_audio_cache_bytes)
        self._user_config: dict[str, Any] = {}
        self._metrics = EngineMetrics()
        self._load = ReplicaLoad(has_queue=True)
        self._reporter = StatusReporter(self._load)
        # Items join the batch queue only while the engine has room for another call
        # (deployments/admission.py).
        self._gate = BatchGate(
            settings.engine.max_batch_size, concurrency=self.engine.max_concurrent_calls
        )
        logger.info("Model replica ready with engine %s", self.engine.name)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply `batch_wait_timeout_s` from `user_config` at runtime.

        `max_batch_size` must equal `VLLM_MAX_BATCH_SIZE`, the engine's own limit (the
        builder derives it; /health and /config then agree). A different value is
        refused, which fails the deploy instead of running a batch the engine cannot.
        """
        engine_batch = self.settings.engine.max_batch_size
        size = int(user_config.get("max_batch_size", engine_batch))
        wait = float(user_config.get("batch_wait_timeout_s", 0.0))
        if size != engine_batch:
            raise ValueError(
                f"user_config max_batch_size={size} differs from VLLM_MAX_BATCH_SIZE="
                f"{engine_batch}; set VLLM_MAX_BATCH_SIZE only"
            )
        if wait < 0:
            raise ValueError(f"invalid user_config {user_config!r}")
        self._batch.set_max_batch_size(size)  # type: ignore[attr-defined]
        self._gate.limit = size
        self._batch.set_batch_wait_timeout_s(wait)  # type: ignore[attr-defined]
        self._user_config = {"max_batch_size": size, "batch_wait_timeout_s": wait}
        logger.info("Batching set to %s", self._user_config)

    async def synthesize(self, item: SynthesisRequest) -> SynthesisResult:
        """Synthesise one item as part of whatever batch it lands in."""
        return await self._synthesize(item, background=False)

    async def synthesize_background(self, item: SynthesisRequest) -> SynthesisResult:
        """As `synthesize`, for a long-text job: only where interactive items leave room."""
        return await self._synthesize(item, background=True)

    async def _synthesize(self, item: SynthesisRequest, *, background: bool) -> SynthesisResult:
        arrived = time.monotonic()
        with self._load.track():
            ticket = await self._gate.enter(background)
            try:
                outcome = await self._batch((item, arrived, ticket))
            except asyncio.CancelledError:
                self._gate.abandon(ticket)
                raise
        if isinstance(outcome, ChatterboxError):
            raise outcome
        return outcome

    async def synthesize_stream(self, item: SynthesisRequest) -> AsyncIterator[SynthesisResult]:
        """One item as pieces of audio, the first before the model has finished (issue 15).

        An engine that streams (`streams_audio`) takes the item straight, outside the
        batch queue: it batches T3 and S3Gen itself, and a listener must not wait for
        a batch to form. Any other engine gets the item through the batch queue, as one
        piece.
        """
        if not self.engine.streams_audio:
            yield await self._synthesize(item, background=False)
            return
        (ready,) = self._voices.attach([item])
        if isinstance(ready, ChatterboxError):
            raise ready
        began = time.monotonic()
        with self._load.track(), self._load.running(1):
            try:
                async for piece in self.engine.synthesize_stream(ready):
                    yield piece
            except ChatterboxError as exc:
                self._metrics.record_error("item", exc)
                raise
        logger.debug("streamed item in %.3f s", time.monotonic() - began)

    # Up to 4 calls at once; the gate lets in only as many as the engine declares.
    @serve.batch(max_batch_size=10, batch_wait_timeout_s=0.01, max_concurrent_batches=4)
    async def _batch(
        self, entries: list[tuple[SynthesisRequest, float, Ticket]]
    ) -> list[SynthesisOutcome]:
        # One slot per caller, never a raise: a raise here would fail every request
        # in the batch, not just the one with the bad item.
        started = time.monotonic()
        items = [item for item, _, _ in entries]
        self._gate.started(ticket for _, _, ticket in entries)
        try:
            with self._load.running(len(items)):
                outcomes = await synthesize_with_voices(self.engine, self._voices, items)
        except Exception as exc:
            logger.exception("Engine call over %d items failed", len(items))
            self._metrics.record_error("call", exc)
            return [EngineError("engine call failed") for _ in items]
        finally:
            self._gate.finished()
        waits = [started - arrived for _, arrived, _ in entries]
        self._metrics.record_call(waits, time.monotonic() - started, outcomes)
        self._metrics.record_cache(self.engine.info())
        return [
            replace(o, queue_wait_s=started - arrived) if isinstance(o, SynthesisResult) else o
            for o, (_, arrived, _) in zip(outcomes, entries, strict=False)
        ]

    async def check_health(self) -> None:
        await self.engine.check_health()

    def info(self) -> dict[str, Any]:
        return {
            **self.engine.info(),
            "voice_audio_cache": self._voices.stats(),
            "batching": self._user_config,
        }

    def stats(self) -> dict[str, Any]:
        """Batch statistics of this replica's engine (simulated engine records them)."""
        recorder = getattr(self.engine, "recorder", None)
        return recorder.snapshot() if recorder is not None else {}

    def reset_stats(self) -> None:
        recorder = getattr(self.engine, "recorder", None)
        if recorder is not None:
            recorder.reset()

    async def __del__(self) -> None:
        await self.engine.shutdown()
