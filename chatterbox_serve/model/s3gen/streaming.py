"""Streaming S3Gen: audio for the first speech tokens while T3 still generates the rest.

Each `StreamingS3Gen.step` takes, per stream, all speech tokens so far
and returns only the new samples. Several streams (any voices, any lengths) share one
flow pass (`flow.flow_mels`) and one vocoder pass (`vocoder.vocode`).

Method, per step and stream:

- **Flow on the whole prefix.** The encoder's attention and the estimator's attention
  see every frame, so a frame's mel changes a little as tokens arrive; re-running the
  flow on the whole prefix (prompt included) keeps every new frame conditioned on all
  tokens known. The CFM noise is the fixed `rand_noise[:, :, :T]`, so earlier frames get
  the same noise each time.
- **Hold back the end.** The encoder's look-ahead convolution reads 3 tokens past each
  token, so the last `pre_lookahead_len x token_mel_ratio` = 6 frames of a prefix are
  made against zeros that real tokens will replace (upstream's `finalize=False` drops
  them). A non-final step commits frames up to `frames - hold_frames` only.
- **Vocode a window with context.** HiFT is non-causal: the window starts `left_frames`
  before the last commit point (so its left edge effects fall on audio already sent)
  and runs to the prefix's last frame (the held frames are right context).
- **Continuous excitation.** The sine source's phase is a running sum over all samples;
  each stream keeps that sum at its next window's start, so a window's source continues
  the previous one's instead of restarting at phase 0 (the job of HiFT's
  `cache_source` upstream, without its phase jump where the cache ends).
- **Crossfade.** The last `crossfade_samples` before each commit point are held back and
  cross-faded (raised cosine) with the next window's render of the same samples.

Source noise: `BatchedS3GenRunner.run(seeds=...)` draws noise of the utterance's whole
length at once, so the noise at a given sample depends on that length, which a stream
does not know. A stream draws it instead in blocks of one second, each from a generator
seeded by (seed, block): the same at every step and for every length. The one-shot render
(`render`) draws the same way, and is the reference streaming is measured against; it
equals `BatchedS3GenRunner.run` exactly in mels and length, and differs in waveform only
by that noise realisation.

Cost: each step re-runs the flow on the whole prefix, so n tokens streamed in steps of
equal size cost O(n^2 / step); with step sizes that double, the total stays under twice
one non-streamed render. The vocoder runs only on the new frames plus the context.

Imported lazily: this module needs torch and chatterbox-vllm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from chatterbox_serve.model.s3gen.batch import BatchedS3GenRunner, S3GenBatchPolicy
from chatterbox_serve.model.s3gen.vocoder import SAMPLES_PER_FRAME, vocode

__all__ = ["JoinPolicy", "S3GenStream", "StreamingS3Gen", "join_discontinuity_dbfs"]

# Noise is drawn in blocks of this many samples (one second at 24 kHz), each block from
# its own generator, so the noise at a sample never depends on how long the stream gets.
NOISE_BLOCK = 24_000


@dataclass(frozen=True)
class JoinPolicy:
    """Where a stream cuts and how it joins (lengths measured in docs/S3GEN.md, Streaming).

    Attributes:
        hold_frames: mel frames at the end of a non-final prefix that are not committed;
            at least the 6 frames the encoder's look-ahead makes against missing tokens.
        left_frames: mel frames of context before the last commit point in each vocoder
            window; covers HiFT's reach to the left (its convolutions and source STFT).
        crossfade_samples: samples cross-faded at each join; 0 cuts hard.
    """

    hold_frames: int = 8
    left_frames: int = 16
    crossfade_samples: int = 480

    def __post_init__(self) -> None:
        if self.hold_frames < 0 or self.left_frames < 0 or self.crossfade_samples < 0:
            raise ValueError("hold_frames, left_frames and crossfade_samples must be >= 0")
        if self.crossfade_samples > self.left_frames * SAMPLES_PER_FRAME:
            raise ValueError("crossfade_samples must fit in the left context")


@dataclass
class S3GenStream:
    """One utterance being streamed; `StreamingS3Gen.step` updates it in place.

    Attributes:
        ref: `S3Gen.embed_ref` output, as `BatchedS3GenRunner` takes it.
        seed: fixes the vocoder's random phases and noise.
        committed: mel frames whose audio is final (sent, or held in `tail`).
        emitted: samples returned so far.
        tail: the last samples before `committed`, held back for the next crossfade.
        cycles: the sine source's accumulated phase, in cycles per harmonic (float64),
            at the start of the next vocoder window.
        harmonic_phase: the random initial phase per harmonic, drawn from `seed`.
        finished: a final step was made; no more steps are accepted.
    """

    ref: dict[str, Any]
    seed: int
    committed: int = 0
    emitted: int = 0
    tail: torch.Tensor | None = None
    cycles: torch.Tensor | None = None
    harmonic_phase: torch.Tensor | None = field(default=None, repr=False)
    finished: bool = False


class StreamingS3Gen:
    """Incremental S3Gen over many streams at once; each step returns only new samples.

    `s3gen` is chatterbox-vllm's `S3Gen` with its weights, in eval mode; `policy` sets
    the flow's precision, attention and compile mode and the vocoder's precision, as
    for `BatchedS3GenRunner` (its batch size and length ratio are not used: one step is
    one batch). Not thread-safe: one caller steps all streams.
    """

    def __init__(
        self,
        s3gen: Any,
        policy: S3GenBatchPolicy | None = None,
        joins: JoinPolicy | None = None,
        runner: BatchedS3GenRunner | None = None,
    ) -> None:
        """`runner` does the flow (default: the original's); Turbo passes its meanflow one,
        whose noise each stream's seed fixes (`model.turbo.s3gen.StreamingMeanflowRunner`)."""
        self.s3gen = s3gen
        self.policy = policy or S3GenBatchPolicy()
        self.joins = joins or JoinPolicy()
        self._runner = runner or BatchedS3GenRunner(s3gen, self.policy)

    def open(self, ref: dict[str, Any], seed: int) -> S3GenStream:
        """A new stream for one utterance of voice `ref`."""
        return S3GenStream(ref=ref, seed=seed)

    def step(
        self, work: Sequence[tuple[S3GenStream, torch.Tensor, bool]], n_timesteps: int
    ) -> list[torch.Tensor]:
        """New samples (1-D float32, 24 kHz) per (stream, all tokens so far, final) item.

        A non-final item whose tokens commit no new frame (fewer than `hold_frames / 2`
        tokens past the last commit) gets an empty piece and costs nothing. After a
        final step, the stream's pieces concatenated are the whole utterance, of
        `480 x 2 x tokens` samples like the non-streamed render.
        """
        pieces = [torch.zeros(0, device=self.s3gen.trim_fade.device)] * len(work)
        busy: list[int] = []
        for i, (stream, tokens, final) in enumerate(work):
            if stream.finished:
                raise ValueError("step on a finished stream")
            if self._frames(tokens) < stream.committed:
                raise ValueError("a stream's tokens can only grow between steps")
            if final or self._frames(tokens) - self.joins.hold_frames > stream.committed:
                busy.append(i)
        if not busy:
            return pieces
        with torch.inference_mode():
            mels = self._runner.flow_mels(
                [work[i][1].reshape(-1) for i in busy],
                [work[i][0].ref for i in busy],
                n_timesteps,
                seeds=[work[i][0].seed for i in busy],
            )
        for i, piece in zip(
            busy,
            self.emit([(work[i][0], m, work[i][2]) for i, m in zip(busy, mels, strict=True)]),
            strict=True,
        ):
            pieces[i] = piece
        return pieces

    def render(
        self, tokens: torch.Tensor, ref: dict[str, Any], seed: int, n_timesteps: int
    ) -> torch.Tensor:
        """The whole utterance in one final step: the non-streamed reference for `seed`."""
        return self.step([(self.open(ref, seed), tokens, True)], n_timesteps)[0]

    @torch.inference_mode()
    def emit(self, work: Sequence[tuple[S3GenStream, torch.Tensor, bool]]) -> list[torch.Tensor]:
        """The vocoder half of `step`, given each stream's mel (80, frames) of its prefix.

        Public so that the joins can be checked on mels that only grow (no flow drift).
        """
        hift = self.s3gen.mel2wav
        windows, sources, plans, phases = [], [], [], []
        for stream, mel, final in work:
            frames = int(mel.shape[-1])
            end = frames if final else max(stream.committed, frames - self.joins.hold_frames)
            start = max(0, stream.committed - self.joins.left_frames)
            plans.append((start, end))
            if end <= stream.committed:
                continue
            windows.append(mel[:, start:frames])
            source, cycles = self._source(hift, stream, mel[:, start:frames], start, end)
            sources.append(source)
            phases.append((stream, cycles))
        wavs = iter(
            vocode(hift, windows, precision=self.policy.vocoder_precision, sources=sources)
            if windows
            else []
        )
        # Only now that every window is rendered does any stream's phase move on: a
        # failed pass (one bad item) leaves every stream as it was, so a retry of the
        # others, alone, continues their sources without a phase jump.
        for stream, cycles in phases:
            stream.cycles = cycles
        pieces = []
        for (stream, _mel, final), (start, end) in zip(work, plans, strict=True):
            if end > stream.committed:
                pieces.append(self._join(stream, next(wavs)[0], start, end, final))
            elif final:
                pieces.append(self._join(stream, None, start, end, final))
            else:
                pieces.append(torch.zeros(0, device=self.s3gen.trim_fade.device))
        return pieces

    def _join(
        self, stream: S3GenStream, wav: torch.Tensor | None, start: int, end: int, final: bool
    ) -> torch.Tensor:
        """Crossfade the held tail into this window's render and cut the new piece.

        `wav` is the render of frames [start, ...) or None when nothing was rendered (a
        final step that adds no frame: the held tail is all that is left).
        """
        stop = end * SAMPLES_PER_FRAME
        tail = stream.tail
        if wav is None:
            seg = torch.zeros(0, device=self.s3gen.trim_fade.device) if tail is None else tail
        else:
            offset = start * SAMPLES_PER_FRAME  # absolute index of wav[0]
            seg = wav[stream.emitted - offset : stop - offset].float().clone()
            if tail is not None and tail.numel():
                n = tail.numel()
                ramp = _ramp(n, seg.device)
                seg[:n] = tail * (1 - ramp) + seg[:n] * ramp
        keep = stop if final else max(stream.emitted, stop - self.joins.crossfade_samples)
        piece, stream.tail = seg[: keep - stream.emitted], seg[keep - stream.emitted :]
        fade = self.s3gen.trim_fade
        if stream.emitted < fade.shape[0]:
            n = min(fade.shape[0] - stream.emitted, piece.shape[0])
            piece[:n] *= fade[stream.emitted : stream.emitted + n]
        stream.emitted = keep
        stream.committed = end
        stream.finished = final
        return piece

    def _source(
        self, hift: Any, stream: S3GenStream, mel: torch.Tensor, start: int, end: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The merged excitation of a window, phase continued from the stream's state,
        and the stream's `cycles` at the next window's start (for the caller to keep).

        Same arithmetic as `SineGen` and `SourceModuleHnNSF` (chatterbox-vllm), with the
        running phase sum started at the stream's `cycles` and the noise drawn per block.
        """
        gen = hift.m_source.l_sin_gen
        harmonics = gen.harmonic_num + 1
        device = mel.device
        if stream.harmonic_phase is None:
            cpu = torch.Generator().manual_seed(stream.seed)
            low, high = torch.tensor(-np.pi), torch.tensor(np.pi)
            phase = low + torch.rand(harmonics, 1, generator=cpu) * (high - low)
            phase[0] = 0
            stream.harmonic_phase = phase.to(device)
            stream.cycles = torch.zeros(harmonics, dtype=torch.float64, device=device)
        assert stream.cycles is not None
        f0 = hift.f0_predictor(mel.unsqueeze(0).float())  # (1, frames)
        f0 = hift.f0_upsamp(f0[:, None])[0]  # (1, samples)
        order = torch.arange(1, harmonics + 1, device=device, dtype=f0.dtype).unsqueeze(1)
        f_mat = f0 * order / gen.sampling_rate  # (harmonics, samples)
        cycles = (torch.cumsum(f_mat, dim=-1) + stream.cycles.unsqueeze(1).float()) % 1
        samples = f_mat.shape[-1]
        first = start * SAMPLES_PER_FRAME
        noise = _block_noise(stream.seed, harmonics, first, samples).to(device)
        uv = (f0 > gen.voiced_threshold).to(torch.float32)
        noise_amp = uv * gen.noise_std + (1 - uv) * gen.sine_amp / 3
        sine = gen.sine_amp * torch.sin(2 * np.pi * cycles + stream.harmonic_phase) * uv
        sine = sine + noise_amp * noise
        merged: torch.Tensor = hift.m_source.l_tanh(hift.m_source.l_linear(sine.transpose(0, 1)))
        # The next window starts `left_frames` before this step's commit point.
        nxt = max(start, end - self.joins.left_frames) - start
        advance = f_mat[:, : nxt * SAMPLES_PER_FRAME].double().sum(dim=-1)
        return merged[:, 0], (stream.cycles + advance) % 1

    def _frames(self, tokens: torch.Tensor) -> int:
        return 2 * int(tokens.numel())


def _ramp(n: int, device: torch.device) -> torch.Tensor:
    """Raised-cosine weights rising from 0 to 1 over n samples (both ends excluded)."""
    steps = torch.arange(1, n + 1, device=device, dtype=torch.float32) / (n + 1)
    return (1 - torch.cos(torch.pi * steps)) / 2


def _block_noise(seed: int, harmonics: int, first: int, samples: int) -> torch.Tensor:
    """Gaussian noise (harmonics, samples) for absolute samples [first, first + samples)."""
    blocks = []
    for block in range(first // NOISE_BLOCK, (first + samples - 1) // NOISE_BLOCK + 1):
        gen = torch.Generator().manual_seed(hash((seed, block)) & 0x7FFF_FFFF_FFFF_FFFF)
        blocks.append(torch.randn(harmonics, NOISE_BLOCK, generator=gen))
    lead = first - (first // NOISE_BLOCK) * NOISE_BLOCK
    return torch.cat(blocks, dim=1)[:, lead : lead + samples]


def join_discontinuity_dbfs(
    pieces: Sequence[torch.Tensor],
    reference: torch.Tensor,
    crossfade_samples: int,
    margin: int = 48,
) -> float:
    """The largest step, at any join, of the streamed audio's error against `reference`.

    The metric of the bound "no discontinuity above -40 dBFS against a non-streamed
    render": with e = streamed - reference (both 1-D, full scale 1.0), the largest
    |e[t] - e[t-1]| over each join's region (from `margin` samples before the piece
    boundary to `margin` after the crossfade that follows it), in dB re 1.0. A hard cut
    between two renders that disagree by d shows as a step of d. An error spread over
    the whole signal adds its own sample-to-sample change, so measure the same away from
    joins to know that floor (docs/S3GEN.md). 48 samples is 2 ms at 24 kHz. Returns -inf
    for a stream without joins.
    """
    streamed = torch.cat([p.reshape(-1).float().cpu() for p in pieces])
    error = streamed - reference.reshape(-1).float().cpu()
    if error.numel() < 2:
        return float("-inf")
    steps = (error[1:] - error[:-1]).abs()  # steps[t - 1] is the step into sample t
    worst = 0.0
    boundary = 0
    for piece in pieces[:-1]:
        boundary += int(piece.numel())
        lo = max(0, boundary - margin - 1)
        hi = min(steps.numel(), boundary + crossfade_samples + margin)
        if hi > lo:
            worst = max(worst, float(steps[lo:hi].max()))
    return 20 * float(np.log10(worst)) if worst > 0 else float("-inf")
