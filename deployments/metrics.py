"""Custom Prometheus metrics, recorded through `ray.serve.metrics` in each replica.

Serve adds the `deployment`, `replica` and `application` tags and exports every metric
with a `ray_` prefix (counters also get `_total`) on each node's metrics port (8080 on
KubeRay pods). `METRICS` lists every metric defined here: the Grafana dashboard test
and the live-scrape test both walk it, so a new metric cannot be left off either.

Each deployment builds its own recorder in `__init__`, because metric objects belong
to the process that records them. The recorders read the `StageTimings` the pipeline
already computes; they measure nothing themselves except around the engine call.
"""

from __future__ import annotations

from collections import Counter as Counter_
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from fastapi import FastAPI
from ray.serve.metrics import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatterbox_serve.engines.base import SynthesisOutcome
from chatterbox_serve.errors import ChatterboxError
from chatterbox_serve.jobs import JobRecord, JobState, RunReport
from chatterbox_serve.speech import StageTimings

Kind = Literal["counter", "gauge", "histogram"]

# Bucket edges, in the unit of each metric.
_SECONDS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
_RTF = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0]
_COUNTS = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]


@dataclass(frozen=True)
class MetricSpec:
    """One custom metric: its registered name, kind, help text and tag keys."""

    name: str
    kind: Kind
    description: str
    tag_keys: tuple[str, ...] = ()

    @property
    def exported_name(self) -> str:
        """The name Prometheus sees: `ray_` prefix; counters end in `_total`."""
        return f"ray_{self.name}_total" if self.kind == "counter" else f"ray_{self.name}"


REQUESTS = MetricSpec(
    "chatterbox_requests",
    "counter",
    "HTTP requests by route, response format and status code.",
    ("route", "response_format", "status"),
)
AUDIO_SECONDS = MetricSpec(
    "chatterbox_audio_seconds", "counter", "Seconds of audio generated.", ("mode",)
)
REAL_TIME_FACTOR = MetricSpec(
    "chatterbox_real_time_factor",
    "histogram",
    "Processing seconds per second of audio, per request (below 1 is faster than real time).",
    ("mode",),
)
TIME_TO_FIRST_AUDIO = MetricSpec(
    "chatterbox_time_to_first_audio_seconds",
    "histogram",
    "Seconds from the pipeline start to the first encoded audio, per request.",
    ("mode",),
)
CHUNKS_PER_REQUEST = MetricSpec(
    "chatterbox_chunks_per_request", "histogram", "Text chunks per request.", ("mode",)
)
ENGINE_BATCH_SIZE = MetricSpec(
    "chatterbox_engine_batch_size", "histogram", "Items per engine call."
)
ENGINE_CALL_SECONDS = MetricSpec(
    "chatterbox_engine_call_seconds", "histogram", "Wall time of one engine call."
)
QUEUE_WAIT = MetricSpec(
    "chatterbox_engine_queue_wait_seconds",
    "histogram",
    "Seconds an item waited in the model replica's batch queue before its engine call.",
)
CONDITIONALS_CACHE = MetricSpec(
    "chatterbox_conditionals_cache_lookups",
    "gauge",
    "Voice conditionals cache lookups since the replica started, by result (hit or miss); "
    "taken from the engine's info()['conditionals_cache'], 0 for engines without a cache.",
    ("result",),
)
ENGINE_ERRORS = MetricSpec(
    "chatterbox_engine_errors",
    "counter",
    "Engine failures: scope=call for a whole failed call, scope=item for one failed item.",
    ("scope", "error"),
)
JOBS_BY_STATE = MetricSpec(
    "chatterbox_jobs",
    "gauge",
    "Long-text jobs in the job store, by state; set by each job worker replica.",
    ("state",),
)
JOB_CHUNKS = MetricSpec(
    "chatterbox_job_chunks",
    "counter",
    "Long-text job chunks finished, by outcome (done or failed).",
    ("outcome",),
)
JOB_SECONDS = MetricSpec(
    "chatterbox_job_seconds",
    "histogram",
    "Wall seconds of one run of a long-text job on a worker, by how the run ended.",
    ("outcome",),
)

METRICS: tuple[MetricSpec, ...] = (
    REQUESTS,
    AUDIO_SECONDS,
    REAL_TIME_FACTOR,
    TIME_TO_FIRST_AUDIO,
    CHUNKS_PER_REQUEST,
    ENGINE_BATCH_SIZE,
    ENGINE_CALL_SECONDS,
    QUEUE_WAIT,
    CONDITIONALS_CACHE,
    ENGINE_ERRORS,
    JOBS_BY_STATE,
    JOB_CHUNKS,
    JOB_SECONDS,
)


def _keys(spec: MetricSpec) -> tuple[str]:
    # Ray annotates `tag_keys` as `Tuple[str]` but means any length.
    return cast("tuple[str]", spec.tag_keys)


def _counter(spec: MetricSpec) -> Counter:
    return Counter(spec.name, description=spec.description, tag_keys=_keys(spec))


def _gauge(spec: MetricSpec) -> Gauge:
    return Gauge(spec.name, description=spec.description, tag_keys=_keys(spec))


