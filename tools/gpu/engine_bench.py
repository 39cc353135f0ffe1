"""The whole `engine: vllm` (our T3 on vLLM + batched S3Gen) on mixed batches, on a GPU.

    python -m tools.gpu.engine_bench --checkpoint DIR --out engine.json [--batches 1,16,64]

Each batch mixes what requests mix: four languages, exaggerations 0.3..1.2, CFG weights
0..1 (0 included), sampling values and seeds, all on the checkpoint's built-in voice
(random voices would need torchaudio's resampler only to be noise). Random weights
almost never sample the stop token, so every item decodes exactly `--tokens` tokens
(`ForcedLength`), which also makes runs comparable with the torch engine's.

Recorded per batch: audio-seconds per second over the whole call; T3 time (all items
through vLLM) and S3Gen time, measured by running the engine's two stages in turn;
time to first token (median over items); GPU memory in use (all processes: vLLM's
engine core holds the KV cache) and this process's peak (S3Gen, conditioning).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

TEXTS = [
    ("en", "The quick brown fox jumps over the lazy dog near the quiet river bank."),
    ("fr", "Le renard brun saute par-dessus le chien paresseux près de la rivière."),
    ("de", "Der schnelle braune Fuchs springt über den faulen Hund am ruhigen Fluss."),
    ("es", "El rápido zorro marrón salta sobre el perro perezoso junto al río."),
]


def requests(n: int) -> list[Any]:
    from chatterbox_serve.engines.base import SynthesisRequest
    from chatterbox_serve.generation import GenerationParameters

    out = []
    for i in range(n):
        lang, text = TEXTS[i % len(TEXTS)]
        out.append(
            SynthesisRequest(
                text=text,
                language=lang,
                generation=GenerationParameters(
                    exaggeration=(0.3, 0.5, 0.8, 1.2)[i % 4],
                    cfg_weight=(0.0, 0.3, 0.5, 1.0)[(i // 4) % 4],
                    temperature=(0.8, 0.6)[i % 2],
                    min_p=0.05,
                    top_p=(1.0, 0.95)[(i // 2) % 2],
                    repetition_penalty=1.2,
                    seed=1000 + i,
                ),
            )
        )
    return out


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import vllm

    from chatterbox_serve.config import EngineConfig, Settings
    from chatterbox_serve.engines.vllm.engine import ForcedLength, VLLMEngine

    settings = Settings(
        engine=EngineConfig(
            engine="vllm",
            model_dir=str(args.checkpoint),
            use_multilingual_model=True,
            max_batch_size=max(args.batches),
            max_model_len=args.max_model_len,
            compile=not args.eager,
            gpu_memory_utilization=args.gpu_memory_utilization,
            s3gen_batch_size=args.s3gen_batch_size,
            s3gen_precision=args.s3gen_precision,
        )
    )
    engine = VLLMEngine(settings, forced_length=ForcedLength(args.tokens))
    began = time.perf_counter()
    await engine.start()
    startup_s = time.perf_counter() - began
    loaded = engine._live()
    runner = engine._runner
    assert runner is not None
    await engine.synthesize(requests(2))  # warm-up: S3Gen kernels, vLLM's first steps
    runs = []
    for batch in args.batches:
        reqs = requests(batch)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        results = await engine.synthesize(reqs)
        torch.cuda.synchronize()
        total_s = time.perf_counter() - began
        failed = [r for r in results if not hasattr(r, "audio")]
        audio_s = sum(len(r.audio) for r in results if hasattr(r, "audio")) / 24_000
        # The same batch again, stage by stage, for the split of the time.
        outcomes, prepared, jobs = await engine._on_thread(engine._prepare_jobs, loaded, reqs)
        began = time.perf_counter()
        t3 = await runner.run_all(jobs)
        t3_s = time.perf_counter() - began
        pairs = [
            (p, o if not hasattr(o, "tokens") else o.tokens)
            for p, o in zip(prepared, t3, strict=False)
        ]
        torch.cuda.synchronize()
        began = time.perf_counter()
        await engine._on_thread(engine._finish, loaded, len(reqs), outcomes, pairs)
        torch.cuda.synchronize()
        s3_s = time.perf_counter() - began
        ttft = [o.first_token_s for o in t3 if hasattr(o, "first_token_s")]
        free, total = torch.cuda.mem_get_info()
        runs.append(
            {
                "batch": batch,
                "tokens_per_item": args.tokens,
                "failed_items": len(failed),
                "first_failure": str(failed[0]) if failed else None,
                "engine_s": round(total_s, 3),
                "audio_s": round(audio_s, 2),
                "audio_s_per_s": round(audio_s / total_s, 1),
                "t3_s": round(t3_s, 3),
                "t3_tokens_per_s": round(batch * args.tokens / t3_s, 1),
                "t3_audio_s_per_s": round(audio_s / t3_s, 1),
                "s3gen_s": round(s3_s, 3),
                "s3gen_audio_s_per_s": round(audio_s / s3_s, 1),
                "ttft_s_median": round(statistics.median(ttft), 4) if ttft else None,
                "gpu_used_gib_all_processes": round((total - free) / 2**30, 1),
                "peak_gib_this_process": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    await engine.shutdown()
    best = max(runs, key=lambda r: r["audio_s_per_s"])
    return {
        "engine": "vllm: ChatterboxT3ForCFG (exact CFG) on AsyncLLM + batched S3Gen",
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0),
        "checkpoint": "full-size random multilingual (tools/write_checkpoint.py, seed 0)",
        "t3_dtype": "bfloat16",
        "compile": not args.eager,
        "s3gen_precision": args.s3gen_precision,
        "diffusion_steps": settings.engine.diffusion_steps,
        "startup_s": round(startup_s, 1),
        "audio_s_per_s": best["audio_s_per_s"],
        "batch": best["batch"],
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=150)
    parser.add_argument(
        "--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64]
    )
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    parser.add_argument("--s3gen-batch-size", type=int, default=64)
    parser.add_argument("--s3gen-precision", default="fp32")
    parser.add_argument("--eager", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(_bench(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
