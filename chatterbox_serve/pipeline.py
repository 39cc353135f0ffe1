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
import unicodedata
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
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
from chatterbox_serve.engines.base import (
    SynthesisRequest,
    SynthesisResult,
    TTSEngine,
)
from chatterbox_serve.engines.voice_audio import VoiceAudioCache, synthesize_with_voices
from chatterbox_serve.errors import (
    ChatterboxError,
    EngineError,
    InvalidRequestError,
    VoiceAudioMissingError,
)
from chatterbox_serve.text import speech_rates
from chatterbox_serve.text.chunking import split_text

logger = logging.getLogger(__name__)


class Cancellable(Protocol):
    def __await__(self) -> Any: ...
    def cancel(self) -> Any: ...


Submit = Callable[[SynthesisRequest], Cancellable]
# Speaks one item as pieces, the first before the model is done (`TTSEngine.synthesize_stream`).
SubmitStream = Callable[[SynthesisRequest], AsyncIterator[SynthesisResult]]


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

    def __init__(
        self, settings: Settings, submit: Submit, submit_stream: SubmitStream | None = None
    ) -> None:
        """`submit_stream`, when the model streams, speaks the first chunk of a stream."""
        self.settings = settings
        self._submit = submit
        self._submit_stream = submit_stream

    def plan(self, job: SpeechJob) -> list[SynthesisRequest]:
        """Chunk the text; raises `InvalidRequestError` past the chunk limit."""
        c = self.settings.chunking
        # Per-script chunk length: CJK text costs more prompt and speech per character.
        length = speech_rates.chunk_length(
            job.text, job.template.language, c.max_chunk_length, self._budget_limits()
        )
        first = min(c.stream_first_chunk_length, length) if job.streaming else None
        _refuse_mostly_marks(job.text)
        chunks = _merge_letterless(split_text(job.text, length, first))
        if not chunks:
            raise InvalidRequestError("Input has no speakable text.", param="input")
        if len(chunks) > c.max_chunks_per_request:
            raise InvalidRequestError(
                f"Input splits into {len(chunks)} chunks; the limit is "
                f"{c.max_chunks_per_request} (CHATTERBOX_MAX_CHUNKS_PER_REQUEST).",
                param="input",
            )
        return [
            replace(
                job.template,
                text=t,
                chunk_index=i,
                max_new_tokens=self._token_budget(t, job.template),
            )
            for i, t in enumerate(chunks)
        ]

    def audio_cap_s(self, text: str, language: str) -> float:
        """Most seconds of audio (before speed) that `text` may become."""
        cap = self.settings.chunking.max_audio_s_per_char
        return speech_rates.audio_cap_s(text, language, cap)

    def _token_budget(self, chunk: str, template: SynthesisRequest) -> int:
        # The engine stops the chunk where its audio cap would cut it, within what the
        # engine allows (text/speech_rates.py), so a model that never says stop costs
        # seconds, not the minutes of its own token limit.
        budget = speech_rates.speech_budget(chunk, template.language, self._budget_limits())
        asked = template.max_new_tokens
        return budget if asked is None else min(asked, budget)

    def _budget_limits(self) -> speech_rates.BudgetLimits:
        e = self.settings.engine
        return speech_rates.BudgetLimits(
            self.settings.chunking.max_audio_s_per_char, e.max_new_tokens, e.max_model_len
        )

    async def stream(self, job: SpeechJob) -> AsyncGenerator[AudioPiece, None]:
        """Yield encoded pieces; chunk k goes out once it and every chunk before it are done.

        With a model that streams, a stream's first chunk goes out in pieces as the model
        makes them (issue 15: first audio before the first chunk is done). Not with a
        speed change: stretching pieces apart would put seams inside the chunk.
        """
        began = time.monotonic()
        items = self.plan(job)
        chunked = time.monotonic()
        incremental = job.streaming and self._submit_stream is not None and job.speed == 1.0
        # Streaming: the other chunks go once the first is back (or has begun to come
        # back), so the first engine call carries the short first chunk alone instead of
        # a whole batch (issue 5: TTFB). Only the first chunk carries the voice audio;
        # the others name it by sha256 and the model side re-attaches it (issue 11).
        pending: list[Cancellable | None] = [None if incremental else self._submit(items[0])]
        if not job.streaming:
            pending += [send_detached(self._submit, item) for item in items[1:]]

        def send_the_rest() -> None:
            if len(pending) < len(items):
                pending.extend(send_detached(self._submit, item) for item in items[1:])

        audio_cfg = self.settings.audio
        encoder = StreamingEncoder(job.format, mp3_bitrate_kbps=audio_cfg.mp3_bitrate_kbps)
        stitcher = Stitcher(crossfade_ms=self.settings.audio.crossfade_ms)
        # Only the facts of settled chunks are kept; their audio goes once encoded, so
        # a long stream holds the chunks in flight, not everything it has sent.
        results: list[_Settled] = []
        # A runaway engine (or text that tricks it) must not make hours of audio: the
        # output is bounded by the text's length, whatever the engine does.
        audio_cap_s = self.audio_cap_s(job.text, job.template.language)
        encode_s, first_audio_s, streamed_s = 0.0, 0.0, 0.0
        first_pieces: AsyncGenerator[SynthesisResult, None] | None = None
        try:
            for index in range(len(items)):
                if index == 0 and incremental:
                    assert self._submit_stream is not None
                    first_pieces = _settle_pieces(self._submit_stream(items[0]), job.request_id)
                    sources: AsyncIterator[SynthesisResult] = first_pieces
                else:
                    call = pending[index]
                    assert call is not None
                    sources = _one(_settle(call, job.request_id, index))
                async for result in sources:
                    pending[index] = None  # a settled future holds the chunk's audio
                    send_the_rest()
                    raw, partial = result.audio, result.partial
                    if partial:
                        streamed_s += result.duration_s
                    else:
                        settled = _Settled.of(result)
                        results.append(replace(settled, duration_s=settled.duration_s + streamed_s))
                        streamed_s = 0.0
                    del result
                    if sum(r.duration_s for r in results) + streamed_s > audio_cap_s:
                        raise EngineError(
                            f"request {job.request_id}: the engine made more than "
                            f"{audio_cap_s:.0f} s of audio for {len(job.text)} characters"
                        )
                    last = index == len(items) - 1 and not partial
                    t0 = time.monotonic()
                    audio = await asyncio.to_thread(
                        _stitch, stitcher, raw, job.speed, last, index == 0 and incremental
                    )
                    del raw
                    # The first second of a whole first chunk is encoded and sent on its
                    # own, so the first bytes do not wait for the rest (issue 5: TTFB).
                    whole_first = job.streaming and index == 0 and not incremental
                    parts = _split_head(audio) if whole_first else [audio]
                    for k, part in enumerate(parts):
                        finish = last and k == len(parts) - 1
                        data = await asyncio.to_thread(_encode, encoder, part, finish)
                        encode_s += time.monotonic() - t0
                        t0 = time.monotonic()
                        if finish:
                            timings = _timings(
                                results, chunked - began, encode_s, first_audio_s, began
                            )
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
                    del audio, parts
        finally:
            if first_pieces is not None:
                await first_pieces.aclose()
            for left in pending:
                if left is not None:
                    left.cancel()

    async def render(self, job: SpeechJob) -> RenderedSpeech:
        """Synthesise and encode a whole file."""
        limit = self.settings.chunking.max_file_response_bytes
        pieces: list[AudioPiece] = []
        size = 0
        stream = self.stream(replace(job, streaming=False))
        try:
            async for piece in stream:
                size += len(piece.data)
                if size > limit:
                    raise InvalidRequestError(
                        f"The audio for this input is larger than {limit} bytes "
                        "(CHATTERBOX_MAX_FILE_RESPONSE_BYTES), too large for a whole file. "
                        "Stream it (stream_format 'audio' or POST /v1/audio/speech/stream), "
                        "or use the long-text endpoint.",
                        param="input",
                        code="response_too_large",
                    )
                pieces.append(piece)
        finally:
            await stream.aclose()  # cancels the chunks still in flight
        final = pieces[-1]
        data = b"".join(p.data for p in pieces)
        if job.format is AudioFormat.WAV:
            data = fix_wav_sizes(data)
        assert final.usage is not None and final.timings is not None
        return RenderedSpeech(data, job.format, final.usage, final.audio_s, final.timings)


