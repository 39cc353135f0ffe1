"""Where batched S3Gen spends its time: per stage, per attention backend, per precision.

Companion to s3gen_bench.py (same random weights and workload). Prints JSON lines:
the scaled-dot-product-attention kernels that accept the estimator's mask, time and
peak memory of the encoder, the CFM estimator (per step) and the vocoder for each
batch size, precision and attention backend (including "none", attention left out, as
the floor), and the top CUDA kernels of one estimator step. See docs/S3GEN.md.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from s3gen_bench import _load_s3gen, _workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-sizes", default="16,64")
    parser.add_argument("--precisions", default="fp32,tf32,bf16")
    parser.add_argument("--attention", default="bias,packed,flex,none")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--trace", default="64:fp32:bias,64:fp32:packed,64:bf16:packed")
    args = parser.parse_args()
    torch, s3gen = _load_s3gen("cuda")
    _sdpa_backends(torch)
    items = _workload(torch, torch.device("cuda"), 64, 80, 300)
    # the longest items: sorted by length, as plan_batches groups them
    items.sort(key=lambda it: it[0].numel() + it[1]["prompt_token"].shape[-1])
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        work = items[-bs:]
        for precision in args.precisions.split(","):
            for attention in args.attention.split(","):
                row = _stages(torch, s3gen, work, precision, attention, args.steps)
                print(json.dumps({"batch": bs, **row}), flush=True)
    for spec in args.trace.split(","):
        bs, precision, attention = spec.split(":")
        _trace(torch, s3gen, items[-int(bs) :], precision, attention)


def _sdpa_backends(torch: Any) -> None:
    """Which SDPA kernels take diffusers' (B, 8, 1, T) float bias, and how fast."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    F = torch.nn.functional
    rows, frames = 128, 1100
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = (torch.randn(rows, 8, frames, 64, device="cuda", dtype=dtype) for _ in "qkv")
        bias = torch.zeros(rows, 8, 1, frames, device="cuda", dtype=dtype)
        bias[: rows // 2, :, :, frames // 2 :] = -1e10
        for name, backend in [
            ("default", None),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION),
            ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ("flash", SDPBackend.FLASH_ATTENTION),
            ("math", SDPBackend.MATH),
        ]:
            for mask in (bias, None):
                ctx = sdpa_kernel([backend]) if backend else _null()
                try:
                    with ctx:
                        ms = _time(
                            torch,
                            lambda m=mask, a=(q, k, v): F.scaled_dot_product_attention(
                                *a, attn_mask=m
                            ),
                        )
                    out = f"{ms:.2f} ms"
                except RuntimeError as err:
                    out = f"refused: {str(err).splitlines()[0][:80]}"
                row = {"sdpa": name, "dtype": str(dtype), "mask": mask is not None, "time": out}
                print(json.dumps(row), flush=True)
        flops = 4 * rows * 8 * frames * frames * 64
        print(json.dumps({"sdpa_gflop": flops / 1e9}), flush=True)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _time(torch: Any, fn: Any, repeats: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


class _NoAttention:
    """Projections kept, attention left out: the estimator's floor without attention."""

    def __call__(self, attn: Any, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        return attn.to_out[0](attn.to_v(hidden_states))


def _stages(
    torch: Any, s3gen: Any, work: list[Any], precision: str, attention: str, steps: int
) -> dict[str, Any]:
    from chatterbox_serve.model.s3gen import flow as s3gen_flow
    from chatterbox_serve.model.s3gen.vocoder import vocode

    tokens, refs = zip(*work, strict=True)
    est = s3gen.flow.decoder.estimator
    events: list[Any] = []
    # The first and last modules of an estimator call: `flow.estimate` runs the
    # estimator's sub-modules without calling the estimator itself.
    pre = est.time_mlp.register_forward_pre_hook(lambda *a: events.append(_event(torch)))
    post = est.final_proj.register_forward_hook(lambda *a: events.append(_event(torch)))
    saved = None
    backend = attention
    if attention == "none":
        mods = [m for m in est.modules() if hasattr(m, "processor") and hasattr(m, "to_q")]
        saved = [m.processor for m in mods]
        for m in mods:
            m.processor = _NoAttention()
        backend = "bias"
    try:
        with torch.inference_mode():
            s3gen_flow.flow_mels(s3gen.flow, tokens, refs, steps, precision, backend)  # warm-up
            torch.cuda.synchronize()
            events.clear()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            mels = s3gen_flow.flow_mels(s3gen.flow, tokens, refs, steps, precision, backend)
            torch.cuda.synchronize()
            flow_s = time.perf_counter() - t0
            flow_peak = torch.cuda.max_memory_allocated() / 2**30
            est_ms = sum(a.elapsed_time(b) for a, b in zip(events[::2], events[1::2], strict=True))
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            vocode(s3gen.mel2wav, mels)
            torch.cuda.synchronize()
            voc_s = time.perf_counter() - t0
            voc_peak = torch.cuda.max_memory_allocated() / 2**30
    except Exception as err:  # report and go on: one refused variant must not end the run
        return {"precision": precision, "attention": attention, "error": repr(err)[:300]}
    finally:
        pre.remove()
        post.remove()
        if saved is not None:
            for m, p in zip(mods, saved, strict=True):
                m.processor = p
    audio_s = sum(m.shape[-1] for m in mels) * 480 / 24000
    step_ms = est_ms / steps
    return {
        "precision": precision,
        "attention": attention,
        "audio_s": round(audio_s, 1),
        "est_step_ms": round(step_ms, 1),
        "flow_other_ms": round(flow_s * 1e3 - est_ms, 1),
        "vocoder_ms": round(voc_s * 1e3, 1),
        "flow_peak_gib": round(flow_peak, 2),
        "vocoder_peak_gib": round(voc_peak, 2),
        "est_audio_s_per_s_10_steps": round(audio_s / (10 * step_ms / 1e3), 1),
    }


def _event(torch: Any) -> Any:
    ev = torch.cuda.Event(enable_timing=True)
    ev.record()
    return ev


def _trace(torch: Any, s3gen: Any, work: list[Any], precision: str, attention: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    from chatterbox_serve.model.s3gen import flow as s3gen_flow

    tokens, refs = zip(*work, strict=True)
    with torch.inference_mode():
        s3gen_flow.flow_mels(s3gen.flow, tokens, refs, 1, precision, attention)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            s3gen_flow.flow_mels(s3gen.flow, tokens, refs, 1, precision, attention)
            torch.cuda.synchronize()
    print(f"== trace batch {len(work)} {precision} {attention}", flush=True)
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=12)
    print(table, flush=True)


if __name__ == "__main__":
    main()
