"""Turn raw samples and engine stats into the figures the report shows."""

from __future__ import annotations

import collections
import statistics
from collections.abc import Sequence
from typing import Any

from tools.bench.loadgen import Sample

STAGES = ("chunk", "queue", "engine", "encode", "total")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50_s": percentile(values, 50),
        "p95_s": percentile(values, 95),
        "p99_s": percentile(values, 99),
        "mean_s": statistics.fmean(values) if values else 0.0,
    }


def batch_summary(stats: dict[str, Any]) -> dict[str, Any]:
    """Items per engine call (mean and histogram) and the engine's busy fraction."""
    sizes = stats.get("batch_sizes", [])
    return {
        "engine_calls": stats.get("calls", 0),
        "mean_items_per_call": stats.get("items", 0) / max(stats.get("calls", 0), 1),
        "items_per_call_histogram": {
            str(k): v for k, v in sorted(collections.Counter(sizes).items())
        },
        "busy_fraction": stats.get("busy_fraction", 0.0),
    }


def stage_summary(samples: Sequence[Sample]) -> dict[str, float]:
    """Mean seconds per stage; `ingress` is client latency minus the audio deployment's total.

    Queue and engine are summed over a request's chunks, so for multi-chunk requests
    they can exceed the request's wall time (its chunks run in parallel batches).
    """
    timed = [s for s in samples if "total" in s.server]
    if not timed:
        return {f"{name}_s": 0.0 for name in (*STAGES, "ingress")}
    out = {f"{name}_s": statistics.fmean(s.server.get(name, 0.0) for s in timed) for name in STAGES}
    out["ingress_s"] = statistics.fmean(s.latency_s - s.server["total"] for s in timed)
    return out


def level_summary(
    workload: str,
    concurrency: int,
    samples: Sequence[Sample],
    wall_s: float,
    stats: dict[str, Any],
    capacity_audio_s_per_s: float,
) -> dict[str, Any]:
    ok = [s for s in samples if s.status == 200]
    audio_s = sum(s.audio_s for s in ok)
    throughput = audio_s / wall_s if wall_s > 0 else 0.0
    return {
        "workload": workload,
        "concurrency": concurrency,
        "requests": len(samples),
        "errors": len(samples) - len(ok),
        "wall_s": wall_s,
        "audio_s": audio_s,
        "throughput_audio_s_per_s": throughput,
        "requests_per_s": len(ok) / wall_s,
        "ratio_to_engine_capacity": throughput / capacity_audio_s_per_s,
        "latency": latency_summary([s.latency_s for s in ok]),
        "stages": stage_summary(ok),
        "batching": batch_summary(stats),
    }
