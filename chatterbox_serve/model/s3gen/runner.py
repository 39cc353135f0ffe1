"""The S3Gen stage of the vLLM engine: speech tokens plus a voice reference in, waveforms out.

T3 on vLLM batches natively; S3Gen (flow matching, then the HiFi-GAN vocoder) does
not. This module fixes the small interface the engine calls, so the stage can be
swapped (one item at a time here, a padded batch in `batch.py`) without the
engine knowing which runs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from chatterbox_serve.config import Settings

logger = logging.getLogger(__name__)


class S3GenRunner(Protocol):
    """Turns the speech tokens of several items into waveforms.

    Contract:
    - `speech_tokens[i]` is a 1-D integer tensor of valid S3 speech tokens (offset
      removed, start/stop tokens dropped) on the S3Gen device; `ref_dicts[i]` is that
      item's voice reference, as `S3Gen.embed_ref` returns it; `seeds[i]`, when given,
      fixes item i's vocoder noise, so a seeded request repeats exactly.
    - Returns one waveform per item, in input order: a float tensor at 24 kHz of
      shape (n,) or (1, n), on any device.
    - May raise; the engine then retries the items one by one to find the bad one.
    """

    def run(
        self,
        speech_tokens: Sequence[Any],
        ref_dicts: Sequence[dict[str, Any]],
        n_timesteps: int,
        *,
        seeds: Sequence[int] | None = None,
    ) -> list[Any]: ...


class SequentialS3GenRunner:
    """Runs S3Gen once per item, as chatterbox-vllm's own `generate` does."""

    def __init__(self, s3gen: Any) -> None:
        self.s3gen = s3gen

    def run(
        self,
        speech_tokens: Sequence[Any],
        ref_dicts: Sequence[dict[str, Any]],
        n_timesteps: int,
        *,
        seeds: Sequence[int] | None = None,
    ) -> list[Any]:
        import torch

        wavs = []
        for i, (tokens, ref) in enumerate(zip(speech_tokens, ref_dicts, strict=True)):
            if seeds is not None:
                torch.manual_seed(seeds[i])
            wav, _sources = self.s3gen.inference(
                speech_tokens=tokens, ref_dict=ref, n_timesteps=n_timesteps
            )
            wavs.append(wav)
        return wavs


RunnerFactory = Callable[[Any], S3GenRunner]


def runner_factory(settings: Settings) -> RunnerFactory:
    """The S3Gen stage the settings ask for: batched by default, or sequential."""
    e = settings.engine
    if not e.s3gen_batched:
        return SequentialS3GenRunner
    from chatterbox_serve.model.s3gen.batch import BatchedS3GenRunner

    return functools.partial(BatchedS3GenRunner, policy=s3gen_policy(settings))


def s3gen_policy(settings: Settings) -> Any:
    """The `S3GenBatchPolicy` the settings ask for (batch size, precision, compile)."""
    from chatterbox_serve.model.s3gen.batch import S3GenBatchPolicy

    e = settings.engine
    return S3GenBatchPolicy(
        max_batch_size=e.s3gen_batch_size,
        max_length_ratio=e.s3gen_max_length_ratio,
        precision=e.s3gen_precision,
        compile=e.s3gen_compile,
        vocoder_precision=e.s3gen_vocoder_precision,
        fp8_linear=e.s3gen_fp8,
        compile_cache_dir=e.s3gen_compile_cache_dir,
    )
