"""Drive a running `serve run serve_config.yaml` over HTTP at several concurrencies.

    python -m tools.gpu.serve_bench --url http://127.0.0.1:8000 --out serve.json [--levels 1,64]

Closed loop (`tools.bench.loadgen`): each of `c` clients sends its next whole-file WAV
request when the last one ends. Reports audio-seconds per second over the makespan
(the server's `X-Audio-Duration-Seconds`), p50/p95 latency and p50 time to first
byte per level, and every non-200 status seen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path
from typing import Any

from tools.bench.loadgen import closed_loop, make_client

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "A journey of a thousand miles begins with a single step forward today.",
    "She sells sea shells by the sea shore on sunny summer afternoons.",
    "Every morning the baker opens his shop before the town wakes up.",
]


async def _level(url: str, concurrency: int, per_worker: int) -> dict[str, Any]:
    async with make_client(url, concurrency) as client:
        samples, wall = await closed_loop(
            client, lambda i: SENTENCES[i % len(SENTENCES)], concurrency, per_worker, "wav"
        )
    ok = [s for s in samples if s.status == 200]
    lat = sorted(s.latency_s for s in ok)
    audio = sum(s.audio_s for s in ok)
    return {
        "concurrency": concurrency,
        "requests": len(samples),
        "ok": len(ok),
        "statuses": sorted({s.status for s in samples}),
        "wall_s": round(wall, 2),
        "audio_s": round(audio, 1),
        "audio_s_per_s": round(audio / wall, 1) if wall else None,
        "latency_p50_s": round(statistics.median(lat), 3) if lat else None,
        "latency_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 3) if lat else None,
        "ttfb_p50_s": round(statistics.median(s.ttfb_s for s in ok), 3) if ok else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64])
    parser.add_argument("--per-worker", type=int, default=3)
    args = parser.parse_args()
    results = []
    for level in args.levels:
        results.append(asyncio.run(_level(args.url, level, args.per_worker)))
        print(json.dumps(results[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"levels": results}, indent=2))


if __name__ == "__main__":
    main()
