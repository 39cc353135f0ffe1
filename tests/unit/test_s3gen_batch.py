"""Batched S3Gen gives each item the waveform the one-at-a-time path gives it.

Runs on the CPU with randomly initialised S3Gen weights (no weights can be downloaded
here; the arithmetic is the same). The tolerance is justified in docs/S3GEN.md.
"""

from __future__ import annotations

import importlib.machinery
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from chatterbox_serve.model.s3gen.batch import S3GenBatchPolicy, plan_batches

# Both in absolute units; docs/S3GEN.md says why. Observed on CPU: about 1e-5 on mels
# (values up to ~6) and 1e-7 on waveforms. Padding leaks planted on purpose gave 4e-2
# (look-ahead reading padded frames, on mels) and 5e-3 to 3e-2 (vocoder, on waveforms).
MEL_TOLERANCE = 1e-3
WAVEFORM_TOLERANCE = 1e-3


def _stub_torchaudio() -> None:
    """Stand in for torchaudio, which has no CPU build matching torch 2.13.

    chatterbox-vllm's s3gen package imports it at module level, but only `embed_ref`
    (resampling) and the speaker encoder (Kaldi fbank) call it; inference does not, and
    these tests pass precomputed reference dicts.
    """
    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError):
        names = ["torchaudio", "torchaudio.transforms", "torchaudio.compliance"]
        names.append("torchaudio.compliance.kaldi")
        modules = {name: types.ModuleType(name) for name in names}
        for name, module in modules.items():
            # Libraries probe optional packages with find_spec, which needs a spec.
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        modules["torchaudio"].transforms = modules["torchaudio.transforms"]  # type: ignore[attr-defined]
        modules["torchaudio"].compliance = modules["torchaudio.compliance"]  # type: ignore[attr-defined]
        modules["torchaudio.compliance"].kaldi = modules["torchaudio.compliance.kaldi"]  # type: ignore[attr-defined]
        sys.modules.update(modules)


@pytest.fixture(scope="module")
def s3gen() -> Any:
    _stub_torchaudio()
    import torch
    from chatterbox_vllm.models.s3gen import S3Gen

    torch.manual_seed(0)  # the weights and the CFM's fixed noise
    return S3Gen().eval()


def _ref_dict(gen: Any, prompt_tokens: int) -> dict[str, Any]:
    """A voice reference shaped as `S3Gen.embed_ref` returns it (mel = 2 x tokens)."""
    import torch

    return {
        "prompt_token": torch.randint(0, 6561, (1, prompt_tokens), generator=gen),
        "prompt_token_len": torch.tensor([prompt_tokens]),
        "prompt_feat": torch.randn(1, 2 * prompt_tokens, 80, generator=gen),
        "prompt_feat_len": None,
        "embedding": torch.randn(1, 192, generator=gen),
    }


def test_batched_equals_sequential_for_mixed_lengths_and_voices(s3gen: Any) -> None:
    import torch

    from chatterbox_serve.model.s3gen.batch import BatchedS3GenRunner, run_sequential

    gen = torch.Generator().manual_seed(1)
    voices = [_ref_dict(gen, 5), _ref_dict(gen, 9)]
    tokens = [torch.randint(0, 6561, (n,), generator=gen) for n in (7, 12, 4)]
    refs = [voices[0], voices[1], voices[1]]
    seeds = [11, 12, 13]
    steps = 2

    expected = run_sequential(s3gen, tokens, [dict(r) for r in refs], steps, seeds=seeds)
    runner = BatchedS3GenRunner(s3gen, S3GenBatchPolicy(max_length_ratio=float("inf")))
    got = runner.run(tokens, refs, steps, seeds=seeds)

    for tok, want, wav in zip(tokens, expected, got, strict=True):
        assert wav.shape == want.shape == (1, 480 * 2 * len(tok))
        assert want.abs().max() > 0.01  # real audio, not silence that trivially matches
        assert (wav - want).abs().max().item() <= WAVEFORM_TOLERANCE


