"""The original API's smaller operational routes: info, endpoints, memory, request status.

`/status/progress`, `/status/history` and `/status/statistics` describe the speech
requests of the ingress replica that answers (each replica keeps its own recent
requests, in `RequestLog`); the cluster-wide view is `GET /status`. `/memory/*`
describes and tunes this replica's process; its alert thresholds live in the app's
state, per replica, as the original's did per process.

A tenant sees only its own requests here; operators (`ADMIN_API_KEYS`) see all, and
alone may reset, clear, retune, and read process memory.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from chatterbox_serve.errors import InvalidRequestError
from chatterbox_serve.protocol import OPERATOR_RESPONSES
from deployments.auth import OWNER_STATE, is_operator, request_owner, require_operator
from deployments.cluster_status import host_memory
from deployments.routes import State

VERSION = "0.1.0"
router = APIRouter(tags=["Status"], responses=OPERATOR_RESPONSES)


@dataclass
class RequestRecord:
    request_id: int
    path: str
    status: str
    start_time: float
    end_time: float | None = None
    status_code: int | None = None
    # The ASGI scope's `state`, where the API-key middleware (which runs inside the
    # request log) leaves the caller's owner id once it has decided it.
    scope_state: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def owner(self) -> str | None:
        owner: str | None = self.scope_state.get(OWNER_STATE)
        return owner

    def public(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "path": self.path,
            "status": self.status,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "status_code": self.status_code,
            "duration_seconds": round(self.duration_seconds, 4),
        }

    @property
    def duration_seconds(self) -> float:
        return (self.end_time or time.time()) - self.start_time


@dataclass
class RequestLog:
    """Speech requests of this replica: those in flight and the last `keep` finished."""

    keep: int = 50
    total: int = 0
    active: dict[int, RequestRecord] = field(default_factory=dict)
    history: deque[RequestRecord] = field(default_factory=deque)

    @contextmanager
    def track(self, path: str, scope_state: dict[str, Any]) -> Iterator[RequestRecord]:
        self.total += 1
        record = RequestRecord(self.total, path, "processing", time.time(), None, None, scope_state)
        self.active[record.request_id] = record
        try:
            yield record
        finally:
            self.active.pop(record.request_id, None)
            record.end_time = time.time()
            ok = record.status_code is not None and record.status_code < 400
            record.status = "completed" if ok else "error"
            self.history.append(record)
            while len(self.history) > self.keep:
                self.history.popleft()

    def statistics(self, viewer: Viewer) -> dict[str, Any]:
        """Counts over what `viewer` may see: everything for operators, else its own."""
        history = [r for r in self.history if viewer.sees(r)]
        done = [r for r in history if r.status == "completed"]
        failed = sum(1 for r in history if r.status == "error")
        active = [r for r in self.active.values() if viewer.sees(r)]
        return {
            "total_requests": self.total if viewer.everyone else len(history) + len(active),
            "completed_requests": len(done),
            "error_requests": failed,
            "success_rate": 100.0 * len(done) / max(1, len(done) + failed),
            "average_duration_seconds": sum(r.duration_seconds for r in done) / len(done)
            if done
            else 0.0,
            "is_processing": bool(active),
        }

    def recent(self, limit: int, viewer: Viewer) -> list[dict[str, Any]]:
        mine = [r for r in self.history if viewer.sees(r)]
        return [r.public() for r in mine[-limit:][::-1]]

    def running(self, viewer: Viewer) -> list[RequestRecord]:
        return [r for r in self.active.values() if viewer.sees(r)]


@dataclass(frozen=True)
class Viewer:
    """Whose requests a caller may see: every tenant's (operators) or its own."""

    owner: str | None
    everyone: bool

    @classmethod
    def of(cls, request: Request) -> Viewer:
        return cls(request_owner(request), is_operator(request))

    def sees(self, record: RequestRecord) -> bool:
        return self.everyone or (self.owner is not None and record.owner == self.owner)


