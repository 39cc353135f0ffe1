"""A plain `serve run serve_config.yaml` without the proxy middleware refuses to serve.

The hardened start is covered by tests/serve/test_tenant_proxy.py; here the callback
variable is missing from the environment that starts Ray, as when a user types the
command without the README's export.
"""

from __future__ import annotations

import time

import httpx

from deployments.proxy_errors import UNHARDENED_MESSAGE
from tests.serve.serve_cli import serve_run

SINGLE = {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 1}
OPTIONS = {
    name: {"autoscaling_config": SINGLE}
    for name in ("SpeechModelDeployment", "TextAudioDeployment", "SpeechIngress")
}


def test_serve_run_without_the_proxy_callback_refuses_with_what_to_set() -> None:
    with serve_run({}, hardened=False, deployments=OPTIONS, wait_healthy=False) as app:
        deadline = time.monotonic() + 180
        while UNHARDENED_MESSAGE not in app.output().replace("\n", " "):
            assert time.monotonic() < deadline, app.output()[-4000:]
            time.sleep(1.0)
        try:
            status = httpx.get(app.base_url + "/health", timeout=5).status_code
        except httpx.HTTPError:
            status = None
        assert status != 200
