"""Turbo's S3Gen stage: the meanflow decoder in 2 Euler steps, no CFG, over padded batches.

Upstream `S3Gen(meanflow=True).inference(..., n_cfm_timesteps=2)` differs from the
original model's flow in three places, and only there; the encoder, the layout of
prompt and speech frames (`flow.flow_inputs`), the estimator (`flow.estimate`, given
the step's end time `r`) and the vocoder (`vocoder.vocode`) are the original's:

- noise: fresh for each call, drawn in upstream's order: first (80, 2n) for the n
  speech tokens, then (80, prompt + 2n) whose speech frames the first draw replaces;
- time: a linear schedule (no cosine), and each step's estimator sees its start `t`
  and its end `r` (`time_embed_mixer` mixes their embeddings);
- one estimator row per item: the distilled decoder needs no guidance.

With `seeds`, item i draws its flow noise from a generator seeded with `seeds[i]`, and
its vocoder noise from another (`vocode`), as upstream does after
`torch.manual_seed(seeds[i])` before each of the two stages. Without, the global
generator. Imported lazily, after `checkpoint.load_s3gen`: needs torch, chatterbox-vllm's
S3Gen modules (which need torchaudio or its stand-in) and chatterbox-tts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from chatterbox_serve.model.s3gen.attention import (
    AttentionBackend,
    packed_attention,
    resolve_attention,
)
from chatterbox_serve.model.s3gen.batch import BatchedS3GenRunner, S3GenBatchPolicy
from chatterbox_serve.model.s3gen.flow import (
    HALF_DTYPES,
    FlowInputs,
    Precision,
    estimate,
    flow_inputs,
)


def meanflow_noise(
    inputs: FlowInputs, speech_lens: Sequence[int], seeds: Sequence[int] | None
) -> torch.Tensor:
    """The starting noise (B, 80, T) of each item, zero past its frames."""
    device = inputs.mu.device
    noise = torch.zeros_like(inputs.mu)
    for i, (frames, n) in enumerate(zip(inputs.mel_lens, speech_lens, strict=True)):
        generator = None
        if seeds is not None:
            generator = torch.Generator(device).manual_seed(seeds[i])
        speech = torch.randn(1, 80, 2 * n, generator=generator, device=device)
        full = torch.randn(1, 80, frames, generator=generator, device=device)
        full[..., frames - 2 * n :] = speech
        noise[i, :, :frames] = full[0]
    return noise


def solve_meanflow(
    estimator: Any,
    x: torch.Tensor,
    inputs: FlowInputs,
    n_timesteps: int,
    precision: Precision,
    attention: AttentionBackend,
) -> torch.Tensor:
    """Upstream `CausalConditionalCFM.basic_euler` for B items: x += (r - t) * v(x, t, r)."""
    t_span = torch.linspace(0, 1, n_timesteps + 1, device=x.device, dtype=inputs.mu.dtype)
    batch = x.shape[0]
    half = HALF_DTYPES.get(precision)
    lengths = torch.tensor(inputs.mel_lens, device=x.device)
    with packed_attention(estimator, lengths, x.shape[-1], attention):
        for t, r in zip(t_span[:-1], t_span[1:], strict=True):
            args = (x, inputs.mask, inputs.mu, t.expand(batch), inputs.spks, inputs.cond)
            if half is None:
                v = estimate(estimator, *args, r=r.expand(batch))
            else:
                with torch.autocast(x.device.type, dtype=half):
                    v = estimate(estimator, *args, r=r.expand(batch)).float()
            x = x + (r - t) * v
    return x.float()


# Streaming noise comes in blocks of this many mel frames, each from its own generator.
NOISE_BLOCK_FRAMES = 256


def stable_noise(inputs: FlowInputs, seeds: Sequence[int]) -> torch.Tensor:
    """Starting noise (B, 80, T) whose value at a frame depends on the item's seed alone.

    Upstream draws fresh noise whose values depend on the utterance's length; a stream
    re-renders a growing prefix, and its frames must see the same noise at every step
    (as the original's fixed `rand_noise` gives them), so each block of
    `NOISE_BLOCK_FRAMES` frames is drawn from a generator seeded by (seed, block).
    """
    noise = torch.zeros_like(inputs.mu)
    for i, (frames, seed) in enumerate(zip(inputs.mel_lens, seeds, strict=True)):
        blocks = []
        for block in range(-(-frames // NOISE_BLOCK_FRAMES)):
            gen = torch.Generator().manual_seed(hash((seed, block)) & 0x7FFF_FFFF_FFFF_FFFF)
            blocks.append(torch.randn(80, NOISE_BLOCK_FRAMES, generator=gen))
        noise[i, :, :frames] = torch.cat(blocks, dim=1)[:, :frames].to(noise.device)
    return noise


class MeanflowS3GenRunner(BatchedS3GenRunner):
    """`BatchedS3GenRunner` for upstream's `S3Gen(meanflow=True)`; the engine's contract.

    Batching, the vocoder and the fade-in are the original runner's; the flow stage is
    meanflow's. `policy.compile` must be "off" (no compiled meanflow estimator yet).
    """

    def __init__(self, s3gen: Any, policy: S3GenBatchPolicy | None = None) -> None:
        policy = policy or S3GenBatchPolicy()
        if policy.compile != "off":
            raise ValueError("Turbo's meanflow S3Gen has no compiled path yet (compile='off')")
        if not getattr(s3gen, "meanflow", False):
            raise ValueError("MeanflowS3GenRunner needs S3Gen(meanflow=True)")
        super().__init__(s3gen, policy)

    def flow_mels(
        self,
        speech_tokens: Sequence[Any],
        ref_dicts: Sequence[dict[str, Any]],
        n_timesteps: int,
        *,
        seeds: Sequence[int] | None = None,
    ) -> list[Any]:
        """Mels (80, n_i) of every item as one batch, prompt frames removed."""
        flow = self.s3gen.flow
        precision = self._precision()
        with torch.inference_mode():
            inputs = flow_inputs(flow, list(speech_tokens), list(ref_dicts), precision)
            device = inputs.mu.device
            lens = [int(torch.as_tensor(t).numel()) for t in speech_tokens]
            x = self.initial_noise(inputs, lens, seeds)
            attention = resolve_attention(self.policy.attention, precision, device)
            feat = solve_meanflow(
                flow.decoder.estimator, x, inputs, n_timesteps, precision, attention
            )
            return inputs.generated(feat)

    def initial_noise(
        self, inputs: FlowInputs, speech_lens: Sequence[int], seeds: Sequence[int] | None
    ) -> torch.Tensor:
        """The solver's starting point (`meanflow_noise`)."""
        return meanflow_noise(inputs, speech_lens, seeds)


class StreamingMeanflowRunner(MeanflowS3GenRunner):
    """The meanflow runner for streams (`s3gen.streaming.StreamingS3Gen`): `stable_noise`.

    A streamed utterance therefore differs from a whole render of it only in its noise
    realisation, as the original's streams differ in their vocoder noise.
    """

    def initial_noise(
        self, inputs: FlowInputs, speech_lens: Sequence[int], seeds: Sequence[int] | None
    ) -> torch.Tensor:
        if seeds is None:
            raise ValueError("a streamed meanflow render needs each stream's seed")
        return stable_noise(inputs, seeds)
