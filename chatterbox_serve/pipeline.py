"""The speech pipeline: chunk, synthesise every chunk at once, stitch, change speed, encode.

It runs in the CPU audio deployment. Its one collaborator, `submit`, sends one
`SynthesisRequest` to the model and returns an awaitable that can be cancelled: a
Serve handle call in production, a local engine call in tests. Every chunk of a
request is submitted before the first is awaited, so a long text's chunks are
batched with each other and with other requests' chunks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from chatterbox_serve.audio import (
    SAMPLE_RATE,
    AudioFormat,
    Stitcher,
    StreamingEncoder,
    change_speed,
    fix_wav_sizes,
)
from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult, TTSEngine
from chatterbox_serve.errors import ChatterboxError, EngineError, InvalidRequestError
from chatterbox_serve.text.chunking import split_text

logger = logging.getLogger(__name__)


class Cancellable(Protocol):
    def __await__(self) -> Any: ...
    def cancel(self) -> Any: ...


Submit = Callable[[SynthesisRequest], Cancellable]


@dataclass(frozen=True)
class SpeechJob:
    """A validated speech request with its voice resolved; crosses from ingress to pipeline."""

    request_id: str
    text: str
    format: AudioFormat
    template: SynthesisRequest
    speed: float = 1.0
    streaming: bool = False
    warnings: tuple[str, ...] = ()
    instructions_ignored: bool = False


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )


@dataclass(frozen=True)
class StageTimings:
    """Seconds spent per stage for one request, summed over its chunks where it applies."""

    chunking_s: float = 0.0
    queue_wait_s: float = 0.0
    engine_s: float = 0.0
    encode_s: float = 0.0
    first_audio_s: float = 0.0
    total_s: float = 0.0
    chunks: int = 0
    batch_sizes: tuple[int, ...] = ()

    def as_server_timing(self) -> str:
        parts = [
            ("chunk", self.chunking_s),
            ("queue", self.queue_wait_s),
            ("engine", self.engine_s),
            ("encode", self.encode_s),
            ("total", self.total_s),
        ]
        return ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in parts)


@dataclass(frozen=True)
class AudioPiece:
    """Encoded bytes for a streamed response; the last piece carries usage and timings."""

    data: bytes
    final: bool = False
    usage: Usage | None = None
    audio_s: float = 0.0
    timings: StageTimings | None = None


@dataclass(frozen=True)
class RenderedSpeech:
    """A whole encoded file."""

    data: bytes
    format: AudioFormat
    usage: Usage
    audio_s: float
    timings: StageTimings = field(default_factory=StageTimings)


class SpeechPipeline:
    """Turns a `SpeechJob` into encoded audio, whole or streamed."""

    def __init__(self, settings: Settings, submit: Submit) -> None:
        self.settings = settings
        self._submit = submit

    def plan(self, job: SpeechJob) -> list[SynthesisRequest]:
        """Chunk the text; raises `InvalidRequestError` past the chunk limit."""
        c = self.settings.chunking
        first = c.stream_first_chunk_length if job.streaming else None
        chunks = split_text(job.text, c.max_chunk_length, first)
        if not chunks:
            raise InvalidRequestError("Input has no speakable text.", param="input")
        if len(chunks) > c.max_chunks_per_request:
            raise InvalidRequestError(
                f"Input splits into {len(chunks)} chunks; the limit is "
                f"{c.max_chunks_per_request} (CHATTERBOX_MAX_CHUNKS_PER_REQUEST).",
                param="input",
            )
        return [replace(job.template, text=t, chunk_index=i) for i, t in enumerate(chunks)]

    async def stream(self, job: SpeechJob) -> AsyncIterator[AudioPiece]:
        """Yield encoded pieces; chunk k goes out once it and every chunk before it are done."""
        began = time.monotonic()
        items = self.plan(job)
        chunked = time.monotonic()
        # Streaming: the other chunks go once the first is back, so the first engine call
        # carries the short first chunk alone instead of a whole batch (issue 5: TTFB).
        pending = [self._submit(item) for item in (items[:1] if job.streaming else items)]
        audio_cfg = self.settings.audio
        encoder = StreamingEncoder(job.format, mp3_bitrate_kbps=audio_cfg.mp3_bitrate_kbps)
        stitcher = Stitcher(crossfade_ms=self.settings.audio.crossfade_ms)
        results: list[SynthesisResult] = []
        encode_s, first_audio_s = 0.0, 0.0
        try:
            for index in range(len(items)):
                result = await _settle(pending[index], job.request_id, index)
                if len(pending) < len(items):
                    pending += [self._submit(item) for item in items[1:]]
                results.append(result)
                last = index == len(items) - 1
                t0 = time.monotonic()
                audio = await asyncio.to_thread(_stitch, stitcher, result.audio, job.speed, last)
                # The first second of a stream is encoded and sent on its own, so the
                # first bytes do not wait for the rest of the first chunk (issue 5: TTFB).
                parts = _split_head(audio) if job.streaming and index == 0 else [audio]
                for k, part in enumerate(parts):
                    finish = last and k == len(parts) - 1
                    data = await asyncio.to_thread(_encode, encoder, part, finish)
                    encode_s += time.monotonic() - t0
                    t0 = time.monotonic()
                    if finish:
                        timings = _timings(results, chunked - began, encode_s, first_audio_s, began)
                        yield AudioPiece(
                            data,
                            final=True,
                            usage=_usage(results),
                            audio_s=_audio_s(results, job.speed),
                            timings=timings,
                        )
                    elif data:
                        first_audio_s = first_audio_s or time.monotonic() - began
                        yield AudioPiece(data)
        finally:
            for call in pending:
                call.cancel()

    async def render(self, job: SpeechJob) -> RenderedSpeech:
        """Synthesise and encode a whole file."""
        pieces = [p async for p in self.stream(replace(job, streaming=False))]
        final = pieces[-1]
        data = b"".join(p.data for p in pieces)
        if job.format is AudioFormat.WAV:
            data = fix_wav_sizes(data)
        assert final.usage is not None and final.timings is not None
        return RenderedSpeech(data, job.format, final.usage, final.audio_s, final.timings)


def _stitch(stitcher: Stitcher, audio: np.ndarray, speed: float, last: bool) -> np.ndarray:
    out = stitcher.push(change_speed(audio, speed))
    return np.concatenate([out, stitcher.flush()]) if last else out


def _split_head(audio: np.ndarray, head_samples: int = SAMPLE_RATE) -> list[np.ndarray]:
    if len(audio) <= 2 * head_samples:
        return [audio]
    return [audio[:head_samples], audio[head_samples:]]


def _encode(encoder: StreamingEncoder, audio: np.ndarray, finish: bool) -> bytes:
    out = encoder.encode(audio)
    return out + encoder.finish() if finish else out


async def _settle(call: Cancellable, request_id: str, index: int) -> SynthesisResult:
    try:
        result = await call
    except ChatterboxError:
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.exception("request %s: chunk %d failed", request_id, index)
        raise EngineError(f"chunk {index} failed: {type(exc).__name__}") from exc
    if not isinstance(result, SynthesisResult):
        raise EngineError(f"chunk {index}: engine returned {type(result).__name__}")
    return result


def _usage(results: Sequence[SynthesisResult]) -> Usage:
    return Usage(sum(r.input_tokens for r in results), sum(r.output_tokens for r in results))


def _audio_s(results: Sequence[SynthesisResult], speed: float) -> float:
    return sum(r.duration_s for r in results) / speed


def _timings(
    results: Sequence[SynthesisResult],
    chunking_s: float,
    encode_s: float,
    first_audio_s: float,
    began: float,
) -> StageTimings:
    total = time.monotonic() - began
    return StageTimings(
        chunking_s=chunking_s,
        queue_wait_s=sum(r.queue_wait_s for r in results),
        engine_s=sum(r.engine_s for r in results),
        encode_s=encode_s,
        first_audio_s=first_audio_s or total,
        total_s=total,
        chunks=len(results),
        batch_sizes=tuple(r.batch_size for r in results),
    )


class DirectSubmitter:
    """Sends each item straight to a local engine, one call per item (tests, bench baseline)."""

    def __init__(self, engine: TTSEngine) -> None:
        self.engine = engine

    def __call__(self, item: SynthesisRequest) -> asyncio.Task[SynthesisResult]:
        return asyncio.ensure_future(self._one(item))

    async def _one(self, item: SynthesisRequest) -> SynthesisResult:
        began = time.monotonic()
        (outcome,) = await self.engine.synthesize([item])
        if isinstance(outcome, ChatterboxError):
            raise outcome
        return replace(outcome, engine_s=time.monotonic() - began)


class SpeechBackend(Protocol):
    """What the HTTP layer calls: a Serve handle wrapper in production, a local one in tests."""

    async def render(self, job: SpeechJob) -> RenderedSpeech: ...

    def stream(self, job: SpeechJob) -> AsyncIterator[AudioPiece]: ...

    async def health(self) -> dict[str, Any]: ...
