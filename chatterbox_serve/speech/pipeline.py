"""The speech pipeline: plan, synthesise the chunks, assemble, stream.

It runs in the CPU audio deployment. Its one collaborator, `submit`, sends one
`SynthesisRequest` to the model and returns an awaitable that can be cancelled: a
Serve handle call in production, a local engine call in tests (`submit_stream`, when
the model streams, the same as pieces). Which chunks are in flight when is
`feed.ChunkFeed`'s: all at once for a whole file, a bounded window ahead of the
listener for a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from chatterbox_serve.audio import SAMPLE_RATE, AudioAssembler, AudioFormat, fix_wav_sizes
from chatterbox_serve.audio.watermark import WatermarkStream
from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult
from chatterbox_serve.errors import InvalidRequestError
from chatterbox_serve.speech.feed import ChunkFeed
from chatterbox_serve.speech.messages import (
    AudioPiece,
    RenderedSpeech,
    SpeechOrder,
    StageTimings,
    Usage,
)
from chatterbox_serve.speech.plan import audio_cap_s, chunk_request, plan_chunks
from chatterbox_serve.speech.transfer import Submit, SubmitStream


class SpeechPipeline:
    """Turns a `SpeechOrder` into encoded audio, whole or streamed."""

    def __init__(
        self, settings: Settings, submit: Submit, submit_stream: SubmitStream | None = None
    ) -> None:
        """`submit_stream`, when the model streams, speaks the first chunk of a stream."""
        self.settings = settings
        self._submit = submit
        self._submit_stream = submit_stream

    def plan(self, order: SpeechOrder) -> list[SynthesisRequest]:
        """The engine request of every chunk; raises `InvalidRequestError` past the chunk limit."""
        c = self.settings.chunking
        chunks = plan_chunks(
            order.text,
            order.template.language,
            self.settings,
            first_chunk_length=c.stream_first_chunk_length if order.streaming else None,
            max_chunks=c.max_chunks_per_request,
            family=order.template.family,
        )
        return [chunk_request(order.template, i, t, self.settings) for i, t in enumerate(chunks)]

    async def stream(self, order: SpeechOrder) -> AsyncGenerator[AudioPiece, None]:
        """Yield encoded pieces, chunk by chunk, each chunk's once the one before has ended.

        A stream keeps `CHATTERBOX_STREAM_CHUNKS_AHEAD` chunks in flight past the one
        being heard (`feed.ChunkFeed`). With a model that streams, every chunk goes out
        in pieces as the model makes them (first audio before the first chunk is done;
        each later chunk playing on from its first piece). Not with a speed change:
        stretching pieces apart would put seams inside a chunk.
        """
        began = time.monotonic()
        items = self.plan(order)
        chunked = time.monotonic()
        incremental = order.streaming and self._submit_stream is not None and order.speed == 1.0
        audio_cfg = self.settings.audio
        assembler = AudioAssembler(
            order.format,
            speed=order.speed,
            crossfade_ms=audio_cfg.crossfade_ms,
            mp3_bitrate_kbps=audio_cfg.mp3_bitrate_kbps,
            cap_s=audio_cap_s(order.text, order.template.language, self.settings),
            marks=WatermarkStream() if audio_cfg.watermarked else None,
        )
        # Only the facts of settled chunks are kept; their audio goes once encoded, so
        # a long stream holds the chunks in flight, not everything it has sent.
        results: list[_Settled] = []
        encode_s, first_audio_s, streamed_s = 0.0, 0.0, 0.0
        feed = ChunkFeed(
            items,
            order.request_id,
            self._submit,
            self._submit_stream if incremental else None,
            ahead=self.settings.chunking.stream_chunks_ahead if order.streaming else None,
        )
        try:
            for index in range(len(items)):
                begun = False  # whether a piece of this chunk has been stitched
                async with contextlib.aclosing(feed.results(index)) as chunk:
                    async for result in chunk:
                        raw, partial = result.audio, result.partial
                        assembler.count(result.duration_s)
                        if partial:
                            streamed_s += result.duration_s
                        else:
                            settled = _Settled.of(result)
                            total_s = settled.duration_s + streamed_s
                            results.append(replace(settled, duration_s=total_s))
                            streamed_s = 0.0
                        del result
                        last = index == len(items) - 1 and not partial
                        t0 = time.monotonic()
                        audio = await asyncio.to_thread(
                            assembler.stitch, raw, last=last, continues=begun, ends=not partial
                        )
                        begun = True
                        del raw
                        # The first second of a whole first chunk is encoded and sent on
                        # its own, so the first bytes do not wait for the rest.
                        whole_first = order.streaming and index == 0 and not incremental
                        parts = _split_head(audio) if whole_first else [audio]
                        for k, part in enumerate(parts):
                            finish = last and k == len(parts) - 1
                            data = await asyncio.to_thread(assembler.encode, part, finish=finish)
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
                                    audio_s=_audio_s(results, order.speed),
                                    timings=timings,
                                )
                            elif data:
                                first_audio_s = first_audio_s or time.monotonic() - began
                                yield AudioPiece(data)
                        del audio, parts
        finally:
            await feed.aclose()

    async def render(self, order: SpeechOrder) -> RenderedSpeech:
        """Synthesise and encode a whole file."""
        limit = self.settings.chunking.max_file_response_bytes
        pieces: list[AudioPiece] = []
        size = 0
        stream = self.stream(replace(order, streaming=False))
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
        if order.format is AudioFormat.WAV:
            data = fix_wav_sizes(data)
        assert final.usage is not None and final.timings is not None
        return RenderedSpeech(data, order.format, final.usage, final.audio_s, final.timings)


def _split_head(audio: np.ndarray, head_samples: int = SAMPLE_RATE) -> list[np.ndarray]:
    if len(audio) <= 2 * head_samples:
        return [audio]
    return [audio[:head_samples], audio[head_samples:]]


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
