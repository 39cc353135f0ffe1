"""Batched token-to-mel stage of S3Gen: conformer encoder plus the CFM Euler solver.

chatterbox-vllm's `CausalMaskedDiffWithXvec.inference` asserts a batch of one and its
solver allocates for exactly one item (doubled for classifier-free guidance). This module
drives the same sub-modules (`flow.encoder`, `flow.decoder.estimator`, ...) over a
right-padded batch, so each item sees exactly the inputs it would see alone:

- each item is laid out as `[prompt tokens | speech tokens]`, padded per item, so items
  with different voices (different prompt lengths) share a batch;
- padded frames are zeroed before the encoder's 3-frame look-ahead convolution, which
  would otherwise read them where the single-item path reads its zero padding;
- attention layers take key-padding masks; every other layer of the encoder and the
  estimator is causal or pointwise, so padding never leaks into real frames;
- the solver's noise is `decoder.rand_noise[:, :, :T]` per item, as in the original.

Precision: "bf16" and "fp16" run the encoder and the CFM estimator under
autocast, so layer norms, softmax and the solver state stay float32 while the matrix
products run in half precision. Casting the estimator's weights to bfloat16 instead
(layer norms and the residual stream in bfloat16 too) measured 4e-2 relative L2 on mels
against fp32, four times the 1e-2 bound (tests/model/test_s3gen_quality.py).

Imported lazily by `batch`: this module needs torch and chatterbox-vllm.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from chatterbox_vllm.models.s3gen.utils.mask import add_optional_chunk_mask, make_pad_mask

from chatterbox_serve.model.s3gen.attention import (
    AttentionBackend,
    packed_attention,
    resolve_attention,
)

Precision = Literal["fp32", "tf32", "bf16", "fp16"]
HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Velocity(Protocol):
    """The guided velocity of B items: what one Euler step adds, per unit of time."""

    def __call__(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        mu: torch.Tensor,
        t: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
    ) -> torch.Tensor: ...


# The encoder's relative-position attention materialises (rows, 8, T, 2T - 1) scores
# several times over: about 15 GiB for 64 items of 1,100 frames. It runs once per batch,
# so running it a few items at a time costs little time and caps that memory.
ENCODER_CHUNK = 8


def flow_mels(
    flow: Any,
    speech_tokens: Sequence[torch.Tensor],
    ref_dicts: Sequence[dict[str, Any]],
    n_timesteps: int,
    precision: Precision = "fp32",
    attention: AttentionBackend = "auto",
    *,
    velocity: Velocity | None = None,
    pad_frames: Callable[[int], int] | None = None,
) -> list[torch.Tensor]:
    """Mel spectrograms (80, n_i) of the generated part of each item, prompt removed.

    `velocity` replaces the eager guided estimator call (`GuidedVelocity`), e.g. with a
    compiled one; `pad_frames` maps the batch's frame count to a larger one (a length
    bucket), and the extra frames are masked like any padding.
    """
    inputs = flow_inputs(flow, speech_tokens, ref_dicts, precision, pad_frames)
    device = inputs.mu.device
    noise = torch.zeros_like(inputs.cond)
    rand_noise = flow.decoder.rand_noise
    for i, n in enumerate(inputs.mel_lens):
        noise[i, :, :n] = rand_noise[0, :, :n].to(device)
    feat = solve_euler(
        flow.decoder,
        noise,
        mu=inputs.mu,
        mask=inputs.mask,
        spks=inputs.spks,
        cond=inputs.cond,
        n_timesteps=n_timesteps,
        precision=precision,
        attention=resolve_attention(attention, precision, device),
        lengths=torch.tensor(inputs.mel_lens, device=device),
        velocity=velocity,
    )
    return inputs.generated(feat)


@dataclass(frozen=True)
class FlowInputs:
    """The CFM solver's inputs for a right-padded batch: encoder output, masks, conditions.

    `mu` (B, 80, T), `mask` (B, 1, T), `spks` (B, 80), `cond` (B, 80, T) with each
    item's prompt mel in its first `prompt_lens[i]` frames; `mel_lens[i]` counts the
    item's frames, prompt included.
    """

    mu: torch.Tensor
    mask: torch.Tensor
    spks: torch.Tensor
    cond: torch.Tensor
    mel_lens: list[int]
    prompt_lens: list[int]

    def generated(self, feat: torch.Tensor) -> list[torch.Tensor]:
        """Each item's solved mel (80, n_i) without its prompt frames."""
        return [
            feat[i, :, self.prompt_lens[i] : self.mel_lens[i]] for i in range(len(self.mel_lens))
        ]


