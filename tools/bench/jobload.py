"""Interactive latency with a long-text job running: the job's chunks must not crowd it out.

Short requests at one concurrency, first alone, then again while a job of
`job_characters` runs on the same model replicas. The goal: the p50 with the job
within 1.25x of the p50 without it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

LONG = "/v1/audio/speech/long"
P50_RATIO_TARGET = 1.25


def job_text(source: str, characters: int) -> str:
    """`source` repeated to `characters` characters, cut at a space."""
    text = source.strip()
    while len(text) < characters:
        text = f"{text} {source.strip()}"
    return text[:characters].rsplit(" ", 1)[0]


async def interactive_with_job(
    client: Any,
    measure: Callable[[], Awaitable[dict[str, Any]]],
    text: str,
    concurrency: int,
) -> dict[str, Any]:
    """`measure` (one closed-loop level) without and with a job running, and the job's pace."""
    without = await measure()
    created = await client.post(LONG, json={"input": text, "response_format": "mp3"})
    created.raise_for_status()
    job_id = created.json()["job_id"]
    try:
        await _wait_until_running(client, job_id)
        before = await _done(client, job_id)
        began = time.monotonic()
        with_job = await measure()
        elapsed = time.monotonic() - began
        after = await _done(client, job_id)
    finally:
        await client.delete(f"{LONG}/{job_id}", params={"action": "delete"})
    ratio = with_job["latency"]["p50_s"] / max(without["latency"]["p50_s"], 1e-9)
    return {
        "concurrency": concurrency,
        "job_characters": len(text),
        "without_job": without,
        "with_job": with_job,
        "p50_ratio": ratio,
        "p50_ratio_target": P50_RATIO_TARGET,
        "job_chunks_during_load": after - before,
        "job_chunks_per_s_during_load": (after - before) / elapsed if elapsed else 0.0,
    }


async def _done(client: Any, job_id: str) -> int:
    job = (await client.get(f"{LONG}/{job_id}")).json()
    return int(job["metadata"]["completed_chunks"])


async def _wait_until_running(client: Any, job_id: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while await _done(client, job_id) < 1:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} did not start in {timeout_s} s")
        await asyncio.sleep(0.2)


def format_row(result: dict[str, Any]) -> str:
    w, j = result["without_job"]["latency"], result["with_job"]["latency"]
    return (
        f"Interactive short requests at c={result['concurrency']} with a "
        f"{result['job_characters']}-character job running: p50 {j['p50_s']:.3f} s vs "
        f"{w['p50_s']:.3f} s without ({result['p50_ratio']:.2f}x; target <= "
        f"{result['p50_ratio_target']}x); p95 {j['p95_s']:.3f} s vs {w['p95_s']:.3f} s; the job "
        f"advanced {result['job_chunks_during_load']} chunks meanwhile "
        f"({result['job_chunks_per_s_during_load']:.2f}/s)."
    )
