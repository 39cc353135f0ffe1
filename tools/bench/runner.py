"""One benchmark run: local measurements first, then the served app under load."""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import statistics
from dataclasses import asdict
from typing import Any

from tqdm import tqdm

from chatterbox_serve.config import Settings, load_settings
from chatterbox_serve.text.chunking import split_text
from tools.bench.app import ModelStats, serve_app
from tools.bench.baseline import run_sequential
from tools.bench.capacity import engine_time_alone, measure_capacity
from tools.bench.encoding import measure_encoding
from tools.bench.loadgen import closed_loop, make_client, send_file, send_stream
from tools.bench.options import BenchOptions
from tools.bench.summary import latency_summary, level_summary
from tools.bench.targets import evaluate_targets
from tools.bench.workload import Workload, build_workloads

STREAM_FORMATS = ("audio", "sse")


def short_requests_per_worker(opts: BenchOptions, concurrency: int) -> int:
    return max(opts.short_rounds, -(-opts.min_short_requests // concurrency))


def _planned_steps(opts: BenchOptions, workloads: dict[str, Workload]) -> int:
    short = sum(c * short_requests_per_worker(opts, c) for c in opts.concurrency)
    long = sum(c * opts.long_rounds for c in opts.concurrency)
    pieces = len(workloads["long"].requests)
    ttfb = 2 * len(STREAM_FORMATS) * opts.ttfb_samples
    baseline = 2 * pieces + opts.min_short_requests
    control = sum(
        c * short_requests_per_worker(opts, c)
        for c in {min(opts.concurrency), max(opts.concurrency)}
    )
    return (
        3 + short + long + control + 2 * pieces + ttfb + baseline
    )  # 3 = encoding, capacity, warm-up


def run_benchmark(opts: BenchOptions) -> dict[str, Any]:
    """Measure everything in one run and return the report as a JSON-able dict."""
    return asyncio.run(_run(opts))


async def _run(opts: BenchOptions) -> dict[str, Any]:
    overrides = opts.app_settings()
    settings = load_settings({}, None, {"CHATTERBOX_ENGINE": "simulated", **overrides})
    workloads = build_workloads(settings, opts.long_text_path)
    report: dict[str, Any] = {"meta": _meta(opts, settings, overrides)}
    with tqdm(total=_planned_steps(opts, workloads), unit="req", desc="bench") as bar:
        # Local measurements first, before Ray starts, while the machine is quiet.
        bar.set_postfix_str("encoding")
        report["encoding"] = measure_encoding(
            opts.encode_audio_s, opts.encode_repeats, settings.audio.mp3_bitrate_kbps
        )
        bar.update()
        bar.set_postfix_str("engine capacity")
        report["engine"] = await _engine_figures(settings, workloads, opts.capacity_calls)
        bar.update()
        bar.set_postfix_str("baseline")
        report["baseline"] = await _baseline(opts, settings, workloads, bar.update)
        bar.set_postfix_str("starting Serve")
        with serve_app(overrides, opts.num_cpus) as running:
            async with make_client(running.base_url, max(opts.concurrency) + 4) as client:
                stats = ModelStats()
                await _warm_up(client, workloads, opts.response_format)
                bar.update()
                report["served"] = await _served(opts, client, stats, workloads, report, bar)
                report["control"] = await _control(opts, client, stats, workloads, report, bar)
                bar.set_postfix_str("long text")
                report["long_text"] = await _long_text(opts, client, workloads, report, bar)
                bar.set_postfix_str("time to first audio")
                report["ttfb"] = await _ttfb(opts, client, workloads, report, bar)
    report["targets"] = evaluate_targets(report)
    return report


def _meta(opts: BenchOptions, settings: Settings, overrides: dict[str, Any]) -> dict[str, Any]:
    options = {
        k: (str(v) if k in ("out_dir", "long_text_path") else v) for k, v in asdict(opts).items()
    }
    return {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()}-core CPU, {platform.machine()}, "
        f"{platform.system()} {platform.release()}, no GPU",
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "cost_model": {
            **settings.simulated.model_dump(exclude={"failure_marker"}),
            "formula": "call_s = base_s + per_item_s * items + per_char_s * chars",
        },
        "settings_overrides": overrides,
        "options": options,
    }


async def _engine_figures(
    settings: Settings, workloads: dict[str, Workload], calls: int
) -> dict[str, Any]:
    c = settings.chunking
    first_long = split_text(
        workloads["long"].requests[0], c.max_chunk_length, c.stream_first_chunk_length
    )[0]
    short_text = workloads["short"].requests[0]
    return {
        "capacity": {
            name: await measure_capacity(settings, w.chunks, calls) for name, w in workloads.items()
        },
        "single_call_s": {
            "short": engine_time_alone(settings, short_text),
            "long_first_stream_chunk": engine_time_alone(settings, first_long),
        },
        "chunks_per_request": {
            name: len(w.chunks) / len(w.requests) for name, w in workloads.items()
        },
    }


async def _baseline(
    opts: BenchOptions, settings: Settings, workloads: dict[str, Workload], tick: Any
) -> dict[str, Any]:
    long = await run_sequential(
        settings, list(workloads["long"].requests), opts.response_format, tick
    )
    short_texts = [workloads["short"].requests[0]] * opts.min_short_requests
    short = await run_sequential(settings, short_texts, opts.response_format, tick)
    pcm_long = await run_sequential(settings, list(workloads["long"].requests), "pcm", tick)
    for figures in (long, short, pcm_long):
        figures["latency"] = latency_summary(figures.pop("latencies_s"))
    return {"long": long, "short": short, "pcm_long": pcm_long}


async def _warm_up(client: Any, workloads: dict[str, Workload], fmt: str) -> None:
    """First requests pay for imports and connection set-up; keep them out of the figures."""
    await asyncio.gather(
        *(send_file(client, workloads["short"].requests[0], fmt) for _ in range(4))
    )
    await send_stream(client, workloads["short"].requests[0], fmt, "sse")


async def _served(
    opts: BenchOptions,
    client: Any,
    stats: ModelStats,
    workloads: dict[str, Workload],
    report: dict[str, Any],
    bar: tqdm,
) -> dict[str, list[dict[str, Any]]]:
    served: dict[str, list[dict[str, Any]]] = {}
    for name, workload in workloads.items():
        capacity = report["engine"]["capacity"][name]["audio_s_per_s"]
        served[name] = [
            await _level(opts, client, stats, workload, c, opts.response_format, capacity, bar)
            for c in opts.concurrency
        ]
    return served


async def _control(
    opts: BenchOptions,
    client: Any,
    stats: ModelStats,
    workloads: dict[str, Workload],
    report: dict[str, Any],
    bar: tqdm,
) -> dict[str, Any]:
    """Short requests as raw PCM at the lowest and highest concurrency: no encoding cost.

    Set beside the main rows, this separates what the serving layer costs from what the
    codec costs on this machine's cores.
    """
    capacity = report["engine"]["capacity"]["short"]["audio_s_per_s"]
    levels = [
        await _level(opts, client, stats, workloads["short"], c, "pcm", capacity, bar)
        for c in sorted({min(opts.concurrency), max(opts.concurrency)})
    ]
    return {"response_format": "pcm", "short": levels}


async def _level(
    opts: BenchOptions,
    client: Any,
    stats: ModelStats,
    workload: Workload,
    concurrency: int,
    fmt: str,
    capacity: float,
    bar: tqdm,
) -> dict[str, Any]:
    bar.set_postfix_str(f"{workload.name} {fmt} c={concurrency}")
    per_worker = (
        short_requests_per_worker(opts, concurrency)
        if workload.name == "short"
        else opts.long_rounds
    )
    await stats.reset()
    samples, wall = await closed_loop(
        client, workload.text_for, concurrency, per_worker, fmt, bar.update
    )
    summary = level_summary(workload.name, concurrency, samples, wall, await stats.read(), capacity)
    return {**summary, "response_format": fmt}


async def _long_text(
    opts: BenchOptions,
    client: Any,
    workloads: dict[str, Workload],
    report: dict[str, Any],
    bar: tqdm,
) -> dict[str, Any]:
    """The whole long text at once: its pieces sent together, as a client would send them.

    Also as pcm against a pcm baseline: the control that shows what encoding costs here.
    """
    pieces = workloads["long"].requests
    out: dict[str, Any] = {
        "pieces": len(pieces),
        "characters": sum(len(p) for p in pieces),
        "chunks": len(workloads["long"].chunks),
    }
    for fmt, key in ((opts.response_format, ""), ("pcm", "pcm_")):
        samples, wall = await closed_loop(
            client, lambda i: pieces[i], len(pieces), 1, fmt, bar.update
        )
        baseline_wall = report["baseline"][f"{key}long"]["wall_s"]
        out.update(
            {
                f"{key}served_wall_s": wall,
                f"{key}baseline_wall_s": baseline_wall,
                f"{key}speedup": baseline_wall / wall,
                f"{key}errors": sum(s.status != 200 for s in samples),
            }
        )
    return out


async def _ttfb(
    opts: BenchOptions,
    client: Any,
    workloads: dict[str, Workload],
    report: dict[str, Any],
    bar: tqdm,
) -> dict[str, Any]:
    """Time to first audio byte at concurrency 1, streamed as raw audio and as SSE."""
    texts = {"short": workloads["short"].requests[0], "long": workloads["long"].requests[0]}
    single = report["engine"]["single_call_s"]
    first_chunk_s = {"short": single["short"], "long": single["long_first_stream_chunk"]}
    out: dict[str, Any] = {}
    for name, text in texts.items():
        out[name] = {"first_chunk_engine_s": first_chunk_s[name]}
        for stream_format in STREAM_FORMATS:
            samples = []
            for _ in range(opts.ttfb_samples):
                samples.append(await send_stream(client, text, opts.response_format, stream_format))
                bar.update()
            ttfbs = [s.ttfb_s for s in samples if s.status == 200]
            out[name][stream_format] = {
                "ttfb_p50_s": statistics.median(ttfbs) if ttfbs else 0.0,
                "ttfb_max_s": max(ttfbs, default=0.0),
                "latency_p50_s": statistics.median(s.latency_s for s in samples),
                "errors": sum(s.status != 200 for s in samples),
            }
    return out
