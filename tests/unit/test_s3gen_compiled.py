"""Regional compilation of the CFM estimator: same results, few graphs, modules left eager.

Inductor takes minutes on this CPU, so the compiled regions use the `aot_eager` backend:
Dynamo's capture, guards and graph sharing are the same as on the GPU, only the kernels
are not generated. Whether Inductor's fused kernels are faster is measured on the H200
(`tools/gpu/s3gen_speed.py --variants bf16-varlen-regional`).
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from chatterbox_serve.model.s3gen.batch import S3GenBatchPolicy  # noqa: E402


def _solve(s3gen: Any, lens: list[int], velocity: Any) -> Any:
    from chatterbox_serve.model.s3gen.flow import solve_euler

    frames = max(lens)
    gen = torch.Generator().manual_seed(frames)
    rows = len(lens)
    lengths = torch.tensor(lens)
    mask = (torch.arange(frames)[None] < lengths[:, None]).float().unsqueeze(1)
    with torch.inference_mode():
        return solve_euler(
            s3gen.flow.decoder,
            torch.randn(rows, 80, frames, generator=gen),
            mu=torch.randn(rows, 80, frames, generator=gen),
            mask=mask,
            spks=torch.randn(rows, 80, generator=gen),
            cond=torch.randn(rows, 80, frames, generator=gen),
            n_timesteps=1,
            precision="fp32",
            velocity=velocity,
        )


def test_regional_compile_matches_eager_with_one_graph_per_block_class(s3gen: Any) -> None:
    import torch._dynamo
    from torch._dynamo.utils import counters

    from chatterbox_serve.model.s3gen.compiled import CompiledVelocity, repeated_blocks

    torch._dynamo.reset()
    decoder = s3gen.flow.decoder
    blocks = repeated_blocks(decoder.estimator)
    assert len(blocks) == 70  # 56 transformer blocks, 14 causal resnet blocks
    velocity = CompiledVelocity(
        decoder.estimator, decoder.inference_cfg_rate, "fp32", "regional", backend="aot_eager"
    )
    for lens in ([24, 17], [40, 31]):  # a second shape: dynamic, so no new graph
        got = _solve(s3gen, lens, velocity)
        want = _solve(s3gen, lens, None)
        assert torch.equal(got, want)
        # Between solves every module is plain eager again: other runners stay unaffected.
        assert all(m._compiled_call_impl is None for m in blocks)
    # 70 modules compiled, but instances of a class share graphs: a handful, not 70.
    assert 2 <= counters["stats"]["unique_graphs"] <= 8, dict(counters["stats"])
    torch._dynamo.reset()


def test_regional_compile_may_keep_varlen_attention() -> None:
    S3GenBatchPolicy(compile="regional", attention="varlen")
    with pytest.raises(ValueError, match="attention"):
        S3GenBatchPolicy(compile="default", attention="varlen")
    with pytest.raises(ValueError, match="attention"):
        S3GenBatchPolicy(compile="regional", attention="flex")


def test_cuda_graph_mode_is_a_policy_choice_that_stays_eager_off_cuda() -> None:
    from types import SimpleNamespace

    import torch

    from chatterbox_serve.model.s3gen.batch import S3GenBatchPolicy
    from chatterbox_serve.model.s3gen.compiled import build_velocity, frame_bucket

    assert S3GenBatchPolicy(compile="graphs", precision="bf16").compile == "graphs"
    with pytest.raises(ValueError, match="attention"):
        S3GenBatchPolicy(compile="graphs", attention="varlen")
    estimator = torch.nn.Linear(2, 2)
    decoder = SimpleNamespace(estimator=estimator, inference_cfg_rate=0.7)
    s3gen = SimpleNamespace(flow=SimpleNamespace(decoder=decoder))
    assert build_velocity(s3gen, "bf16", "graphs", 1.25) is None  # a CPU estimator
    # Its buckets bound padding at 25 %: the frames a graph is recorded for.
    assert all(n <= frame_bucket(n, 1.25) <= 1.25 * n + 16 for n in range(64, 3000, 37))
