"""The serving figures on one GPU, in one command: S3Gen, T3, the engine, first audio over HTTP.

    python -m tools.gpu.gpu_serving all --checkpoint DIR \
        --out benchmarks/results/gpu-serving-h200.json

`all` runs the parts below one after the other and writes the report. A lent GPU that
cuts each command at 10 minutes runs them one at a time instead, into one folder:

    python -m tools.gpu.gpu_serving s3gen  --checkpoint DIR --parts P   # tools.gpu.s3gen_speed
    python -m tools.gpu.gpu_serving engine --checkpoint DIR --parts P   # in-process, vLLM
    python -m tools.gpu.gpu_serving serve  --parts P [--url U]          # a running `serve run`
    python -m tools.gpu.gpu_serving report --parts P --out FILE

What each part measures (random full-size weights: every T3 item decodes exactly its
token budget, as the stop token almost never comes; budgets vary from 75 to 300 tokens,
3 to 12 s of audio, seeded, so items finish at different times as real speech does):

- **s3gen**: `BatchedS3GenRunner` alone over 64 utterances, per precision and attention
  variant, at 10 and 5 steps, with its quality bounds (`tools/gpu/s3gen_speed.py`).
- **engine**: the vLLM engine in this process. T3 alone (every item through vLLM,
  closed loop of 64), S3Gen alone (the same tokens through the engine's S3Gen pass), and
  the whole engine at 64 concurrent items (closed loop of 64 single-item calls, as the
  model deployment makes them), with the GPU's busy fraction sampled from NVML during
  that window. Then first audio of streamed items inside the engine, at 1 and 32.
- **serve**: over HTTP against `serve run serve_config.yaml`: first audio byte of
  streamed PCM (`stream_format: audio`) at 1 and 32 concurrent clients, and whole-file
  throughput at 64.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

GOALS = {
    "s3gen": 250.0,
    "s3gen_5": 400.0,
    "engine": 250.0,
    "ttfa_c1_ms": 250.0,
    "ttfa_c32_ms": 500.0,
}
TOKENS_PER_S = 25
MIN_TOKENS, MAX_TOKENS = 75, 300
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "A journey of a thousand miles begins with a single step forward today.",
    "She sells sea shells by the sea shore on sunny summer afternoons.",
    "Every morning the baker opens his shop before the town wakes up.",
]


def budgets(n: int, low: int = MIN_TOKENS, high: int = MAX_TOKENS, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(low, high) for _ in range(n)]


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _dry_llm(settings: Any, model_dir: Path) -> Any:
    """`--dry` only: the CPU smoke's stand-in for vLLM's `AsyncLLM` (tests' double), which
    decodes every item to its budget."""
    from tests.unit.asyncllm_double import FakeAsyncLLM

    return FakeAsyncLLM(script_for=lambda prompt, params: [100 + i % 50 for i in range(4000)])


class BusySampler:
    """The fraction of time the GPU ran a kernel, from NVML's utilization counter."""

    def __init__(self, period_s: float = 0.05) -> None:
        self.period_s = period_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BusySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def fraction(self) -> float | None:
        return round(statistics.mean(self.samples) / 100.0, 3) if self.samples else None

    def _run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)

            def read() -> float:
                return float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

        except Exception as exc:
            print(f"NVML from Python unavailable ({exc!r}); sampling nvidia-smi", file=sys.stderr)
            query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]

            def read() -> float:
                return float(subprocess.check_output(query, text=True).split()[0])

        try:
            while not self._stop.wait(self.period_s):
                self.samples.append(read())
        except Exception as exc:  # no counter at all: the figure stays None, the run goes on
            print(f"busy sampler off: {exc!r}", file=sys.stderr)


async def closed_loop(
    workers: int, rounds: int, one: Callable[[int], Awaitable[float]]
) -> tuple[float, float]:
    """`workers` callers, each doing `rounds` calls back to back; (audio seconds, wall)."""
    audio = 0.0

    async def worker(w: int) -> None:
        nonlocal audio
        for k in range(rounds):
            made = await one(w + k * workers)
            audio += made  # not `audio += await ...`: that reads `audio` before awaiting

    began = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    return audio, time.perf_counter() - began