@pytest.mark.parametrize("attention", ["packed", "flex", "bias"])
def test_batched_mels_equal_sequential_mels(s3gen: Any, attention: str) -> None:
    """The flow stage alone: catches padding leaks the random-weight vocoder would shrink.

    Run for each way of handling padding in the estimator's attention (s3gen_attention).
    """
    import torch

    from chatterbox_serve.model.s3gen.flow import flow_mels

    gen = torch.Generator().manual_seed(3)
    voices = [_ref_dict(gen, 6), _ref_dict(gen, 10)]
    tokens = [torch.randint(0, 6561, (n,), generator=gen) for n in (5, 13, 8)]
    refs = [voices[1], voices[0], voices[1]]
    with torch.inference_mode():
        got = flow_mels(s3gen.flow, tokens, refs, 2, attention=attention)  # type: ignore[arg-type]
        for tok, ref, mel in zip(tokens, refs, got, strict=True):
            want = s3gen.flow_inference(tok, ref_dict=dict(ref), n_timesteps=2, finalize=True)
            assert mel.shape == want.shape[1:] == (80, 2 * len(tok))
            assert (mel - want[0]).abs().max().item() <= MEL_TOLERANCE


def test_runner_returns_items_in_input_order_across_buckets(s3gen: Any) -> None:
    import torch

    from chatterbox_serve.model.s3gen.batch import BatchedS3GenRunner

    gen = torch.Generator().manual_seed(2)
    voice = _ref_dict(gen, 4)
    lengths = [9, 3, 6]
    tokens = [torch.randint(0, 6561, (n,), generator=gen) for n in lengths]
    runner = BatchedS3GenRunner(s3gen, S3GenBatchPolicy(max_batch_size=2))
    wavs = runner.run(tokens, [voice] * 3, 1)
    assert [w.shape[-1] for w in wavs] == [960 * n for n in lengths]


def test_runner_rejects_mismatched_inputs(s3gen: Any) -> None:
    from chatterbox_serve.model.s3gen.batch import BatchedS3GenRunner

    with pytest.raises(ValueError, match="2 token sequences but 1 refs"):
        BatchedS3GenRunner(s3gen).run([[1], [2]], [{}], 10)


def test_plan_batches_sorts_by_length_and_cuts_by_size_and_ratio() -> None:
    lengths = [100, 40, 300, 45, 110, 42]
    policy = S3GenBatchPolicy(max_batch_size=2, max_length_ratio=1.5)
    assert plan_batches(lengths, policy) == [[1, 5], [3], [0, 4], [2]]
    unbounded = S3GenBatchPolicy(max_batch_size=64, max_length_ratio=float("inf"))
    assert plan_batches(lengths, unbounded) == [[1, 5, 3, 0, 4, 2]]


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        S3GenBatchPolicy(max_batch_size=0)
    with pytest.raises(ValueError, match="max_length_ratio"):
        S3GenBatchPolicy(max_length_ratio=0.5)


def test_module_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; "
        "import chatterbox_serve.model.s3gen.batch as m; print(m.BatchedS3GenRunner.__name__)"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "BatchedS3GenRunner"


def test_buckets_bound_the_padding() -> None:
    from chatterbox_serve.model.s3gen.compiled import frame_bucket, row_bucket

    buckets = {frame_bucket(n, 1.25) for n in range(1, 1400)}
    assert len(buckets) <= 16  # few CUDA graphs for 0 to 28 s of audio
    for n in range(64, 1400):
        assert n <= frame_bucket(n, 1.25) <= 1.25 * n + 16
        assert frame_bucket(n, 1.25) % 16 == 0
    assert frame_bucket(333, 1.0) == 333
    assert [row_bucket(n) for n in (1, 2, 3, 5, 8, 9, 17, 64)] == [1, 2, 4, 8, 8, 16, 24, 64]


def test_padding_frames_leaves_each_items_mel_unchanged(s3gen: Any) -> None:
    """Length buckets (for CUDA graphs) pad frames; the masks must keep them out."""
    import torch

    from chatterbox_serve.model.s3gen.flow import flow_mels

    gen = torch.Generator().manual_seed(4)
    refs = [_ref_dict(gen, 6), _ref_dict(gen, 9)]
    tokens = [torch.randint(0, 6561, (n,), generator=gen) for n in (7, 11)]
    with torch.inference_mode():
        want = flow_mels(s3gen.flow, tokens, refs, 2)
        got = flow_mels(s3gen.flow, tokens, refs, 2, pad_frames=lambda n: n + 37)
    for mel, ref in zip(got, want, strict=True):
        assert mel.shape == ref.shape
        assert (mel - ref).abs().max().item() <= MEL_TOLERANCE