def _histogram(spec: MetricSpec, boundaries: list[float]) -> Histogram:
    return Histogram(
        spec.name, description=spec.description, boundaries=boundaries, tag_keys=_keys(spec)
    )


class IngressMetrics:
    """Counts HTTP requests; `install` makes it the outermost middleware of the app."""

    def __init__(self) -> None:
        self._requests = _counter(REQUESTS)

    def install(self, app: FastAPI) -> None:
        """Count every request once it ends, with the status it was answered with.

        Call it after every route is added. The route tag is the request path when a
        route serves it and `other` otherwise, so scanners cannot blow up the series
        count. The speech routes leave the chosen format in `request.state`.
        """
        known = frozenset(_route_paths(app.routes))
        app.add_middleware(_CountRequests, counter=self._requests, known=known)


def _route_paths(routes: Iterable[Any], prefix: str = "") -> Iterator[str]:
    """Every route path, including those of routers added with `include_router`.

    FastAPI 0.137 and later keep an included router as one node (with
    `original_router` and the include prefix) instead of copying its routes into
    `app.routes`, so a flat walk would count every speech request as `other`.
    """
    for route in routes:
        router = getattr(route, "original_router", None)
        if router is not None:
            context = getattr(route, "include_context", None)
            yield from _route_paths(router.routes, prefix + getattr(context, "prefix", ""))
        elif getattr(route, "path", None) is not None:
            yield prefix + str(route.path)


class _CountRequests:
    """Plain ASGI, not `BaseHTTPMiddleware`: streams pass through untouched."""

    def __init__(self, app: ASGIApp, counter: Counter, known: frozenset[str]) -> None:
        self.app = app
        self.counter = counter
        self.known = known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})  # the dict behind `request.state`
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = str(scope.get("path", ""))
            self.counter.inc(
                tags={
                    "route": path if path in self.known else "other",
                    "response_format": str(state.get("response_format") or "none"),
                    "status": str(status),
                }
            )


class SpeechMetrics:
    """Per-request audio figures, recorded by the audio deployment from `StageTimings`."""

    def __init__(self) -> None:
        self._audio_s = _counter(AUDIO_SECONDS)
        self._rtf = _histogram(REAL_TIME_FACTOR, _RTF)
        self._ttfa = _histogram(TIME_TO_FIRST_AUDIO, _SECONDS)
        self._chunks = _histogram(CHUNKS_PER_REQUEST, _COUNTS)

    def record(self, mode: Literal["file", "stream"], audio_s: float, t: StageTimings) -> None:
        tags: dict[str, str] = {"mode": mode}
        if audio_s > 0:
            self._audio_s.inc(audio_s, tags=tags)
            self._rtf.observe(t.total_s / audio_s, tags=tags)
        self._ttfa.observe(t.first_audio_s, tags=tags)
        self._chunks.observe(t.chunks, tags=tags)


class EngineMetrics:
    """Engine-call figures, recorded by the model deployment around each batch."""

    def __init__(self) -> None:
        self._batch = _histogram(ENGINE_BATCH_SIZE, _COUNTS)
        self._call_s = _histogram(ENGINE_CALL_SECONDS, _SECONDS)
        self._wait = _histogram(QUEUE_WAIT, [0.001, 0.005, *_SECONDS])
        self._cache = _gauge(CONDITIONALS_CACHE)
        self._errors = _counter(ENGINE_ERRORS)
        self.record_cache({})

    def record_call(
        self, waits_s: Sequence[float], call_s: float, outcomes: Sequence[SynthesisOutcome]
    ) -> None:
        self._batch.observe(len(waits_s))
        self._call_s.observe(call_s)
        for wait in waits_s:
            self._wait.observe(max(wait, 0.0))
        for outcome in outcomes:
            if isinstance(outcome, ChatterboxError):
                self.record_error("item", outcome)

    def record_error(self, scope: Literal["call", "item"], exc: BaseException) -> None:
        self._errors.inc(tags={"scope": scope, "error": type(exc).__name__})

    def record_cache(self, info: Mapping[str, Any]) -> None:
        """Mirror the engine's cumulative cache counters (`hits`, `misses`) into the gauge."""
        cache = info.get("conditionals_cache")
        counts = cache if isinstance(cache, Mapping) else {}
        self._cache.set(float(counts.get("hits", 0)), tags={"result": "hit"})
        self._cache.set(float(counts.get("misses", 0)), tags={"result": "miss"})


class JobMetrics:
    """Long-text job figures, recorded by the job worker deployment."""

    def __init__(self) -> None:
        self._states = _gauge(JOBS_BY_STATE)
        self._chunks = _counter(JOB_CHUNKS)
        self._seconds = _histogram(
            JOB_SECONDS, [1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0]
        )

    def chunk(self, outcome: str) -> None:
        self._chunks.inc(tags={"outcome": outcome})

    def run(self, report: RunReport) -> None:
        self._seconds.observe(report.seconds, tags={"outcome": report.outcome})

    def states(self, records: Iterable[JobRecord]) -> None:
        counts = Counter_(r.state.value for r in records)
        for state in JobState:
            self._states.set(float(counts.get(state.value, 0)), tags={"state": state.value})