async def steady(
    workers: int, seconds: float, one: Callable[[int], Awaitable[float]], first: int = 0
) -> tuple[float, float]:
    """`workers` callers back to back for `seconds`: (audio of items done in it, seconds).

    Items of different lengths make a fixed number of rounds end in a long tail with few
    items in flight; a window of fixed length keeps `workers` in flight throughout. An
    item still running when the window closes is not counted.
    """
    audio = 0.0
    counter = first
    began = time.perf_counter()
    deadline = began + seconds

    async def worker() -> None:
        nonlocal audio, counter
        while time.perf_counter() < deadline:
            counter += 1
            made = await one(counter)
            if time.perf_counter() <= deadline:
                audio += made

    await asyncio.gather(*(worker() for _ in range(workers)))
    return audio, seconds


# ---- engine ---------------------------------------------------------------------------


async def engine_part(args: argparse.Namespace) -> dict[str, Any]:
    from chatterbox_serve.config import EngineConfig, Settings
    from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult
    from chatterbox_serve.engines.vllm.engine import ForcedLength, VLLMEngine
    from chatterbox_serve.families import ModelFamily
    from chatterbox_serve.generation import family_defaults

    family = ModelFamily(args.family)
    turbo = family is ModelFamily.TURBO
    if args.dry:
        from chatterbox_serve.model.checkpoint import ensure_torchaudio

        ensure_torchaudio()  # a CPU machine may lack torchaudio; S3Gen's modules import it
    settings = Settings(
        engine=EngineConfig(
            engine="vllm",
            models=(family,),
            model_dir=None if turbo else str(args.checkpoint),
            turbo_model_dir=str(args.checkpoint) if turbo else None,
            max_batch_size=16,  # x4 calls in flight = vLLM max_num_seqs 64
            compile=not args.dry,
            gpu_memory_utilization=args.gpu_memory_utilization,
            s3gen_batch_size=64,
            s3gen_compile=args.s3gen_compile,
            device="cpu" if args.dry else "auto",
        )
    )
    engine_cls = VLLMEngine
    if turbo:
        from chatterbox_serve.engines.vllm.turbo_engine import TurboVLLMEngine

        engine_cls = TurboVLLMEngine
    engine = engine_cls(
        settings, llm_factory=_dry_llm if args.dry else None, forced_length=ForcedLength(MAX_TOKENS)
    )
    began = time.perf_counter()
    await engine.start()
    startup_s = time.perf_counter() - began
    plan = budgets(4096, *((10, 20) if args.dry else ()))

    def request(i: int) -> SynthesisRequest:
        # The family's own defaults (Turbo's chain; the original's CFG weights varied).
        values: dict[str, Any] = {"seed": 1000 + i}
        if family.spec.cfg:
            values["cfg_weight"] = (0.0, 0.3, 0.5, 1.0)[i % 4]
        return SynthesisRequest(
            text=SENTENCES[i % len(SENTENCES)],
            language="en",
            generation=dataclasses.replace(family_defaults(family), **values),
            max_new_tokens=plan[i % len(plan)],
            family=family,
        )

    loaded, runner = engine._live(), engine._runner
    assert runner is not None
    out: dict[str, Any] = {
        "machine": _machine(),
        "family": family.value,
        "diffusion_steps": engine._diffusion_steps(),
        "startup_s": round(startup_s, 1),
        "workers": args.workers,
        "s3gen_compile": args.s3gen_compile,
        "window_s": args.window_s,
    }
    await engine.synthesize([request(i) for i in range(8)])  # warm-up

    # T3 alone: the jobs the engine would submit, closed loop.
    tokens: dict[int, list[int]] = {}

    async def t3_one(i: int) -> float:
        _, prepared, jobs = await engine._on_prep(engine._prepare_jobs, loaded, [request(i)])
        outcome = await runner.run_one(jobs[0])
        assert not isinstance(outcome, Exception), outcome
        tokens[i] = outcome.tokens
        return len(outcome.tokens) / TOKENS_PER_S

    await closed_loop(args.workers, 1, t3_one)  # warm: every batch size vLLM will meet
    audio, wall = await steady(args.workers, args.window_s, t3_one, first=100)
    out["t3_alone"] = {"audio_s": round(audio, 1), "window_s": wall}
    out["t3_alone_audio_s_per_s"] = round(audio / wall, 1)
    print(json.dumps(out["t3_alone"]), flush=True)

    # S3Gen alone: 128 of those items through the engine's own S3Gen pass, 64 at a time.
    order = sorted(tokens)[: 8 if args.dry else 128]
    _, prepared, _ = await engine._on_thread(
        engine._prepare_jobs, loaded, [request(i) for i in order]
    )
    work = [(p, tokens[i]) for p, i in zip(prepared, order, strict=True)]
    _sync()
    began = time.perf_counter()
    audio = 0.0
    for k in range(0, len(work), 64):
        for wav in await engine._on_thread(engine._vocode_pass, work[k : k + 64]):
            audio += len(wav) / 24_000
    wall = time.perf_counter() - began
    out["s3gen_alone"] = {"audio_s": round(audio, 1), "wall_s": round(wall, 3)}
    out["s3gen_alone_audio_s_per_s"] = round(audio / wall, 1)
    print(json.dumps(out["s3gen_alone"]), flush=True)

    # The engine: 64 single-item calls in flight, T3 and S3Gen overlapping.
    async def engine_one(i: int) -> float:
        (result,) = await engine.synthesize([request(i)])
        assert isinstance(result, SynthesisResult), result
        return result.duration_s

    stage = engine._stage
    assert stage is not None
    variants = []
    for wait in (0.0, args.s3gen_max_wait_s):
        stage.max_wait_s = wait
        before = dict(stage.stats())
        with BusySampler() as busy:
            audio, wall = await steady(args.workers, args.window_s, engine_one, first=10_000)
        after = stage.stats()
        passes = after["passes"] - before["passes"]
        row = {
            "s3gen_max_wait_s": wait,
            "audio_s": round(audio, 1),
            "window_s": wall,
            "audio_s_per_s": round(audio / wall, 1),
            "gpu_busy_fraction": busy.fraction,
            "gpu_busy_samples": len(busy.samples),
            "s3gen_passes": passes,
            "s3gen_mean_batch": round((after["items"] - before["items"]) / max(1, passes), 1),
            "s3gen_busy_s": round(after["busy_s"] - before["busy_s"], 2),
        }
        variants.append(row)
        print(json.dumps(row), flush=True)
    best = max(variants, key=lambda r: r["audio_s_per_s"])
    out["engine"] = {"variants": variants, "best": best}
    out["engine_audio_s_per_s"] = best["audio_s_per_s"]
    out["gpu_busy_fraction"] = best["gpu_busy_fraction"]

    # First audio inside the engine (no HTTP): streamed items at 1 and 32 at once, with
    # where the time went (the first piece's timings: preparation, T3 to the first
    # render's tokens, the render itself).
    for level in (1, 32):
        firsts: list[float] = []
        parts: list[dict[str, float]] = []
        # One unmeasured round first: S3Gen meets this level's shapes (and, with
        # CUDA graphs, records them) once, as a warm server would have.
        await closed_loop(level, 1, _first_audio(engine, request, [], []))
        one = _first_audio(engine, request, firsts, parts)
        await closed_loop(level, 1 if args.dry else 4 if level == 1 else 2, one)
        out[f"engine_ttfa_p50_ms_c{level}"] = round(1000 * statistics.median(firsts), 1)
        out[f"engine_ttfa_parts_p50_ms_c{level}"] = {
            key: round(1000 * statistics.median(p[key] for p in parts if key in p), 1)
            for key in ("prepare_s", "t3_first_tokens_s", "first_render_s")
        }
        print(
            level,
            out[f"engine_ttfa_p50_ms_c{level}"],
            out[f"engine_ttfa_parts_p50_ms_c{level}"],
            flush=True,
        )
    await engine.shutdown()
    return out


