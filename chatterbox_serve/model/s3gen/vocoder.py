"""Batched HiFT vocoder of S3Gen, with padding masks the original does not have.

`HiFTGenerator` is built from non-causal convolutions (symmetric padding, dilations,
transposed convolutions), an STFT of its sine source and an inverse STFT. Run over a
right-padded batch as is, every layer would read the previous layer's non-zero padding
where the single-item path reads zeros, and the last ~100 ms of each item would change.
So this module drives the same layers with a length mask applied before every
convolution (a convolution over zeros beyond the end equals its own zero padding), and
runs the two STFTs, whose reflect padding and window normalisation depend on each item's
own end, per item. Each item's output is `480 x its mel length` samples, as alone.

The sine source draws random numbers. With `seeds`, item i draws them exactly as
`torch.manual_seed(seeds[i])` followed by `HiFTGenerator.inference` would, which is what
the equality test relies on; without, the batch draws from the global generators.

`precision` other than "fp32" runs the convolution stack under autocast (f0, the sine
source and both STFTs stay float32). Measured against float32 with the same mel and
seeds (tests/model/test_s3gen_quality.py, random weights): "fp16" moves waveforms by
6.3e-4 to 6.4e-4 relative L2 on the CPU (8 items: 4 workloads of 2 voices, 8 noise
seeds) and by 9.6e-4 on the H200 (where the fp32 path itself is 4.1e-4 from HiFT
alone, cuDNN convolutions running TF32), inside the 1e-3 waveform bound but with
too little margin on the GPU to be the default, so it is opt-in
(`CHATTERBOX_S3GEN_VOCODER_PRECISION`); "bf16" by 4e-3 to 9e-3, over the bound, so no
setting selects it.

Imported lazily by `batch`: this module needs torch and chatterbox-vllm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

SAMPLES_PER_FRAME = 480  # 8 x 5 x 3 upsampling, then an inverse STFT with hop 4

# HiFT's last stages hold (items, 64 to 128 channels, 480 x frames) activations: 12 GiB
# at 64 items of 1,100 frames. Above 16 items a batch gains no speed on the H200
# (docs/S3GEN.md), so larger batches are vocoded 16 items at a time.
VOCODER_CHUNK = 16


VocoderPrecision = Literal["fp32", "fp16", "bf16"]


def vocode(
    hift: Any,
    mels: Sequence[torch.Tensor],
    seeds: Sequence[int] | None = None,
    precision: VocoderPrecision = "fp32",
    *,
    sources: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Waveforms (1, 480 * n_i) of mel spectrograms (80, n_i), clamped like the original.

    `sources`, when given, are the merged excitations (480 * n_i samples each) made by
    the caller in place of f0 prediction and the sine source (`seeds` is then unused):
    streaming (`streaming`) vocodes windows whose source phase continues the last one's.
    """
    out: list[torch.Tensor] = []
    for i in range(0, len(mels), VOCODER_CHUNK):
        chunk_seeds = None if seeds is None else seeds[i : i + VOCODER_CHUNK]
        chunk_sources = None if sources is None else sources[i : i + VOCODER_CHUNK]
        out.extend(
            _vocode_batch(hift, mels[i : i + VOCODER_CHUNK], chunk_seeds, precision, chunk_sources)
        )
    return out


