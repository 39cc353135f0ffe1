"""One KubeRay-shaped Ray cluster per module: the pods of k8s/rayservice.yaml as local nodes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tools.cluster import LocalRayService


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/cluster/" in str(item.path):
            item.add_marker(pytest.mark.serve)


API_KEY = "cluster-key"
SECRETS = {"chatterbox-api-keys/API_KEYS": API_KEY}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def figures() -> Iterator[dict[str, Any]]:
    """Results the tests record for docs/RELIABILITY.md; printed at the end (pytest -s)."""
    found: dict[str, Any] = {}
    yield found
    print("\nCLUSTER FIGURES " + json.dumps(found, sort_keys=True))


def start_service(settings: dict[str, Any]) -> Iterator[LocalRayService]:
    """Start the nodes, PUT the manifest's serveConfigV2 (plus `settings`), wait for RUNNING."""
    service = LocalRayService(SECRETS)
    try:
        service.start()
        service.submit(service.single_host_config(settings))
        service.wait_running()
        yield service
    finally:
        service.stop()