def _first_audio(
    engine: Any, request: Callable[[int], Any], firsts: list[float], parts: list[Any]
) -> Callable[[int], Awaitable[float]]:
    """A closed-loop call that streams one item and notes when its first audio came."""

    async def one(i: int) -> float:
        began = time.perf_counter()
        first = None
        audio = 0.0
        async for piece in engine.synthesize_stream(request(i)):
            if first is None:
                first = time.perf_counter() - began
                parts.append(dict(piece.extra))
            audio += piece.duration_s
        firsts.append(first or 0.0)
        return float(audio)

    return one


# ---- serve ----------------------------------------------------------------------------


async def serve_part(args: argparse.Namespace) -> dict[str, Any]:
    from tools.bench.loadgen import closed_loop as http_loop
    from tools.bench.loadgen import make_client, send_stream

    out: dict[str, Any] = {"url": args.url}
    for level, rounds in ((1, 6), (32, 3)):
        samples = await _streamed(args.url, level, rounds, send_stream, make_client)
        ok = [s for s in samples if s.status == 200]
        out[f"ttfa_p50_ms_c{level}"] = (
            round(1000 * statistics.median(s.ttfb_s for s in ok), 1) if ok else None
        )
        out[f"ttfa_c{level}"] = {
            "requests": len(samples),
            "ok": len(ok),
            "statuses": sorted({s.status for s in samples}),
            "latency_p50_s": round(statistics.median(s.latency_s for s in ok), 3) if ok else None,
        }
        print(level, out[f"ttfa_p50_ms_c{level}"], out[f"ttfa_c{level}"], flush=True)
    async with make_client(args.url, 64) as client:
        with BusySampler() as busy:
            samples, wall = await http_loop(
                client, lambda i: SENTENCES[i % len(SENTENCES)], 64, 2, "wav"
            )
    ok = [s for s in samples if s.status == 200]
    audio = sum(s.audio_s for s in ok)
    out["serve_c64"] = {
        "requests": len(samples),
        "ok": len(ok),
        "wall_s": round(wall, 2),
        "audio_s": round(audio, 1),
        "latency_p50_s": round(statistics.median(s.latency_s for s in ok), 3) if ok else None,
        "gpu_busy_fraction": busy.fraction,
    }
    out["serve_audio_s_per_s_c64"] = round(audio / wall, 1) if wall else None
    print(json.dumps(out["serve_c64"]), flush=True)
    return out


