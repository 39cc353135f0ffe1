"""Soak test: thousands of mixed requests, then each replica's memory growth and the errors.

    python -m tools.soak                      # local cluster, simulated engine
    python -m tools.soak --requests 5000 --concurrency 32 --json soak.json
    python -m tools.soak --url http://127.0.0.1:8000 --address auto   # a running app

Requests mix every response format, whole files, raw streams and SSE, several voices,
speeds and text lengths. A small share is deliberately bad (an engine-failure marker,
an out-of-range speed) and must fail with the expected 4xx/5xx; anything else that
fails is an error. Resident memory (VmRSS) of every replica process on this node is
read before, after a warm-up, and at the end; the target is at most +10 % from the
warm-up value, because allocators, caches and JIT code legitimately grow at first.

Memory is read from /proc, so only replicas on the node running the script are
measured: run it on the head node of a one-node cluster, or on a dev box.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import random
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from chatterbox_serve.audio import AudioFormat
from tools.replicas import list_replicas, rss_bytes

logger = logging.getLogger("chatterbox_serve.soak")

FAILURE_MARKER = "<<simulate-engine-failure>>"
_WORDS = (
    "the quick brown fox jumps over a lazy dog while seven bright stars shine "
    "above quiet hills and rivers run softly toward the distant sea"
).split()


@dataclass(frozen=True)
class Planned:
    """One request of the soak and the status it must get."""

    path: str
    body: dict[str, Any]
    expect: int
    kind: str  # file, audio-stream, sse, bad-input, engine-failure


@dataclass
class Tally:
    by_kind: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    deliberate_failures: int = 0
    latencies_s: list[float] = field(default_factory=list)


def plan_requests(n: int, voices: list[str], seed: int = 7) -> list[Planned]:
    """A reproducible mix of `n` requests."""
    rng = random.Random(seed)
    formats = [f.value for f in AudioFormat]
    plans = []
    for i in range(n):
        words = rng.choice((4, 12, 40, 120))
        text = " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."
        body: dict[str, Any] = {
            "input": text,
            "voice": rng.choice(voices),
            "response_format": rng.choice(formats),
            "speed": rng.choice((1.0, 1.0, 1.0, 0.9, 1.25)),
        }
        roll = rng.random()
        if roll < 0.01:
            body["input"] = f"{text} {FAILURE_MARKER}"
            plans.append(Planned("/v1/audio/speech", body, 500, "engine-failure"))
        elif roll < 0.02:
            body["speed"] = 9.0
            plans.append(Planned("/v1/audio/speech", body, 400, "bad-input"))
        elif roll < 0.35:
            plans.append(Planned("/v1/audio/speech/stream", body, 200, "audio-stream"))
        elif roll < 0.50:
            plans.append(Planned("/v1/audio/speech", {**body, "stream_format": "sse"}, 200, "sse"))
        else:
            plans.append(Planned("/v1/audio/speech", body, 200, "file"))
        if i % 97 == 0:
            body["seed"] = i
    return plans


async def _send(client: httpx.AsyncClient, plan: Planned, tally: Tally) -> None:
    began = time.monotonic()
    try:
        r = await client.post(plan.path, json=plan.body)
        ok = r.status_code == plan.expect and _body_ok(r, plan)
        detail = f"{plan.kind}: {r.status_code} {r.text[:200] if r.status_code >= 400 else ''}"
    except httpx.HTTPError as exc:
        ok, detail = False, f"{plan.kind}: {type(exc).__name__} {exc}"
    tally.latencies_s.append(time.monotonic() - began)
    tally.by_kind[plan.kind] += 1
    if len(tally.latencies_s) % 250 == 0:
        logger.info("soak: %d done, %d unexpected", len(tally.latencies_s), len(tally.unexpected))
    if not ok:
        tally.unexpected.append(detail)
    elif plan.expect != 200:
        tally.deliberate_failures += 1


def _body_ok(r: httpx.Response, plan: Planned) -> bool:
    if plan.expect != 200:
        return "error" in r.json()
    if plan.kind == "sse":
        return b'"speech.audio.done"' in r.content and b'"type":"error"' not in r.content
    return len(r.content) > 0


async def run_requests(url: str, plans: list[Planned], concurrency: int, tally: Tally) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120.0, limits=limits) as client:

        async def one(plan: Planned) -> None:
            async with gate:
                await _send(client, plan, tally)

        await asyncio.gather(*(one(p) for p in plans))


def memory_snapshot(app: str) -> dict[str, int]:
    """VmRSS in bytes of every replica of `app` on this node, by replica name."""
    return {f"{r.deployment}#{r.replica_id}": rss_bytes(r.pid) for r in list_replicas(app)}


def report(
    phases: dict[str, dict[str, int]], tally: Tally, seconds: float, n: int
) -> dict[str, Any]:
    """The figures docs/RELIABILITY.md quotes, as a dict."""
    warm, end = phases["after_warmup"], phases["end"]
    replicas = {}
    for name in sorted(set(phases["before"]) | set(warm) | set(end)):
        w, e = warm.get(name, 0), end.get(name, 0)
        replicas[name] = {
            "before_mib": round(phases["before"].get(name, 0) / 2**20, 1),
            "after_warmup_mib": round(w / 2**20, 1),
            "end_mib": round(e / 2**20, 1),
            "growth_after_warmup_pct": round(100 * (e - w) / w, 1) if w and e else None,
        }
    lat = sorted(tally.latencies_s)
    return {
        "requests": n,
        "seconds": round(seconds, 1),
        "by_kind": dict(tally.by_kind),
        "deliberate_failures": tally.deliberate_failures,
        "unexpected_errors": len(tally.unexpected),
        "unexpected_samples": tally.unexpected[:10],
        "latency_p50_s": round(lat[len(lat) // 2], 3) if lat else None,
        "latency_p99_s": round(lat[int(len(lat) * 0.99)], 3) if lat else None,
        "replicas": replicas,
        "memory_target_met": all(
            r["growth_after_warmup_pct"] is not None and r["growth_after_warmup_pct"] <= 10.0
            for r in replicas.values()
        ),
    }


def upload_voices(url: str, files: list[Path]) -> dict[str, str]:
    """Store each file as `soak-voice-<i>`; returns name -> sha256 of the bytes sent."""
    stored: dict[str, str] = {}
    with httpx.Client(base_url=url, timeout=60.0) as c:
        for i, path in enumerate(files):
            name, data = f"soak-voice-{i}", path.read_bytes()
            r = c.post(
                "/voices", data={"voice_name": name}, files={"voice_file": (path.name, data)}
            )
            if r.status_code != 201:
                raise SystemExit(f"could not store {path}: {r.status_code} {r.text}")
            stored[name] = hashlib.sha256(data).hexdigest()
    return stored


def count_lost_voices(url: str, stored: dict[str, str]) -> int:
    """Stored voices that are gone, changed, or no longer byte-identical on download."""
    lost = 0
    with httpx.Client(base_url=url, timeout=60.0) as c:
        for name, digest in stored.items():
            download = c.get(f"/voices/{name}/download")
            intact = hashlib.sha256(download.content).hexdigest() == digest
            if download.status_code != 200 or not intact:
                lost += 1
    return lost


def _start_local(settings: dict[str, str]) -> str:
    """Start a local Ray cluster and the app with the simulated engine; return its URL."""
    import ray
    from ray import serve

    from deployments.builder import build_app
    from tools.proxy_env import proxy_envelopes

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with proxy_envelopes():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {"engine": "simulated", "dotenv_path": None, "settings": settings}
    serve.run(build_app(args), name="chatterbox", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running app; omitted: start a local one")
    parser.add_argument("--address", default=None, help="Ray address when --url is given")
    parser.add_argument("--app", default="chatterbox", help="Serve application name")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--voices", default="default,alloy,nova,echo")
    parser.add_argument(
        "--voice-file",
        action="append",
        default=[],
        metavar="PATH",
        help="upload this reference audio as a library voice before the run, use it in "
        "the mix, and check after the run that it is intact (repeatable)",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="ENV=VALUE",
        help="setting for the local app (default CHATTERBOX_SIM_BASE_S=0.1)",
    )
    parser.add_argument("--step", type=int, default=250, help="requests between snapshots")
    parser.add_argument(
        "--malloc-arena-max",
        type=int,
        default=None,
        help="set MALLOC_ARENA_MAX for a local cluster's processes",
    )
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    if args.url:
        import ray

        ray.init(address=args.address or "auto", log_to_driver=False)
        url = args.url
    else:
        if args.malloc_arena_max:  # inherited by the raylet and every replica it starts
            os.environ["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
        settings = {
            "CHATTERBOX_SIM_BASE_S": "0.1",
            "VOICE_LIBRARY_DIR": tempfile.mkdtemp(prefix="soak-voices-"),
        }
        settings.update(dict(s.split("=", 1) for s in args.setting))
        url = _start_local(settings)
    stored = upload_voices(url, [Path(p) for p in args.voice_file])
    plans = plan_requests(args.warmup + args.requests, args.voices.split(",") + list(stored))
    tally = Tally()
    phases = {"before": memory_snapshot(args.app)}
    logger.info("soak: %d warm-up + %d requests against %s", args.warmup, args.requests, url)
    began = time.monotonic()
    asyncio.run(run_requests(url, plans[: args.warmup], args.concurrency, tally))
    phases["after_warmup"] = memory_snapshot(args.app)
    timeline = [phases["after_warmup"]]
    for start in range(args.warmup, len(plans), args.step):
        asyncio.run(run_requests(url, plans[start : start + args.step], args.concurrency, tally))
        timeline.append(memory_snapshot(args.app))
    time.sleep(2.0)  # let replicas finish releasing per-request buffers
    phases["end"] = memory_snapshot(args.app)
    result = report(phases, tally, time.monotonic() - began, len(plans))
    result["timeline_mib"] = {
        name: [round(snap.get(name, 0) / 2**20, 1) for snap in timeline]
        for name in sorted(set().union(*timeline))
    }
    result["timeline_step_requests"] = args.step
    result["stored_voices"] = len(stored)
    result["voices_lost"] = count_lost_voices(url, stored)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    if not args.url:
        import ray
        from ray import serve

        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
    ok = result["unexpected_errors"] == 0 and result["memory_target_met"]
    return 0 if ok and result["voices_lost"] == 0 else 1


__all__ = ["Planned", "Tally", "main", "plan_requests", "report"]

if __name__ == "__main__":
    sys.exit(main())
