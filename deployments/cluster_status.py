"""Cluster-wide `/status` and `/memory`: what every replica reports, plus Serve's own view.

A Serve handle cannot address one particular replica, so replicas push instead of
being polled: each starts a `StatusReporter`, a daemon thread that every `period_s`
sends its load (requests in flight and queued), process memory and GPU memory to a
`StatusBoard`, one small named Ray actor per application (0 CPUs). The ingress reads
the board and `serve.status()` (replica states and health, from the controller) and
joins them per deployment. A report older than `max_age_s` belongs to a replica that
is gone, and is dropped.

Figures are read, never configured: RSS from `/proc/self/status`, node memory from
`/proc/meminfo`, GPU memory from NVML (installed with vLLM) or, failing that, from
torch in a process that already holds a CUDA context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import ray
from ray import serve
from starlette.types import ASGIApp, Receive, Scope, Send

from deployments.streams import FlowLedger

logger = logging.getLogger("ray.serve")

BOARD_NAMESPACE = "chatterbox-serve"


class StatusSource(Protocol):
    """What the `/status` and `/memory` routes call."""

    async def status(self) -> dict[str, Any]: ...

    async def memory(self) -> dict[str, Any]: ...


@dataclass
class ReplicaLoad:
    """Requests inside this replica, and how many of them are past its own queue.

    Mutable and replica-local; it never crosses a handle. Only the model deployment
    has a queue of its own (`@serve.batch`), so only it sets `has_queue`; elsewhere a
    request starts the moment Serve hands it over.
    """

    in_flight: int = 0
    busy: int = 0
    has_queue: bool = False
    # The ingress's paced responses (deployments/streams.py), shown per replica in /status.
    flows: FlowLedger | None = None

    @property
    def queued(self) -> int:
        return max(self.in_flight - self.busy, 0) if self.has_queue else 0

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    @contextlib.contextmanager
    def running(self, n: int) -> Iterator[None]:
        self.busy += n
        try:
            yield
        finally:
            self.busy -= n


class LoadTrackingMiddleware:
    """Counts an HTTP request in flight until its last byte is sent (plain ASGI)."""

    def __init__(self, app: ASGIApp, load: ReplicaLoad) -> None:
        self.app = app
        self.load = load

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.load.track():
            await self.app(scope, receive, send)


def host_memory() -> dict[str, int]:
    """This process's resident and peak memory, and its node's total and available memory."""
    out: dict[str, int] = {}
    for path, keys in (
        ("/proc/self/status", {"VmRSS": "rss_bytes", "VmHWM": "peak_rss_bytes"}),
        ("/proc/meminfo", {"MemTotal": "node_total_bytes", "MemAvailable": "node_available_bytes"}),
    ):
        with contextlib.suppress(OSError), open(path) as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in keys:
                    out[keys[key]] = int(rest.split()[0]) * 1024  # values are in kB
    return out


def gpu_memory() -> list[dict[str, int]]:
    """Used, free and total memory of each GPU Ray gave this replica; [] without one.

    NVML reports the whole device, which is what matters when vLLM's engine core runs
    in a child process. torch is only asked when this process already has a CUDA
    context, because creating one would itself take GPU memory.
    """
    ids = [int(i) for i in ray.get_gpu_ids() if str(i).isdigit()]
    if not ids:
        return []
    try:
        import pynvml

        pynvml.nvmlInit()
        out = []
        for i in ids:
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i))
            out.append(
                {
                    "index": i,
                    "used_bytes": int(info.used),
                    "free_bytes": int(info.free),
                    "total_bytes": int(info.total),
                }
            )
        return out
    except Exception:  # no NVML library or driver: fall back to torch
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_initialized():
            return []
        out = []
        for local in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(local)
            out.append(
                {
                    "index": ids[local] if local < len(ids) else local,
                    "used_bytes": int(total - free),
                    "free_bytes": int(free),
                    "total_bytes": int(total),
                }
            )
        return out


@ray.remote(num_cpus=0)
class StatusBoard:
    """The latest report of every replica of one application."""

    def __init__(self) -> None:
        self._reports: dict[str, dict[str, Any]] = {}

    def report(self, replica_id: str, report: dict[str, Any]) -> None:
        self._reports[replica_id] = report

    def snapshot(self, max_age_s: float) -> list[dict[str, Any]]:
        now = time.time()
        for key in [k for k, r in self._reports.items() if now - r["reported_at"] > max_age_s]:
            del self._reports[key]
        return list(self._reports.values())


def status_board(app_name: str) -> Any:
    """The application's board, created by whichever replica asks first."""
    # Detached, so it outlives the replica that happened to create it.
    return StatusBoard.options(  # type: ignore[attr-defined]
        name=f"status-board:{app_name}",
        namespace=BOARD_NAMESPACE,
        get_if_exists=True,
        lifetime="detached",
    ).remote()