async def _streamed(url: str, level: int, rounds: int, send: Any, make_client: Any) -> list[Any]:
    """`level` clients streaming PCM back to back, `rounds` each, after one warm-up."""
    samples: list[Any] = []
    async with make_client(url, level) as client:
        await send(client, SENTENCES[0], "pcm", "audio")

        async def worker(w: int) -> None:
            for k in range(rounds):
                i = w + k * level
                samples.append(await send(client, SENTENCES[i % len(SENTENCES)], "pcm", "audio"))

        await asyncio.gather(*(worker(w) for w in range(level)))
    return samples


# ---- s3gen and the report ---------------------------------------------------------------


def s3gen_part(args: argparse.Namespace) -> dict[str, Any]:
    out = args.parts / "s3gen-speed.json"
    command = [sys.executable, "-m", "tools.gpu.s3gen_speed", "--checkpoint", str(args.checkpoint)]
    command += ["--out", str(out), "--batch-sizes", "64", "--budget-s", str(args.budget_s)]
    if args.variants:
        command += ["--variants", args.variants]
    subprocess.run(command, check=False)
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    return result


def report(parts: Path, machine: str) -> dict[str, Any]:
    def part(name: str) -> dict[str, Any]:
        path = parts / f"{name}.json"
        loaded: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        return loaded

    s3, engine, serve = part("s3gen"), part("engine"), part("serve")
    t3 = engine.get("t3_alone_audio_s_per_s")
    s3_alone = engine.get("s3gen_alone_audio_s_per_s")
    bound = 0.9 * min(t3, s3_alone) if t3 and s3_alone else None
    eng = engine.get("engine_audio_s_per_s")
    return {
        "machine": machine,
        "weights": "random, full-size (tools/write_checkpoint.py, seed 0)",
        "how": "python -m tools.gpu.gpu_serving (s3gen, engine, serve, report)",
        "s3gen_audio_s_per_s": s3.get("s3gen_audio_s_per_s"),
        "s3gen_audio_s_per_s_5_steps": s3.get("s3gen_audio_s_per_s_5_steps"),
        "engine_audio_s_per_s": eng,
        "t3_alone_audio_s_per_s": t3,
        "s3gen_alone_in_engine_audio_s_per_s": s3_alone,
        "ttfa_p50_ms_c1": serve.get("ttfa_p50_ms_c1"),
        "ttfa_p50_ms_c32": serve.get("ttfa_p50_ms_c32"),
        "gpu_busy_fraction": engine.get("gpu_busy_fraction"),
        "engine_ttfa_p50_ms_c1": engine.get("engine_ttfa_p50_ms_c1"),
        "engine_ttfa_p50_ms_c32": engine.get("engine_ttfa_p50_ms_c32"),
        "serve_audio_s_per_s_c64": serve.get("serve_audio_s_per_s_c64"),
        "goals": {
            "1_s3gen_250": _goal(s3.get("s3gen_audio_s_per_s"), GOALS["s3gen"]),
            "1_s3gen_5_steps_400": _goal(s3.get("s3gen_audio_s_per_s_5_steps"), GOALS["s3gen_5"]),
            "2_engine_250": _goal(eng, GOALS["engine"]),
            "2_engine_0.9_min_stages": _goal(eng, bound),
            "3_ttfa_c1_250ms": _goal(serve.get("ttfa_p50_ms_c1"), GOALS["ttfa_c1_ms"], lower=True),
            "3_ttfa_c32_500ms": _goal(
                serve.get("ttfa_p50_ms_c32"), GOALS["ttfa_c32_ms"], lower=True
            ),
        },
        # What was learnt from the figures: why each missed goal is missed and what
        # would close it, written by whoever ran the parts (`analysis.json`).
        "analysis": part("analysis") or None,
        "parts": {"s3gen": s3, "engine": engine, "serve": serve},
    }


