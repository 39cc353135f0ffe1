"""`tools.gpu.gpu_serving engine` runs its three windowed measurements end to end on the CPU.

The GPU stage (`tools/gpu/h200_round.sh perf28`) must not crash on a lent machine, so
the same part runs here over the tiny checkpoint, with a double of vLLM's `AsyncLLM` in
place of vLLM: T3 alone, S3Gen alone through the engine's own pass, and the engine, each
after a warm-up over fixed windows. The figures mean nothing here; their presence and
consistency do.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.unit.asyncllm_double import FakeAsyncLLM

pytest.importorskip("vllm", reason="the engine builds vLLM SamplingParams")

STOP = 6562


def _script(prompt: dict[str, Any], params: Any) -> list[int]:
    """As many speech tokens as the request's budget allows (random weights never stop)."""
    return [100 + i % 50 for i in range(min(params.max_tokens - 1, 12))] + [STOP]


def test_engine_part_measures_t3_s3gen_and_the_engine_over_windows(tiny_checkpoint: Path) -> None:
    from chatterbox_serve.config import EngineConfig, Settings
    from chatterbox_serve.engines.vllm.engine import VLLMEngine
    from tools.gpu.gpu_serving import build_parser, engine_part

    args = build_parser().parse_args(
        ["engine", "--workers", "3", "--warmup-s", "0.3", "--window-s", "0.6", "--windows", "2"]
        + ["--no-ttfa", "--s3gen-compile", "off"]
    )
    settings = Settings(
        engine=EngineConfig(
            engine="vllm",
            model_dir=str(tiny_checkpoint),
            use_multilingual_model=False,
            device="cpu",
            diffusion_steps=1,
            s3gen_batch_size=4,
            s3gen_compile="off",
        )
    )
    engine = VLLMEngine(
        settings, llm_factory=lambda s, d: FakeAsyncLLM(max_num_seqs=16, script_for=_script)
    )
    asyncio.run(engine.start())
    out = asyncio.run(engine_part(args, engine))
    for name in ("t3_alone", "s3gen_alone"):
        part = out[name]
        assert len(part["window_rates"]) == 2 and part["items"] > 0
        assert out[f"{name}_audio_s_per_s"] == part["audio_s_per_s"] > 0
    assert out["s3gen_alone"]["workers"] == 1 and out["s3gen_alone"]["items_per_pass"] == 4
    best = out["engine"]["best"]
    assert best["audio_s_per_s"] > 0 and best["s3gen_passes"] > 0
    assert out["engine_audio_s_per_s"] == best["audio_s_per_s"]
    slowest = min(out["t3_alone_audio_s_per_s"], out["s3gen_alone_audio_s_per_s"])
    assert out["engine_over_min_stages"] == pytest.approx(best["audio_s_per_s"] / slowest, 1e-2)
    assert out["vllm"] and out["device"] == "cpu" and out["first_call_s"] >= 0
    assert "engine_ttfa_p50_ms_c1" not in out  # --no-ttfa
