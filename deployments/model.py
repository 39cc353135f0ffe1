"""The TTS model deployment: one engine per replica, fed by `serve.batch`.

The batching follows the engine class's `batch_limits` and nothing else: the batch
queue, the admission gate and the calls in flight are all built from it when the
replica starts; `user_config` tunes only the batch wait.
"""

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
from chatterbox_serve.engines.recorder import BatchRecorder
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
        # Voice audio by sha256: a request's later chunks arrive without it.
        self._voices = VoiceAudioCache(settings.engine.voice_audio_cache_bytes)
        self._metrics = EngineMetrics()
        self._batches = BatchRecorder()
        self._load = ReplicaLoad(has_queue=True)
        self._reporter = StatusReporter(self._load)
        limits = type(self.engine).batch_limits(settings)
        self._batching: dict[str, Any] = {
            "max_batch_size": limits.max_batch_size,
            "max_concurrent_calls": limits.max_concurrent_calls,
            "batch_wait_timeout_s": 0.0,
        }
        # Items join the batch queue only while the engine has room for another call
        # (deployments/admission.py).
        self._gate = BatchGate(limits.max_batch_size, concurrency=limits.max_concurrent_calls)
        self._batch = serve.batch(
            max_batch_size=limits.max_batch_size,
            batch_wait_timeout_s=0.0,
            max_concurrent_batches=limits.max_concurrent_calls,
        )(self._run_batch)
        logger.info("Model replica ready with engine %s", self.engine.name)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply `batch_wait_timeout_s` from `user_config` at runtime (the only key)."""
        unknown = set(user_config) - {"batch_wait_timeout_s"}
        wait = float(user_config.get("batch_wait_timeout_s", 0.0))
        if unknown or wait < 0:
            raise ValueError(f"invalid user_config {user_config!r}; it takes batch_wait_timeout_s")
        self._batch.set_batch_wait_timeout_s(wait)  # type: ignore[attr-defined]
        self._batching["batch_wait_timeout_s"] = wait
        logger.info("Batching set to %s", self._batching)

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
        """One item as pieces of audio, the first before the model has finished.

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
        took = time.monotonic() - began
        self._batches.record(1, took)
        logger.debug("streamed item in %.3f s", took)

    async def _run_batch(
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
        took = time.monotonic() - started
        self._batches.record(len(items), took)
        self._metrics.record_call(waits, took, outcomes)
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
            "batching": dict(self._batching),
        }

    def stats(self) -> dict[str, Any]:
        """This replica's engine calls: how many, their sizes, and how busy they kept it."""
        return self._batches.snapshot()

    def reset_stats(self) -> None:
        self._batches.reset()

    async def __del__(self) -> None:
        await self.engine.shutdown()