def _vocode_batch(
    hift: Any,
    mels: Sequence[torch.Tensor],
    seeds: Sequence[int] | None,
    precision: VocoderPrecision,
    sources: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    device = mels[0].device
    lens = [int(m.shape[-1]) for m in mels]
    mel = torch.zeros(len(mels), mels[0].shape[0], max(lens), device=device)
    for i, m in enumerate(mels):
        mel[i, :, : lens[i]] = m

    if sources is None:
        sine = _sine_source(hift, _f0(hift.f0_predictor, mel, lens), lens, seeds)
    else:
        sine = torch.nn.utils.rnn.pad_sequence([s.reshape(-1) for s in sources], batch_first=True)
    s_stft = _source_stft(hift, sine, lens)

    if precision == "fp32":
        x, n = _conv_stack(hift, mel, s_stft, lens)
    else:
        half = torch.float16 if precision == "fp16" else torch.bfloat16
        with torch.autocast(device_type=device.type, dtype=half):
            x, n = _conv_stack(hift, mel, s_stft, lens)
        x = x.float()
        if not bool(torch.isfinite(x).all()):
            # float16 overflowed somewhere in this chunk: redo it exactly rather than
            # hand inf/NaN to the inverse STFT.
            x, n = _conv_stack(hift, mel, s_stft, lens)
    half = hift.istft_params["n_fft"] // 2 + 1
    magnitude, phase = torch.exp(x[:, :half, :]), torch.sin(x[:, half:, :])
    return [
        torch.clamp(
            hift._istft(magnitude[i : i + 1, :, : n[i]], phase[i : i + 1, :, : n[i]]),
            -hift.audio_limit,
            hift.audio_limit,
        )
        for i in range(len(mels))
    ]


def _conv_stack(
    hift: Any, mel: torch.Tensor, s_stft: torch.Tensor, lens: Sequence[int]
) -> tuple[torch.Tensor, list[int]]:
    """Upsampling, source fusion and residual blocks, masked: (B, n_fft + 2, T'), lengths."""
    x = hift.conv_pre(mel)
    n = list(lens)
    for i in range(hift.num_upsamples):
        x = F.leaky_relu(x * _mask(x, n), hift.lrelu_slope)
        x = hift.ups[i](x)
        n = [k * hift.ups[i].stride[0] for k in n]
        if i == hift.num_upsamples - 1:
            x = hift.reflection_pad(x)
            n = [k + 1 for k in n]
        mask = _mask(x, n)
        x = x * mask
        si = hift.source_downs[i](s_stft) * mask
        x = x + _resblock(hift.source_resblocks[i], si, mask)
        xs = sum(
            _resblock(hift.resblocks[i * hift.num_kernels + j], x, mask)
            for j in range(hift.num_kernels)
        )
        x = xs / hift.num_kernels

    out: torch.Tensor = hift.conv_post(F.leaky_relu(x))
    return out, n


def _mask(x: torch.Tensor, lens: Sequence[int]) -> torch.Tensor:
    """(B, 1, T) float mask, 1 on each item's first `lens[i]` steps."""
    steps = torch.arange(x.shape[-1], device=x.device)
    limits = torch.tensor(lens, device=x.device).unsqueeze(1)
    return (steps.unsqueeze(0) < limits).unsqueeze(1).to(x.dtype)


def _resblock(block: Any, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`ResBlock.forward` with each convolution's output masked; `x` is masked already."""
    for idx in range(len(block.convs1)):
        xt = block.convs1[idx](block.activations1[idx](x)) * mask
        xt = block.convs2[idx](block.activations2[idx](xt)) * mask
        x = xt + x
    return x


def _f0(predictor: Any, mel: torch.Tensor, lens: Sequence[int]) -> torch.Tensor:
    """`ConvRNNF0Predictor.forward`, masking after each convolution block: (B, T)."""
    mask = _mask(mel, lens)
    x = mel
    for layer in predictor.condnet:
        x = layer(x)
        if isinstance(layer, torch.nn.ELU):
            x = x * mask
    return torch.abs(predictor.classifier(x.transpose(1, 2)).squeeze(-1))


def _sine_source(
    hift: Any, f0: torch.Tensor, lens: Sequence[int], seeds: Sequence[int] | None
) -> torch.Tensor:
    """`SourceModuleHnNSF` (harmonic branch) on upsampled f0: (B, samples)."""
    gen = hift.m_source.l_sin_gen
    f0 = hift.f0_upsamp(f0[:, None])  # (B, 1, samples)
    harmonics = torch.arange(1, gen.harmonic_num + 2, device=f0.device, dtype=f0.dtype)
    f_mat = f0 * harmonics.view(1, -1, 1) / gen.sampling_rate
    theta = 2 * np.pi * (torch.cumsum(f_mat, dim=-1) % 1)
    phase, noise = _source_noise(f_mat, lens, seeds)
    phase[:, 0, :] = 0
    uv = (f0 > gen.voiced_threshold).to(torch.float32)
    noise_amp = uv * gen.noise_std + (1 - uv) * gen.sine_amp / 3
    sine = gen.sine_amp * torch.sin(theta + phase) * uv + noise_amp * noise
    merged: torch.Tensor = hift.m_source.l_tanh(hift.m_source.l_linear(sine.transpose(1, 2)))
    return merged[:, :, 0]


def _source_noise(
    f_mat: torch.Tensor, lens: Sequence[int], seeds: Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random phases (B, H, 1) and noise (B, H, samples) of `SineGen.forward`."""
    batch, harmonics, samples = f_mat.shape
    device = f_mat.device
    if seeds is None:
        phase = (torch.rand(batch, harmonics, 1, device=device) * 2 - 1) * np.pi
        return phase, torch.randn(batch, harmonics, samples, device=device)
    phase = torch.empty(batch, harmonics, 1, device=device)
    noise = torch.zeros(batch, harmonics, samples, device=device)
    for i, seed in enumerate(seeds):
        # SineGen's Uniform draws on the CPU generator, its randn_like on the device's.
        cpu = torch.Generator().manual_seed(seed)
        low, high = torch.tensor(-np.pi), torch.tensor(np.pi)
        phase[i] = (low + torch.rand(harmonics, 1, generator=cpu) * (high - low)).to(device)
        dev = cpu if device.type == "cpu" else torch.Generator(device).manual_seed(seed)
        n = lens[i] * SAMPLES_PER_FRAME
        noise[i, :, :n] = torch.randn(1, harmonics, n, generator=dev, device=device)[0]
    return phase, noise


def _source_stft(hift: Any, sine: torch.Tensor, lens: Sequence[int]) -> torch.Tensor:
    """Per-item STFT of the sine source, zero-padded to one batch: (B, n_fft + 2, frames)."""
    per_item = []
    for i, n in enumerate(lens):
        real, imag = hift._stft(sine[i : i + 1, : n * SAMPLES_PER_FRAME])
        per_item.append(torch.cat([real, imag], dim=1)[0])
    return torch.nn.utils.rnn.pad_sequence(
        [s.transpose(0, 1) for s in per_item], batch_first=True
    ).transpose(1, 2)