def flow_inputs(
    flow: Any,
    speech_tokens: Sequence[torch.Tensor],
    ref_dicts: Sequence[dict[str, Any]],
    precision: Precision = "fp32",
    pad_frames: Callable[[int], int] | None = None,
) -> FlowInputs:
    """Embed, encode and lay out a batch as `CausalMaskedDiffWithXvec.inference` does.

    Shared by the original model's solver (`flow_mels`) and Turbo's meanflow one.
    """
    device = flow.input_embedding.weight.device
    refs = [_ref_on(ref, device) for ref in ref_dicts]
    seqs = [
        torch.cat([ref["prompt_token"].reshape(-1), tok.reshape(-1).to(device)])
        for ref, tok in zip(refs, speech_tokens, strict=True)
    ]
    token_lens = torch.tensor([s.numel() for s in seqs], device=device)
    tokens = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)

    embedding = torch.cat([ref["embedding"].reshape(1, -1) for ref in refs]).float()
    spks = flow.spk_embed_affine_layer(F.normalize(embedding, dim=1))

    token_mask = (~make_pad_mask(token_lens, tokens.shape[1])).unsqueeze(-1).to(spks)
    vocab = flow.input_embedding.num_embeddings
    x = flow.input_embedding(torch.clamp(tokens, min=0, max=vocab - 1)) * token_mask
    with half_precision(precision, device):
        h = torch.cat(
            [
                flow.encoder_proj(
                    encode(
                        flow.encoder, x[i : i + ENCODER_CHUNK], token_lens[i : i + ENCODER_CHUNK]
                    )
                ).float()
                for i in range(0, x.shape[0], ENCODER_CHUNK)
            ]
        )
    if pad_frames is not None:
        extra = pad_frames(h.shape[1]) - h.shape[1]
        if extra < 0:
            raise ValueError(f"pad_frames shrank {h.shape[1]} frames by {-extra}")
        h = F.pad(h, (0, 0, 0, extra))

    mel_lens = [2 * int(n) for n in token_lens.tolist()]
    prompt_lens = [int(ref["prompt_feat"].shape[1]) for ref in refs]
    batch, frames = h.shape[0], h.shape[1]
    cond = torch.zeros(batch, flow.output_size, frames, device=device, dtype=h.dtype)
    for i, ref in enumerate(refs):
        cond[i, :, : prompt_lens[i]] = ref["prompt_feat"][0].transpose(0, 1)
    mel_len_t = torch.tensor(mel_lens, device=device)
    mel_mask = (~make_pad_mask(mel_len_t, frames)).unsqueeze(1).to(h)
    mu = h.transpose(1, 2).contiguous()
    return FlowInputs(mu, mel_mask, spks, cond, mel_lens, prompt_lens)


