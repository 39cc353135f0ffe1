"""Float8 linear layers of the CFM estimator, and the compile cache, checked on the CPU.

`torch._scaled_mm` runs float8 on Hopper only, so here the same quantisation runs with
float32 products (`emulate=True`); the GPU stage (`tools/gpu/s3gen_speed.py`, variants
`bf16-fp8*`) measures the real kernels' speed and quality. The quality bound itself is
in tests/model/test_s3gen_quality.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from chatterbox_serve.model.s3gen.batch import S3GenBatchPolicy  # noqa: E402


def test_rows_quantise_to_e4m3_within_its_rounding_whatever_their_scale() -> None:
    from chatterbox_serve.model.s3gen.fp8 import FP8, FP8_MAX, quantize_rows

    gen = torch.Generator().manual_seed(7)
    x = torch.randn(6, 256, generator=gen) * torch.tensor([1e-3, 1.0, 30.0, 1e3, 1.0, 0.0])[:, None]
    x[4, 3] = 500.0  # an outlier sets its own row's scale only
    q, scale = quantize_rows(x)
    assert q.dtype == FP8 and scale.shape == (6, 1) and scale.dtype == torch.float32
    assert torch.isfinite(scale).all() and (scale > 0).all()
    back = q.float() * scale
    assert torch.equal(back[5], torch.zeros(256))  # a padded (zero) frame stays zero
    # Each row's largest magnitude maps onto e4m3's largest value...
    assert torch.allclose(q.float().abs().amax(dim=1)[:5], torch.full((5,), FP8_MAX))
    # ...and every element is within half an e4m3 step (3 mantissa bits: 1/16 relative),
    # or under the row's subnormal step.
    err = (back - x).abs()
    assert bool((err <= x.abs() / 16 + scale * 2.0**-9).all())
    assert float(err.max()) > 0  # quantised, not passed through


def test_fp8_linear_is_the_product_of_the_dequantised_operands() -> None:
    from chatterbox_serve.model.s3gen.fp8 import Fp8Linear, quantize_rows

    gen = torch.Generator().manual_seed(3)
    linear = torch.nn.Linear(256, 1024)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(1024, 256, generator=gen) / 16)
        linear.bias.copy_(torch.randn(1024, generator=gen))
    x = torch.randn(2, 37, 256, generator=gen)
    fast = Fp8Linear(linear, emulate=True)
    got = fast(x)
    assert got.shape == (2, 37, 1024) and got.dtype == torch.float32
    qx, sx = quantize_rows(x.reshape(-1, 256))
    qw, sw = quantize_rows(linear.weight.detach())
    want = (qx.double() * sx.double()) @ (qw.double() * sw.double()).T + linear.bias.double()
    assert torch.allclose(got.reshape(-1, 1024).double(), want, rtol=1e-5, atol=1e-5)
    # e4m3 moves a 256-wide product by a few percent: quantisation really happened.
    with torch.no_grad():
        exact = linear(x)
    rel = float(torch.linalg.vector_norm(got - exact) / torch.linalg.vector_norm(exact))
    assert 5e-3 < rel < 1e-1, rel
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast(x).dtype == torch.bfloat16  # what autocast's linear would write
    with pytest.raises(ValueError, match="divisible by 16"):
        Fp8Linear(torch.nn.Linear(100, 256))


def test_fp8_linears_swap_the_transformer_blocks_layers_for_one_block_only(s3gen: Any) -> None:
    from chatterbox_serve.model.s3gen.fp8 import Fp8Linear, fp8_linears, transformer_linears

    estimator = s3gen.flow.decoder.estimator
    linears = transformer_linears(estimator)
    # 56 transformer blocks x (q, k, v, out, feed-forward in, feed-forward out).
    assert len(linears) == 56 * 6
    others = [
        m
        for m in estimator.modules()
        if isinstance(m, torch.nn.Linear) and all(m is not k for k in linears)
    ]
    assert others  # the time MLP and the resnets' time projections stay as they are
    x = torch.randn(3, 256)
    layer = linears[0]
    exact = layer(x)
    with fp8_linears(estimator, emulate=True):
        assert all(isinstance(m.__dict__.get("forward"), Fp8Linear) for m in linears)
        assert all("forward" not in m.__dict__ for m in others)
        inside = layer(x)
    assert all("forward" not in m.__dict__ for m in linears)
    assert torch.equal(layer(x), exact)
    assert not torch.equal(inside, exact)


def test_regional_compile_traces_the_fp8_layers_as_eager_runs_them(s3gen: Any) -> None:
    """Dynamo takes the swapped forwards into the compiled blocks (aot_eager on the CPU)."""
    import torch._dynamo

    from chatterbox_serve.model.s3gen.compiled import CompiledVelocity
    from chatterbox_serve.model.s3gen.flow import solve_euler
    from chatterbox_serve.model.s3gen.fp8 import fp8_linears

    torch._dynamo.reset()
    decoder = s3gen.flow.decoder
    gen = torch.Generator().manual_seed(5)
    rows, frames = 2, 24
    inputs = {
        "mu": torch.randn(rows, 80, frames, generator=gen),
        "mask": torch.ones(rows, 1, frames),
        "spks": torch.randn(rows, 80, generator=gen),
        "cond": torch.randn(rows, 80, frames, generator=gen),
    }
    noise = torch.randn(rows, 80, frames, generator=gen)
    velocity = CompiledVelocity(
        decoder.estimator, decoder.inference_cfg_rate, "fp32", "regional", backend="aot_eager"
    )
    with torch.inference_mode(), fp8_linears(decoder.estimator, emulate=True):
        eager = solve_euler(decoder, noise, n_timesteps=1, precision="fp32", **inputs)
        compiled = solve_euler(
            decoder, noise, n_timesteps=1, precision="fp32", velocity=velocity, **inputs
        )
    with torch.inference_mode():
        exact = solve_euler(decoder, noise, n_timesteps=1, precision="fp32", **inputs)
    assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(eager, exact, rtol=1e-4, atol=1e-4)
    torch._dynamo.reset()


def test_fp8_needs_bf16_and_stays_off_without_a_hopper_gpu(s3gen: Any) -> None:
    from chatterbox_serve.model.s3gen.batch import BatchedS3GenRunner

    S3GenBatchPolicy(fp8_linear=True, precision="auto")
    with pytest.raises(ValueError, match="fp8_linear"):
        S3GenBatchPolicy(fp8_linear=True, precision="fp16")
    runner = BatchedS3GenRunner(s3gen, S3GenBatchPolicy(fp8_linear=True, precision="bf16"))
    assert runner.fp8_active() is False  # the CPU: no float8 products to run


def test_settings_reach_the_policy(tmp_path: Path) -> None:
    from chatterbox_serve.config import load_settings
    from chatterbox_serve.model.s3gen.runner import s3gen_policy

    default = s3gen_policy(load_settings({}, dotenv_path=None))
    assert default.fp8_linear is False and default.compile_cache_dir is None
    env = {"CHATTERBOX_S3GEN_FP8": "true", "CHATTERBOX_S3GEN_COMPILE_CACHE_DIR": str(tmp_path)}
    policy = s3gen_policy(load_settings(env, dotenv_path=None))
    assert policy.fp8_linear is True and policy.compile_cache_dir == str(tmp_path)


def test_compile_cache_file_lets_a_fresh_inductor_cache_hit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saved after the call that compiled, loaded into an empty Inductor cache: the next
    compilation hits. The empty cache directory stands in for a new machine or container.
    """
    import torch._dynamo
    from torch._dynamo.utils import counters

    from chatterbox_serve.model.checkpoint import ensure_torchaudio

    ensure_torchaudio()  # `compiled` imports chatterbox-vllm's S3Gen package
    from chatterbox_serve.model.s3gen.compiled import CompileCache, _saving

    def compiled(cache: CompileCache) -> Any:
        fn = torch.compile(lambda x: torch.nn.functional.gelu(x * 2 + 1).sum(-1), dynamic=True)
        return _saving(fn, cache)

    name = "s3gen-default-bf16-torch2.x+cu/sm90"
    torch._dynamo.reset()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "first"))
    cache = CompileCache(tmp_path / "volume", name)
    assert cache.load() is False and cache.loaded is False
    call = compiled(cache)
    assert not cache.path.exists()
    call(torch.randn(4, 8))  # compiles, then saves
    assert cache.path.parent == tmp_path / "volume" and "/" not in cache.path.name
    saved = cache.path.stat().st_mtime_ns
    call(torch.randn(5, 8))  # dynamic: no new graph, so no new save
    assert cache.path.stat().st_mtime_ns == saved

    torch._dynamo.reset()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "second"))
    counters.clear()
    restarted = CompileCache(tmp_path / "volume", name)
    assert restarted.load() is True and restarted.loaded is True
    compiled(restarted)(torch.randn(4, 8))
    assert counters["inductor"]["fxgraph_cache_hit"] >= 1, dict(counters["inductor"])
    assert counters["inductor"]["fxgraph_cache_miss"] == 0
    torch._dynamo.reset()
