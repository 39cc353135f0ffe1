"""Throughput, memory and latency of `engine: torch` with full-size random weights.

    python -m tools.gpu.torch_engine_bench --out benchmarks/results/torch-engine-h200.json
    python -m tools.gpu.torch_engine_bench --cpu-rtf --out benchmarks/results/torch-engine-cpu.json

GPU mode (default; needs CUDA): writes a full-size random checkpoint unless
`--checkpoint` names one, then measures, at each batch size (1, 16, 64):
- T3: speech tokens per second over the batch, with every item forced to generate
  exactly `--tokens` tokens (random weights almost never say stop, and a fixed count
  makes runs comparable), and the peak GPU memory;
- S3Gen: seconds of audio per second for those tokens through the batched runner;
- time to first token of one item (prefill plus the first sampling step).

CPU mode (`--cpu-rtf`): the real-time factor (engine wall time / audio seconds) of the
whole engine (tokenizer, conditioning, T3, S3Gen) for a 10-word sentence, one item and
a batch of 4, with the token count a real voice needs for it (`--tokens`, default 75:
about 3 s of speech at 25 tokens per second).

Random weights make the audio noise but cost exactly what real weights cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

SENTENCE = "The quick brown fox jumps over the lazy dog near the river."  # 10 words + 1


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None  # a CPU smoke run (--device cpu) has no allocator statistics
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def _checkpoint(path: Path | None, multilingual: bool, tiny: bool = False) -> Path:
    if path is not None:
        return path
    from tools.write_checkpoint import write_checkpoint

    target = Path(tempfile.mkdtemp(prefix="chatterbox-random-"))
    return write_checkpoint(target, multilingual=multilingual, seed=0, tiny=tiny)


def bench_gpu(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from chatterbox_serve.config import EngineConfig, Settings
    from chatterbox_serve.model import checkpoint
    from chatterbox_serve.model.s3gen.runner import runner_factory
    from chatterbox_serve.model.t3.generation import GenerationItem, generate
    from chatterbox_serve.model.voice import builtin_voice_inputs

    device = args.device
    dtype = getattr(torch, args.dtype)
    directory = _checkpoint(args.checkpoint, args.multilingual, args.tiny)
    t3 = checkpoint.load_t3(directory, args.multilingual, device, dtype)
    s3gen = checkpoint.load_s3gen(directory, device)
    settings = Settings(engine=EngineConfig(use_multilingual_model=args.multilingual))
    runner = runner_factory(settings)(s3gen)
    voice = builtin_voice_inputs(checkpoint.load_builtin_voice(directory), device)
    with torch.inference_mode():
        prefix = t3.conditioning(
            voice.speaker_emb.to(dtype), voice.prompt_tokens, torch.tensor([0.5], device=device)
        )[0]
    text = tuple([255, *range(1, 41), 0])  # a 40-token sentence

    def items(n: int, tokens: int) -> list[GenerationItem]:
        return [
            GenerationItem(prefix, text, cfg_weight=0.5, seed=i, max_new_tokens=tokens)
            for i in range(n)
        ]

    # Warm-up: kernels, allocator, S3Gen caches.
    generate(t3, items(2, 4), use_alignment=False)
    runs = []
    for batch in args.batches:
        _reset_peak(device)
        _sync(device)
        began = time.perf_counter()
        results = generate(t3, items(batch, args.tokens), use_alignment=False)
        _sync(device)
        t3_s = time.perf_counter() - began
        t3_peak = _peak_gib(device)
        speech = [torch.tensor(r.speech_tokens(), device=device) for r in results]
        _reset_peak(device)
        began = time.perf_counter()
        with torch.inference_mode():
            wavs = runner.run(speech, [voice.s3gen_ref] * batch, settings.engine.diffusion_steps)
        _sync(device)
        s3_s = time.perf_counter() - began
        audio_s = sum(w.numel() for w in wavs) / 24_000
        runs.append(
            {
                "batch": batch,
                "tokens_per_item": args.tokens,
                "t3_s": round(t3_s, 3),
                "t3_tokens_per_s": round(batch * args.tokens / t3_s, 1),
                "t3_peak_gib": t3_peak,
                "s3gen_s": round(s3_s, 3),
                "s3gen_audio_s_per_s": round(audio_s / s3_s, 1),
                "s3gen_peak_gib": _peak_gib(device),
                "audio_s": round(audio_s, 2),
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    _sync(device)
    first = generate(t3, items(1, 1), use_alignment=False)[0]
    return {
        "mode": "gpu",
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else device,
        "dtype": args.dtype,
        "t3_layers": t3.config.backbone.num_layers,
        "multilingual": args.multilingual,
        "diffusion_steps": settings.engine.diffusion_steps,
        "ttft_one_item_s": round(first.first_token_s, 4),
        "runs": runs,
        "torch": torch.__version__,
    }


def bench_cpu_rtf(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from chatterbox_serve.config import EngineConfig, Settings
    from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult
    from chatterbox_serve.engines.torch_engine import TorchEngine
    from chatterbox_serve.generation import GenerationParameters

    directory = _checkpoint(args.checkpoint, args.multilingual)
    settings = Settings(
        engine=EngineConfig(
            model_dir=str(directory),
            use_multilingual_model=args.multilingual,
            device="cpu",
            max_new_tokens=args.tokens,
        )
    )
    engine = TorchEngine(settings)
    began = time.perf_counter()
    asyncio.run(engine.start())
    load_s = time.perf_counter() - began

    def run(batch: int) -> dict[str, Any]:
        requests = [
            SynthesisRequest(
                text=SENTENCE,
                language="en",
                generation=GenerationParameters(seed=i),
                max_new_tokens=args.tokens,
            )
            for i in range(batch)
        ]
        began = time.perf_counter()
        results = asyncio.run(engine.synthesize(requests))
        wall = time.perf_counter() - began
        ok = [r for r in results if isinstance(r, SynthesisResult)]
        assert len(ok) == batch, results
        audio_s = sum(r.duration_s for r in ok)
        return {
            "batch": batch,
            "wall_s": round(wall, 2),
            "audio_s": round(audio_s, 2),
            "rtf": round(wall / audio_s, 2),
            "rtf_per_item_wall": round(wall / (audio_s / batch), 2),
        }

    run(1)  # warm-up
    runs = [run(1), run(4)]
    for r in runs:
        print(json.dumps(r), flush=True)
    return {
        "mode": "cpu-rtf",
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "sentence": SENTENCE,
        "tokens_per_item": args.tokens,
        "diffusion_steps": settings.engine.diffusion_steps,
        "load_s": round(load_s, 1),
        # Other processes on the box skew CPU figures; this says how busy it was.
        "load_average_1m": round(os.getloadavg()[0], 1),
        "runs": runs,
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="existing checkpoint directory")
    parser.add_argument("--multilingual", action="store_true")
    parser.add_argument("--cpu-rtf", action="store_true", help="CPU real-time factor mode")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--tiny", action="store_true", help="write a tiny checkpoint (smoke run)")
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 16, 64])  # fmt: skip
    parser.add_argument("--tokens", type=int, default=None, help="speech tokens per item")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.tokens is None:
        args.tokens = 75 if args.cpu_rtf else 200
    result = bench_cpu_rtf(args) if args.cpu_rtf else bench_gpu(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
