"""`TurboModel`: text and a voice to Turbo speech tokens and a waveform, on any device.

Upstream `ChatterboxTurboTTS.generate`, batched: normalise and tokenize the text,
generate speech tokens with the original's loop and Turbo's chain (no CFG), drop the
tokens S3Gen cannot take (>= 6561, the start and stop tokens), append three silence
tokens, and decode with the meanflow S3Gen in 2 steps. Upstream's watermark is not
applied here (the service applies its own). Engines build on these pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from chatterbox_serve.model.checkpoint import load_builtin_voice
from chatterbox_serve.model.s3gen.batch import S3GenBatchPolicy
from chatterbox_serve.model.t3.generation import (
    GenerationItem,
    GenerationResult,
    SamplingChain,
    generate,
)
from chatterbox_serve.model.turbo import checkpoint
from chatterbox_serve.model.turbo.model import TurboT3
from chatterbox_serve.model.turbo.sampling import TurboChain
from chatterbox_serve.model.turbo.tokenizer import TurboTextTokenizer
from chatterbox_serve.model.voice import VoiceInputs, builtin_voice_inputs

if TYPE_CHECKING:
    from chatterbox_serve.model.turbo.s3gen import MeanflowS3GenRunner

N_TIMESTEPS = 2  # upstream ChatterboxTurboTTS.generate
# Upstream appends three S3GEN_SIL tokens to T3's tokens before S3Gen.
SILENCE_TOKEN = 4299
SILENCE_TOKENS = 3
S3_SPEECH_VOCAB = 6561
# Upstream samples one token after the prompt, then up to `max_gen_len` (1000) more.
MAX_NEW_TOKENS = 1001


@dataclass(frozen=True)
class TurboSampling:
    """Turbo's sampling settings with upstream's defaults (`ChatterboxTurboTTS.generate`).

    Turbo ignores `cfg_weight`, `exaggeration` and `min_p` (upstream warns and drops them).
    """

    temperature: float = 0.8
    top_k: int = 1000
    top_p: float = 0.95
    repetition_penalty: float = 1.2
    max_new_tokens: int = MAX_NEW_TOKENS

    def item(
        self, prefix: torch.Tensor, text_ids: Sequence[int], seed: int | None
    ) -> GenerationItem:
        """The generation loop's item: no CFG row, min_p off."""
        return GenerationItem(
            prefix=prefix,
            text_tokens=tuple(text_ids),
            cfg_weight=0.0,
            temperature=self.temperature,
            top_p=self.top_p,
            min_p=0.0,
            repetition_penalty=self.repetition_penalty,
            seed=seed,
            max_new_tokens=self.max_new_tokens,
            top_k=self.top_k,
        )


def s3gen_tokens(result: GenerationResult, device: Any) -> torch.Tensor:
    """T3's tokens as S3Gen takes them: start/stop (>= 6561) dropped, silence appended."""
    tokens = [*result.speech_tokens(S3_SPEECH_VOCAB), *([SILENCE_TOKEN] * SILENCE_TOKENS)]
    return torch.tensor(tokens, dtype=torch.long, device=device)


class TurboModel:
    """Turbo's T3, meanflow S3Gen runner, tokenizer and built-in voice, used together."""

    def __init__(
        self,
        t3: TurboT3,
        s3gen: MeanflowS3GenRunner,
        tokenizer: TurboTextTokenizer,
        builtin_voice: VoiceInputs,
        chain: SamplingChain | None = None,
    ) -> None:
        self.t3 = t3
        self.s3gen = s3gen
        self.tokenizer = tokenizer
        self.builtin_voice = builtin_voice
        self.chain = chain or TurboChain(t3.config.start_speech_token)

    @classmethod
    def load(
        cls, directory: Path, device: Any = "cpu", policy: S3GenBatchPolicy | None = None
    ) -> TurboModel:
        """Every part from a Turbo checkpoint directory (`checkpoint.FILES`)."""
        checkpoint.check_checkpoint_dir(directory)
        s3gen = checkpoint.load_s3gen(directory, device)
        from chatterbox_serve.model.turbo.s3gen import MeanflowS3GenRunner

        return cls(
            checkpoint.load_t3(directory, device),
            MeanflowS3GenRunner(s3gen, policy),
            TurboTextTokenizer.load(directory),
            builtin_voice_inputs(load_builtin_voice(directory), device),
        )

    def speech_tokens(
        self,
        texts: Sequence[str],
        voices: Sequence[VoiceInputs],
        seeds: Sequence[int | None],
        sampling: TurboSampling | None = None,
    ) -> list[GenerationResult]:
        """T3's tokens for each text (stop token included when reached), as one batch."""
        sampling = sampling or TurboSampling()
        with torch.inference_mode():
            prefixes = [self.t3.conditioning(v.speaker_emb, v.prompt_tokens)[0] for v in voices]
        items = [
            sampling.item(prefix, self.tokenizer.encode(text), seed)
            for text, prefix, seed in zip(texts, prefixes, seeds, strict=True)
        ]
        return generate(self.t3, items, chain=self.chain)

    def synthesize(
        self,
        texts: Sequence[str],
        voices: Sequence[VoiceInputs] | None = None,
        seeds: Sequence[int] | None = None,
        sampling: TurboSampling | None = None,
    ) -> list[torch.Tensor]:
        """24 kHz waveforms (1, n), one per text; `seeds` fix T3's and S3Gen's noise."""
        voices = voices or [self.builtin_voice] * len(texts)
        results = self.speech_tokens(texts, voices, seeds or [None] * len(texts), sampling)
        device = self.t3.device
        return self.s3gen.run(
            [s3gen_tokens(r, device) for r in results],
            [v.s3gen_ref for v in voices],
            N_TIMESTEPS,
            seeds=seeds,
        )
