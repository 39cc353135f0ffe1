"""Batched S3Gen: many utterances through the flow decoder and the vocoder in one pass.

chatterbox-vllm runs S3Gen once per utterance, and S3Gen (not T3) is where the time goes
(its author measured 13.3 s in T3 against 60.8 s in S3Gen for 40 minutes of audio on an
RTX 3090). `BatchedS3GenRunner` sorts the items by length, cuts them into
batches (`S3GenBatchPolicy`), and runs each batch through `flow.flow_mels` and
`vocoder.vocode`, which reuse chatterbox-vllm's own modules and weights with
padding masks. Each item's waveform equals what the one-at-a-time path gives for it, up
to float rounding (tests/unit/test_s3gen_batch.py; docs/S3GEN.md).

This module imports without torch; torch and chatterbox-vllm load on the first `run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

StagePrecision = Literal["fp32", "tf32", "bf16", "fp16"]
Precision = Literal["auto", "fp32", "tf32", "bf16", "fp16"]
AttentionBackend = Literal["auto", "bias", "packed", "flex", "varlen"]
CompileMode = Literal["off", "default", "reduce-overhead", "regional", "graphs"]
VocoderPrecision = Literal["fp32", "fp16", "bf16"]

__all__ = [
    "BatchedS3GenRunner",
    "S3GenBatchPolicy",
    "plan_batches",
    "resolve_precision",
    "run_sequential",
]


@dataclass(frozen=True)
class S3GenBatchPolicy:
    """How `BatchedS3GenRunner` groups items.

    Attributes:
        max_batch_size: most items in one forward pass.
        max_length_ratio: a batch's longest item (prompt plus speech tokens) is at most
            this many times its shortest; a longer one starts a new batch. Bounds the
            compute spent on padding. `inf` disables length bucketing.
        precision: the flow stage's arithmetic: "fp32" (PyTorch defaults), "tf32" (the
            CFM estimator's matrix products), or "bf16" / "fp16" (the encoder and the CFM
            estimator under autocast), or "auto" (bf16 on CUDA GPUs of compute
            capability 8 or more, fp32 elsewhere: CPUs and older GPUs without bfloat16
            units run it slower). The vocoder always
            runs in float32: in bfloat16 it misses the waveform bound
            (tests/model/test_s3gen_quality.py). The library default stays fp32 (exact);
            the served default is the setting `CHATTERBOX_S3GEN_PRECISION` (auto).
        attention: how the estimator's self-attention handles padding: "packed" (each
            item over its own frames, jagged), "flex" (compiled flex_attention with a
            key-length block mask), "bias" (chatterbox-vllm's own float bias over the
            padded batch), "varlen" (flash-attention's variable-length kernel over the
            packed frames; CUDA, bf16 or fp16 only), or "auto" (flex in tf32 on CUDA,
            varlen in bf16/fp16 on CUDA where it runs, else bias). See `attention`.
        compile: `torch.compile` of the CFM estimator on CUDA: "off", "default"
            (fused kernels, dynamic shapes), "reduce-overhead" (also CUDA graphs, one
            per shape bucket) or "regional" (each transformer and resnet block compiled
            on its own; one graph per block class, so far shorter compilation). Ignored
            off CUDA. Needs attention "auto" or "bias" ("regional" also "varlen") and
            a precision other than "tf32". See `compiled`.
        frame_bucket: with CUDA graphs, frames are padded up to the next of a geometric
            series of this ratio, bounding both the padding and the number of graphs.
        vocoder_precision: the vocoder's convolutions: "fp32", "fp16" autocast (inside
            the waveform bound with little margin; opt-in), or "bf16" (over the bound;
            for measurement only). See `vocoder`.
        fp8_linear: the estimator's transformer-block linear layers in float8 (rowwise
            scales, `torch._scaled_mm`) on GPUs of compute capability 8.9 or more, when
            the flow runs in bf16; elsewhere it has no effect. See `fp8`.
        compile_cache_dir: where compiled modes keep torch's compile artifacts across
            restarts (one file per mode, precision, torch version and GPU), or None.
            See `compiled.CompileCache`.
    """

    max_batch_size: int = 64
    max_length_ratio: float = 1.5
    precision: Precision = "fp32"
    attention: AttentionBackend = "auto"
    compile: CompileMode = "off"
    frame_bucket: float = 1.25
    vocoder_precision: VocoderPrecision = "fp32"
    fp8_linear: bool = False
    compile_cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.max_length_ratio < 1.0:
            raise ValueError("max_length_ratio must be at least 1.0")
        if self.frame_bucket < 1.0:
            raise ValueError("frame_bucket must be at least 1.0")
        if self.compile != "off":
            # Whole-estimator compilation (and CUDA graphs) bake the bias path in; regional
            # compilation leaves attention outside the compiled blocks' graphs.
            allowed = ("auto", "bias", "varlen") if self.compile == "regional" else ("auto", "bias")
            if self.attention not in allowed:
                raise ValueError(f"compile {self.compile!r} needs attention in {allowed}")
            if self.precision == "tf32":
                raise ValueError("compile needs precision fp32, bf16 or fp16, not tf32")
        if self.fp8_linear and self.precision not in ("auto", "bf16"):
            # Rowwise-scaled float8 products write bfloat16; other precisions have no
            # place for them.
            raise ValueError("fp8_linear needs precision bf16 or auto")


def resolve_precision(
    precision: Precision, device_type: str, bf16_units: bool = True
) -> StagePrecision:
    """What "auto" stands for: bf16 on CUDA GPUs with bfloat16 units, else fp32."""
    if precision != "auto":
        return precision
    return "bf16" if device_type == "cuda" and bf16_units else "fp32"


def plan_batches(lengths: Sequence[int], policy: S3GenBatchPolicy) -> list[list[int]]:
    """Group item indices into batches: sorted by length, cut by size and length ratio."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        if (
            current is None
            or len(current) >= policy.max_batch_size
            or lengths[i] > policy.max_length_ratio * max(1, lengths[current[0]])
        ):
            batches.append([i])
        else:
            current.append(i)
    return batches


