"""Test helper: the service started the way users start it, `serve run <config>`.

The repository's `serve_config.yaml` is copied with a free port and the caller's
settings, and run by Serve's own CLI in a child process. The child first starts a
local Ray cluster without a dashboard (so no fixed port is taken), then hands over
to `serve run`, which reuses that cluster: the proxy inherits exactly the child's
environment, as it inherits the shell's under a plain `serve run`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from deployments.proxy_errors import CALLBACK_ENV, CALLBACK_PATH
from tests.serve.conftest import ServeApp, free_port

ROOT = Path(__file__).resolve().parents[2]

_CHILD = """
import sys, ray
ray.init(num_cpus=int(sys.argv[2]), include_dashboard=False, namespace="serve")
from ray.serve.scripts import cli
cli(["run", sys.argv[1]])
"""


class ServeRun(ServeApp):
    """A running `serve run` and its console output so far."""

    def __init__(self, base_url: str, log: Path) -> None:
        super().__init__(base_url)
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def write_config(
    settings: dict[str, str], deployments: dict[str, Any] | None = None, **http: Any
) -> tuple[Path, int]:
    """serve_config.yaml with a free port, the simulated engine and these settings."""
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    port = free_port()
    config["http_options"].update({"host": "127.0.0.1", "port": port, **http})
    (app,) = config["applications"]
    app["args"].update(
        {"engine": "simulated", "dotenv_path": None, "settings": settings},
        deployments=deployments or {},
    )
    path = Path(tempfile.mkdtemp(prefix="serve-run-")) / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port


@contextmanager
def serve_run(
    settings: dict[str, str],
    *,
    hardened: bool = True,
    deployments: dict[str, Any] | None = None,
    wait_healthy: bool = True,
    num_cpus: int = 4,
    **http: Any,
) -> Iterator[ServeRun]:
    """`serve run` of the repository's config; `hardened` sets the proxy callback env var."""
    path, port = write_config(settings, deployments, **http)
    env = {k: v for k, v in os.environ.items() if k not in (CALLBACK_ENV, "RAY_ADDRESS")}
    if hardened:
        env[CALLBACK_ENV] = CALLBACK_PATH
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    log = path.with_name("serve_run.log")
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), str(num_cpus)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = ServeRun(f"http://127.0.0.1:{port}", log)
    try:
        if wait_healthy:
            _wait_healthy(running, child)
        yield running
    finally:
        child.send_signal(signal.SIGINT)  # `serve run` shuts Serve down on Ctrl-C
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=30)


def _wait_healthy(running: ServeRun, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"serve run exited:\n{running.output()[-4000:]}")
        try:
            if httpx.get(running.base_url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise RuntimeError(f"serve run did not become healthy:\n{running.output()[-4000:]}")
