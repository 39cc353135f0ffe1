"""The engine interface: the one boundary between serving code and a TTS model.

An engine turns a batch of `SynthesisRequest`s into one outcome per item, in input
order. The contract:

- `synthesize` never raises because of one item. An item that fails gets a
  `ChatterboxError` in its slot and the other items still get their audio. It may
  raise for a failure of the whole engine (the GPU is gone); callers then fail every
  item of that call.
- Calls may overlap; an engine that owns one device serialises them itself.
- Audio is mono float32 in [-1, 1] at `sample_rate`.
- A voice normally arrives with its audio: the model side re-attaches the audio of a
  request's later chunks (`engines.voice_audio`). An engine that is handed a detached
  voice (`VoicePrompt.detached`) may serve it from its own cache by sha256; otherwise
  that item fails with `VoiceAudioMissingError`, and the chunk is sent again whole.
- `max_new_tokens` is a hard stop: the speech plan derives it from the request's audio cap.
- `start` runs once before the first call; `check_health` raises when the engine can
  no longer serve, so the replica holding it gets replaced.
- `synthesize_stream` speaks one item as a series of pieces. An engine with
  `streams_audio` yields its first audio while the model is still generating the rest;
  any other engine yields the whole item as one piece. Every piece but the
  last has `partial` set; the last carries the token counts, and the pieces joined
  are the item's audio. A failure before the first piece raises the item's error.
- `batch_limits` is how the serving layer may call the engine, the one declaration
  its batching follows: at most `max_batch_size` items per `synthesize` call
  (VLLM_MAX_BATCH_SIZE), and `max_concurrent_calls` calls in flight: 1 for an engine
  that runs a call start to end on its device, more for one whose stages overlap
  across calls.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from chatterbox_serve.errors import ChatterboxError
from chatterbox_serve.families import ModelFamily
from chatterbox_serve.generation import GenerationParameters

if TYPE_CHECKING:
    from chatterbox_serve.config import Settings

# Chatterbox's S3 speech tokens run at 25 per second of audio.
SPEECH_TOKENS_PER_SECOND = 25


@dataclass(frozen=True)
class VoicePrompt:
    """Reference audio for voice cloning, immutable and addressed by its content hash.

    A prompt may travel *detached*: `audio` empty, only `sha256` and `size` set. A
    request's chunks after the first name their voice this way, so its audio (up to
    the upload limit) crosses to the model once per request, not once per chunk.
    The model side keeps the audio it has been sent, by sha256
    (`engines.voice_audio`); where it lacks it, the item fails with
    `VoiceAudioMissingError` and the chunk is sent again with the audio attached.
    """

    audio: bytes
    sha256: str
    # Bytes of the audio; what a detached prompt still says about it.
    size: int = -1

    @classmethod
    def from_bytes(cls, audio: bytes) -> VoicePrompt:
        return cls(audio=audio, sha256=hashlib.sha256(audio).hexdigest(), size=len(audio))

    @property
    def detached(self) -> bool:
        return not self.audio

    def detach(self) -> VoicePrompt:
        """The same voice without its bytes."""
        size = len(self.audio) if self.audio else self.size
        return VoicePrompt(audio=b"", sha256=self.sha256, size=size)


@dataclass(frozen=True)
class SynthesisRequest:
    """One chunk of text to speak, with every per-item generation setting."""

    text: str
    language: str
    voice: VoicePrompt | None = None
    generation: GenerationParameters = GenerationParameters()
    # Most speech tokens to generate (stop token included); None = the engine's limit.
    # The speech plan sets it from the audio cap (CHATTERBOX_MAX_AUDIO_S_PER_CHAR), so a
    # model that never says stop ends there instead of at its own far larger limit.
    max_new_tokens: int | None = None
    request_id: str = ""
    chunk_index: int = 0
    # A later chunk of a stream: the wall-clock time (`time.time()`) before which its
    # listener cannot reach its audio, since the chunks before it play until then at the
    # least (`ChunkFeed`). None: the listener waits on this chunk now.
    play_after: float | None = None
    # The family whose model deployment speaks it; None: the default family. An engine
    # serves one family (`Settings.family`) and does not read this.
    family: ModelFamily | None = None


@dataclass(frozen=True)
class BatchLimits:
    """How the serving layer may call an engine: items per call, and calls at once."""

    max_batch_size: int
    max_concurrent_calls: int


@dataclass(frozen=True)
class SynthesisResult:
    """Audio for one item, with the token counts and timing of the call that made it."""

    audio: np.ndarray
    sample_rate: int
    input_tokens: int
    output_tokens: int
    batch_size: int = 1
    engine_s: float = 0.0
    queue_wait_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    # A piece of a streamed item that more audio follows (see `synthesize_stream`).
    partial: bool = False

    @property
    def duration_s(self) -> float:
        return float(len(self.audio)) / self.sample_rate


SynthesisOutcome = SynthesisResult | ChatterboxError


class TTSEngine(abc.ABC):
    """A text-to-speech model that synthesises batches of independent items."""

    name: str = "abstract"
    sample_rate: int = 24_000
    needs_gpu: bool = False
    streams_audio: bool = False
    max_concurrent_calls: int = 1

    @classmethod
    def batch_limits(cls, settings: Settings) -> BatchLimits:
        """Items per `synthesize` call and calls in flight, for engines of this class."""
        return BatchLimits(settings.engine.max_batch_size, cls.max_concurrent_calls)

    @classmethod
    def streams_with(cls, settings: Settings) -> bool:
        """Whether engines of this class built from `settings` stream (`streams_audio`)."""
        return cls.streams_audio

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load weights and warm up; called once per replica."""

    @abc.abstractmethod
    async def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[SynthesisOutcome]:
        """Synthesise every item; one outcome per item, in input order."""

    async def synthesize_stream(self, request: SynthesisRequest) -> AsyncIterator[SynthesisResult]:
        """Speak one item in pieces; here, the whole item as one piece."""
        (outcome,) = await self.synthesize([request])
        if isinstance(outcome, ChatterboxError):
            raise outcome
        yield outcome

    async def check_health(self) -> None:  # noqa: B027 - optional hook
        """Raise if the engine can no longer serve."""

    async def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release the device; called once when the replica stops."""

    def info(self) -> dict[str, Any]:
        """Facts for `/health` and `/config`: engine name, sample rate, caches."""
        return {"engine": self.name, "sample_rate": self.sample_rate}
