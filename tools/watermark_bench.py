"""What the Perth watermark costs and how well it survives: `python -m tools.watermark_bench`.

Three measurements, one JSON (`benchmarks/results/watermark-<machine>.json` by default):

- cost: CPU seconds of marking per second of audio, for the two places it could go in
  the audio deployment: on each engine chunk before the speed change (what the service
  does) and on the output after it; one torch thread, as on a one-CPU audio replica.
- detection: `/v1/audio/speech` output of real speech (the Chatterbox samples, through
  the route's pipeline in-process) in every response format and at several speeds, checked with
  perth's decoder; the share detected, and the share of unmarked output (WATERMARK=off)
  detected, per format. Also perth's scores for the simulated engine's unmarked tones.
- served: the Serve app with the simulated engine, sentences at 16 clients, with the
  watermark on and off, alternating, in the same run; audio seconds per wall second, and
  the ratio of the means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chatterbox_serve.audio import SAMPLE_RATE, AudioFormat, change_speed, decode_audio
from chatterbox_serve.audio.decoding import decode_untrusted
from chatterbox_serve.audio.watermark import DETECTION_THRESHOLD, load_watermarker
from chatterbox_serve.config import load_settings
from chatterbox_serve.engines.base import (
    SynthesisOutcome,
    SynthesisRequest,
    SynthesisResult,
    TTSEngine,
)
from chatterbox_serve.engines.simulated import render_tone_speech
from chatterbox_serve.generation import GenerationParameters

SHARED = Path(__file__).resolve().parents[2] / "shared"
SPEEDS = (0.5, 1.0, 1.5, 2.0)
TEXTS = (
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "A second sentence, a little longer than the first, to be spoken clearly.",
    "Numbers like three and seven, and a question at the end: is it marked?",
    "Short and plain.",
)


def speech_samples() -> np.ndarray:
    """The Chatterbox voice samples (../shared/data/voices), 24 kHz mono, end to end."""
    files = sorted((SHARED / "data" / "voices").glob("*.mp3"))
    clips = [decode_untrusted(f.read_bytes(), sample_rate=SAMPLE_RATE).samples[0] for f in files]
    return np.concatenate(clips)


class SpeechSampleEngine(TTSEngine):
    """Real recorded speech, 60 ms a character, cut from the samples; streams in 0.3 s
    pieces when built with `streams=True`. Perth's detector is trained on speech, so
    detection figures and "off means not detected" need speech, not the simulated tones."""

    name = "speech-samples"

    def __init__(self, streams: bool = False) -> None:
        self.streams_audio = streams
        self._speech = speech_samples()

    def _clip(self, r: SynthesisRequest) -> SynthesisResult:
        n = min(len(self._speech), len(r.text) * SAMPLE_RATE * 6 // 100)
        start = (len(r.text) * 7919) % (len(self._speech) - n + 1)
        audio = self._speech[start : start + n].copy()
        return SynthesisResult(audio, SAMPLE_RATE, len(r.text), n // 960)

    async def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[SynthesisOutcome]:
        return [self._clip(r) for r in requests]

    async def synthesize_stream(self, request: SynthesisRequest) -> AsyncIterator[SynthesisResult]:
        whole = self._clip(request)
        step = int(0.3 * SAMPLE_RATE)
        for i in range(0, len(whole.audio), step):
            last = i + step >= len(whole.audio)
            piece = whole.audio[i : i + step]
            yield SynthesisResult(piece, SAMPLE_RATE, whole.input_tokens, 0, partial=not last)


def response_samples(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    """A `/v1/audio/speech` body as mono float samples and their rate."""
    if fmt == AudioFormat.PCM.value:
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0, SAMPLE_RATE
    samples, rate, _ = decode_audio(data)
    return samples[0], rate


def measure_cost(speech: np.ndarray, repeats: int) -> dict[str, Any]:
    """CPU s per audio s of marking, before and after the speed change, one torch thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    marker = load_watermarker()
    marker.apply(speech[:SAMPLE_RATE])  # librosa's and torch's first-call costs
    clips = [speech[i : i + 4 * SAMPLE_RATE] for i in range(0, len(speech), 4 * SAMPLE_RATE)]
    rows = []
    try:
        for speed in (1.0, 0.5, 2.0):
            stretched = [change_speed(c, speed) for c in clips]
            out_s = sum(len(s) for s in stretched) / SAMPLE_RATE
            row: dict[str, Any] = {"speed": speed, "output_audio_s": round(out_s, 2)}
            for place, inputs in (("before_speed", clips), ("after_speed", stretched)):
                cpu = time.process_time()
                for _ in range(repeats):
                    for clip in inputs:
                        marker.apply(clip)
                spent = (time.process_time() - cpu) / repeats
                row[f"{place}_cpu_s_per_output_audio_s"] = round(spent / out_s, 4)
            rows.append(row)
    finally:
        torch.set_num_threads(threads)
    return {"torch_threads": 1, "repeats": repeats, "clip_s": 4.0, "rows": rows}


