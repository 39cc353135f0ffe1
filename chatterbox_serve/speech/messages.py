"""The values a speech request crosses deployments as: the order in, the audio out."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatterbox_serve.audio import AudioFormat
from chatterbox_serve.engines.base import SynthesisRequest


@dataclass(frozen=True)
class SpeechOrder:
    """A validated speech request with its voice resolved; crosses from ingress to pipeline."""

    request_id: str
    text: str
    format: AudioFormat
    template: SynthesisRequest
    speed: float = 1.0
    streaming: bool = False
    warnings: tuple[str, ...] = ()
    instructions_ignored: bool = False
    # Generation parameters the request set that its model family does not use.
    ignored_fields: tuple[str, ...] = ()


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
