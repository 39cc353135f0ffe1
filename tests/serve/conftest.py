"""One local Ray cluster and one Serve app per test module (simulated engine).

Each module gets a free HTTP port and no dashboard, so several test processes (or a
developer's own `serve run`) can share the machine. Ray starts with the proxy
middleware installed, as in production (`tools/proxy_env.py`).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import ray
from ray import serve

from deployments.builder import build_app
from tools.proxy_env import proxy_envelopes


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/serve/" in str(item.path):
            item.add_marker(pytest.mark.serve)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeApp:
    """A running application and how to reach it."""

    def __init__(self, base_url: str, metrics_url: str | None = None) -> None:
        self.base_url = base_url
        self.metrics_url = metrics_url

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=60.0, **kw)

    def async_client(self, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=60.0, **kw)


def start_app(
    settings: dict[str, Any] | None = None,
    num_cpus: int = 4,
    metrics: bool = False,
    **build_args: Any,
) -> Iterator[ServeApp]:
    """Start Ray and Serve, deploy the app, wait for /health, yield, then shut all down.

    `metrics=True` fixes a free Prometheus export port, so `ServeApp.metrics_url` works.
    """
    port = free_port()
    metrics_port = free_port() if metrics else None
    with proxy_envelopes():  # as production runs: the ingress refuses a bare proxy
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            _metrics_export_port=metrics_port,
        )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        args = {"engine": "simulated", "dotenv_path": None, "settings": settings or {}}
        args.update(build_args)
        serve.run(build_app(args), name="chatterbox", route_prefix="/", blocking=False)
        app = ServeApp(
            f"http://127.0.0.1:{port}", metrics_port and f"http://127.0.0.1:{metrics_port}/metrics"
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(app.base_url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Serve app did not become healthy in 90 s")
            time.sleep(0.5)
        yield app
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def serve_app() -> Iterator[ServeApp]:
    yield from start_app()
