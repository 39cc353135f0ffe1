"""S3Gen throughput: chatterbox-vllm's one-at-a-time loop against `BatchedS3GenRunner`.

Randomly initialised S3Gen weights (same shapes, so the same compute as the real ones),
speech-token sequences of 80 to 300 tokens (3.2 to 12 s of audio) and four voices with
150 to 250 prompt tokens. Reports audio-seconds per wall-second, peak GPU memory per
batch size, a quality check of each precision against fp32, and batched-vs-sequential
equality on the GPU. Writes JSON; see docs/S3GEN.md for the command and the results.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from typing import Any

TOKENS_PER_SECOND = 25
PROMPT_TOKENS = [150, 200, 250, 250]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="JSON results file")
    parser.add_argument("--items", type=int, default=64, help="utterances per measurement")
    parser.add_argument("--small-items", type=int, default=16, help="for sequential, bs 1, 4")
    parser.add_argument("--batch-sizes", default="1,4,16,64")
    parser.add_argument("--precisions", default="fp32,tf32,bf16")
    parser.add_argument("--steps", default="10,5")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--length-ratio", type=float, default=float("inf"))
    parser.add_argument("--attention", default="auto", help="auto, bias, packed or flex")
    parser.add_argument("--device", default="cuda", help="cpu only to smoke-test the script")
    parser.add_argument("--min-tokens", type=int, default=80)
    parser.add_argument("--max-tokens", type=int, default=300)
    args = parser.parse_args()

    torch, s3gen = _load_s3gen(args.device)
    from chatterbox_serve.model.s3gen.attention import resolve_attention
    from chatterbox_serve.model.s3gen.batch import (
        BatchedS3GenRunner,
        S3GenBatchPolicy,
        run_sequential,
    )

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    weights_gib = torch.cuda.memory_allocated() / 2**30 if cuda else 0.0
    items = _workload(torch, device, args.items, args.min_tokens, args.max_tokens)
    small = items[:: max(1, args.items // args.small_items)][: args.small_items]

    def measure(fn: Callable[[], list[Any]], work: list[tuple[Any, Any]]) -> dict[str, Any]:
        start = time.perf_counter()
        fn()  # warm-up: allocator, cuDNN/cuBLAS algorithm choice, flex compilation
        warmup_s = time.perf_counter() - start
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        walls = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            wavs = [w.cpu() for w in fn()]  # .cpu() synchronises, as chatterbox-vllm's does
            walls.append(time.perf_counter() - start)
        audio_s = sum(w.shape[-1] for w in wavs) / 24000
        wall = statistics.median(walls)
        return {
            "items": len(work),
            "audio_s": round(audio_s, 2),
            "wall_s": [round(w, 4) for w in walls],
            "audio_s_per_s": round(audio_s / wall, 2),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0, 2),
            "warmup_s": round(warmup_s, 2),
        }

    results: dict[str, Any] = {
        "machine": {
            "gpu": torch.cuda.get_device_name(0) if cuda else platform.processor(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        },
        "weights_gib": round(weights_gib, 2),
        "workload": {
            "items": args.items,
            "small_items": len(small),
            "token_range": [args.min_tokens, args.max_tokens],
            "prompt_tokens": list(PROMPT_TOKENS),
            "length_ratio": args.length_ratio,
        },
        "runs": [],
    }
    steps_list = [int(s) for s in args.steps.split(",")]
    for steps in steps_list:
        tokens, refs = zip(*small, strict=True)
        row = measure(lambda t=tokens, f=refs, n=steps: run_sequential(s3gen, t, f, n), small)
        results["runs"].append({"path": "sequential", "precision": "fp32", "steps": steps, **row})
        _log(results["runs"][-1])
        for precision in args.precisions.split(","):
            for bs in [int(b) for b in args.batch_sizes.split(",")]:
                work = small if bs <= 4 else items
                tokens, refs = zip(*work, strict=True)
                policy = S3GenBatchPolicy(bs, args.length_ratio, precision, args.attention)  # type: ignore[arg-type]
                runner = BatchedS3GenRunner(s3gen, policy)
                row = measure(lambda r=runner, t=tokens, f=refs, n=steps: r.run(t, f, n), work)
                attention = resolve_attention(args.attention, precision, device)  # type: ignore[arg-type]
                results["runs"].append(
                    {
                        "path": "batched",
                        "precision": precision,
                        "attention": attention,
                        "steps": steps,
                        "batch": bs,
                        **row,
                    }
                )
                _log(results["runs"][-1])
                _save(args.out, results)  # partial results survive a timeout
    results["quality"] = _quality(torch, s3gen, small[:8], args.precisions.split(","))
    results["equality_gpu_fp32"] = _equality(torch, s3gen, small[:8])
    _save(args.out, results)
    _print_table(results)


def _save(path: str, results: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


def _load_s3gen(device: str) -> tuple[Any, Any]:
    import torch

    try:
        import torchaudio.compliance.kaldi  # noqa: F401
    except (ImportError, OSError):  # only embed_ref and the speaker encoder call it
        for name in ("torchaudio", "torchaudio.transforms", "torchaudio.compliance"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["torchaudio.compliance.kaldi"] = types.ModuleType("kaldi")
    from chatterbox_vllm.models.s3gen import S3Gen

    torch.manual_seed(0)
    return torch, S3Gen().to(device).eval()


def _workload(
    torch: Any, device: Any, n: int, lo: int, hi: int
) -> list[tuple[Any, dict[str, Any]]]:
    gen = torch.Generator().manual_seed(1)
    voices = []
    for p in PROMPT_TOKENS if hi > 50 else [5, 8]:
        voices.append(
            {
                "prompt_token": torch.randint(0, 6561, (1, p), generator=gen).to(device),
                "prompt_token_len": torch.tensor([p], device=device),
                "prompt_feat": (torch.randn(1, 2 * p, 80, generator=gen) - 5).to(device),
                "prompt_feat_len": None,
                "embedding": torch.randn(1, 192, generator=gen).to(device),
            }
        )
    lengths = torch.randint(lo, hi + 1, (n,), generator=gen).tolist()
    return [
        (torch.randint(0, 6561, (k,), generator=gen).to(device), voices[i % len(voices)])
        for i, k in enumerate(lengths)
    ]


def _quality(torch: Any, s3gen: Any, work: list[Any], precisions: list[str]) -> list[Any]:
    """Relative L2 error of mels and waveforms against the fp32 batched path, 10 steps."""
    from chatterbox_serve.model.s3gen.batch import BatchedS3GenRunner, S3GenBatchPolicy
    from chatterbox_serve.model.s3gen.flow import flow_mels

    tokens, refs = zip(*work, strict=True)
    seeds = list(range(len(work)))
    out: dict[str, Any] = {}
    with torch.inference_mode():
        for p in precisions:
            runner = BatchedS3GenRunner(s3gen, S3GenBatchPolicy(64, float("inf"), p))
            out[p] = (
                flow_mels(s3gen.flow, list(tokens), list(refs), 10, p),
                runner.run(tokens, refs, 10, seeds=seeds),
            )
    rows = []
    for p in precisions:
        mel = max(_rel(torch, a, b) for a, b in zip(out[p][0], out["fp32"][0], strict=True))
        wav = max(_rel(torch, a, b) for a, b in zip(out[p][1], out["fp32"][1], strict=True))
        rows.append({"precision": p, "max_rel_l2_mel": mel, "max_rel_l2_wav": wav})
    return rows


def _equality(torch: Any, s3gen: Any, work: list[Any]) -> dict[str, Any]:
    from chatterbox_serve.model.s3gen.batch import (
        BatchedS3GenRunner,
        S3GenBatchPolicy,
        run_sequential,
    )

    tokens, refs = zip(*work, strict=True)
    seeds = list(range(len(work)))
    seq = run_sequential(s3gen, tokens, [dict(r) for r in refs], 10, seeds=seeds)
    runner = BatchedS3GenRunner(s3gen, S3GenBatchPolicy(64, float("inf"), "fp32"))
    bat = runner.run(tokens, refs, 10, seeds=seeds)
    diffs = [float((a - b.cpu()).abs().max()) for a, b in zip(seq, bat, strict=True)]
    return {"items": len(work), "max_abs_diff_wav": max(diffs), "per_item": diffs}


def _rel(torch: Any, a: Any, b: Any) -> float:
    return float(torch.linalg.vector_norm(a.float() - b.float()) / torch.linalg.vector_norm(b))


def _log(row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)


def _print_table(results: dict[str, Any]) -> None:
    runs = results["runs"]
    seq = {r["steps"]: r["audio_s_per_s"] for r in runs if r["path"] == "sequential"}
    print("| steps | path | precision | attention | batch | audio-s/s | x sequential | peak GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        ratio = r["audio_s_per_s"] / seq[r["steps"]]
        batch, attention = r.get("batch", 1), r.get("attention", "-")
        print(
            f"| {r['steps']} | {r['path']} | {r['precision']} | {attention} | {batch} | "
            f"{r['audio_s_per_s']:.1f} | {ratio:.1f} | {r['peak_gib']:.2f} |"
        )
    print(json.dumps({"quality": results["quality"], "equality": results["equality_gpu_fp32"]}))


if __name__ == "__main__":
    main()