class StatusReporter:
    """Pushes this replica's load and memory to the board from a daemon thread."""

    def __init__(self, load: ReplicaLoad, period_s: float = 2.0) -> None:
        ctx = serve.get_replica_context()
        self.load = load
        self.replica_id = ctx.replica_id.unique_id
        self.deployment = ctx.deployment
        self.app_name = ctx.app_name
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-reporter", daemon=True)
        self._thread.start()

    def snapshot(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "replica_id": self.replica_id,
            "node_ip": ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
            "pid": os.getpid(),
            "in_flight": self.load.in_flight,
            "queued": self.load.queued,
            "streams": self.load.flows.figures() if self.load.flows is not None else None,
            "host_memory": host_memory(),
            "gpus": gpu_memory(),
            "reported_at": time.time(),
        }

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        board = None
        while True:
            try:
                board = board or status_board(self.app_name)
                ray.get(board.report.remote(self.replica_id, self.snapshot()), timeout=10)
            except Exception as exc:  # the board died or is not up yet: find it again
                logger.debug("status report failed: %r", exc)
                board = None
            if self._stop.wait(self._period_s):
                return


class ClusterStatus:
    """`StatusSource` for one application: the board's reports joined with `serve.status()`."""

    def __init__(self, app_name: str, max_age_s: float = 10.0) -> None:
        self.app_name = app_name
        self.max_age_s = max_age_s

    def _read(self) -> tuple[Any, list[dict[str, Any]]]:
        serve_status = serve.status()
        board = status_board(self.app_name)
        reports: list[dict[str, Any]] = ray.get(board.snapshot.remote(self.max_age_s), timeout=10)
        return serve_status, reports

    async def _gather(self) -> tuple[Any, dict[str, list[dict[str, Any]]]]:
        # serve.status(), the board lookup and ray.get all block: keep them off the loop.
        serve_status, reports = await asyncio.to_thread(self._read)
        by_deployment: dict[str, list[dict[str, Any]]] = {}
        for r in sorted(reports, key=lambda r: str(r["replica_id"])):
            by_deployment.setdefault(str(r["deployment"]), []).append(r)
        return serve_status.applications.get(self.app_name), by_deployment

    async def status(self) -> dict[str, Any]:
        app, reports = await self._gather()
        deployments: dict[str, Any] = {}
        for name, d in sorted((app.deployments if app else {}).items()):
            mine = reports.get(name, [])
            states = {_text(s): n for s, n in d.replica_states.items()}
            deployments[name] = {
                "status": _text(d.status),
                "message": d.message,
                "replica_states": states,
                "replicas_running": states.get("RUNNING", 0),
                "in_flight": sum(r["in_flight"] for r in mine),
                "queued": sum(r["queued"] for r in mine),
                "replicas": [
                    {k: r[k] for k in ("replica_id", "node_ip", "pid", "in_flight", "queued")}
                    | {"last_report_s": _age(r)}
                    | ({"streams": r["streams"]} if r.get("streams") else {})
                    for r in mine
                ],
            }
        return {
            "application": self.app_name,
            "status": _text(app.status) if app else "NOT_FOUND",
            "deployments": deployments,
        }

    async def memory(self) -> dict[str, Any]:
        _, reports = await self._gather()
        return {
            "application": self.app_name,
            "deployments": {
                name: {
                    "replicas": [
                        {
                            "replica_id": r["replica_id"],
                            "node_ip": r["node_ip"],
                            "pid": r["pid"],
                            "host": r["host_memory"],
                            "gpus": r["gpus"],
                        }
                        for r in mine
                    ]
                }
                for name, mine in sorted(reports.items())
            },
        }


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))


def _age(report: dict[str, Any]) -> float:
    return round(time.time() - float(report["reported_at"]), 3)
