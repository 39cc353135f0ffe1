"""`python -m tools.bench [--quick] [--out DIR] [--long-text PATH]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tools.bench.options import DEFAULT_LONG_TEXT, BenchOptions
from tools.bench.report import format_table, write_json, write_plot
from tools.bench.runner import run_benchmark


def parse_args(argv: list[str] | None = None) -> tuple[BenchOptions, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description="Benchmark the served app (simulated engine) against the engine alone "
        "and against one-request-at-a-time serving.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: concurrency 1 and 4, few requests, costs / 10.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-out"),
        help="Directory for bench.json and bench.png.",
    )
    parser.add_argument(
        "--long-text",
        type=Path,
        default=DEFAULT_LONG_TEXT,
        help="The long text (default ../shared/data/texts/long-en.txt).",
    )
    parser.add_argument(
        "--concurrency",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        help="Comma-separated client counts (default 1,4,16,64).",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        help="VLLM_MAX_BATCH_SIZE for the run (default 16, as serve_config.yaml).",
    )
    parser.add_argument("--num-cpus", type=int, help="CPUs Ray may use (default 2).")
    parser.add_argument(
        "--from-json",
        type=Path,
        help="Redraw the table and plot from an earlier run's bench.json; measure nothing.",
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {"out_dir": args.out, "long_text_path": args.long_text}
    for key, value in (
        ("concurrency", args.concurrency),
        ("max_batch_size", args.max_batch_size),
        ("num_cpus", args.num_cpus),
    ):
        if value is not None:
            overrides[key] = value
    opts = BenchOptions.quick_run(**overrides) if args.quick else BenchOptions(**overrides)
    return opts, args.from_json


def main(argv: list[str] | None = None) -> int:
    opts, from_json = parse_args(argv)
    if from_json is not None:
        report = json.loads(from_json.read_text(encoding="utf-8"))
        print(format_table(report))
        print(f"\nwrote {write_plot(report, opts.out_dir)}")
        return 0
    report = run_benchmark(opts)
    print(format_table(report))
    print(f"\nwrote {write_json(report, opts.out_dir)} and {write_plot(report, opts.out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