def encode(encoder: Any, xs: torch.Tensor, xs_lens: torch.Tensor) -> torch.Tensor:
    """`UpsampleConformerEncoder.forward` for a padded batch, with the look-ahead fixed.

    The one change from the original: padded frames are zeroed after the input embedding.
    Its linear layer, layer norm and positional scaling turn zero padding into non-zero
    frames, and the look-ahead convolution reads 3 frames past each item's end.
    """
    masks = ~make_pad_mask(xs_lens, xs.size(1)).unsqueeze(1)
    xs, pos_emb, masks = encoder.embed(xs, masks)
    chunk_masks = add_optional_chunk_mask(xs, masks, False, False, 0, encoder.static_chunk_size, -1)
    xs = xs * masks.transpose(1, 2).to(xs.dtype)
    xs = encoder.pre_lookahead_layer(xs)
    xs = encoder.forward_layers(xs, chunk_masks, pos_emb, masks)

    xs, xs_lens = encoder.up_layer(xs.transpose(1, 2).contiguous(), xs_lens)
    xs = xs.transpose(1, 2).contiguous()
    masks = ~make_pad_mask(xs_lens, xs.size(1)).unsqueeze(1)
    xs, pos_emb, masks = encoder.up_embed(xs, masks)
    chunk_masks = add_optional_chunk_mask(
        xs, masks, False, False, 0, encoder.static_chunk_size * encoder.up_layer.stride, -1
    )
    xs = encoder.forward_up_layers(xs, chunk_masks, pos_emb, masks)
    if encoder.normalize_before:
        xs = encoder.after_norm(xs)
    out: torch.Tensor = xs
    return out


def solve_euler(
    decoder: Any,
    x: torch.Tensor,
    *,
    mu: torch.Tensor,
    mask: torch.Tensor,
    spks: torch.Tensor,
    cond: torch.Tensor,
    n_timesteps: int,
    precision: Precision,
    attention: AttentionBackend = "bias",
    lengths: torch.Tensor | None = None,
    velocity: Velocity | None = None,
) -> torch.Tensor:
    """The CFM Euler solver of `ConditionalCFM.solve_euler`, for B items at once.

    The state `x` stays float32 whatever the estimator's precision. `attention` other
    than "bias" needs `lengths` (B,), each item's valid frames (`attention`).
    """
    t_span = torch.linspace(0, 1, n_timesteps + 1, device=mu.device, dtype=mu.dtype)
    if decoder.t_scheduler == "cosine":
        t_span = 1 - torch.cos(t_span * 0.5 * torch.pi)
    if velocity is None:
        velocity = GuidedVelocity(decoder.estimator, decoder.inference_cfg_rate, precision)
    row_lengths = None if lengths is None else torch.cat([lengths, lengths])
    with packed_attention(decoder.estimator, row_lengths, x.shape[-1], attention):
        t, dt = t_span[0], t_span[1] - t_span[0]
        for step in range(1, len(t_span)):
            if precision == "tf32":
                with _tf32():
                    v = velocity(x, mask, mu, t, spks, cond)
            else:
                v = velocity(x, mask, mu, t, spks, cond)
            x = x + dt * v
            t = t + dt
            if step < len(t_span) - 1:
                dt = t_span[step + 1] - t
    return x.float()


class GuidedVelocity(torch.nn.Module):
    """The estimator run once over the classifier-free guidance pair, guidance applied.

    Rows [0, B) of the estimator's batch are conditioned, rows [B, 2B) see zero `mu`,
    `spks` and `cond`; both halves go through one call (one set of kernel launches, a
    batch twice as large for the matrix products). A module, so that `torch.compile`
    takes the pairing, the autocast region and the guidance arithmetic as one graph.
    """

    def __init__(self, estimator: torch.nn.Module, cfg_rate: float, precision: Precision) -> None:
        super().__init__()
        self.estimator = estimator
        self.cfg_rate = float(cfg_rate)
        self.half_dtype = HALF_DTYPES.get(precision)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        mu: torch.Tensor,
        t: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
    ) -> torch.Tensor:
        batch = x.shape[0]
        rows = (
            torch.cat([x, x]),
            torch.cat([mask, mask]),
            torch.cat([mu, torch.zeros_like(mu)]),
            t.expand(2 * batch),
            torch.cat([spks, torch.zeros_like(spks)]),
            torch.cat([cond, torch.zeros_like(cond)]),
        )
        if self.half_dtype is None:
            dphi = estimate(self.estimator, *rows)
        else:
            with torch.autocast(x.device.type, dtype=self.half_dtype):
                dphi = estimate(self.estimator, *rows)
            dphi = dphi.float()
        rate = self.cfg_rate
        out: torch.Tensor = (1.0 + rate) * dphi[:batch] - rate * dphi[batch:]
        return out