TURBO_GOALS = {"engine": 600.0, "ttfa_c1_ms": 150.0}


def turbo_report(parts: Path, machine: str | None = None) -> dict[str, Any]:
    """Turbo's serving figures beside the original's from the same run (`--family`).

    `machine` defaults to what the Turbo engine part recorded of where it ran.
    """

    def part(name: str) -> dict[str, Any]:
        path = parts / f"{name}.json"
        loaded: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        return loaded

    turbo, original = part(engine_part_name("chatterbox-turbo")), part("engine")
    http = part(serve_part_name("chatterbox-turbo"))
    keys = (
        "engine_audio_s_per_s",
        "t3_alone_audio_s_per_s",
        "s3gen_alone_audio_s_per_s",
        "engine_ttfa_p50_ms_c1",
        "engine_ttfa_p50_ms_c32",
        "gpu_busy_fraction",
        "diffusion_steps",
        "startup_s",
    )

    def ratio(key: str) -> float | None:
        a, b = turbo.get(key), original.get(key)
        return round(a / b, 2) if a and b else None

    # First audio over HTTP when that part ran, else inside the engine (no HTTP).
    source = "http" if http.get("ttfa_p50_ms_c1") is not None else "engine"
    prefix = "" if source == "http" else "engine_"
    ttfa = {
        level: (http if source == "http" else turbo).get(f"{prefix}ttfa_p50_ms_c{level}")
        for level in (1, 32)
    }
    engine = turbo.get("engine_audio_s_per_s")
    return {
        "machine": machine or turbo.get("machine"),
        "original_machine": original.get("machine"),
        "weights": "random, full-size (tools/write_checkpoint.py --turbo and --multilingual, "
        "seed 0); every item decodes its budget (75 to 300 tokens, 3 to 12 s)",
        "how": "python -m tools.gpu.gpu_serving engine --family chatterbox-turbo, then "
        "--family chatterbox-multilingual on the same machine (and `serve` against "
        "`serve run` with CHATTERBOX_MODELS=chatterbox-turbo), then turbo-report",
        "engine_audio_s_per_s": engine,
        "concurrency": turbo.get("workers"),
        "s3gen_audio_s_per_s": turbo.get("s3gen_alone_audio_s_per_s"),
        "s3gen_steps": turbo.get("diffusion_steps"),
        "t3_alone_audio_s_per_s": turbo.get("t3_alone_audio_s_per_s"),
        "ttfa_p50_ms_c1": ttfa[1],
        "ttfa_p50_ms_c32": ttfa[32],
        "ttfa_measured": source,
        "engine_ttfa_p50_ms_c1": turbo.get("engine_ttfa_p50_ms_c1"),
        "engine_ttfa_p50_ms_c32": turbo.get("engine_ttfa_p50_ms_c32"),
        "original_same_run": {k: original.get(k) for k in (*keys, "family")},
        "turbo_over_original": {k: ratio(k) for k in keys[:3]},
        "goals": {
            "engine_600": _goal(engine, TURBO_GOALS["engine"]),
            "ttfa_c1_150ms": _goal(ttfa[1], TURBO_GOALS["ttfa_c1_ms"], lower=True),
        },
        "parts_missing": [
            n for n, p in (("turbo", turbo), ("original", original), ("http", http)) if not p
        ],
        "parts": {"turbo": turbo, "original": original, "http": http},
    }


