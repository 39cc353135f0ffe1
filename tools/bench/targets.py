"""The issue's targets, checked against one run's figures (reported, never asserted in tests)."""

from __future__ import annotations

from typing import Any


def _level(report: dict[str, Any], workload: str, concurrency: int | None) -> dict[str, Any]:
    """The level at `concurrency`, or the highest measured one when it is `None`."""
    levels = report["served"][workload]
    if concurrency is None:
        return max(levels, key=lambda lv: lv["concurrency"])
    return next(lv for lv in levels if lv["concurrency"] == concurrency)


def _target(name: str, value: float, limit: float, at_least: bool, unit: str) -> dict[str, Any]:
    met = value >= limit if at_least else value <= limit
    return {
        "name": name,
        "value": value,
        "target": ("≥ " if at_least else "≤ ") + f"{limit:g}",
        "unit": unit,
        "met": met,
    }


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    engine = report["engine"]
    top_short, top_long = _level(report, "short", None), _level(report, "long", None)
    c1 = _level(report, "short", min(lv["concurrency"] for lv in report["served"]["short"]))
    ttfb = report["ttfb"]
    targets = [
        _target(
            f"short: served throughput at c={top_short['concurrency']} / engine capacity",
            top_short["ratio_to_engine_capacity"],
            0.90,
            True,
            "ratio",
        ),
        _target(
            f"long: served throughput at c={top_long['concurrency']} / engine capacity",
            top_long["ratio_to_engine_capacity"],
            0.90,
            True,
            "ratio",
        ),
        _target(
            f"added latency at c={c1['concurrency']} (served p50 - engine time, short)",
            (c1["latency"]["p50_s"] - engine["single_call_s"]["short"]) * 1000,
            15,
            False,
            "ms",
        ),
    ]
    for workload in ("short", "long"):
        for fmt in ("audio", "sse"):
            over = ttfb[workload][fmt]["ttfb_p50_s"] - ttfb[workload]["first_chunk_engine_s"]
            targets.append(
                _target(
                    f"TTFB at c=1 minus first-chunk engine time ({workload}, {fmt})",
                    over * 1000,
                    50,
                    False,
                    "ms",
                )
            )
    pcm = report["control"]["short"]
    targets += [
        _target(
            f"control, pcm: added latency at c={pcm[0]['concurrency']} (no encoding)",
            (pcm[0]["latency"]["p50_s"] - engine["single_call_s"]["short"]) * 1000,
            15,
            False,
            "ms",
        ),
        _target(
            f"control, pcm: served throughput at c={pcm[-1]['concurrency']} / engine capacity",
            pcm[-1]["ratio_to_engine_capacity"],
            0.90,
            True,
            "ratio",
        ),
    ]
    targets += [
        _target(
            "long text wall time, baseline / served", report["long_text"]["speedup"], 5.0, True, "x"
        ),
        _target(
            "control, pcm: long text wall time, baseline / served",
            report["long_text"]["pcm_speedup"],
            5.0,
            True,
            "x",
        ),
        _target(
            "mp3 encoding, audio seconds per CPU-second",
            report["encoding"]["mp3"]["realtime_per_cpu_s"],
            100,
            True,
            "x real time",
        ),
        _target(
            f"p99 / p50 latency at c={top_short['concurrency']} (short)",
            top_short["latency"]["p99_s"] / max(top_short["latency"]["p50_s"], 1e-9),
            2.0,
            False,
            "ratio",
        ),
    ]
    return targets