def test_padded_rows_change_no_real_row(s3gen: Any) -> None:
    """CUDA graphs pad the batch with zero rows; real rows must get the same velocity."""
    import torch

    from chatterbox_serve.model.s3gen.compiled import pad_rows
    from chatterbox_serve.model.s3gen.flow import GuidedVelocity

    gen = torch.Generator().manual_seed(6)
    frames = 40
    x, mu = (torch.randn(2, 80, frames, generator=gen) for _ in "xm")
    cond = torch.randn(2, 80, frames, generator=gen)
    spks = torch.randn(2, 80, generator=gen)
    mask = (torch.arange(frames) < torch.tensor([[31], [40]])).unsqueeze(1).float()
    t = torch.tensor(0.3)
    decoder = s3gen.flow.decoder
    velocity = GuidedVelocity(decoder.estimator, decoder.inference_cfg_rate, "fp32")
    with torch.inference_mode():
        want = velocity(x, mask, mu, t, spks, cond)
        px, pmask, pmu, pspks, pcond = pad_rows((x, mask, mu, spks, cond), 4)
        got = velocity(px, pmask, pmu, t, pspks, pcond)
    assert got.shape == (4, 80, frames)
    assert (got[:2] - want).abs().max().item() <= MEL_TOLERANCE
    assert got[2:].abs().max().item() == 0.0


def test_compile_runs_eager_off_cuda(s3gen: Any) -> None:
    import torch

    from chatterbox_serve.model.s3gen.batch import BatchedS3GenRunner

    gen = torch.Generator().manual_seed(8)
    refs, tokens = [_ref_dict(gen, 4)], [torch.randint(0, 6561, (5,), generator=gen)]
    compiled = BatchedS3GenRunner(s3gen, S3GenBatchPolicy(compile="reduce-overhead"))
    eager = BatchedS3GenRunner(s3gen, S3GenBatchPolicy())
    got = compiled.flow_mels(tokens, refs, 1)
    assert compiled._compiled_velocity() is None
    assert (got[0] - eager.flow_mels(tokens, refs, 1)[0]).abs().max().item() == 0.0


def test_policy_rejects_compile_where_it_cannot_apply() -> None:
    with pytest.raises(ValueError, match="attention"):
        S3GenBatchPolicy(compile="default", attention="packed")
    with pytest.raises(ValueError, match="tf32"):
        S3GenBatchPolicy(compile="reduce-overhead", precision="tf32")
    with pytest.raises(ValueError, match="frame_bucket"):
        S3GenBatchPolicy(frame_bucket=0.9)


def test_auto_precision_is_bf16_on_cuda_only() -> None:
    from chatterbox_serve.model.s3gen.batch import resolve_precision

    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("auto", "cuda", bf16_units=False) == "fp32"
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "mps") == "fp32"
    assert resolve_precision("fp16", "cpu") == "fp16"


def test_estimate_equals_the_estimators_own_forward(s3gen: Any) -> None:
    """Our estimator loop (one attention bias, no host syncs) against chatterbox-vllm's."""
    import torch

    from chatterbox_serve.model.s3gen.flow import estimate

    gen = torch.Generator().manual_seed(9)
    frames = 36
    x, mu, cond = (torch.randn(3, 80, frames, generator=gen) for _ in "xmc")
    spks = torch.randn(3, 80, generator=gen)
    mask = (torch.arange(frames) < torch.tensor([[20], [36], [29]])).unsqueeze(1).float()
    t = torch.tensor([0.1, 0.5, 0.9])
    estimator = s3gen.flow.decoder.estimator
    with torch.inference_mode():
        want = estimator(x, mask, mu, t, spks, cond)
        got = estimate(estimator, x, mask, mu, t, spks, cond)
    assert want.abs().max() > 0.1
    assert (got - want).abs().max().item() <= 1e-5