async def measure_detection() -> dict[str, Any]:
    """Detection of `/v1/audio/speech` output: the route's own pipeline and request
    model (as tools/bench/baseline.py drives them), real speech, every format and speed."""
    from chatterbox_serve.protocol import SpeechRequest
    from chatterbox_serve.speech import SpeechPipeline
    from chatterbox_serve.voices.resolve import EmptyVoiceLibrary, resolve_voice
    from tools.bench.direct import DirectSubmitter

    marker = load_watermarker()
    engine = SpeechSampleEngine()
    voice = resolve_voice(None, EmptyVoiceLibrary())
    formats: dict[str, Any] = {}
    for watermark in ("on", "off"):
        settings = load_settings({"WATERMARK": watermark}, dotenv_path=None)
        pipeline = SpeechPipeline(settings, DirectSubmitter(engine))
        for fmt in AudioFormat:
            scores = []
            for speed in SPEEDS if watermark == "on" else (1.0,):
                for i, text in enumerate(TEXTS):
                    body = {"input": text, "response_format": fmt.value, "speed": speed}
                    request = SpeechRequest.model_validate(body)
                    order = request.to_order(settings, voice, f"wm-{i}", streaming=False)
                    rendered = await pipeline.render(order)
                    samples, rate = response_samples(rendered.data, fmt.value)
                    scores.append(marker.confidence(samples, rate))
            key = "marked" if watermark == "on" else "unmarked"
            formats.setdefault(fmt.value, {})[key] = _rates(scores)
    tones = [
        marker.confidence(render_tone_speech(_seeded(t, s), 15.0)) for t in TEXTS for s in range(5)
    ]
    return {
        "threshold": DETECTION_THRESHOLD,
        "marked_speeds": list(SPEEDS),
        "texts": len(TEXTS),
        "per_format": formats,
        "simulated_tones_unmarked": _rates(tones),
    }


def _rates(scores: list[float]) -> dict[str, Any]:
    return {
        "n": len(scores),
        "detected": round(sum(s >= DETECTION_THRESHOLD for s in scores) / len(scores), 4),
        "min": round(min(scores), 4),
        "mean": round(float(np.mean(scores)), 4),
        "max": round(max(scores), 4),
    }


async def _served_level(base_url: str, concurrency: int, rounds: int) -> dict[str, Any]:
    from tools.bench.loadgen import closed_loop, make_client
    from tools.bench.options import SHORT_TEXT

    async with make_client(base_url, concurrency) as client:
        await closed_loop(client, lambda i: SHORT_TEXT, concurrency, 1, "mp3")  # warm-up
        samples, wall = await closed_loop(client, lambda i: SHORT_TEXT, concurrency, rounds, "mp3")
    ok = [s for s in samples if s.status == 200]
    audio_s = sum(s.audio_s for s in ok)
    return {
        "requests": len(samples),
        "ok": len(ok),
        "audio_s_per_wall_s": round(audio_s / wall, 2),
        "p50_s": round(float(np.percentile([s.latency_s for s in ok], 50)), 3),
    }


def measure_served(concurrency: int, rounds: int, num_cpus: int, runs: int) -> dict[str, Any]:
    """The Serve app with the simulated engine (the README bench's cost model), with the
    watermark on and off, alternating (on, off, on, off, ...), so drift in what else the
    machine runs falls on both alike."""
    from tools.bench.app import serve_app
    from tools.bench.options import BenchOptions

    base = BenchOptions().app_settings()
    levels: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    for _ in range(runs):
        for watermark in ("on", "off"):
            for attempt in range(3):
                try:
                    with serve_app({**base, "WATERMARK": watermark}, num_cpus) as running:
                        level = asyncio.run(_served_level(running.base_url, concurrency, rounds))
                    break
                except RuntimeError:  # on a shared box, Serve's proxy can lose its free port
                    if attempt == 2:
                        raise
            levels[watermark].append(level)

    def mean(watermark: str) -> float:
        return float(np.mean([lv["audio_s_per_wall_s"] for lv in levels[watermark]]))

    return {
        "workload": "sentence, mp3, whole files",
        "concurrency": concurrency,
        "rounds": rounds,
        "num_cpus": num_cpus,
        "settings": {k: v for k, v in base.items() if k != "JOBS_URL"},
        "watermark_on": levels["on"],
        "watermark_off": levels["off"],
        "on_over_off": round(mean("on") / mean("off"), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/)")
    parser.add_argument("--machine", default="cpu-2core", help="a name for this machine")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2, help="on/off pairs of served runs")
    parser.add_argument("--skip-served", action="store_true", help="no Ray: cost and detection")
    args = parser.parse_args(argv)
    out = args.out or Path("benchmarks/results") / f"watermark-{args.machine}.json"
    speech = speech_samples()
    report: dict[str, Any] = {
        "meta": {
            "machine": args.machine,
            "processor": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "network": "resemble-perth 1.0.1, perth_net_250000 (implicit)",
            "speech_s": round(len(speech) / SAMPLE_RATE, 2),
        },
        "cost": measure_cost(speech, args.repeats),
        "detection": asyncio.run(measure_detection()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    if not args.skip_served:
        report["served"] = measure_served(args.concurrency, args.rounds, args.num_cpus, args.runs)
        out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def _seeded(text: str, seed: int) -> SynthesisRequest:
    return SynthesisRequest(text=text, language="en", generation=GenerationParameters(seed=seed))