# Input whose non-space characters are more than this share of combining marks and
# other letterless symbols is refused: it is not speech, and it splits into many
# tiny chunks, each of which the engine may run to its token limit.
MAX_MARK_SHARE = 0.5


def _speakable(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LN"


def _refuse_mostly_marks(text: str) -> None:
    visible = [ch for ch in text if not ch.isspace()]
    marks = sum(1 for ch in visible if unicodedata.category(ch)[0] == "M")
    if visible and marks > MAX_MARK_SHARE * len(visible):
        raise InvalidRequestError(
            f"Input is mostly combining marks ({marks} of {len(visible)} characters); "
            "it has too little speakable text.",
            param="input",
            code="invalid_input",
        )


def _merge_letterless(chunks: list[str]) -> list[str]:
    """Join chunks without a letter or digit onto a neighbour: alone they say nothing."""
    merged: list[str] = []
    carry = ""
    for chunk in chunks:
        if not any(_speakable(ch) for ch in chunk):
            if merged:
                merged[-1] = f"{merged[-1]} {chunk}"
            else:
                carry = f"{carry} {chunk}".strip()
            continue
        merged.append(f"{carry} {chunk}".strip() if carry else chunk)
        carry = ""
    if carry and not merged:
        return []
    return merged


def _stitch(
    stitcher: Stitcher, audio: np.ndarray, speed: float, last: bool, continues: bool = False
) -> np.ndarray:
    """`audio` joined to what came before: crossfaded at a chunk's start, appended within it."""
    audio = change_speed(audio, speed)
    out = stitcher.extend(audio) if continues else stitcher.push(audio)
    return np.concatenate([out, stitcher.flush()]) if last else out


def _split_head(audio: np.ndarray, head_samples: int = SAMPLE_RATE) -> list[np.ndarray]:
    if len(audio) <= 2 * head_samples:
        return [audio]
    return [audio[:head_samples], audio[head_samples:]]


def _encode(encoder: StreamingEncoder, audio: np.ndarray, finish: bool) -> bytes:
    out = encoder.encode(audio)
    return out + encoder.finish() if finish else out


async def _one(result: Awaitable[SynthesisResult]) -> AsyncGenerator[SynthesisResult, None]:
    yield await result


async def _settle_pieces(
    pieces: AsyncIterator[SynthesisResult], request_id: str
) -> AsyncGenerator[SynthesisResult, None]:
    """The first chunk's pieces, with failures reported as `_settle` reports them."""
    try:
        async for piece in pieces:
            if not isinstance(piece, SynthesisResult):
                raise EngineError(f"chunk 0: engine returned {type(piece).__name__}")
            yield piece
    except (ChatterboxError, asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as exc:
        logger.exception("request %s: chunk 0 failed", request_id)
        raise EngineError(f"chunk 0 failed: {type(exc).__name__}") from exc
    finally:
        close = getattr(pieces, "aclose", None)
        if close is not None:
            await close()


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


@dataclass(frozen=True)
class _Settled:
    """What the pipeline keeps of a chunk once its audio is encoded."""

    input_tokens: int
    output_tokens: int
    duration_s: float
    batch_size: int
    engine_s: float
    queue_wait_s: float

    @staticmethod
    def of(result: SynthesisResult) -> _Settled:
        return _Settled(
            result.input_tokens,
            result.output_tokens,
            result.duration_s,
            result.batch_size,
            result.engine_s,
            result.queue_wait_s,
        )


def _usage(results: Sequence[_Settled]) -> Usage:
    return Usage(sum(r.input_tokens for r in results), sum(r.output_tokens for r in results))


def _audio_s(results: Sequence[_Settled], speed: float) -> float:
    return sum(r.duration_s for r in results) / speed


def _timings(
    results: Sequence[_Settled],
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


def send_detached(submit: Submit, item: SynthesisRequest) -> Cancellable:
    """Send `item` with its voice detached; should the model lack the audio, send it whole.

    The resend happens as soon as the miss comes back, not when the caller gets to
    this chunk, so chunks that reached a replica which never saw the voice cost one
    extra engine call each, in parallel.
    """
    if item.voice is None or item.voice.detached:
        return submit(item)
    return _Resend(submit, item)


class _Resend:
    def __init__(self, submit: Submit, item: SynthesisRequest) -> None:
        assert item.voice is not None
        self._submit = submit
        self._whole = item
        self._call: Cancellable = submit(replace(item, voice=item.voice.detach()))
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> Any:
        try:
            return await self._call
        except VoiceAudioMissingError:
            self._call = self._submit(self._whole)
            return await self._call

    def __await__(self) -> Any:
        return self._task.__await__()

    def cancel(self) -> Any:
        self._call.cancel()
        return self._task.cancel()


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


class SpeechBackend(Protocol):
    """What the HTTP layer calls: a Serve handle wrapper in production, a local one in tests."""

    async def render(self, job: SpeechJob) -> RenderedSpeech: ...

    def stream(self, job: SpeechJob) -> AsyncIterator[AudioPiece]: ...

    async def health(self) -> dict[str, Any]: ...
