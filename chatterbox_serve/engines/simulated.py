"""A simulated TTS engine: not speech, but deterministic audio with a realistic cost.

It implements the whole engine contract so the application runs end to end on a
machine without a GPU, and so that tests and load benchmarks measure something real:

- Output depends only on (text, voice audio, seed, language, the engine's model
  family): about
  `chars_per_second` characters per second of 24 kHz mono float32, with a
  syllable-like envelope and a pitch taken from the hash of the voice audio bytes,
  so a test can tell which reference audio reached the engine, and which family's
  engine spoke (each loaded family is its own engine, `Settings.family`). Like the real
  engines it stops at `max_new_tokens` speech tokens (25 a second), and an item
  whose voice arrives without its audio fails with `VoiceAudioMissingError`.
- One call costs `base_s + per_item_s * n + per_char_s * total_chars` seconds of
  wall time, awaited without blocking the event loop. Calls are serialised, as on
  one GPU, so batching pays off here exactly as it does there.
- Text containing `failure_marker` fails that item only (fault injection).
- With `streaming` on, `synthesize_stream` yields an item in pieces by the vllm
  engine's own render rule (`RenderSchedule`: first `stream_first_tokens` tokens, then
  whenever the audio sent runs less than `stream_margin_s` ahead of a listener), T3's
  tokens coming evenly over the item's cost, outside the device lock as vLLM's
  continuous batching takes a streamed item alongside the batches. So the serving path
  of first audio before a chunk is done runs, and is tested, without a GPU. Where the
  pieces are cut depends on the clock; the audio they join into does not.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np

from chatterbox_serve.config import Settings, SimulatedEngineConfig
from chatterbox_serve.engines.base import (
    SPEECH_TOKENS_PER_SECOND,
    SynthesisOutcome,
    SynthesisRequest,
    SynthesisResult,
    TTSEngine,
)
from chatterbox_serve.engines.recorder import BatchRecorder
from chatterbox_serve.engines.vllm.render_schedule import (
    MIN_NEW_TOKENS,
    RenderSchedule,
    schedule_for,
)
from chatterbox_serve.errors import ChatterboxError, EngineError, VoiceAudioMissingError
from chatterbox_serve.families import ModelFamily

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
SAMPLES_PER_TOKEN = SAMPLE_RATE // SPEECH_TOKENS_PER_SECOND


class SimulatedEngine(TTSEngine):
    """Deterministic tone-speech with a GPU-like batch cost model."""

    name = "simulated"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        config: SimulatedEngineConfig | None = None,
        stream_first_tokens: int = 20,
        stream_margin_s: float = 1.0,
        family: ModelFamily | None = None,
    ) -> None:
        """`family`: the model family this engine stands in for (None: unnamed)."""
        self.config = config or SimulatedEngineConfig.model_validate({})
        self.family = family
        self.recorder = BatchRecorder()
        self._device = asyncio.Lock()
        self.streams_audio = self.config.streaming
        self.stream_first_tokens = stream_first_tokens
        self.stream_margin_s = stream_margin_s

    @classmethod
    def from_settings(cls, settings: Settings) -> SimulatedEngine:
        """The engine the registry builds: the simulated section, the stream's renders and
        the settings' family."""
        e = settings.engine
        return cls(settings.simulated, e.stream_first_tokens, e.stream_margin_s, settings.family)

    @classmethod
    def streams_with(cls, settings: Settings) -> bool:
        return settings.simulated.streaming

    async def start(self) -> None:
        logger.warning(
            "SIMULATED ENGINE: this replica produces synthetic tones, not speech. "
            "Install the vllm extra and set engine: vllm for real Chatterbox."
        )

    def cost_s(self, requests: Sequence[SynthesisRequest]) -> float:
        """Wall time one call over these items takes."""
        c = self.config
        chars = sum(len(r.text) for r in requests)
        return c.base_s + c.per_item_s * len(requests) + c.per_char_s * chars

    async def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[SynthesisOutcome]:
        async with self._device:
            began = time.monotonic()
            outcomes = await asyncio.to_thread(self._render_all, requests)
            remaining = self.cost_s(requests) - (time.monotonic() - began)
            if remaining > 0:
                await asyncio.sleep(remaining)
            took = time.monotonic() - began
            self.recorder.record(len(requests), took)
        return [
            SynthesisResult(
                audio=o.audio,
                sample_rate=o.sample_rate,
                input_tokens=o.input_tokens,
                output_tokens=o.output_tokens,
                batch_size=len(requests),
                engine_s=took,
            )
            if isinstance(o, SynthesisResult)
            else o
            for o in outcomes
        ]

    async def synthesize_stream(self, request: SynthesisRequest) -> AsyncIterator[SynthesisResult]:
        if not self.streams_audio:
            async for whole in super().synthesize_stream(request):
                yield whole
            return
        began = time.monotonic()
        (outcome,) = await asyncio.to_thread(self._render_all, [request])
        if isinstance(outcome, ChatterboxError):
            raise outcome
        cost = self.cost_s([request])
        audio = outcome.audio
        # T3's tokens come evenly over the item's cost; renders come when the vllm
        # engine's rule says (`RenderSchedule`), each sending every token made so far.
        tokens = -(-len(audio) // SAMPLES_PER_TOKEN)
        schedule = schedule_for(request.play_after, self.stream_first_tokens, self.stream_margin_s)
        start = 0
        while True:
            now = time.monotonic()
            made = tokens if cost <= 0 else min(tokens, int(tokens * (now - began) / cost))
            if made >= tokens:
                break
            if not schedule.due(made, now):
                # No later than T3's end: the last render comes with the stop token.
                await _until(
                    min(_next_due(schedule, made, now, began, cost / tokens), began + cost)
                )
                continue
            cut = made * SAMPLES_PER_TOKEN
            yield SynthesisResult(
                audio[start:cut], SAMPLE_RATE, outcome.input_tokens, 0, partial=True
            )
            now = time.monotonic()
            schedule.sent(made, (cut - start) / SAMPLE_RATE, now)
            start = cut
        await _until(began + cost)
        self.recorder.record(1, time.monotonic() - began)
        yield SynthesisResult(
            audio=audio[start:],
            sample_rate=SAMPLE_RATE,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            engine_s=time.monotonic() - began,
        )

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "simulated": True,
            "family": self.family.value if self.family else None,
            "cost_model": self.config.model_dump(exclude={"failure_marker"}),
        }

    def _render_all(self, requests: Sequence[SynthesisRequest]) -> list[SynthesisOutcome]:
        outcomes: list[SynthesisOutcome] = []
        for r in requests:
            if self.config.failure_marker in r.text:
                outcomes.append(EngineError(f"simulated failure for request {r.request_id}"))
                continue
            if r.voice is not None and r.voice.detached:
                outcomes.append(VoiceAudioMissingError(r.voice.sha256))
                continue
            audio = render_tone_speech(r, self.config.chars_per_second, self.family)
            if r.max_new_tokens is not None:
                audio = audio[: r.max_new_tokens * SAMPLE_RATE // SPEECH_TOKENS_PER_SECOND]
            outcomes.append(
                SynthesisResult(
                    audio=audio,
                    sample_rate=SAMPLE_RATE,
                    input_tokens=len(r.text),
                    output_tokens=math.ceil(len(audio) / SAMPLE_RATE * SPEECH_TOKENS_PER_SECOND),
                )
            )
        return outcomes


def _next_due(
    schedule: RenderSchedule, made: int, now: float, began: float, token_s: float
) -> float:
    """The earliest time `schedule.due` can next hold: enough new tokens and a low buffer."""
    if not schedule.playing:
        wanted = schedule.first_tokens
        low_at = now
    else:
        # A later chunk playing behind the chunks before it renders first at first_tokens.
        step = MIN_NEW_TOKENS if schedule.rendered_tokens else schedule.first_tokens
        wanted = max(made + 1, schedule.rendered_tokens + step)
        spare = schedule.buffered_s(now) - (schedule.margin_s + schedule.latency_s)
        low_at = now + max(0.0, spare) + 1e-3  # `due` asks for strictly less
    return max(began + wanted * token_s, low_at, now + token_s / 4)


async def _until(deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining > 0:
        await asyncio.sleep(remaining)


def render_tone_speech(
    request: SynthesisRequest, chars_per_second: float, family: ModelFamily | None = None
) -> np.ndarray:
    """Speech-like tones for one item: deterministic in text, voice bytes, seed, language
    and the speaking engine's `family`."""
    voice_digest = (
        hashlib.sha256(request.voice.audio).digest() if request.voice else b"default-voice"
    )
    key = hashlib.sha256(
        b"|".join(
            [
                request.text.encode(),
                voice_digest,
                str(request.generation.seed).encode(),
                request.language.encode(),
                *([family.value.encode()] if family is not None else []),
            ]
        )
    ).digest()
    rng = np.random.default_rng(int.from_bytes(key[:8], "little"))
    text = request.text.strip() or " "
    seconds_per_char = 1.0 / chars_per_second
    per_char = max(1, int(SAMPLE_RATE * seconds_per_char))

    # Letters are voiced, spaces dip, punctuation is a pause: a rough syllable rhythm.
    levels = np.array(
        [
            0.0 if not ch.isalnum() and not ch.isspace() else (0.25 if ch.isspace() else 1.0)
            for ch in text
        ],
        dtype=np.float32,
    )
    levels *= rng.uniform(0.7, 1.0, size=len(levels)).astype(np.float32)
    envelope = _moving_average(np.repeat(levels, per_char), SAMPLE_RATE // 50)
    n = len(envelope)
    f0 = 100 + (int.from_bytes(voice_digest[:2], "little") % 140)
    # Integer f0 and a 4.5 Hz syllable beat make both signals periodic in 2 s, so they
    # are tiled from cached tables: rendering stays far cheaper than the modelled cost.
    period = _periodic_table(f0)
    reps = -(-n // len(period))
    audio: np.ndarray = (envelope * np.tile(period, reps)[:n]).astype(np.float32)
    return audio


@functools.lru_cache(maxsize=256)
def _periodic_table(f0: int) -> np.ndarray:
    t = np.arange(2 * SAMPLE_RATE, dtype=np.float64) / SAMPLE_RATE
    tone = sum(
        w * np.sin(2 * np.pi * h * f0 * t) for h, w in ((1, 1.0), (2, 0.5), (3, 0.25), (4, 0.12))
    )
    beat = 0.55 + 0.45 * np.abs(np.sin(np.pi * 4.5 * t))
    table = (0.25 / 1.87) * beat * tone
    out: np.ndarray = table.astype(np.float32)
    out.setflags(write=False)
    return out


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1 or len(x) < width:
        return x.astype(np.float32)
    c = np.cumsum(np.concatenate([[0.0], x.astype(np.float64)]))
    smoothed = (c[width:] - c[:-width]) / width
    pad = len(x) - len(smoothed)
    return np.pad(smoothed, (pad // 2, pad - pad // 2), mode="edge").astype(np.float32)