def engine_part_name(family: str) -> str:
    """The engine part's file name: `engine` for the multilingual model, as before."""
    return "engine" if family == "chatterbox-multilingual" else f"engine-{family}"


def serve_part_name(family: str | None) -> str:
    return "serve" if family in (None, "chatterbox-multilingual") else f"serve-{family}"


def _goal(measured: float | None, target: float | None, lower: bool = False) -> dict[str, Any]:
    if measured is None or target is None:
        return {"met": None, "measured": measured, "target": target}
    met = measured <= target if lower else measured >= target
    return {"met": met, "measured": measured, "target": round(target, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "part", choices=["s3gen", "engine", "serve", "report", "all", "turbo-report"]
    )
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/ckpt"))
    parser.add_argument("--parts", type=Path, default=Path("/tmp/gpu-serving"))
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/gpu-serving-h200.json")
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-s", type=float, default=15.0, help="steady-state window")
    parser.add_argument("--s3gen-max-wait-s", type=float, default=0.3)
    parser.add_argument("--s3gen-compile", default="off", help="CHATTERBOX_S3GEN_COMPILE")
    parser.add_argument("--variants", default=None, help="tools.gpu.s3gen_speed variants")
    parser.add_argument("--budget-s", type=float, default=300.0)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    parser.add_argument("--machine", default=None, help="recorded as is; default from torch")
    parser.add_argument(
        "--dry",
        action="store_true",
        help="engine part only: a CPU smoke on a tiny checkpoint written to --checkpoint, "
        "vLLM replaced by the tests' AsyncLLM double, few and short items",
    )
    parser.add_argument(
        "--family",
        default="chatterbox-multilingual",
        help="the model family the engine part serves (chatterbox-turbo: --checkpoint is "
        "a Turbo checkpoint); its part is engine-<family>.json but for the default",
    )
    args = parser.parse_args()
    args.parts.mkdir(parents=True, exist_ok=True)
    if args.part == "turbo-report":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        # Run where the parts were fetched to: the machine is the one they name.
        result = turbo_report(args.parts, args.machine)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k != "parts"}, indent=1))
        return
    parts = ["s3gen", "engine", "serve"] if args.part == "all" else [args.part]
    for name in parts:
        if name == "s3gen":
            result = s3gen_part(args)
        elif name == "engine":
            result = asyncio.run(engine_part(args))
        elif name == "serve":
            if args.part == "all":
                result = _with_serve(args)
            else:
                result = asyncio.run(serve_part(args))
        else:
            continue
        file = name
        if name == "engine":
            file = engine_part_name(args.family)
        elif name == "serve" and args.part == "serve":
            file = serve_part_name(args.family)
        (args.parts / f"{file}.json").write_text(json.dumps(result, indent=2))
    if args.part in ("report", "all"):
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report(args.parts, args.machine or _machine()), indent=2))
        print(args.out.read_text())


def _with_serve(args: argparse.Namespace) -> dict[str, Any]:
    """`serve run serve_config.yaml` with the vllm engine, measured, then stopped."""
    import os
    import urllib.request

    env = {
        **os.environ,
        "CHATTERBOX_ENGINE": "vllm",
        "CHATTERBOX_MODEL_DIR": str(args.checkpoint),
        "VLLM_COMPILE": "true",
        "VLLM_MAX_BATCH_SIZE": "16",
        "CHATTERBOX_BENCH_FORCED_TOKENS": "150",
        "CHATTERBOX_GPU_MEMORY_UTILIZATION": str(args.gpu_memory_utilization),
    }
    server = subprocess.Popen(
        ["serve", "run", "serve_config.yaml"], env=env, start_new_session=True
    )
    try:
        for _ in range(200):
            time.sleep(3)
            try:
                with urllib.request.urlopen(f"{args.url}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                continue
        return asyncio.run(serve_part(args))
    finally:
        subprocess.run(["serve", "shutdown", "-y"], check=False)
        server.terminate()


def _machine() -> str:
    import platform

    try:
        import torch

        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        try:
            from importlib.metadata import version

            engine = f", vLLM {version('vllm')}"
        except Exception:  # vLLM not installed: the figure is still the machine's
            engine = ""
        return (
            f"{name}, torch {torch.__version__}{engine}, python {platform.python_version()}, {when}"
        )
    except ImportError:
        return platform.platform()


if __name__ == "__main__":
    main()