class BatchedS3GenRunner:
    """Runs S3Gen over padded batches; same contract as the engine's `S3GenRunner`.

    `s3gen` is chatterbox-vllm's `S3Gen` (`S3Token2Wav`) with its weights loaded, in eval
    mode, on its device. Returns one waveform (1, n) per item in input order, on that
    device, with the same 20 ms fade-in chatterbox-vllm applies.
    """

    def __init__(self, s3gen: Any, policy: S3GenBatchPolicy | None = None) -> None:
        self.s3gen = s3gen
        self.policy = policy or S3GenBatchPolicy()
        self._velocity: Any = None
        self._velocity_built = False

    def run(
        self,
        speech_tokens: Sequence[Any],
        ref_dicts: Sequence[dict[str, Any]],
        n_timesteps: int,
        *,
        seeds: Sequence[int] | None = None,
    ) -> list[Any]:
        """Waveforms for each item; `seeds` makes the vocoder's noise reproducible per item."""
        if len(speech_tokens) != len(ref_dicts):
            raise ValueError(f"{len(speech_tokens)} token sequences but {len(ref_dicts)} refs")
        if seeds is not None and len(seeds) != len(speech_tokens):
            raise ValueError(f"{len(speech_tokens)} token sequences but {len(seeds)} seeds")
        import torch

        lengths = [
            _numel(tok) + int(ref["prompt_token"].shape[-1])
            for tok, ref in zip(speech_tokens, ref_dicts, strict=True)
        ]
        out: list[Any] = [None] * len(speech_tokens)
        with torch.inference_mode():
            for batch in plan_batches(lengths, self.policy):
                wavs = self._run_batch(
                    [speech_tokens[i] for i in batch],
                    [ref_dicts[i] for i in batch],
                    n_timesteps,
                    None if seeds is None else [seeds[i] for i in batch],
                )
                for i, wav in zip(batch, wavs, strict=True):
                    out[i] = wav
        return out

    def flow_mels(
        self,
        speech_tokens: Sequence[Any],
        ref_dicts: Sequence[dict[str, Any]],
        n_timesteps: int,
        *,
        seeds: Sequence[int] | None = None,
    ) -> list[Any]:
        """The flow stage alone, all items as one batch: mels (80, n_i), for quality checks.

        The original's solver starts from fixed noise (`decoder.rand_noise`), so `seeds`
        is unused here; Turbo's meanflow runner draws its noise from them.
        """
        import torch

        from chatterbox_serve.model.s3gen.flow import flow_mels

        velocity = self._compiled_velocity()
        with torch.inference_mode(), self._linears():
            return flow_mels(
                self.s3gen.flow,
                list(speech_tokens),
                list(ref_dicts),
                n_timesteps,
                self._precision(),
                self._attention(velocity),
                velocity=velocity,
                pad_frames=None if velocity is None else velocity.pad_frames,
            )

    def _run_batch(
        self,
        speech_tokens: list[Any],
        ref_dicts: list[dict[str, Any]],
        n_timesteps: int,
        seeds: list[int] | None,
    ) -> list[Any]:
        from chatterbox_serve.model.s3gen.vocoder import vocode

        mels = self.flow_mels(speech_tokens, ref_dicts, n_timesteps, seeds=seeds)
        wavs = vocode(self.s3gen.mel2wav, mels, seeds, self.policy.vocoder_precision)
        fade = self.s3gen.trim_fade
        for wav in wavs:
            n = min(wav.shape[-1], fade.shape[0])
            wav[:, :n] *= fade[:n]
        return wavs

    def _attention(self, velocity: Any) -> AttentionBackend:
        """Compiled whole estimators keep the bias path; regional ones leave attention free."""
        if velocity is None or velocity.mode == "regional":
            return self.policy.attention
        return "bias"

    def _precision(self) -> StagePrecision:
        import torch

        device = self.s3gen.flow.input_embedding.weight.device
        # Before Ampere (compute capability 8), bfloat16 is emulated and slower than fp32.
        units = device.type != "cuda" or torch.cuda.get_device_capability(device)[0] >= 8
        return resolve_precision(self.policy.precision, device.type, units)

    def _compiled_velocity(self) -> Any:
        """The compiled estimator (built on first use), or None for the eager path."""
        if not self._velocity_built:
            from chatterbox_serve.model.s3gen.compiled import build_velocity

            p = self.policy
            self._velocity = build_velocity(
                self.s3gen,
                self._precision(),
                p.compile,
                p.frame_bucket,
                fp8=self.fp8_active(),
                cache_dir=p.compile_cache_dir,
            )
            self._velocity_built = True
        return self._velocity

    def fp8_active(self) -> bool:
        """Whether solves run the estimator's linear layers in float8 (policy, GPU, bf16)."""
        if not self.policy.fp8_linear or self._precision() != "bf16":
            return False
        from chatterbox_serve.model.s3gen.fp8 import fp8_supported

        return fp8_supported(self.s3gen.flow.input_embedding.weight.device)

    def _linears(self) -> Any:
        """The float8 linear layers installed for one solve, where they are active."""
        import contextlib

        if not self.fp8_active():
            return contextlib.nullcontext()
        from chatterbox_serve.model.s3gen.fp8 import fp8_linears

        return fp8_linears(self.s3gen.flow.decoder.estimator)


def run_sequential(
    s3gen: Any,
    speech_tokens: Sequence[Any],
    ref_dicts: Sequence[dict[str, Any]],
    n_timesteps: int,
    *,
    seeds: Sequence[int] | None = None,
) -> list[Any]:
    """The reference: chatterbox-vllm's own per-item loop (`generate_with_conds`).

    Kept for the equality test and the benchmark. Returns CPU tensors, as that loop
    does. With `seeds`, the global generators are seeded before each item, which fixes
    the vocoder's noise.
    """
    import torch

    wavs = []
    for i, (tokens, ref) in enumerate(zip(speech_tokens, ref_dicts, strict=True)):
        if seeds is not None:
            torch.manual_seed(seeds[i])
        if i % 10 == 0 and torch.cuda.is_available():
            torch.cuda.empty_cache()  # as chatterbox-vllm does every 10 prompts
        wav, _ = s3gen.inference(speech_tokens=tokens, ref_dict=ref, n_timesteps=n_timesteps)
        wavs.append(wav.cpu())
    return wavs


def _numel(tokens: Any) -> int:
    return int(tokens.numel()) if hasattr(tokens, "numel") else len(tokens)
