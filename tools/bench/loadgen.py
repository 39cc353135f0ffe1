"""Closed-loop HTTP load: `concurrency` clients, each sending its next request when one ends.

Every request records its end-to-end latency, its time to first body byte, the audio
length the server reports and the server's own stage timings (`Server-Timing`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

SPEECH_PATH = "/v1/audio/speech"


@dataclass(frozen=True)
class Sample:
    """One request as the client saw it; `server` holds Server-Timing stages in seconds."""

    started: float
    latency_s: float
    ttfb_s: float
    status: int
    audio_s: float = 0.0
    server: dict[str, float] = field(default_factory=dict)


def parse_server_timing(header: str | None) -> dict[str, float]:
    """`"queue;dur=1.5, engine;dur=370"` -> `{"queue": 0.0015, "engine": 0.37}`."""
    stages: dict[str, float] = {}
    for part in (header or "").split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            stages[name] = float(rest[4:]) / 1000.0
    return stages


def make_client(base_url: str, concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4
    )
    return httpx.AsyncClient(base_url=base_url, timeout=600.0, limits=limits)


async def send_file(client: httpx.AsyncClient, text: str, fmt: str) -> Sample:
    """A whole-file request; the body is read to the end before the clock stops."""
    began = time.monotonic()
    async with client.stream(
        "POST", SPEECH_PATH, json={"input": text, "response_format": fmt}
    ) as r:
        ttfb = 0.0
        async for data in r.aiter_bytes():
            if data and not ttfb:
                ttfb = time.monotonic() - began
        latency = time.monotonic() - began
    return Sample(
        started=began,
        latency_s=latency,
        ttfb_s=ttfb or latency,
        status=r.status_code,
        audio_s=float(r.headers.get("x-audio-duration-seconds", 0.0)),
        server=parse_server_timing(r.headers.get("server-timing")),
    )


async def send_stream(client: httpx.AsyncClient, text: str, fmt: str, stream_format: str) -> Sample:
    """A streamed request (`audio` or `sse`); TTFB is the first body byte."""
    body = {"input": text, "response_format": fmt, "stream_format": stream_format}
    began = time.monotonic()
    ttfb = 0.0
    async with client.stream("POST", SPEECH_PATH, json=body) as r:
        async for data in r.aiter_bytes():
            if data and not ttfb:
                ttfb = time.monotonic() - began
    latency = time.monotonic() - began
    return Sample(started=began, latency_s=latency, ttfb_s=ttfb or latency, status=r.status_code)


async def closed_loop(
    client: httpx.AsyncClient,
    text_for: Callable[[int], str],
    concurrency: int,
    requests_per_worker: int,
    fmt: str,
    on_done: Callable[[], Any] = lambda: None,
) -> tuple[list[Sample], float]:
    """Run the load; returns every sample and the makespan (first send to last byte)."""

    async def worker(w: int) -> list[Sample]:
        out = []
        for k in range(requests_per_worker):
            out.append(await send_file(client, text_for(w + k * concurrency), fmt))
            on_done()
        return out

    began = time.monotonic()
    per_worker = await asyncio.gather(*(worker(w) for w in range(concurrency)))
    wall = time.monotonic() - began
    return [s for samples in per_worker for s in samples], wall
