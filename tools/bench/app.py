"""Start and stop the Serve application for a run, and read the model replica's batch stats."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import httpx
import ray
from ray import serve
from ray.serve import Application

from deployments.builder import build_app
from tools.proxy_env import proxy_envelopes

APP_NAME = "chatterbox"
MODEL_DEPLOYMENT = "SpeechModelDeployment"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunningApp:
    base_url: str
    port: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin_single_replicas(app: Application) -> Application:
    """Rebind every deployment with one fixed replica instead of autoscaling.

    The run measures one engine (one GPU) and one replica of each CPU deployment; an
    autoscaler adding a second model replica halfway through a level would double the
    engine and make the ratio to engine capacity meaningless.
    """
    return _pin(app, {})


def _pin(app: Application, done: dict[int, Application]) -> Application:
    # The model is bound once and passed to two deployments; rebinding it twice would
    # deploy two model deployments, so each application is rebound once.
    if id(app) in done:
        return done[id(app)]
    deployment = app._bound_deployment
    args = tuple(_pin_within(a, done) for a in deployment.init_args)
    kwargs = {
        k: _pin_within(v, done) for k, v in cast(dict[str, Any], deployment.init_kwargs).items()
    }
    pinned: Application = deployment.options(num_replicas=1, autoscaling_config=None).bind(
        *args, **kwargs
    )
    done[id(app)] = pinned
    return pinned


def _pin_within(value: Any, done: dict[int, Application]) -> Any:
    """`value` with every application in it pinned, inside dicts, lists and tuples too
    (the builder passes the model deployments of all families as a dict)."""
    if isinstance(value, Application):
        return _pin(value, done)
    if isinstance(value, dict):
        return {k: _pin_within(v, done) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_pin_within(v, done) for v in value)
    return value


@contextmanager
def serve_app(settings: dict[str, Any], num_cpus: int) -> Iterator[RunningApp]:
    """Start Ray and Serve on a free port, deploy the app, wait for /health, then shut down."""
    port = free_port()
    # Ray runs its workers at nice 15. The load generator runs in this process at nice 0,
    # so on a small shared machine it would starve the server it measures.
    os.environ.setdefault("RAY_worker_niceness", "0")
    with proxy_envelopes():
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app({"engine": "simulated", "dotenv_path": None, "settings": settings})
        serve.run(pin_single_replicas(app), name=APP_NAME, route_prefix="/", blocking=False)
        running = RunningApp(f"http://127.0.0.1:{port}", port)
        _wait_healthy(running.base_url, timeout_s=120)
        yield running
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


def _wait_healthy(base_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(base_url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Serve app did not become healthy in {timeout_s:.0f} s")
        time.sleep(0.5)


class ModelStats:
    """The model replica's `BatchRecorder`, reset before and read after each measured level."""

    def __init__(self) -> None:
        self._handle = serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=APP_NAME)

    async def reset(self) -> None:
        await self._handle.reset_stats.remote()

    async def read(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self._handle.stats.remote()
        return stats