def estimate(
    estimator: Any,
    x: torch.Tensor,
    mask: torch.Tensor,
    mu: torch.Tensor,
    t: torch.Tensor,
    spks: torch.Tensor,
    cond: torch.Tensor,
    r: torch.Tensor | None = None,
) -> torch.Tensor:
    """`ConditionalDecoder.forward` (the CFM estimator) with its attention bias made once.

    `r`, the end time of the step, is for meanflow estimators (Turbo's S3Gen): their
    time embedding mixes the embeddings of `t` and `r` (`time_embed_mixer`).

    The original rebuilds the bias in each of its 14 block groups through
    `add_optional_chunk_mask`, whose check for all-false rows (`.item()`) waits for the
    GPU every time: 14 host syncs per call, and 14 graph breaks under `torch.compile`
    (measured with `torch._dynamo.explain`). With one level of down/up blocks (S3Gen's
    `channels=[256]`) every group sees the same frame mask, so one bias serves all;
    any other module is called as it is.
    Rows with no valid frame (padding rows) differ from the original's, which attends
    them over every frame instead of none; their output is zeroed by the final mask
    either way, and rows never mix.
    """
    levels = getattr(estimator, "down_blocks", None)
    if levels is None or len(levels) != 1 or len(estimator.up_blocks) != 1:
        extra = {} if r is None else {"r": r}
        out: torch.Tensor = estimator(x, mask, mu, t, spks, cond, **extra)
        return out
    t = estimator.time_mlp(estimator.time_embeddings(t).to(t.dtype))
    if r is not None:
        r = estimator.time_mlp(estimator.time_embeddings(r).to(t.dtype))
        t = estimator.time_embed_mixer(torch.cat([t, r], dim=1))
    x = torch.cat([x, mu, spks.unsqueeze(-1).expand(-1, -1, x.shape[-1]), cond], dim=1)
    bias = (1.0 - mask.bool().to(x.dtype)) * -1.0e10  # chatterbox-vllm's mask_to_bias

    def transformers(x: torch.Tensor, blocks: Any) -> torch.Tensor:
        x = x.transpose(1, 2).contiguous()
        for block in blocks:
            x = block(hidden_states=x, attention_mask=bias, timestep=t)
        return x.transpose(1, 2).contiguous()

    resnet, blocks, downsample = estimator.down_blocks[0]
    skip = transformers(resnet(x, mask, t), blocks)
    x = downsample(skip * mask)
    for resnet, blocks in estimator.mid_blocks:
        x = transformers(resnet(x, mask, t), blocks)
    resnet, blocks, upsample = estimator.up_blocks[0]
    x = torch.cat([x[:, :, : skip.shape[-1]], skip], dim=1)
    x = upsample(transformers(resnet(x, mask, t), blocks) * mask)
    x = estimator.final_block(x, mask)
    result: torch.Tensor = estimator.final_proj(x * mask) * mask
    return result


@contextlib.contextmanager
def half_precision(precision: Precision, device: torch.device) -> Iterator[None]:
    """Autocast to the precision's half type; fp32 and tf32 leave the defaults alone."""
    dtype = HALF_DTYPES.get(precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


@contextlib.contextmanager
def _tf32() -> Iterator[None]:
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=True):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _ref_on(ref: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """The reference tensors on `device` (`embed_ref` may hand back numpy arrays)."""
    out = {}
    for key in ("prompt_token", "prompt_feat", "embedding"):
        value = ref[key]
        tensor = torch.as_tensor(value) if not torch.is_tensor(value) else value
        out[key] = tensor.to(device)
    return out