class RequestLogMiddleware:
    """Records speech requests (paths containing `/speech` or `/tts`) in the `RequestLog`."""

    def __init__(self, app: ASGIApp, log: RequestLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or scope.get("method") != "POST" or not _speech(path):
            await self.app(scope, receive, send)
            return
        with self.log.track(path, scope.setdefault("state", {})) as record:

            async def send_status(message: Any) -> None:
                if message["type"] == "http.response.start":
                    record.status_code = int(message["status"])
                await send(message)

            await self.app(scope, receive, send_status)


def _speech(path: str) -> bool:
    return "/audio/speech" in path or path.startswith("/tts")


def _log(request: Request) -> RequestLog:
    log: RequestLog = request.app.state.request_log
    return log


def _thresholds(request: Request) -> dict[str, float]:
    if not hasattr(request.app.state, "memory_alerts"):
        request.app.state.memory_alerts = {"cpu_memory_percent": 85.0, "gpu_memory_mb": 8192.0}
    alerts: dict[str, float] = request.app.state.memory_alerts
    return alerts


def _memory() -> dict[str, Any]:
    mem = host_memory()
    total, free = mem.get("node_total_bytes", 0), mem.get("node_available_bytes", 0)
    percent = 100.0 * (total - free) / total if total else 0.0
    return {
        **mem,
        "cpu_memory_percent": round(percent, 2),
        "rss_mb": mem.get("rss_bytes", 0) / 2**20,
    }


F = TypeVar("F", bound=Callable[..., Any])


def _add(
    paths: tuple[str, ...], method: str = "GET", *, operator: bool = False
) -> Callable[[F], F]:
    """Register `endpoint` at every path; `operator` routes need an operator key (403)."""
    dependencies = [Depends(require_operator)] if operator else []

    def register(endpoint: F) -> F:
        for i, path in enumerate(paths):
            router.add_api_route(
                path,
                endpoint,
                methods=[method],
                include_in_schema=i == 0,
                dependencies=dependencies,
            )
        return endpoint

    return register


@_add(("/info", "/v1/info", "/api/info"))
def api_info(request: Request, state: State) -> dict[str, Any]:
    """Name, version, engine, the caller's requests here; memory for operators only."""
    log, viewer = _log(request), Viewer.of(request)
    info: dict[str, Any] = {
        "api_name": "chatterbox-serve",
        "version": VERSION,
        "api_version": VERSION,
        "description": "Chatterbox TTS on Ray Serve, with the original Chatterbox API.",
        "status": "operational",
        "engine": state.engine_name,
        "statistics": log.statistics(viewer),
        "recent_requests": log.recent(3, viewer),
        "long_text_jobs": state.jobs is not None,
    }
    if viewer.everyone:  # process ids and host figures are for operators
        info["memory_info"] = _memory()
    return info


@_add(("/endpoints", "/v1/endpoints", "/routes"))
def endpoints(request: Request) -> dict[str, Any]:
    """Every route, grouped as the original does: a primary path and its aliases."""
    groups: dict[tuple[Any, frozenset[str]], list[APIRoute]] = {}
    for route in _api_routes(request.app.routes):
        if isinstance(route, APIRoute):
            groups.setdefault((route.endpoint, frozenset(route.methods or ())), []).append(route)
    mappings: dict[str, dict[str, Any]] = {}
    for routes in groups.values():
        primary = next((r for r in routes if r.include_in_schema), routes[0])
        aliases = [r.path for r in routes if r is not primary]
        key = f"{','.join(sorted(primary.methods or ()))} {primary.path}"
        mappings[key] = {"primary": primary.path, "aliases": aliases, "total_paths": len(routes)}
    return {
        "total_endpoints": len(mappings),
        "total_aliases": sum(len(m["aliases"]) for m in mappings.values()),
        "mappings": mappings,
    }


def _api_routes(routes: list[Any]) -> Iterator[Any]:
    # FastAPI 0.165 keeps an included router as one entry holding the original router.
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _api_routes(list(inner.routes))
        else:
            yield route


@_add(("/memory/reset", "/v1/memory/reset"), "POST", operator=True)
def memory_reset(request: Request, confirm: bool = False) -> dict[str, Any]:
    """Collect garbage and forget this replica's request history; needs `confirm=true`."""
    if not confirm:
        raise InvalidRequestError(
            "Memory reset requires confirmation (confirm=true).", param="confirm"
        )
    log = _log(request)
    previous = log.total
    log.history.clear()
    return {
        "status": "success",
        "previous_request_counter": previous,
        "collected_objects": gc.collect(),
        "memory_info": _memory(),
    }


@_add(("/memory/config", "/v1/memory/config"))
def memory_config(request: Request, state: State) -> dict[str, Any]:
    chunking = state.settings.chunking
    return {
        "config": {
            "max_chunk_length": chunking.max_chunk_length,
            "max_total_length": chunking.max_total_length,
            "long_text_max_length": state.settings.jobs.max_length,
        },
        "alert_thresholds": _thresholds(request),
    }


@_add(("/memory/config", "/v1/memory/config"), "POST", operator=True)
def update_memory_config(
    request: Request,
    cpu_memory_percent: Annotated[float | None, Query(ge=50, le=95)] = None,
    gpu_memory_mb: Annotated[float | None, Query(ge=1024, le=32768)] = None,
) -> dict[str, Any]:
    """Change this replica's memory alert thresholds (not persisted)."""
    thresholds = _thresholds(request)
    old = dict(thresholds)
    if cpu_memory_percent is not None:
        thresholds["cpu_memory_percent"] = cpu_memory_percent
    if gpu_memory_mb is not None:
        thresholds["gpu_memory_mb"] = gpu_memory_mb
    return {
        "status": "success",
        "message": "Memory alert thresholds updated",
        "old_thresholds": old,
        "new_thresholds": dict(thresholds),
        "note": "Per ingress replica; reset when the replica restarts.",
    }


@_add(("/memory/recommendations", "/v1/memory/recommendations"))
def memory_recommendations(request: Request) -> dict[str, Any]:
    memory = _memory()
    percent = memory["cpu_memory_percent"]
    limit = _thresholds(request)["cpu_memory_percent"]
    recommendations = []
    if percent > limit:
        recommendations.append(
            {
                "type": "cpu_memory",
                "priority": "high",
                "title": "High node memory use",
                "description": f"Node memory use is {percent:.1f}% (alert at {limit:.0f}%).",
                "actions": [
                    "Lower CHATTERBOX_MAX_CHUNKS_PER_REQUEST or MAX_TOTAL_LENGTH",
                    "Add nodes, or cap replicas per node with ray_actor_options",
                ],
            }
        )
    return {
        "memory_info": memory,
        "recommendations": recommendations,
        "recommendation_count": len(recommendations),
        "has_critical_issues": any(r["priority"] == "high" for r in recommendations),
    }


# `/processing` and `/processing/status` are the original's aliases of its processing status.
@_add(("/status/progress", "/v1/status/progress", "/progress", "/processing", "/processing/status"))
def status_progress(request: Request) -> dict[str, Any]:
    """The caller's speech requests this replica is working on now."""
    active = _log(request).running(Viewer.of(request))
    if not active:
        return {"is_processing": False, "status": "idle", "message": "No active TTS requests"}
    oldest = min(active, key=lambda r: r.start_time)
    return {
        "is_processing": True,
        "status": "processing",
        "active_requests": len(active),
        "duration_seconds": round(oldest.duration_seconds, 3),
        "path": oldest.path,
    }


@_add(("/status/history", "/v1/status/history", "/history"))
def status_history(
    request: Request, limit: Annotated[int, Query(ge=1, le=50)] = 10
) -> dict[str, Any]:
    history = _log(request).recent(limit, Viewer.of(request))
    return {"request_history": history, "total_records": len(history), "limit": limit}


@_add(("/status/statistics", "/v1/status/statistics", "/stats"))
def status_statistics(request: Request) -> dict[str, Any]:
    return _log(request).statistics(Viewer.of(request))


@_add(("/status/history/clear", "/v1/status/history/clear"), "POST", operator=True)
def clear_status_history(request: Request, confirm: bool = False) -> dict[str, Any]:
    if not confirm:
        raise InvalidRequestError(
            "History clear requires confirmation (confirm=true).", param="confirm"
        )
    _log(request).history.clear()
    return {"success": True, "message": "TTS request history cleared successfully"}
